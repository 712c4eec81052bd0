"""Checkpoints: round trip, weights-only loading, plain state dicts, and every bad file."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from singledir.checkpoint import load_checkpoint, save_checkpoint
from singledir.errors import CheckpointError, ConfigError, DataError
from singledir.models import build_model, resnet

CONFIGS = [
    {"arch": "mlp", "in_shape": [1, 8, 8], "widths": [32, 16], "dropout": 0.2, "batchnorm": True},
    {"arch": "convnet11", "in_shape": [3, 16, 16], "width": 0.125, "batchnorm": True},
    {"arch": "resnet18", "in_shape": [3, 16, 16], "small_input": True},
]


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    # Non-default batch-norm statistics, so that a round trip must carry buffers too.
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c["arch"])
def test_round_trip_identical_logits(tmp_path, cfg):
    torch.manual_seed(0)
    model = _trained_like(build_model(cfg))
    meta = {"dataset": "digits", "corrupt": 0.5, "epoch": 3, "metrics": {"test_acc": 0.9}}
    path = save_checkpoint(tmp_path / "ckpt.pt", model, cfg, meta)
    ck = load_checkpoint(path)
    x = torch.randn(5, *cfg["in_shape"])
    with torch.no_grad():
        assert torch.equal(model(x), ck.model(x))
    assert not ck.model.training
    assert ck.meta == meta and ck.config == model.config and ck.kind == "singledir"
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "singledir-checkpoint" and raw["version"] == 1
    assert set(raw) == {"format", "version", "config", "meta", "state_dict"}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left


def test_meta_is_made_plain(tmp_path):
    model = build_model(CONFIGS[0])
    meta = {"acc": np.float32(0.5), "n": np.int64(3), "path": tmp_path, "xs": (1, 2)}
    ck = load_checkpoint(save_checkpoint(tmp_path / "a.pt", model, CONFIGS[0], meta))
    assert ck.meta == {"acc": 0.5, "n": 3, "path": str(tmp_path), "xs": [1, 2]}
    with pytest.raises(ConfigError, match="metadata"):
        save_checkpoint(tmp_path / "b.pt", model, CONFIGS[0], {"bad": object()})
    assert not (tmp_path / "b.pt").exists()
    with pytest.raises(DataError, match="does not exist"):
        save_checkpoint(tmp_path / "missing" / "c.pt", model, CONFIGS[0], {})


@pytest.fixture()
def saved(tmp_path):
    model = build_model(CONFIGS[0])
    return save_checkpoint(tmp_path / "ckpt.pt", model, CONFIGS[0], {"epoch": 1})


def test_truncated_checkpoint(saved):
    raw = saved.read_bytes()
    for cut in (len(raw) // 2, 40):
        saved.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupted") as exc:
            load_checkpoint(saved)
        assert "\n" not in str(exc.value)


def test_garbage_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pt"
    # Seeded junk: random bytes break torch's unpickler in many ways (EOFError, IndexError,
    # UnpicklingError...); every one must become the same one-line CheckpointError.
    rng = np.random.default_rng(0)
    for _ in range(300):
        junk.write_bytes(rng.integers(0, 256, size=256, dtype=np.uint8).tobytes())
        with pytest.raises(CheckpointError, match="corrupted") as exc:
            load_checkpoint(junk)
        assert "\n" not in str(exc.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_checkpoint_needing_code_is_refused(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "hook": _Payload(str(target))}, path)
    with pytest.raises(CheckpointError, match="unpickling of code") as exc:
        load_checkpoint(path, arch="mlp")
    assert "mkdir" in str(exc.value) and "\n" not in str(exc.value)
    assert not target.exists()


def test_weights_that_do_not_fit(tmp_path):
    model = build_model(CONFIGS[0])
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="plain state dict"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="do not fit 'mlp'"):
        load_checkpoint(path, arch="mlp", num_classes=7)
    with pytest.raises(CheckpointError, match="do not fit 'convnet11'"):
        load_checkpoint(path, arch="convnet11")
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_checkpoint(path, arch="vgg")
    ck_path = save_checkpoint(tmp_path / "ck.pt", model, CONFIGS[0], {})
    with pytest.raises(CheckpointError, match="holds a 'mlp' model"):
        load_checkpoint(ck_path, arch="resnet50")
    payload = torch.load(ck_path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, ck_path)
    with pytest.raises(CheckpointError, match="upgrade"):
        load_checkpoint(ck_path)
    torch.save({"hello": "world"}, path)
    with pytest.raises(CheckpointError, match="neither"):
        load_checkpoint(path, arch="mlp")


def test_plain_state_dict_with_inferred_config(tmp_path):
    torch.manual_seed(1)
    model = _trained_like(build_model(CONFIGS[0]))
    path = tmp_path / "sd.pt"
    # A DataParallel-style prefix inside a training-script dict.
    wrapped = {"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}
    torch.save(wrapped, path)
    ck = load_checkpoint(path, arch="mlp")
    assert ck.kind == "state_dict"
    assert ck.config["widths"] == [32, 16] and ck.config["batchnorm"] is True
    assert ck.config["in_shape"] == [1, 8, 8]
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), ck.model(x))


def test_plain_torchvision_resnet50_state_dict(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(0)
    tv = resnet50(weights=None, num_classes=1000).eval()
    path = tmp_path / "resnet50_imagenet.pth"
    torch.save(tv.state_dict(), path)
    ck = load_checkpoint(path, arch="resnet50")
    assert ck.config == {
        "arch": "resnet50",
        "in_shape": [3, 224, 224],
        "num_classes": 1000,
        "small_input": False,
    }
    assert ck.model.site_names[-1] == "layer4.2"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(tv(x), ck.model(x))
    with pytest.raises(CheckpointError, match="do not fit 'resnet18'"):
        load_checkpoint(path, arch="resnet18")


def test_resnet18_small_input_inferred(tmp_path):
    net = resnet(18, num_classes=10, small_input=True)
    path = tmp_path / "r18.pt"
    torch.save(net.state_dict(), path)
    ck = load_checkpoint(path, arch="resnet18")
    assert ck.config["small_input"] is True and ck.config["num_classes"] == 10
