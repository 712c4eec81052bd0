"""Training: configs, outputs, metrics against an independent evaluation, resume, and the
paper's two behaviours (generalizing on MNIST, memorizing random labels)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from singledir.checkpoint import load_checkpoint
from singledir.data import load_dataset
from singledir.errors import ConfigError
from singledir.models import build_model
from singledir.train import METRIC_COLUMNS, TrainConfig, lr_factor, train

FAST = {
    "dataset": "digits",
    "widths": [32, 32],
    "epochs": 4,
    "batch_size": 64,
    "optimizer": "adam",
    "lr": 3e-3,
    "device": "cpu",
    "threads": 1,  # one thread: small nets on a shared, busy machine run far faster
}


def _mnist_dir() -> Path | None:
    roots = [os.environ.get("SINGLEDIR_DATA", ""), str(Path(__file__).parents[2] / "shared/data")]
    for root in roots:
        if root and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(root)
    return None


def reference_eval(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Loss and accuracy by a plain loop over samples in float64 NumPy (no batching tricks)."""
    model.eval()
    with torch.no_grad():
        logits = np.concatenate([model(x[i : i + 1]).double().numpy() for i in range(len(x))])
    yy = y.numpy()
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(yy)), yy].mean()), float((logits.argmax(1) == yy).mean())


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


# ------------------------------------------------------------------------------ config


def test_config_round_trip_and_defaults():
    cfg = TrainConfig(**{**FAST, "widths": "64,32", "snapshot_epochs": [3, 1, 3]})
    assert cfg.widths == [64, 32] and cfg.snapshot_epochs == [1, 3]
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert TrainConfig.from_dict(d) == cfg
    assert TrainConfig(epochs=10, snapshot_every=5).snapshot_set() == [0, 5, 10]
    assert TrainConfig(epochs=4, snapshot_every=3, snapshot_epochs=[1]).snapshot_set() == [0, 1, 3]
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_dict({**d, "learning_rate": 1})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dataset": "svhn"}, "unknown dataset"),
        ({"model": "vgg"}, "unknown model"),
        ({"widths": "a,b"}, "do not parse"),
        ({"corrupt": 1.2}, r"outside \[0, 1\]"),
        ({"dropout": 1.0}, "dropout"),
        ({"optimizer": "rmsprop"}, "unknown optimizer"),
        ({"schedule": "linear"}, "unknown schedule"),
        ({"lr": 0}, "learning rate"),
        ({"lr": float("nan")}, "learning rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"snapshot_epochs": [50]}, "snapshot epochs"),
        ({"device": "tpu"}, "unknown device"),
        ({"train_size": 0}, "train_size"),
        ({"momentum": 1.5}, "momentum"),
    ],
)
def test_config_rejects(kwargs, match):
    with pytest.raises(ConfigError, match=match) as exc:
        TrainConfig(**kwargs)
    assert "\n" not in str(exc.value)


def test_lr_schedules():
    assert [lr_factor("constant", e, 4) for e in range(4)] == [1, 1, 1, 1]
    cos = [lr_factor("cosine", e, 4) for e in range(4)]
    np.testing.assert_allclose(cos, [0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])
    assert [lr_factor("step", e, 8) for e in range(8)] == pytest.approx(
        [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01]
    )


# ------------------------------------------------------------------------------ a run


