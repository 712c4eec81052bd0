"""The one device resolver (singledir.devices.resolve_device)."""

from __future__ import annotations

import pytest
import torch
from singledir.devices import resolve_device
from singledir.errors import InputError


def test_default_and_auto_follow_cuda_availability() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    assert resolve_device("auto").type == expected
    assert resolve_device(" AUTO ").type == expected


def test_cpu_by_name_and_by_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu9", "", "cuda:x", "gpu"])
def test_unknown_names_are_one_line_input_errors(name: str) -> None:
    with pytest.raises(InputError, match="cpu, cuda or cuda:N") as exc:
        resolve_device(name)
    assert "\n" not in str(exc.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_gpu_names_the_fix(name: str) -> None:
    with pytest.raises(InputError, match="--device cpu"):
        resolve_device(name)
    with pytest.raises(InputError, match="--device cpu"):
        resolve_device(torch.device("cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_beyond_the_gpus() -> None:
    n = torch.cuda.device_count()
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(InputError, match=f"only {n} CUDA"):
        resolve_device(f"cuda:{n}")
