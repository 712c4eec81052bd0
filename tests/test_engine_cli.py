"""The engine's command-line surface: `singledir sites`, `--unit-dim` and `--directions` on
ablate / importance / noise / record, checked against the library on the same data, and
their bad inputs (one-line error, non-zero exit, nothing written)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from singledir.ablation import ablation_curves, ablation_plan, unit_importance
from singledir.checkpoint import load_checkpoint, save_checkpoint
from singledir.data import load_dataset
from singledir.models import build_model

CONFIG = {"arch": "mlp", "in_shape": [1, 8, 8], "num_classes": 10, "widths": [12, 10]}
META = {"dataset": "digits", "corrupt": 0.0, "seed": 0, "data_seed": 1, "train_size": 300}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model(CONFIG)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # an untrained net whose predictions still depend on the input
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "mlp.pt", model, CONFIG, META)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from singledir.cli.app import main

    old = sys.argv
    sys.argv = ["singledir", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _test_data():
    return load_dataset("digits", "test", seed=1)


def test_sites_command(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["sites", str(ckpt)], capsys)
    assert code == 0, err
    for token in ("relu1", "relu2", "12", "10", "module", "(N, 12)"):
        assert token in out
    code, out, _ = _run(["sites", "--help"], capsys)
    assert code == 0 and "Example: singledir sites ckpt.pt" in out


def test_directions_and_unit_dim_match_library(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = load_checkpoint(ckpt).model
    data = _test_data()
    out = tmp_path / "curves.parquet"
    args = ["--split", "test", "--levels", "4", "--orderings", "2", "--quiet", "--no-plot"]
    code, _, err = _run(
        ["ablate", str(ckpt), *args, "--directions", "random", "-o", str(out)], capsys
    )
    assert code == 0, err
    want = ablation_curves(model, data, orderings=2, levels=4, directions="random", progress=False)
    np.testing.assert_array_equal(pl.read_parquet(out)["accuracy"], want["accuracy"])
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["directions"] == "random" and summary["seed"] == 0
    plan = ablation_plan(model, data, levels=4, directions="random")
    assert summary["engine"] == {"path": plan.path, "runner": "chain", "why": plan.runner_reason}
    basis = np.random.default_rng(0).normal(size=(4, 12))
    np.save(tmp_path / "dirs.npy", basis)
    out2 = tmp_path / "curves2.parquet"
    code, _, err = _run(
        [
            "ablate",
            str(ckpt),
            *args,
            "--layers",
            "relu1",
            "--unit-dim",
            "1",
            "--directions",
            str(tmp_path / "dirs.npy"),
            "-o",
            str(out2),
        ],
        capsys,
    )
    assert code == 0, err
    want = ablation_curves(
        model, data, "relu1", orderings=2, levels=4, directions={"relu1": basis}, progress=False
    )
    got = pl.read_parquet(out2)
    np.testing.assert_array_equal(got["accuracy"], want["accuracy"])
    assert got["n_ablated"].max() == 4  # four directions, not twelve units
    torch.save({"relu2": torch.eye(10)[:3]}, tmp_path / "dirs.pt")
    out3 = tmp_path / "units.parquet"
    code, _, err = _run(
        [
            "importance",
            str(ckpt),
            "--split",
            "test",
            "--quiet",
            "--layers",
            "relu2",
            "--directions",
            str(tmp_path / "dirs.pt"),
            "-o",
            str(out3),
        ],
        capsys,
    )
    assert code == 0, err
    want = unit_importance(model, data, "relu2", progress=False)
    got = pl.read_parquet(out3)
    assert got.height == 3
    np.testing.assert_allclose(got["accuracy"], want["accuracy"][:3])
    for cmd in ("record", "noise"):
        target = tmp_path / f"{cmd}.parquet"
        extra = ["--no-plot"] if cmd == "noise" else []
        code, _, err = _run(
            [
                cmd,
                str(ckpt),
                "--split",
                "test",
                "--quiet",
                "--unit-dim",
                "relu1=1",
                *extra,
                "-o",
                str(target),
            ],
            capsys,
        )
        assert code == 0, err
        assert target.exists()


def test_bad_engine_options(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "wide.npy", np.ones((2, 13)))
    np.save(tmp_path / "nan.npy", np.full((1, 12), np.nan))
    np.save(tmp_path / "one.npy", np.eye(12)[:2])
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "garbage.npy").write_bytes(bytes(range(256)) * 2)
    (tmp_path / "garbage.pt").write_bytes(bytes(range(256)) * 2)
    torch.save({"relu1": torch.nn.Linear(12, 2)}, tmp_path / "module.pt")  # not tensors
    out = tmp_path / "never.parquet"
    base = ["ablate", str(ckpt), "--split", "test", "--quiet", "--no-plot", "-o", str(out)]
    cases = [
        (["--layers", "relu1", "--directions", str(tmp_path / "wide.npy")], "width 13"),
        (["--layers", "relu1", "--directions", str(tmp_path / "nan.npy")], "NaN or infinity"),
        (["--directions", str(tmp_path / "one.npy")], "one array but 2 sites"),
        (["--directions", str(tmp_path / "missing.npy")], "neither units, random"),
        *(
            (
                ["--layers", "relu1", "--directions", str(tmp_path / name)],
                f"{tmp_path / name} is not a NumPy .npy/.npz array or a tensor file: ",
            )
            for name in ("objects.npy", "garbage.npy", "garbage.pt", "module.pt")
        ),
        (["--layers", "nope"], "choose from relu1, relu2"),
        (["--unit-dim", "5"], "out of range"),
        (["--unit-dim", "relu1=x"], "--unit-dim"),
    ]
    for extra, match in cases:
        code, _, err = _run([*base, *extra], capsys)
        assert code != 0
        assert match in err, (extra, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        if "tensor file" in match:  # numpy's and torch's paragraphs are not pasted in, cut
            assert err.strip().endswith("numpy.savez or torch.save"), err
        assert not out.exists()
