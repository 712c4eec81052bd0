"""`singledir ablate | noise | importance | record` end to end on tiny checkpoints: outputs
checked against independent computations, and every bad input of issue 4 (one-line error,
non-zero exit, no traceback, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from singledir.checkpoint import save_checkpoint
from singledir.data import load_dataset
from singledir.models import build_model

CORRUPT = 0.3
CORRUPT_SEED = 7
TRAIN_SIZE = 600
MLP_CONFIG = {"arch": "mlp", "in_shape": [1, 8, 8], "num_classes": 10, "widths": [12, 10]}


def _train_briefly(model: torch.nn.Module, steps: int = 60) -> None:
    data = load_dataset("digits", "train")
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(data), (128,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(data.x[idx]), data.true_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _meta(**extra: Any) -> dict[str, Any]:
    meta = {
        "dataset": "digits",
        "corrupt": CORRUPT,
        "corrupt_seed": CORRUPT_SEED,
        "seed": 0,
        "data_seed": 1,
        "train_size": TRAIN_SIZE,
        "test_size": None,
    }
    meta.update(extra)
    return meta


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    mlp = build_model(MLP_CONFIG)
    _train_briefly(mlp)
    out = {"mlp": save_checkpoint(root / "mlp.pt", mlp, MLP_CONFIG, _meta())}
    conv_cfg = {"arch": "convnet11", "in_shape": [1, 8, 8], "num_classes": 10, "width": 1 / 16}
    torch.manual_seed(1)
    out["conv"] = save_checkpoint(root / "conv.pt", build_model(conv_cfg), conv_cfg, _meta())
    # A plain state dict (no singledir metadata), like a user's own torchvision checkpoint.
    torch.save(mlp.state_dict(), root / "plain.pt")
    out["plain"] = root / "plain.pt"
    # A singledir checkpoint that does not record its dataset.
    out["nodata"] = save_checkpoint(root / "nodata.pt", mlp, MLP_CONFIG, {})
    # An MLP for 28x28 inputs, which digits (8x8) does not fit.
    big_cfg = {"arch": "mlp", "in_shape": [1, 28, 28], "num_classes": 10, "widths": [8]}
    out["big"] = save_checkpoint(root / "big.pt", build_model(big_cfg), big_cfg, _meta())
    return out


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from singledir.cli.app import main

    old = sys.argv
    sys.argv = ["singledir", *argv, "--quiet"] if argv and argv[0] != "--help" else argv
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _model_and_data(path: Path, split: str) -> tuple[torch.nn.Module, Any]:
    from singledir.checkpoint import load_checkpoint

    model = load_checkpoint(path).model
    if split == "train":
        data = load_dataset(
            "digits",
            "train",
            train_size=TRAIN_SIZE,
            seed=1,
            corrupt=CORRUPT,
            corrupt_seed=CORRUPT_SEED,
        )
    else:
        data = load_dataset("digits", "test", seed=1)
    return model, data


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def _trapezoid_auc(curves: pl.DataFrame) -> float:
    """AUC of accuracy against fraction ablated (0..1), mean over orderings, by hand."""
    aucs = []
    for o in sorted(set(curves["ordering"].to_list())):
        part = curves.filter(pl.col("ordering") == o).sort("n_ablated")
        xs = part["fraction_ablated"].to_numpy()
        ys = part["accuracy"].to_numpy()
        aucs.append(float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2)))
    return float(np.mean(aucs))


# --------------------------------------------------------------------------------------------
# Happy paths


def test_ablate_writes_curves_plot_and_summary(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "curves.parquet"
    code, stdout, err = _run(
        [
            "ablate",
            str(ckpts["mlp"]),
            "--layers",
            "all",
            "--orderings",
            "3",
            "--split",
            "train",
            "--seed",
            "4",
            "--out",
            str(out),
            "--plot",
            str(tmp_path / "curves.png"),
        ],
        capsys,
    )
    assert code == 0, err
    curves = pl.read_parquet(out)
    assert curves.height == 3 * 23  # 3 orderings x levels 0..22 (12 + 10 units)
    assert set(curves["seed"].to_list()) == {4}
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    summary = json.loads((tmp_path / "curves.json").read_text())
    # Level 0 is the model's own accuracy on the checkpoint's corrupted training labels.
    model, data = _model_and_data(ckpts["mlp"], "train")
    base = _accuracy(model, data.x, data.y)
    assert base != pytest.approx(_accuracy(model, data.x, data.true_y))  # labels matter
    for acc in curves.filter(pl.col("n_ablated") == 0)["accuracy"].to_list():
        assert acc == pytest.approx(base, abs=1e-9)
    assert summary["base_accuracy"] == pytest.approx(base, abs=1e-9)
    assert summary["n_samples"] == TRAIN_SIZE
    assert summary["sites"] == ["relu1", "relu2"]
    assert summary["units"] == {"relu1": 12, "relu2": 10}
    assert summary["seed"] == 4
    assert summary["auc"] == pytest.approx(_trapezoid_auc(curves), abs=1e-9)
    # Every unit ablated: the network's output is constant, so one class for all samples.
    logits = model.fc_out.bias.detach()
    const_acc = float((data.y == int(logits.argmax())).double().mean())
    full = curves.filter(pl.col("n_ablated") == 22)["accuracy"].to_list()
    assert full == pytest.approx([const_acc] * 3, abs=1e-9)
    assert "AUC" in stdout and "relu1" in stdout


def test_ablate_same_seed_same_numbers_and_levels(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["ablate", str(ckpts["conv"]), "--layers", "last2", "--orderings", "2"]
    common += ["--levels", "5", "--split", "test", "--no-plot"]
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert _run([*common, "--out", str(a)], capsys)[0] == 0
    assert _run([*common, "--out", str(b)], capsys)[0] == 0
    ca, cb = pl.read_parquet(a), pl.read_parquet(b)
    assert ca.equals(cb)
    assert sorted(set(ca["n_ablated"].to_list())) == [0, 16, 32, 48, 64]  # 32 + 32 channels
    assert not (tmp_path / "a.png").exists()


def test_ablate_order_by_selectivity_matches_library(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from singledir.ablation import ablation_curves
    from singledir.activations import record_activation_arrays
    from singledir.stats import class_selectivity

    out = tmp_path / "sel.parquet"
    argv = ["ablate", str(ckpts["mlp"]), "--layers", "relu2", "--order", "descending"]
    argv += ["--by", "selectivity", "--split", "test", "--out", str(out), "--no-plot"]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    assert "over 1 ordering(s)" in " ".join(stdout.split())
    model, data = _model_and_data(ckpts["mlp"], "test")
    arrays, labels = record_activation_arrays(model, data, ["relu2"], progress=False)
    scores = {"relu2": np.asarray(class_selectivity(arrays["relu2"], labels), dtype=np.float64)}
    ref = ablation_curves(
        model, data, ["relu2"], order="descending", scores=scores, orderings=1, progress=False
    )
    got = pl.read_parquet(out)
    np.testing.assert_allclose(
        got.sort("n_ablated")["accuracy"].to_numpy(), ref.sort("n_ablated")["accuracy"].to_numpy()
    )
    # a score order is one ordering, whatever the --orderings default says
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["orderings"] == 1 and len(summary["auc_per_ordering"]) == 1
    # Independent check of the first step: the most selective unit alone, by a manual hook.
    top = int(np.nanargmax(scores["relu2"]))

    def hook(_m: object, _i: object, o: torch.Tensor) -> torch.Tensor:
        o = o.clone()
        o[:, top] = 0
        return o

    h = model.relu2.register_forward_hook(hook)
    try:
        acc1 = _accuracy(model, data.x, data.y)
    finally:
        h.remove()
    assert got.filter(pl.col("n_ablated") == 1)["accuracy"][0] == pytest.approx(acc1, abs=1e-9)


@pytest.mark.parametrize("by", ["mutual_info", "importance"])
def test_ablate_order_by_scores_computed_on_the_fly(
    by: str, ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from singledir.ablation import ablation_curves, unit_importance
    from singledir.activations import record_activation_arrays
    from singledir.stats import mutual_information

    out = tmp_path / "c.parquet"
    argv = ["ablate", str(ckpts["mlp"]), "--layers", "all", "--order", "ascending", "--by", by]
    code, _, err = _run([*argv, "--split", "test", "--out", str(out), "--no-plot"], capsys)
    assert code == 0, err
    model, data = _model_and_data(ckpts["mlp"], "test")
    if by == "mutual_info":
        arrays, labels = record_activation_arrays(model, data, "all", progress=False)
        scores = np.concatenate(
            [mutual_information(arrays[s], labels, num_classes=10) for s in ("relu1", "relu2")]
        )
    else:
        table = unit_importance(model, data, "all", progress=False)
        scores = table["accuracy_drop"].to_numpy()  # rows in forward order, unit order
    ref = ablation_curves(model, data, "all", order="ascending", scores=scores, progress=False)
    got = pl.read_parquet(out).sort("n_ablated")
    np.testing.assert_allclose(
        got["accuracy"].to_numpy(), ref.sort("n_ablated")["accuracy"].to_numpy()
    )


def test_ablate_order_by_units_table_column(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    units = pl.DataFrame(
        {
            "layer": ["relu2"] * 10,
            "unit": list(range(10)),
            "my_score": [float(v) for v in (3, 9, 1, 0, 7, 5, 2, 8, 6, 4)],
        }
    )
    table = tmp_path / "units.parquet"
    units.write_parquet(table)
    out = tmp_path / "c.parquet"
    argv = ["ablate", str(ckpts["mlp"]), "--layers", "relu2", "--order", "ascending"]
    argv += ["--scores", str(table), "--by", "my_score", "--split", "test"]
    code, _, err = _run([*argv, "--out", str(out), "--no-plot"], capsys)
    assert code == 0, err
    model, data = _model_and_data(ckpts["mlp"], "test")
    order = np.argsort(units["my_score"].to_numpy())
    got = pl.read_parquet(out).sort("n_ablated")["accuracy"].to_list()
    for k in (1, 4, 10):  # naive reference: hook zeroing the k lowest-scored units
        ablated = torch.as_tensor(order[:k])

        def hook(_m: object, _i: object, o: torch.Tensor, idx: torch.Tensor = ablated) -> Any:
            o = o.clone()
            o[:, idx] = 0
            return o

        h = model.relu2.register_forward_hook(hook)
        try:
            assert got[k] == pytest.approx(_accuracy(model, data.x, data.y), abs=1e-9)
        finally:
            h.remove()


def test_ablate_and_importance_value_mean_match_library(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from singledir.ablation import ablation_curves, unit_importance

    out, units = tmp_path / "c.parquet", tmp_path / "u.parquet"
    common = [str(ckpts["mlp"]), "--layers", "relu1", "--split", "test", "--value", "mean"]
    code, _, err = _run(
        ["ablate", *common, "--orderings", "2", "--seed", "5", "--out", str(out)], capsys
    )
    assert code == 0, err
    code, _, err = _run(["importance", *common, "--out", str(units)], capsys)
    assert code == 0, err
    model, data = _model_and_data(ckpts["mlp"], "test")
    ref = ablation_curves(model, data, "relu1", orderings=2, seed=5, value="mean", progress=False)
    assert pl.read_parquet(out).equals(ref)
    ref_units = unit_importance(model, data, "relu1", value="mean", progress=False)
    assert pl.read_parquet(units).equals(ref_units)
    # Independent check of one unit: replace its activity by its mean over the data.
    with torch.no_grad():
        h = model.relu1(model.fc1(model.flatten(data.x)))
        mean = h[:, 4].mean()
        h[:, 4] = mean
        acc = float((model.fc_out(model.relu2(model.fc2(h))).argmax(1) == data.y).double().mean())
    row = pl.read_parquet(units).filter(pl.col("unit") == 4)
    assert row["accuracy"][0] == pytest.approx(acc, abs=1e-9)


def test_noise_writes_curves_and_scale_zero_is_base(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "noise.parquet"
    argv = ["noise", str(ckpts["mlp"]), "--layers", "last1", "--scales", "0,0.5,2"]
    argv += ["--repeats", "2", "--split", "test", "--seed", "3", "--out", str(out)]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    curves = pl.read_parquet(out)
    assert sorted(set(curves["scale"].to_list())) == [0.0, 0.5, 2.0]
    assert set(curves["seed"].to_list()) == {3}
    model, data = _model_and_data(ckpts["mlp"], "test")
    base = _accuracy(model, data.x, data.y)
    assert curves.filter(pl.col("scale") == 0.0)["accuracy"].to_list() == pytest.approx(
        [base, base], abs=1e-9
    )
    assert (tmp_path / "noise.png").read_bytes().startswith(b"\x89PNG")
    summary = json.loads((tmp_path / "noise.json").read_text())
    assert summary["scales"] == [0.0, 0.5, 2.0] and summary["seed"] == 3
    # Normalized AUC by hand: mean accuracy per scale, trapezoid over [0, 2], divided by 2.
    means = [
        float(np.mean(curves.filter(pl.col("scale") == s)["accuracy"].to_numpy()))
        for s in (0.0, 0.5, 2.0)
    ]
    by_hand = (0.5 * (means[0] + means[1]) / 2 + 1.5 * (means[1] + means[2]) / 2) / 2.0
    assert summary["auc"] == pytest.approx(by_hand, abs=1e-12)
    assert "noise AUC" in stdout


def test_importance_matches_manual_single_unit_ablation(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "units.parquet"
    argv = ["importance", str(ckpts["mlp"]), "--layers", "all", "--split", "test"]
    code, _, err = _run([*argv, "--out", str(out), "--plot", str(tmp_path / "s.png")], capsys)
    assert code == 0, err
    units = pl.read_parquet(out)
    assert units.height == 22
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")
    model, data = _model_and_data(ckpts["mlp"], "test")
    base = _accuracy(model, data.x, data.y)
    for layer, unit in [("relu1", 0), ("relu1", 11), ("relu2", 3)]:

        def hook(_m: object, _i: object, o: torch.Tensor, u: int = unit) -> torch.Tensor:
            o = o.clone()
            o[:, u] = 0
            return o

        h = getattr(model, layer).register_forward_hook(hook)
        try:
            acc = _accuracy(model, data.x, data.y)
        finally:
            h.remove()
        row = units.filter((pl.col("layer") == layer) & (pl.col("unit") == unit))
        assert row["accuracy_drop"][0] == pytest.approx(base - acc, abs=1e-9)


def test_record_matches_library_and_test_labels_are_true(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from singledir.activations import record_activations

    out = tmp_path / "acts.parquet"
    argv = ["record", str(ckpts["conv"]), "--layers", "last3", "--split", "test"]
    code, _, err = _run([*argv, "--out", str(out)], capsys)
    assert code == 0, err
    got = pl.read_parquet(out)
    model, data = _model_and_data(ckpts["conv"], "test")
    ref = record_activations(model, data, "last3", progress=False)
    assert got.equals(ref)
    labels = got.filter((pl.col("layer") == "relu9") & (pl.col("unit") == 0)).sort("sample")
    np.testing.assert_array_equal(labels["label"].to_numpy(), data.true_y.numpy())


def test_plain_state_dict_with_arch(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "acts.parquet"
    argv = ["record", str(ckpts["plain"]), "--arch", "mlp", "--dataset", "digits"]
    code, _, err = _run([*argv, "--split", "test", "--out", str(out)], capsys)
    assert code == 0, err
    assert pl.read_parquet(out).height == len(load_dataset("digits", "test")) * 22


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("ablate", "noise", "importance", "record"):
        code, stdout, _ = _run([cmd, "--help"], capsys)
        assert code == 0
        assert "Example: singledir " + cmd in " ".join(stdout.split())


# --------------------------------------------------------------------------------------------
# Bad inputs


def _bad(argv: list[str], capsys: pytest.CaptureFixture[str], folder: Path, *needles: str) -> None:
    before = sorted(p.name for p in folder.iterdir())
    code, _, err = _run(argv, capsys)
    assert code != 0
    text = err.strip()
    assert "Traceback" not in err
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error:"), text
    for needle in needles:
        assert needle in text, text
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


def test_bad_sites(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "c.parquet")
    ck = str(ckpts["mlp"])
    _bad(["ablate", ck, "--layers", "relu9", "--out", out], capsys, tmp_path, "relu1, relu2")
    _bad(["noise", ck, "--layers", "last3", "--out", out], capsys, tmp_path, "last3", "2")
    _bad(["importance", ck, "--layers", "nope", "--out", out], capsys, tmp_path, "relu1")
    _bad(["record", ck, "--layers", "last5", "--out", out], capsys, tmp_path, "last5")


def test_bad_levels_order_and_scales(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "c.parquet")
    ck = str(ckpts["mlp"])
    _bad(["ablate", ck, "--levels", "24", "--out", out], capsys, tmp_path, "23")
    _bad(["ablate", ck, "--levels", "many", "--out", out], capsys, tmp_path, "--levels")
    _bad(["ablate", ck, "--order", "ascending", "--out", out], capsys, tmp_path, "--by")
    _bad(["ablate", ck, "--by", "selectivity", "--out", out], capsys, tmp_path, "--order")
    _bad(
        ["ablate", ck, "--order", "descending", "--by", "wibble", "--out", out],
        capsys,
        tmp_path,
        "wibble",
    )
    _bad(["noise", ck, "--scales", "0,x", "--out", out], capsys, tmp_path, "'x'")
    _bad(["noise", ck, "--scales", "-1", "--out", out], capsys, tmp_path, ">= 0")


def test_units_table_without_column(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "units.parquet"
    pl.DataFrame({"layer": ["relu2"], "unit": [0], "selectivity": [0.5]}).write_parquet(table)
    out = str(tmp_path / "c.parquet")
    argv = ["ablate", str(ckpts["mlp"]), "--layers", "relu2", "--order", "ascending"]
    _bad(
        [*argv, "--scores", str(table), "--by", "loss_rise", "--out", out],
        capsys,
        tmp_path,
        "loss_rise",
        "selectivity",
    )
    # The column is there but does not cover every unit of the site.
    _bad(
        [*argv, "--scores", str(table), "--by", "selectivity", "--out", out],
        capsys,
        tmp_path,
        "9 of 10",
    )
    _bad(
        [*argv, "--scores", str(tmp_path / "none.parquet"), "--by", "x", "--out", out],
        capsys,
        tmp_path,
        "none.parquet",
    )


def test_bad_checkpoints_and_data(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "c.parquet")
    _bad(["ablate", str(ckpts["plain"]), "--out", out], capsys, tmp_path, "--arch")
    _bad(["ablate", str(ckpts["nodata"]), "--out", out], capsys, tmp_path, "--dataset")
    _bad(["ablate", str(ckpts["big"]), "--out", out], capsys, tmp_path, "do not fit")
    _bad(["record", str(tmp_path / "missing.pt"), "--out", out], capsys, tmp_path, "missing.pt")
    if not torch.cuda.is_available():
        _bad(
            ["record", str(ckpts["mlp"]), "--device", "cuda", "--out", out],
            capsys,
            tmp_path,
            "--device cpu",
        )
    _bad(["record", str(ckpts["mlp"]), "--device", "tpu9", "--out", out], capsys, tmp_path, "tpu9")
    _bad(
        ["ablate", str(ckpts["mlp"]), "--out", str(tmp_path / "no" / "c.parquet")],
        capsys,
        tmp_path,
        "does not exist",
    )


def test_empty_data(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An MNIST folder whose IDX files hold zero images: empty data, one-line error."""
    import gzip
    import struct

    data_dir = tmp_path / "emptymnist"
    data_dir.mkdir()
    for prefix in ("t10k", "train"):
        with gzip.open(data_dir / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x00000803, 0, 8, 8))
        with gzip.open(data_dir / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 0x00000801, 0))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = ["ablate", str(ckpts["mlp"]), "--dataset", "mnist", "--data-dir", str(data_dir)]
    _bad(
        [*argv, "--split", "test", "--out", str(out_dir / "c.parquet")],
        capsys,
        out_dir,
        "no samples",
    )


def test_entry_point_prints_one_line_without_traceback(
    ckpts: dict[str, Path], tmp_path: Path
) -> None:
    script = Path(sys.executable).parent / "singledir"
    if not script.exists():
        pytest.skip("the singledir script is not installed beside this Python")
    argv = [str(script), "ablate", str(ckpts["mlp"]), "--layers", "zz"]
    proc = subprocess.run(
        [*argv, "--out", str(tmp_path / "c.parquet")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