def test_run_outputs_and_metrics_match_independent_evaluation(tmp_path):
    cfg = TrainConfig(**{**FAST, "corrupt": 0.3, "snapshot_every": 2, "dropout": 0.1})
    caller_state = torch.get_rng_state()
    res = train(cfg, tmp_path / "run", progress=False)
    assert torch.equal(torch.get_rng_state(), caller_state)  # caller's RNG untouched
    out = tmp_path / "run"
    assert res.checkpoint == out / "ckpt.pt" and res.checkpoint.is_file()
    assert sorted(p.name for p in out.iterdir()) == [
        "ckpt.pt",
        "config.json",
        "metrics.parquet",
        "snapshots",
    ]
    assert res.snapshots == {e: out / "snapshots" / f"epoch_{e:04d}.pt" for e in (0, 2, 4)}
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()
    metrics = pl.read_parquet(out / "metrics.parquet")
    assert metrics.columns == list(METRIC_COLUMNS) and metrics.equals(res.metrics)
    assert metrics["epoch"].to_list() == [1, 2, 3, 4]
    assert metrics["lr"].to_list() == [3e-3] * 4

    ck = load_checkpoint(res.checkpoint)
    assert ck.meta["epoch"] == 4 and ck.meta["corrupt"] == 0.3 and ck.meta["seed"] == 0
    train_data = load_dataset("digits", "train", corrupt=0.3, corrupt_seed=0)
    test_data = load_dataset("digits", "test")
    assert ck.meta["changed_fraction"] == pytest.approx(train_data.changed_fraction)
    last = metrics.row(-1, named=True)
    test_loss, test_acc = reference_eval(ck.model, test_data.x, test_data.y)
    train_loss, train_acc = reference_eval(ck.model, train_data.x, train_data.y)
    _, train_true_acc = reference_eval(ck.model, train_data.x, train_data.true_y)
    assert last["test_acc"] == pytest.approx(test_acc, abs=1e-12)
    assert last["train_acc"] == pytest.approx(train_acc, abs=1e-12)
    assert last["train_true_acc"] == pytest.approx(train_true_acc, abs=1e-12)
    assert last["test_loss"] == pytest.approx(test_loss, rel=1e-5)
    assert last["train_loss"] == pytest.approx(train_loss, rel=1e-5)
    assert ck.meta["metrics"] == pytest.approx(last)

    # Snapshot 0 is the untrained network: the seeded initialization, rebuilt independently.
    torch.manual_seed(cfg.seed)
    fresh = build_model(ck.config)
    snap0 = _weights(res.snapshots[0])
    assert all(torch.equal(v, snap0[k]) for k, v in fresh.state_dict().items())
    snap4 = _weights(res.snapshots[4])
    final = ck.model.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in snap4.items())


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    a = train(FAST, tmp_path / "a", progress=False)
    b = train(FAST, tmp_path / "b", progress=False)
    c = train({**FAST, "seed": 1}, tmp_path / "c", progress=False)
    assert a.metrics.equals(b.metrics)
    assert not a.metrics.equals(c.metrics)


