"""Figs. 5b and 6: batch norm discourages reliance on single directions.

The same net trained with and without batch normalization (several seeds). Claims: nets with
batch norm are more robust to cumulative ablation (higher AUC, on the training set), and
their units are less class-selective and carry less mutual information about the class (on
the test set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from singledir.curves import level_bands
from singledir.experiments import figures
from singledir.experiments.common import (
    analysis_params,
    claim_seed_of,
    load_model,
    ordering_aucs,
    run_ablation,
    unit_table,
    with_net_auc_intervals,
)
from singledir.experiments.runner import (
    PhaseTimer,
    RunRecord,
    collect_table,
    eval_data,
    final_metrics,
    make_spec,
    seeds_of,
    train_config,
    train_net,
    training_data,
    write_run_table,
)
from singledir.experiments.settings import Settings
from singledir.io import write_table
from singledir.report import Section, difference_claim

NAME = "batchnorm"
TITLE = "Batch norm: more robust to ablation, less selective units (Figs. 5b, 6)"
FIGURE_CURVES = "Fig. 5b"
FIGURE_STATS = "Fig. 6"


def _label(bn: bool) -> str:
    return "batch norm" if bn else "no batch norm"


def plan(s: Settings) -> list[dict[str, Any]]:
    """One run per (batch norm on/off, seed)."""
    specs = []
    for bn in (False, True):
        for seed in seeds_of(s):
            train = train_config(s, batchnorm=bn, seed=seed)
            cond = {"batchnorm": _label(bn), "seed": seed}
            specs.append(make_spec(f"bn{int(bn)}-seed{seed}", cond, train, analysis_params(s)))
    return specs


def run(spec: dict[str, Any], run_dir: Path, timer: PhaseTimer) -> dict[str, Any]:
    """Train; ablation curves on the training set; unit statistics on the test set."""
    result = train_net(spec, run_dir, timer)
    a = spec["analysis"]
    model = load_model(result.checkpoint)
    data = training_data(spec["train"], a["ablation_samples"])
    _, auc = run_ablation(model, data, a, int(spec["condition"]["seed"]), timer, run_dir)
    units = unit_table(model, eval_data(spec["train"], a["eval_samples"]), timer)
    write_run_table(units, run_dir, "units.parquet")
    return {
        "auc": auc,
        "mean_selectivity": float(units["selectivity"].mean()),  # type: ignore[arg-type]
        "mean_mutual_info": float(units["mutual_info"].mean()),  # type: ignore[arg-type]
        **final_metrics(result),
    }


def summarize(s: Settings, records: list[RunRecord], out_dir: Path, timer: PhaseTimer) -> Section:
    """Curves with and without batch norm, selectivity and MI distributions, verdicts."""
    fig_dir = out_dir / "figures"
    with timer.phase("statistics"):
        curves = collect_table(records, "curves.parquet")
        units = collect_table(records, "units.parquet")
        write_table(curves, out_dir / "curves.parquet")
        write_table(units, out_dir / "units.parquet")
        runs = pl.DataFrame(
            [
                {
                    "batchnorm": r.condition["batchnorm"],
                    "seed": int(r.condition["seed"]),
                    "auc": float(r.result["auc"]),
                    "mean_selectivity": float(r.result["mean_selectivity"]),
                    "mean_mutual_info": float(r.result["mean_mutual_info"]),
                    "train_acc": float(r.result["train_acc"]),
                    "test_acc": float(r.result["test_acc"]),
                    "run_id": r.run_id,
                }
                for r in records
            ]
        ).sort(["batchnorm", "seed"])
        write_table(runs, out_dir / "runs.parquet")
        summary = level_bands(curves, "fraction_ablated", "accuracy", by="batchnorm")
        on, off = _label(True), _label(False)

        aucs = ordering_aucs(curves)

        def nets(which: str) -> list[str]:
            return sorted({r.run_id for r in records if r.condition["batchnorm"] == which})

        def per_net(which: str, name: str) -> list[Any]:
            return [units.filter(pl.col("run_id") == run)[name].to_numpy() for run in nets(which)]

        claims = [
            difference_claim(
                FIGURE_CURVES,
                "Nets trained with batch norm are more robust to cumulative ablation.",
                [aucs[r] for r in nets(on)],
                [aucs[r] for r in nets(off)],
                larger_name=on,
                smaller_name=off,
                what="AUC",
                seed=claim_seed_of(s, NAME, "auc"),
            ),
            difference_claim(
                FIGURE_STATS,
                "Batch norm lowers class selectivity of units.",
                per_net(off, "selectivity"),
                per_net(on, "selectivity"),
                larger_name=off,
                smaller_name=on,
                what="unit selectivity (mean over a net's units)",
                replicates="units",
                seed=claim_seed_of(s, NAME, "selectivity"),
            ),
            difference_claim(
                FIGURE_STATS,
                "Batch norm lowers the mutual information between units and the class.",
                per_net(off, "mutual_info"),
                per_net(on, "mutual_info"),
                larger_name=off,
                smaller_name=on,
                what="unit mutual information (bits, mean over a net's units)",
                replicates="units",
                seed=claim_seed_of(s, NAME, "mutual_info"),
            ),
        ]
    with timer.phase("report"):
        figs = [
            (
                "Cumulative ablation curves with and without batch norm (training set)",
                figures.curves_figure(
                    summary,
                    fig_dir / "batchnorm_curves.png",
                    x="fraction_ablated",
                    y="mean",
                    std="std",
                    group="batchnorm",
                    title=f"Batch norm, {s.dataset} {s.model}",
                    xlabel="fraction of units ablated",
                    ylabel="training accuracy",
                    cmap="coolwarm",
                ),
            ),
            (
                "Distribution of class selectivity over all units (test set)",
                figures.distribution_figure(
                    units,
                    fig_dir / "batchnorm_selectivity.png",
                    value="selectivity",
                    group="batchnorm",
                    title="Class selectivity",
                    xlabel="class selectivity index",
                ),
            ),
            (
                "Distribution of mutual information with the class over all units (test set)",
                figures.distribution_figure(
                    units,
                    fig_dir / "batchnorm_mutual_info.png",
                    value="mutual_info",
                    group="batchnorm",
                    title="Mutual information",
                    xlabel="mutual information (bits)",
                ),
            ),
        ]
    return Section(
        name=NAME,
        title=TITLE,
        description=(
            f"{s.model} on {s.dataset} with and without batch norm before every ReLU, "
            f"{s.seeds} seed(s) each; cumulative ablation on the training set, class "
            "selectivity and mutual information of every unit on the test set."
        ),
        claims=claims,
        figures=figs,
        tables=[
            (
                "Per net (AUC interval: 95% bootstrap over the net's orderings)",
                with_net_auc_intervals(runs, aucs, claim_seed_of(s, NAME, "table"))
                .sort(["batchnorm", "seed"])
                .drop("run_id"),
            )
        ],
    )
