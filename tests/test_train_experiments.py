"""The two experiments beyond the paper, end to end on the tiny preset: `earlystop` (the AUC's
peak against a validation split) and `selectivity-reg` (Leavitt & Morcos 2021); their tables
recomputed from the raw per-run files and the checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_runner import run_cli
from singledir.activations import record_activation_arrays
from singledir.checkpoint import load_checkpoint
from singledir.claims import FAILS, HOLDS, INCONCLUSIVE
from singledir.data import load_dataset
from singledir.errors import ConfigError
from singledir.experiments import (
    EXPERIMENT_NAMES,
    EXPERIMENTS,
    resolve_settings,
    run_experiment,
    selectivity_reg,
)
from singledir.stats import class_selectivity

VERDICTS = {HOLDS, FAILS, INCONCLUSIVE}


@pytest.fixture(scope="module")
def earlystop(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("es") / "earlystop"
    return run_experiment("earlystop", "tiny", None, out, executor="serial", progress=False)


def test_registered_and_in_all():
    assert "earlystop" in EXPERIMENTS and "selectivity-reg" in EXPERIMENTS
    assert EXPERIMENT_NAMES[-1] == "all" and "selectivity-reg" in EXPERIMENT_NAMES
    s = resolve_settings("selectivity-reg", "tiny")
    assert 0.0 in s.selectivity_alphas and min(s.selectivity_alphas) < 0


def test_earlystop_choices_recomputed(earlystop):
    d = earlystop.out_dir
    epochs = pl.read_parquet(d / "epochs.parquet")
    choices = pl.read_parquet(d / "choices.parquet")
    assert epochs["auc"].null_count() == 0 and epochs["val_loss"].null_count() == 0
    for seed in sorted(epochs["seed"].unique().to_list()):
        part = epochs.filter(pl.col("seed") == seed).sort("epoch")
        rows = part.to_dicts()
        by_hand = {
            "auc": max(rows, key=lambda r: r["auc"])["epoch"],  # first of the highest
            "val_loss": min(rows, key=lambda r: r["val_loss"])["epoch"],
            "oracle": min(rows, key=lambda r: r["test_loss"])["epoch"],
        }
        picked = {r["choice"]: r for r in choices.filter(pl.col("seed") == seed).to_dicts()}
        oracle_acc = next(r["test_acc"] for r in rows if r["epoch"] == by_hand["oracle"])
        for name, epoch in by_hand.items():
            assert picked[name]["epoch"] == epoch
            acc = next(r["test_acc"] for r in rows if r["epoch"] == epoch)
            assert picked[name]["gap_to_oracle"] == pytest.approx(oracle_acc - acc, abs=1e-15)
    # The claims: paired differences over seeds, recomputed.
    gaps = {
        name: choices.filter(pl.col("choice") == name).sort("seed")["gap_to_oracle"].to_numpy()
        for name in ("auc", "val_loss")
    }
    first, second = earlystop.claims
    assert first.estimate == pytest.approx(float(np.mean(gaps["auc"] - gaps["val_loss"])))
    assert first.null == 0.02 and first.expected == "less" and first.n == 2
    assert {c.verdict for c in earlystop.claims} <= VERDICTS
    last = np.array(
        [
            epochs.filter(pl.col("seed") == sd).sort("epoch")["test_acc"][-1]
            for sd in sorted(epochs["seed"].unique().to_list())
        ]
    )
    auc_acc = choices.filter(pl.col("choice") == "auc").sort("seed")["test_acc"].to_numpy()
    assert second.estimate == pytest.approx(float(np.mean(auc_acc - last)))
    # Each run's auc column is its monitor's: relative AUC on the tiny ablation sample count.
    run_dir = next((d / "runs").iterdir())
    cfg = json.loads((run_dir / "train" / "config.json").read_text())
    assert cfg["auc_every"] == 1 and cfg["auc_relative"] is True and cfg["val_fraction"] == 0.1
    assert cfg["auc_samples"] == resolve_settings("earlystop", "tiny").ablation_samples
    assert (d / "figures" / "earlystop_gaps.png").is_file()


def test_selectivity_reg_through_the_cli_recomputed(tmp_path: Path, monkeypatch, capsys):
    out = tmp_path / "sr"
    argv = ["reproduce", "selectivity-reg", "--preset", "tiny", "--out", str(out)]
    code, _, err = run_cli(monkeypatch, capsys, *argv, "--executor", "serial", "--quiet")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["experiment"] == "selectivity-reg" and len(manifest["claims"]) == 3
    assert {c["verdict"] for c in manifest["claims"]} <= VERDICTS
    summary = pl.read_parquet(out / "summary.parquet")
    assert sorted(summary["alpha"].unique().to_list()) == [-1.0, 0.0, 1.0]
    for row in summary.to_dicts():
        run_dir = out / "runs" / row["run_id"]
        ck = load_checkpoint(run_dir / "train" / "ckpt.pt")
        # The run's test split: the seeded subset its training evaluated on.
        test = load_dataset("digits", "test", test_size=ck.meta["test_size"], seed=0)
        assert ck.meta["selectivity_reg"] == row["alpha"]
        model = ck.model.eval()
        arrays, labels = record_activation_arrays(model, test, "all", progress=False)
        si = np.concatenate([class_selectivity(a, labels) for a in arrays.values()])
        assert row["selectivity"] == pytest.approx(float(si.mean()), rel=1e-6)
        assert row["test_acc"] == pytest.approx(ck.meta["metrics"]["test_acc"])
    # The regularizer moves selectivity in ALPHA's direction (mean over seeds).
    means = summary.group_by("alpha").agg(pl.col("selectivity").mean()).sort("alpha")
    assert means["selectivity"].is_sorted()
    claim = manifest["claims"][1]
    by_seed = {
        a: dict(zip(p["seed"].to_list(), p["test_acc"].to_list(), strict=True))
        for a, p in ((a, summary.filter(pl.col("alpha") == a)) for a in (-1.0, 0.0))
    }
    diffs = [by_seed[-1.0][k] - by_seed[0.0][k] for k in sorted(by_seed[0.0])]
    assert claim["estimate"] == pytest.approx(float(np.mean(diffs)))
    assert claim["null"] == -selectivity_reg.MARGIN and claim["expected"] == "greater"


def test_selectivity_reg_refuses_alphas_without_a_baseline():
    s = resolve_settings("selectivity-reg", "tiny", {"selectivity_alphas": (0.5, 1.0)})
    with pytest.raises(ConfigError, match="ALPHA 0 on both sides") as exc:
        selectivity_reg.plan(s)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "args,message",
    [
        (["selectivity-reg", "--selectivity-alphas", "1,2"], "ALPHA 0 on both sides"),
        (["selectivity-reg", "--selectivity-alphas", "1,x"], "--selectivity-alphas"),
        (["earlystop", "--val-fraction", "1.5"], "--val-fraction must lie in (0, 1)"),
    ],
)
def test_reproduce_bad_input_is_one_line(tmp_path: Path, monkeypatch, capsys, args, message):
    out = tmp_path / "r"
    code, _, err = run_cli(
        monkeypatch, capsys, "reproduce", *args, "--preset", "tiny", "--out", str(out)
    )
    assert code == 2 and err.startswith("error:") and message in err
    assert err.count("\n") == 1 and not out.exists()
