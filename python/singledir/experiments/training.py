"""Fig. 4a,b: over training, reliance on single directions tracks overfitting.

Snapshots of each net every ``snapshot_every`` epochs; for each snapshot, train and test loss
and the AUC of its cumulative ablation curve on the training set. Claim: once the test loss
starts rising (after its minimum), AUC falls as the test loss rises (negative correlation).

Early snapshots have not yet fit their training set, so the raw area mixes robustness with
training accuracy; the AUC here is *relative*: each curve divided by its unablated accuracy
(``auc_absolute`` keeps the raw area).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from singledir.claims import ALPHA
from singledir.experiments import figures
from singledir.experiments.common import (
    analysis_params,
    auc_value,
    claim_seed_of,
    load_model,
    run_ablation,
)
from singledir.experiments.runner import (
    PhaseTimer,
    RunRecord,
    collect_table,
    final_metrics,
    make_spec,
    seeds_of,
    train_config,
    train_net,
    training_data,
    write_run_table,
)
from singledir.experiments.settings import Settings
from singledir.inference import (
    N_BOOTSTRAP,
    as_units,
    bootstrap_interval,
    min_detectable_correlation,
    permutation_test_mean_correlation,
    spearman,
    verdict_from_interval,
)
from singledir.io import write_table
from singledir.report import INCONCLUSIVE, Claim, Section, correlations, fmt

NAME = "training"
TITLE = "Over training, AUC falls as the test loss rises (Fig. 4a, b)"
FIGURE = "Fig. 4a,b"


def plan(s: Settings) -> list[dict[str, Any]]:
    """One run per seed, with snapshots every ``snapshot_every`` epochs."""
    return [
        make_spec(
            f"seed{seed}",
            {"seed": seed},
            train_config(
                s, seed=seed, snapshot_every=s.snapshot_every, corrupt=s.corrupt, corrupt_seed=seed
            ),
            analysis_params(s),
        )
        for seed in seeds_of(s)
    ]


def run(spec: dict[str, Any], run_dir: Path, timer: PhaseTimer) -> dict[str, Any]:
    """Train with snapshots; ablation curves of every snapshot on the training set."""
    result = train_net(spec, run_dir, timer)
    a = spec["analysis"]
    seed = int(spec["condition"]["seed"])
    data = training_data(spec["train"], a["ablation_samples"])
    metrics: pl.DataFrame = result.metrics
    curves_all = []
    rows = []
    for epoch in sorted(result.snapshots):
        match = metrics.filter(pl.col("epoch") == epoch)
        if match.height == 0:
            continue  # the snapshot before training has no epoch metrics
        model = load_model(result.snapshots[epoch])
        df, auc = run_ablation(model, data, a, seed, timer)
        with timer.phase("statistics"):
            auc_rel = auc_value(df, relative=True)
        curves_all.append(df.with_columns(pl.lit(int(epoch)).alias("epoch")))
        m = match.row(0, named=True)
        rows.append(
            {
                "epoch": int(epoch),
                "auc": auc_rel,
                "auc_absolute": auc,
                "train_loss": float(m["train_loss"]),
                "test_loss": float(m["test_loss"]),
                "train_acc": float(m["train_acc"]),
                "test_acc": float(m["test_acc"]),
            }
        )
    write_run_table(pl.concat(curves_all), run_dir, "curves.parquet")
    write_run_table(pl.DataFrame(rows), run_dir, "epochs.parquet")
    return {"snapshots": len(rows), **final_metrics(result)}


def rising_phase(epochs: pl.DataFrame) -> pl.DataFrame:
    """The snapshots from the test-loss minimum on (where the net starts to overfit)."""
    ordered = epochs.sort("epoch")
    i_min = int(np.argmin(ordered["test_loss"].to_numpy()))
    return ordered.slice(i_min)


def _overfitting_claim(epochs: pl.DataFrame, table: pl.DataFrame, seed: int) -> Claim:
    """Mean over seeds of Spearman rho(test loss, AUC) after the test-loss minimum, with a
    bootstrap interval (snapshots resampled within each seed) and a stratified permutation
    p-value (AUC permuted among a seed's snapshots)."""
    usable = []
    for row in table.iter_rows(named=True):
        if row["snapshots_after_min"] >= 3 and np.isfinite(row["spearman_after_min"]):
            rise = rising_phase(epochs.filter(pl.col("seed") == row["seed"]))
            usable.append((rise["test_loss"].to_numpy(), rise["auc"].to_numpy()))
    rhos = table["spearman_after_min"].to_numpy()
    n_snap = int(sum(x.size for x, _ in usable))
    claim = Claim(
        figure=FIGURE,
        claim="Once the test loss rises (after its minimum), the area under the ablation "
        "curve (relative to unablated accuracy) falls as the test loss rises: negative "
        "correlation across epochs.",
        statistic="",
        verdict=INCONCLUSIVE,
        rule="holds when the 95% bootstrap interval (BCa; snapshots after the test-loss "
        "minimum resampled within each seed) of the mean per-seed Spearman rho(test loss, "
        "AUC) lies below 0 and the stratified permutation p (AUC permuted among each seed's "
        f"snapshots) < {ALPHA}; does not hold when it lies above 0; otherwise inconclusive, "
        "also when no seed has 3 snapshots after the minimum. Successive snapshots of one "
        "net are not independent: read p as optimistic",
        n=n_snap,
        null=0.0,
        expected="less",
        test="stratified spearman permutation test",
        detectable=min_detectable_correlation(n_snap),
        seed=seed,
        n_resamples=N_BOOTSTRAP,
        ci_level=0.95,
    )
    prefix = (
        "Spearman rho(test loss, AUC) after the test-loss minimum: "
        + ", ".join(fmt(v, 2) for v in rhos)
        + f" for {table.height} seed(s)"
    )
    if not usable:
        claim.statistic = prefix + " (too few snapshots after the minimum)"
        return claim
    test = permutation_test_mean_correlation(usable, alternative="less", seed=seed)
    samples = [as_units(np.column_stack([x, y])) for x, y in usable]
    ci = bootstrap_interval(
        lambda *groups: float(np.mean([spearman(g[:, 0], g[:, 1]) for g in groups])),
        samples,
        seed=seed,
    )
    claim.estimate = claim.value = test.statistic
    claim.ci = ci.as_list()
    claim.p_value = test.p_value
    claim.verdict = verdict_from_interval(ci, 0.0, "less", test.p_value, alpha=ALPHA)
    claim.statistic = (
        prefix + f"; mean {fmt(test.statistic, 2)} (95% CI [{fmt(ci.low, 2)}, {fmt(ci.high, 2)}]; "
        f"one-sided p = {fmt(test.p_value, 3)}) over {n_snap} snapshots; smallest |rho| "
        f"detected with 80% power over {n_snap} snapshots: {fmt(claim.detectable, 2)}"
    )
    return claim


def summarize(s: Settings, records: list[RunRecord], out_dir: Path, timer: PhaseTimer) -> Section:
    """Loss and AUC trajectories and the correlation once test loss rises."""
    fig_dir = out_dir / "figures"
    with timer.phase("statistics"):
        epochs = collect_table(records, "epochs.parquet").sort(["seed", "epoch"])
        curves = collect_table(records, "curves.parquet")
        write_table(epochs, out_dir / "epochs.parquet")
        write_table(curves, out_dir / "curves.parquet")
        per_seed = []
        for seed in sorted(epochs["seed"].unique()):
            part = epochs.filter(pl.col("seed") == seed)
            rise = rising_phase(part)
            c = correlations(rise["test_loss"].to_numpy(), rise["auc"].to_numpy())
            c_all = correlations(part["test_loss"].to_numpy(), part["auc"].to_numpy())
            c_abs = correlations(rise["test_loss"].to_numpy(), rise["auc_absolute"].to_numpy())
            per_seed.append(
                {
                    "seed": int(seed),
                    "min_test_loss_epoch": int(rise["epoch"][0]),
                    "snapshots_after_min": rise.height,
                    "spearman_after_min": c["spearman"],
                    "pearson_after_min": c["pearson"],
                    "spearman_all_epochs": c_all["spearman"],
                    "spearman_after_min_absolute_auc": c_abs["spearman"],
                }
            )
        table = pl.DataFrame(per_seed)
        claim = _overfitting_claim(epochs, table, claim_seed_of(s, NAME, "rising"))
    with timer.phase("report"):
        figs = [
            (
                "Train and test loss (solid) and ablation AUC (dashed) over training",
                figures.training_figure(
                    epochs,
                    fig_dir / "training_loss_auc.png",
                    title=(
                        f"{s.dataset} {s.model}, {s.train_size or 'all'} samples, "
                        f"{fmt(s.corrupt * 100, 0)}% labels corrupted"
                    ),
                ),
            ),
            (
                "AUC against test loss for the snapshots after the test-loss minimum",
                figures.scatter_figure(
                    pl.concat(
                        [
                            rising_phase(epochs.filter(pl.col("seed") == sd))
                            for sd in sorted(epochs["seed"].unique())
                        ]
                    ),
                    fig_dir / "training_auc_vs_test_loss.png",
                    x="test_loss",
                    y="auc",
                    group="seed",
                    title="Overfitting phase",
                    xlabel="test loss",
                    ylabel="area under ablation curve (relative)",
                ),
            ),
        ]
    notes = []
    if claim.verdict == INCONCLUSIVE:
        notes.append(
            "The test loss did not rise over enough snapshots: train longer or on fewer "
            "samples (--epochs, --train-size) to enter the overfitting regime."
        )
    return Section(
        name=NAME,
        title=TITLE,
        description=(
            f"{len(records)} net(s) ({s.model} on {s.dataset}, {s.train_size or 'all'} training "
            f"samples, {fmt(s.corrupt * 100, 0)}% of labels corrupted, {s.epochs} epochs) with "
            f"a snapshot every {s.snapshot_every} epochs; "
            f"cumulative ablation of each snapshot on the training set ({s.orderings} "
            "orderings)."
        ),
        claims=[claim],
        figures=figs,
        tables=[("Per seed: where the test loss turns, and the correlations", table)],
        notes=notes,
    )
