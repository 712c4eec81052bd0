"""The paper's effects on real MNIST with the quick preset (a few size flags lowered so each
test stays under a minute on two cores). Skipped when MNIST is not available."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps
from singledir.experiments import run_experiment
from singledir.report import HOLDS


def _mnist_dir() -> Path | None:
    root = os.environ.get("SINGLEDIR_DATA")
    candidates = [Path(root) / "mnist"] if root else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    for c in candidates:
        if (c / "train-images-idx3-ubyte.gz").exists() or (c / "train-images-idx3-ubyte").exists():
            return c
    return None


MNIST = _mnist_dir()
pytestmark = pytest.mark.skipif(MNIST is None, reason="MNIST not found (set SINGLEDIR_DATA)")


def test_mnist_quick_corruption_auc_falls(tmp_path: Path) -> None:
    over = {
        "dataset": "mnist",
        "data_dir": str(MNIST),
        "train_size": 1000,
        # 5 nets: the exact permutation test can reach p = 1/120 (3 nets: never below 1/6)
        "fractions": (0.0, 0.25, 0.5, 0.75, 1.0),
        "orderings": 5,
        "noise_repeats": 1,
    }
    out = run_experiment("corruption", "quick", over, tmp_path / "c", progress=False)
    runs = pl.read_parquet(out.out_dir / "runs.parquet").sort("corrupt")
    auc = runs["auc"].to_numpy()
    assert np.all(np.diff(auc) < 0), auc  # strictly falling with corruption
    assert out.claims[0].verdict == HOLDS and out.claims[0].p_value == pytest.approx(1 / 120)
    assert runs["train_acc"].min() > 0.9  # the nets fit their (corrupted) labels


def test_mnist_quick_training_auc_falls_as_test_loss_rises(tmp_path: Path) -> None:
    over = {
        "dataset": "mnist",
        "data_dir": str(MNIST),
        "epochs": 24,
        "snapshot_every": 2,
        "seeds": 1,
        "orderings": 5,
    }
    out = run_experiment("training", "quick", over, tmp_path / "t", progress=False)
    epochs = pl.read_parquet(out.out_dir / "epochs.parquet").sort("epoch")
    i = int(np.argmin(epochs["test_loss"].to_numpy()))
    after = epochs.slice(i)
    assert after.height >= 4  # the test loss does rise
    rho = sps.spearmanr(after["test_loss"], after["auc"]).statistic
    assert rho < -0.3
    assert out.claims[0].verdict == HOLDS
