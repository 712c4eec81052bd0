"""Training with the AUC monitor, a validation split, early stopping and the selectivity
regularizer: every number against an independent recomputation from the saved snapshots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from singledir import ablation_auc, ablation_curves
from singledir.activations import record_activation_arrays
from singledir.checkpoint import load_checkpoint
from singledir.data import load_dataset
from singledir.errors import ConfigError
from singledir.stats import class_selectivity
from singledir.train import TrainConfig, train

FAST = {
    "dataset": "digits",
    "widths": [24, 24],
    "epochs": 4,
    "batch_size": 64,
    "optimizer": "adam",
    "lr": 3e-3,
    "device": "cpu",
    "threads": 1,
}


def _weights(path):
    return load_checkpoint(path).model.state_dict()


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _by_hand_subset(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def test_auc_column_equals_ablation_of_each_snapshot(tmp_path):
    cfg = {
        **FAST,
        "corrupt": 0.3,
        "seed": 2,
        "snapshot_every": 2,
        "auc_every": 2,
        "auc_samples": 250,
        "auc_orderings": 2,
        "auc_levels": 9,
    }
    res = train(cfg, tmp_path / "run", progress=False)
    auc = res.metrics["auc"].to_list()
    assert [a is None for a in auc] == [True, False, True, False]  # null when not monitored
    # The documented subset: 250 of the training samples (labels as trained), seeded by seed.
    data = load_dataset("digits", "train", corrupt=0.3, corrupt_seed=0)
    idx = _by_hand_subset(len(data), 250, seed=2)
    x, y = data.x[idx], data.y[idx]
    assert (y != data.true_y[idx]).any()  # the corrupted labels are the ones used
    for epoch in (2, 4):
        model = load_checkpoint(res.snapshots[epoch]).model
        curves = ablation_curves(model, (x, y), orderings=2, levels=9, seed=2, progress=False)
        assert auc[epoch - 1] == ablation_auc(curves)
    # Monitoring leaves training untouched: same weights and metrics as an unmonitored run.
    plain = train({**cfg, "auc_every": 0}, tmp_path / "plain", progress=False)
    assert _same(_weights(res.checkpoint), _weights(plain.checkpoint))
    assert res.metrics.drop("auc").equals(plain.metrics.drop("auc"))
    assert plain.metrics["auc"].null_count() == 4 and plain.best == {}
    assert res.best["auc"] == tmp_path / "run" / "best_auc.pt"
    best_epoch = 2 if auc[1] >= auc[3] else 4
    assert load_checkpoint(res.best["auc"]).meta["epoch"] == best_epoch


def test_auc_column_equals_the_ablate_command(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        *("train", "--dataset", "digits", "--widths", "16,16", "--threads", "1"),
        *("--device", "cpu", "--epochs", "2", "--snapshot-every", "1", "--corrupt", "0.2"),
        *("--auc-every", "1", "--auc-samples", "100000", "--auc-orderings", "2"),
        *("--auc-levels", "11", "--quiet", "--out", str(out)),
    )
    assert code == 0, err
    metrics = load_checkpoint(out / "ckpt.pt").meta["metrics"]
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        *("ablate", str(out / "snapshots" / "epoch_0002.pt"), "--orderings", "2"),
        *("--levels", "11", "--seed", "0", "--no-plot", "--quiet"),
        *("--out", str(tmp_path / "curves.parquet")),
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "curves.json").read_text())
    assert summary["corrupt"] == 0.2
    assert metrics["auc"] == pytest.approx(summary["auc"], abs=1e-12)


@pytest.mark.parametrize("criterion", ["auc", "val-loss"])
def test_early_stopping_keeps_the_best_epoch_and_resumes(tmp_path, criterion):
    cfg = {
        **FAST,
        "epochs": 25,
        "corrupt": 0.8,
        "train_size": 300,
        "lr": 1e-2,
        "snapshot_every": 1,
        "early_stop": criterion,
        "patience": 2,
        "val_fraction": 0.2,
        "auc_every": 1 if criterion == "auc" else 0,
        "auc_samples": 120,
        "auc_levels": 6,
    }
    full = train(cfg, tmp_path / "full", progress=False)
    column = "auc" if criterion == "auc" else "val_loss"
    values = full.metrics[column].to_numpy()
    best = int(np.argmax(values) if criterion == "auc" else np.argmin(values)) + 1
    last = int(full.metrics["epoch"][-1])
    assert full.stopped_early and last == best + 2 and last < 25
    # No later epoch improved on the best (strictly), and the run stopped after 2 that didn't.
    later = values[best:] - values[best - 1]
    assert (later <= 0).all() if criterion == "auc" else (later >= 0).all()
    kept = full.best[criterion]
    assert kept.name == ("best_auc.pt" if criterion == "auc" else "best_val_loss.pt")
    ck = load_checkpoint(kept)
    assert ck.meta["epoch"] == best and ck.meta["best_by"] == criterion
    assert _same(ck.model.state_dict(), _weights(full.snapshots[best]))
    assert load_checkpoint(full.checkpoint).meta["stopped_early"] is True
    assert sorted(full.snapshots) == list(range(0, last + 1))

    class Interrupt(Exception):
        pass

    def stop_at(row):
        if row["epoch"] == best + 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "cut", progress=False, on_epoch=stop_at)
    state = torch.load(tmp_path / "cut" / "resume.pt", weights_only=True)
    assert state["trackers"][criterion]["best_epoch"] == best
    if criterion == "auc":
        assert len(state["monitor"]["history"]) == best + 1
    resumed = train(cfg, tmp_path / "cut", progress=False)
    assert resumed.resumed_from == best + 1
    assert resumed.metrics.equals(full.metrics)
    assert _same(_weights(resumed.checkpoint), _weights(full.checkpoint))
    assert _same(_weights(resumed.best[criterion]), _weights(kept))
    # The finished (stopped) run is recognised as done.
    again = train(cfg, tmp_path / "cut", progress=False)
    assert again.resumed_from is None and again.metrics.equals(full.metrics)


def test_validation_split_follows_its_rule(tmp_path):
    cfg = {**FAST, "epochs": 2, "val_fraction": 0.25, "data_seed": 3, "snapshot_every": 2}
    res = train(cfg, tmp_path, progress=False)
    data = load_dataset("digits", "train", seed=3)
    n_val = round(0.25 * len(data))
    val_idx = _by_hand_subset(len(data), n_val, seed=3)
    keep = np.setdiff1d(np.arange(len(data)), val_idx.numpy())
    ck = load_checkpoint(res.snapshots[2])
    assert ck.meta["num_train"] == keep.size and ck.meta["val_fraction"] == 0.25
    model = ck.model.eval()
    with torch.no_grad():
        logits = model(data.x[val_idx]).double()
        train_logits = model(data.x[torch.as_tensor(keep)]).double()
    row = res.metrics.row(-1, named=True)
    loss = torch.nn.functional.cross_entropy(logits, data.y[val_idx])
    assert row["val_loss"] == pytest.approx(float(loss), rel=1e-5)
    assert row["val_acc"] == pytest.approx(
        float((logits.argmax(1) == data.y[val_idx]).double().mean())
    )
    train_acc = float((train_logits.argmax(1) == data.y[torch.as_tensor(keep)]).double().mean())
    assert row["train_acc"] == pytest.approx(train_acc)


def _mean_selectivity(ckpt) -> float:
    model = load_checkpoint(ckpt).model.eval()
    test = load_dataset("digits", "test")
    arrays, labels = record_activation_arrays(model, test, "all", progress=False)
    return float(np.mean(np.concatenate([class_selectivity(a, labels) for a in arrays.values()])))


def test_selectivity_regularizer_orders_mean_selectivity(tmp_path):
    cfg = {**FAST, "epochs": 8, "widths": [32, 32]}
    results = {}
    for alpha in (1.0, 0.0, -1.0):
        res = train({**cfg, "selectivity_reg": alpha}, tmp_path / f"a{alpha}", progress=False)
        assert load_checkpoint(res.checkpoint).meta["selectivity_reg"] == alpha
        assert load_checkpoint(res.checkpoint).meta["train_config"]["selectivity_reg"] == alpha
        results[alpha] = _mean_selectivity(res.checkpoint)
    assert results[1.0] > results[0.0] > results[-1.0], results
    with pytest.raises(ConfigError, match="selectivity-reg: unknown site 'nosuch'"):
        train({**cfg, "selectivity_reg": 1.0, "selectivity_layers": "nosuch"}, tmp_path / "x")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"auc_every": -1}, "auc_every -1 must be"),
        ({"patience": 3}, "needs a criterion: add --early-stop"),
        ({"early_stop": "loss"}, "unknown early-stop criterion 'loss': choose auc or val-loss"),
        ({"early_stop": "auc"}, "pass --auc-every"),
        ({"early_stop": "val-loss"}, "pass --val-fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"selectivity_reg": float("inf")}, "finite"),
        ({"auc_levels": 1}, "auc_levels"),
    ],
)
def test_config_rejects_monitoring_options(kwargs, match):
    with pytest.raises(ConfigError, match=match) as exc:
        TrainConfig(**kwargs)
    assert "\n" not in str(exc.value)


BASE = ["train", "--dataset", "digits", "--widths", "8", "--threads", "1", "--device", "cpu"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--auc-every", "0"], "--auc-every"),
        (["--auc-every", "-2"], "--auc-every"),
        (["--patience", "3"], "--patience 3 needs a criterion: add --early-stop"),
        (["--early-stop", "accuracy"], "unknown early-stop criterion 'accuracy'"),
        (["--selectivity-reg", "1", "--selectivity-layers", "fc9"], "unknown site 'fc9'"),
        (["--selectivity-reg", "nan"], "--selectivity-reg"),
        (["--auc-levels", "1", "--auc-every", "1"], "--auc-levels"),
    ],
)
def test_bad_monitoring_input_is_one_line(tmp_path, monkeypatch, capsys, args, message):
    out = tmp_path / "r"
    code, _, err = run_cli(monkeypatch, capsys, *BASE, "--epochs", "1", *args, "--out", str(out))
    assert code == 2, err
    assert err.startswith("error:") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (out / "ckpt.pt").exists()


def test_cli_early_stop_reports_the_best_epoch(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        *BASE,
        *("--epochs", "3", "--early-stop", "val-loss", "--patience", "1", "--out", str(out)),
    )
    assert code == 0, err
    assert "best val-loss: epoch" in err and (out / "best_val_loss.pt").is_file()
    cfg = load_checkpoint(out / "ckpt.pt").meta["train_config"]
    assert cfg["val_fraction"] == 0.1 and cfg["patience"] == 1 and cfg["auc_every"] == 0