@pytest.mark.parametrize(
    "extra",
    [
        {"optimizer": "sgd", "lr": 0.05, "schedule": "cosine", "weight_decay": 1e-4},
        {"optimizer": "adam", "schedule": "step"},
    ],
    ids=["sgd-cosine", "adam-step"],
)
def test_resumed_run_equals_uninterrupted_run(tmp_path, extra):
    cfg = {**FAST, **extra, "epochs": 5, "dropout": 0.3, "batchnorm": True, "batch_size": 50}
    cfg["snapshot_epochs"] = [1, 3]
    full = train(cfg, tmp_path / "full", progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_2(row):
        if row["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "cut", progress=False, on_epoch=stop_after_2)
    assert (tmp_path / "cut" / "resume.pt").is_file()
    assert not (tmp_path / "cut" / "ckpt.pt").exists()
    assert torch.load(tmp_path / "cut" / "resume.pt", weights_only=True)["epoch"] == 2
    resumed = train(cfg, tmp_path / "cut", progress=False)
    assert resumed.resumed_from == 2
    assert not (tmp_path / "cut" / "resume.pt").exists()
    a, b = _weights(full.checkpoint), _weights(resumed.checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert full.metrics.equals(resumed.metrics)
    assert sorted(resumed.snapshots) == [1, 3]
    s_full, s_cut = _weights(full.snapshots[3]), _weights(resumed.snapshots[3])
    assert all(torch.equal(s_full[k], s_cut[k]) for k in s_full)

    # A finished run is returned as is; a different config in the same folder is refused.
    again = train(cfg, tmp_path / "cut", progress=False)
    assert again.resumed_from is None and again.metrics.equals(full.metrics)
    with pytest.raises(ConfigError, match="different lr"):
        train({**cfg, "lr": 0.5}, tmp_path / "cut", progress=False)
    short = {**cfg, "lr": 0.5, "epochs": 1, "snapshot_epochs": [1]}
    fresh = train(short, tmp_path / "cut", progress=False, resume=False)
    assert fresh.metrics.height == 1 and sorted(fresh.snapshots) == [1]
    assert not (tmp_path / "cut" / "snapshots" / "epoch_0003.pt").exists()


def test_running_train_metrics(tmp_path):
    res = train({**FAST, "train_metrics": "running", "epochs": 2}, tmp_path, progress=False)
    row = res.metrics.row(-1, named=True)
    assert 0.0 < row["train_acc"] <= 1.0 and row["train_loss"] > 0
    assert row["train_acc"] == row["train_true_acc"]  # no corruption


def test_mlp_generalizes_on_real_mnist(tmp_path):
    root = _mnist_dir()
    if root is None:
        pytest.skip("real MNIST not found in $SINGLEDIR_DATA or ../shared/data")
    cfg = {
        "dataset": "mnist",
        "data_dir": str(root),
        "train_size": 20000,
        "widths": [256, 256],
        "epochs": 3,
        "batch_size": 100,
        "optimizer": "adam",
        "lr": 1e-3,
        "train_metrics": "running",
        "device": "cpu",
        "threads": 1,
    }
    res = train(cfg, tmp_path, progress=False)
    test = load_dataset("mnist", "test", data_dir=root)
    ck = load_checkpoint(res.checkpoint)
    with torch.no_grad():
        correct = int((ck.model(test.x).argmax(1) == test.y).sum())
    assert correct / len(test) >= 0.95
    assert res.final["test_acc"] == pytest.approx(correct / len(test), abs=1e-12)


def test_mlp_memorizes_random_labels(tmp_path):
    cfg = {
        **FAST,
        "train_size": 500,  # a small set: memorized in a few seconds
        "widths": [256, 256],
        "corrupt": 1.0,
        "epochs": 40,
        "batch_size": 32,
        "lr": 1e-3,
        "train_metrics": "running",
    }
    res = train(cfg, tmp_path, progress=False)
    train_data = load_dataset("digits", "train", train_size=500, corrupt=1.0)
    test_data = load_dataset("digits", "test")
    ck = load_checkpoint(res.checkpoint)
    _, train_acc = reference_eval(ck.model, train_data.x, train_data.y)
    _, test_acc = reference_eval(ck.model, test_data.x, test_data.y)
    _, true_acc = reference_eval(ck.model, train_data.x, train_data.true_y)
    assert train_acc > 0.6  # chance is 0.1: the random labels were learned by heart
    assert test_acc < 0.2 and true_acc < 0.2  # and nothing that generalizes


def test_training_on_an_imagefolder_tree(tmp_path):
    from PIL import Image

    colors = [(230, 20, 20), (20, 230, 20), (20, 20, 230)]
    for split, n in (("train", 6), ("val", 2)):
        for c, color in enumerate(colors):
            for i in range(n):
                path = tmp_path / "imagenet" / split / f"class{c}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (12, 10), color).save(path)
    cfg = {
        **FAST,
        "dataset": "imagenet",
        "data_dir": str(tmp_path),
        "image_size": 8,
        "num_workers": 0,
        "epochs": 15,
        "batch_size": 6,
        "lr": 1e-2,
        "corrupt": 0.5,
    }
    res = train(cfg, tmp_path / "run", progress=False)
    ck = load_checkpoint(res.checkpoint)
    assert ck.config["in_shape"] == [3, 8, 8] and ck.config["num_classes"] == 3
    assert ck.meta["num_train"] == 18 and ck.meta["corrupt"] == 0.5
    assert res.metrics.height == 15
    # Colors are trivially separable: the test split (never corrupted) is learned.
    assert res.final["test_acc"] == 1.0


def _train_in_worker(out_dir: str) -> list[float]:
    res = train({**FAST, "epochs": 2}, out_dir, progress=False)
    return res.metrics["test_acc"].to_list()


def test_train_runs_in_a_spawned_worker_process(tmp_path):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    here = train({**FAST, "epochs": 2}, tmp_path / "here", progress=False)
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        there = pool.submit(_train_in_worker, str(tmp_path / "there")).result(timeout=300)
    assert there == here.metrics["test_acc"].to_list()
