"""Fig. 3: within an ensemble of nets that differ only in their seed, those that generalize
worse rely more on single directions.

Every net has the same topology, data and hyper-parameters; only the seed of initialization
and batch order differs. Generalization error is the gap between training and test accuracy
(the paper's nets fit their training set, so it is nearly the test error). Claim: AUC and
generalization error are negatively correlated; the worst five nets' ablation curves lie
below the best five's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from singledir.curves import net_bands
from singledir.experiments import figures
from singledir.experiments.common import (
    analysis_params,
    claim_seed_of,
    load_model,
    ordering_aucs,
    run_ablation,
    with_net_auc_intervals,
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
from singledir.report import Claim, Section, correlation_claim, difference_claim, fmt

NAME = "ensemble"
TITLE = "Nets that generalize worse rely more on single directions (Fig. 3)"
FIGURE = "Fig. 3"


def plan(s: Settings) -> list[dict[str, Any]]:
    """One run per ensemble member (seed); data subset and everything else fixed."""
    return [
        make_spec(
            f"seed{seed}",
            {"seed": seed},
            train_config(s, seed=seed),
            analysis_params(s),
        )
        for seed in seeds_of(s, s.ensemble_size)
    ]


def run(spec: dict[str, Any], run_dir: Path, timer: PhaseTimer) -> dict[str, Any]:
    """Train one member; ablation curves on its training set."""
    result = train_net(spec, run_dir, timer)
    a = spec["analysis"]
    model = load_model(result.checkpoint)
    data = training_data(spec["train"], a["ablation_samples"])
    _, auc = run_ablation(model, data, a, int(spec["condition"]["seed"]), timer, run_dir)
    return {"auc": auc, **final_metrics(result)}


def summarize(s: Settings, records: list[RunRecord], out_dir: Path, timer: PhaseTimer) -> Section:
    """Best/worst-five curves, AUC against generalization error, and the verdicts."""
    fig_dir = out_dir / "figures"
    with timer.phase("statistics"):
        runs = pl.DataFrame(
            [
                {
                    "seed": int(r.condition["seed"]),
                    "auc": float(r.result["auc"]),
                    "train_acc": float(r.result["train_acc"]),
                    "test_acc": float(r.result["test_acc"]),
                    "test_loss": float(r.result["test_loss"]),
                    "gen_error": float(r.result["train_acc"]) - float(r.result["test_acc"]),
                    "run_id": r.run_id,
                }
                for r in records
            ]
        ).sort("gen_error")
        curves = collect_table(records, "curves.parquet")
        write_table(curves, out_dir / "curves.parquet")
        write_table(runs, out_dir / "runs.parquet")
        k = max(1, min(5, runs.height // 2))
        best = runs.head(k)["seed"].to_list()
        worst = runs.tail(k)["seed"].to_list()
        grouped = curves.with_columns(
            pl.when(pl.col("seed").is_in(best))
            .then(pl.lit(f"best {k}"))
            .when(pl.col("seed").is_in(worst))
            .then(pl.lit(f"worst {k}"))
            .otherwise(pl.lit("other"))
            .alias("group")
        ).filter(pl.col("group") != "other")
        # the spread between nets (each net's curve averaged over its orderings), the
        # variability the best/worst comparison is about
        summary = net_bands(grouped, "fraction_ablated", "accuracy", by="group")
        aucs = ordering_aucs(curves)
        claims: list[Claim] = [
            correlation_claim(
                FIGURE,
                "Across nets differing only in seed, the area under the ablation curve is "
                "negatively correlated with generalization error.",
                runs["gen_error"].to_numpy(),
                [aucs[r] for r in runs["run_id"].to_list()],
                expect="negative",
                what="nets",
                min_points=4,
                seed=claim_seed_of(s, NAME, "correlation"),
            ),
            difference_claim(
                FIGURE,
                f"The {k} nets that generalize best are more robust to ablation than the {k} "
                "that generalize worst.",
                [aucs[r] for r in runs.head(k)["run_id"].to_list()],
                [aucs[r] for r in runs.tail(k)["run_id"].to_list()],
                larger_name=f"best {k}",
                smaller_name=f"worst {k}",
                what="AUC",
                seed=claim_seed_of(s, NAME, "best_worst"),
            ),
        ]
    with timer.phase("report"):
        figs = [
            (
                f"Ablation curves of the {k} best and {k} worst generalizing nets "
                f"(mean +/- std over the nets of each group; each net's curve is its mean over "
                f"{s.orderings} orderings)",
                figures.curves_figure(
                    summary,
                    fig_dir / "ensemble_best_worst_curves.png",
                    x="fraction_ablated",
                    y="mean",
                    std="std",
                    group="group",
                    title=f"Best vs worst generalizers ({s.dataset} {s.model})",
                    xlabel="fraction of units ablated",
                    ylabel="training accuracy",
                    cmap="coolwarm",
                ),
            ),
            (
                "Area under the ablation curve against generalization error, one point per net",
                figures.scatter_figure(
                    runs,
                    fig_dir / "ensemble_auc_vs_generalization.png",
                    x="gen_error",
                    y="auc",
                    title=f"{runs.height} nets, seeds only differ",
                    xlabel="generalization error (train acc - test acc)",
                    ylabel="area under ablation curve",
                    annotate=f"Spearman rho = {claims[0].brief()}",
                ),
            ),
        ]
    spread = float(np.ptp(runs["gen_error"].to_numpy()))
    return Section(
        name=NAME,
        title=TITLE,
        description=(
            f"{runs.height} nets ({s.model} on {s.dataset}, "
            f"{s.train_size or 'all'} training samples) identical except for their seed; "
            f"cumulative ablation on the training set ({s.orderings} orderings, {s.levels} "
            "levels, all layers)."
        ),
        claims=claims,
        figures=figs,
        tables=[
            (
                "Nets, sorted by generalization error (AUC interval: 95% bootstrap over the "
                "net's orderings)",
                with_net_auc_intervals(runs, aucs, claim_seed_of(s, NAME, "table"))
                .sort("gen_error")
                .drop("run_id"),
            )
        ],
        notes=[
            f"Generalization error spans {fmt(spread)} across the ensemble; a narrow spread "
            "makes any correlation noisy (the paper used 200 CIFAR-10 nets)."
        ],
    )
