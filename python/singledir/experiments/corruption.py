"""Fig. 2: nets trained on increasingly corrupted labels rely more on single directions.

One net per corruption fraction (and seed); on the training set (with the labels each net
was trained on, as in the paper) its cumulative ablation curves over random orderings and
its noise perturbation curves. Claim: the area under the ablation curve (and under the noise
curve) falls as the fraction of corrupted labels rises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from singledir.curves import level_bands
from singledir.experiments import figures
from singledir.experiments.common import (
    analysis_params,
    claim_seed_of,
    load_model,
    mean_by,
    mean_intervals,
    ordering_aucs,
    repeat_areas,
    run_ablation,
    run_noise,
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
)
from singledir.experiments.settings import Settings
from singledir.io import write_table
from singledir.report import Claim, Section, correlation_claim, fmt

NAME = "corruption"
TITLE = "Label corruption and reliance on single directions (Fig. 2)"
FIGURE = "Fig. 2"


def plan(s: Settings) -> list[dict[str, Any]]:
    """One run per corruption fraction and seed."""
    specs = []
    for frac in s.fractions:
        for seed in seeds_of(s):
            train = train_config(s, corrupt=float(frac), corrupt_seed=seed, seed=seed)
            specs.append(
                make_spec(
                    f"corrupt{frac:.2f}-seed{seed}",
                    {"corrupt": float(frac), "seed": seed},
                    train,
                    analysis_params(s),
                )
            )
    return specs


def run(spec: dict[str, Any], run_dir: Path, timer: PhaseTimer) -> dict[str, Any]:
    """Train, then ablation and noise curves on the (corrupted) training set."""
    result = train_net(spec, run_dir, timer)
    a = spec["analysis"]
    seed = int(spec["condition"]["seed"])
    model = load_model(result.checkpoint)
    data = training_data(spec["train"], a["ablation_samples"])
    _, auc = run_ablation(model, data, a, seed, timer, run_dir)
    # the same ablation along random orthonormal directions of each layer (not units)
    _, auc_random = run_ablation(
        model, data, a, seed, timer, run_dir, "curves_random.parquet", directions="random"
    )
    _, nauc = run_noise(model, data, a, seed, timer, run_dir)
    return {"auc": auc, "auc_random": auc_random, "noise_auc": nauc, **final_metrics(result)}


def runs_table(records: list[RunRecord]) -> pl.DataFrame:
    """One row per run: corruption, seed, AUCs and final metrics."""
    rows = []
    for r in records:
        res = r.result
        rows.append(
            {
                "corrupt": float(r.condition["corrupt"]),
                "seed": int(r.condition["seed"]),
                "auc": float(res["auc"]),
                "auc_random": float(res.get("auc_random", float("nan"))),
                "noise_auc": float(res["noise_auc"]),
                "train_acc": float(res.get("train_acc", float("nan"))),
                "test_acc": float(res.get("test_acc", float("nan"))),
                "run_id": r.run_id,
            }
        )
    return pl.DataFrame(rows).sort(["corrupt", "seed"])


def _fraction_intervals(
    runs: pl.DataFrame, replicates: dict[str, np.ndarray], column: str, seed: int
) -> pl.DataFrame:
    groups: dict[float, list[np.ndarray]] = {}
    for row in runs.iter_rows(named=True):
        groups.setdefault(float(row["corrupt"]), []).append(replicates[row["run_id"]])
    return mean_intervals(groups, seed, column).rename({"group": "corrupt"}).drop("units")


def summarize(s: Settings, records: list[RunRecord], out_dir: Path, timer: PhaseTimer) -> Section:
    """Tables, figures and the verdicts of Fig. 2's claims."""
    fig_dir = out_dir / "figures"
    with timer.phase("statistics"):
        curves = collect_table(records, "curves.parquet")
        noise = collect_table(records, "noise.parquet")
        runs = runs_table(records)
        write_table(curves, out_dir / "curves.parquet")
        write_table(noise, out_dir / "noise.parquet")
        write_table(runs, out_dir / "runs.parquet")
        curve_summary = level_bands(curves, "fraction_ablated", "accuracy", by="corrupt")
        noise_summary = level_bands(noise, "scale", "accuracy", by="corrupt")
        aucs = ordering_aucs(curves)
        noise_reps = repeat_areas(noise)
        random_aucs: dict[str, np.ndarray] = {}
        if all((r.run_dir / "curves_random.parquet").exists() for r in records):
            curves_random = collect_table(records, "curves_random.parquet")
            write_table(curves_random, out_dir / "curves_random.parquet")
            random_aucs = ordering_aucs(curves_random)
        run_ids = runs["run_id"].to_list()
        nets = f"nets ({len(s.fractions)} corruption fractions x {s.seeds} seed(s))"
        claims: list[Claim] = [
            correlation_claim(
                FIGURE,
                "The more labels are corrupted, the more a net relies on single directions: "
                "the area under the cumulative ablation curve falls as corruption rises.",
                runs["corrupt"].to_numpy(),
                [aucs[r] for r in run_ids],
                expect="negative",
                what=nets,
                seed=claim_seed_of(s, NAME, "auc"),
            ),
            correlation_claim(
                FIGURE,
                "The same holds for random noise added to every unit: the area under the noise "
                "perturbation curve falls as corruption rises.",
                runs["corrupt"].to_numpy(),
                [noise_reps[r] for r in run_ids],
                expect="negative",
                what=nets,
                seed=claim_seed_of(s, NAME, "noise_auc"),
                replicates="noise repeats",
            ),
        ]
    with timer.phase("report"):
        figs = [
            (
                "Cumulative ablation curves on the training set, per corruption fraction "
                f"(mean +/- std over {s.orderings} orderings x {s.seeds} seed(s))",
                figures.curves_figure(
                    curve_summary,
                    fig_dir / "corruption_ablation_curves.png",
                    x="fraction_ablated",
                    y="mean",
                    std="std",
                    group="corrupt",
                    group_label="corrupted ",
                    title=f"Ablation curves, {s.dataset} {s.model}",
                    xlabel="fraction of units ablated",
                    ylabel="training accuracy",
                    cmap="viridis",
                ),
            ),
            (
                "Noise perturbation curves on the training set, per corruption fraction",
                figures.curves_figure(
                    noise_summary,
                    fig_dir / "corruption_noise_curves.png",
                    x="scale",
                    y="mean",
                    std="std",
                    group="corrupt",
                    group_label="corrupted ",
                    title=f"Noise curves, {s.dataset} {s.model}",
                    xlabel="noise std (relative to each unit's activation std)",
                    ylabel="training accuracy",
                ),
            ),
            (
                "Area under the ablation curve against label corruption",
                figures.scatter_figure(
                    runs,
                    fig_dir / "corruption_auc.png",
                    x="corrupt",
                    y="auc",
                    title="AUC vs label corruption",
                    xlabel="fraction of labels corrupted",
                    ylabel="area under ablation curve",
                    annotate=f"Spearman rho = {claims[0].brief()}",
                ),
            ),
        ]
    notes = [
        "Training accuracy on the labels each net was trained on (the paper trains to "
        "memorisation): "
        + ", ".join(
            f"{fmt(f, 1)}: {fmt(a, 3)}"
            for f, a in zip(*mean_by(runs, "corrupt", "train_acc"), strict=True)
        )
        + ".",
    ]
    if random_aucs:
        random_claim = correlation_claim(
            FIGURE,
            "",
            runs["corrupt"].to_numpy(),
            [random_aucs[r] for r in run_ids],
            expect="negative",
            what="nets",
            seed=claim_seed_of(s, NAME, "auc_random"),
        )
        notes.append(
            "Ablating random orthonormal directions of each layer instead of units (auc_random "
            "in the table, curves_random.parquet): " + random_claim.statistic + "."
        )
    if np.nanmin(runs["train_acc"].to_numpy()) < 0.9:
        notes.append(
            "Some nets did not reach 90% training accuracy: train longer (--epochs) to "
            "match the paper's memorisation regime."
        )
    return Section(
        name=NAME,
        title=TITLE,
        description=(
            f"{len(records)} nets ({s.model} on {s.dataset}) trained on labels of which a "
            f"fraction {', '.join(fmt(f, 1) for f in s.fractions)} was replaced at random; "
            f"cumulative ablation ({s.orderings} random orderings, {s.levels} levels, all "
            "layers) and Gaussian noise on the training set."
        ),
        claims=claims,
        figures=figs,
        tables=[
            (
                "Per fraction: mean AUC of ablation and noise curves over nets, with 95% "
                "bootstrap intervals (nets resampled, orderings / noise repeats within them)",
                runs.group_by("corrupt")
                .agg(
                    pl.col("train_acc").mean(),
                    pl.col("test_acc").mean(),
                )
                .join(
                    _fraction_intervals(runs, aucs, "auc", claim_seed_of(s, NAME, "table")),
                    on="corrupt",
                )
                .join(
                    _fraction_intervals(
                        runs, noise_reps, "noise_auc", claim_seed_of(s, NAME, "table_noise")
                    ),
                    on="corrupt",
                )
                .join(
                    _fraction_intervals(
                        runs, random_aucs, "auc_random", claim_seed_of(s, NAME, "table_random")
                    )
                    if random_aucs
                    else runs.select("corrupt").unique(),
                    on="corrupt",
                )
                .sort("corrupt"),
            )
        ],
        notes=notes,
    )
