"""Fig. 7: class selectivity is a poor predictor of how much a unit matters.

For each unit of a trained net: its importance (the drop in test accuracy when it alone is
ablated) against its class selectivity, and against its mutual information with the class,
per layer, with least-squares lines and correlations. Claim: the correlations are weak
(|Pearson r| < 0.3 in every layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from singledir.experiments import figures
from singledir.experiments.common import load_model, quiet_call, unit_table
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
    write_run_table,
)
from singledir.experiments.settings import Settings
from singledir.io import write_table
from singledir.report import Claim, Section, fmt, verdict_of
from singledir.unit_scores import join_unit_scores

NAME = "selectivity"
TITLE = "Class selectivity does not predict unit importance (Fig. 7)"
FIGURE = "Fig. 7"
WEAK = 0.3


def plan(s: Settings) -> list[dict[str, Any]]:
    """One run per seed (clean labels)."""
    return [
        make_spec(
            f"seed{seed}",
            {"seed": seed},
            train_config(s, seed=seed),
            {"eval_samples": s.eval_samples},
        )
        for seed in seeds_of(s)
    ]


def run(spec: dict[str, Any], run_dir: Path, timer: PhaseTimer) -> dict[str, Any]:
    """Train; single-unit importance and unit statistics on the test set."""
    from singledir.ablation import unit_importance

    result = train_net(spec, run_dir, timer)
    model = load_model(result.checkpoint)
    data = eval_data(spec["train"], spec["analysis"]["eval_samples"])
    with timer.phase("ablation"):
        importance = quiet_call(unit_importance, model, data, "all")
    stats = unit_table(model, data, timer)
    units = join_unit_scores(stats, importance)
    write_run_table(units, run_dir, "units.parquet")
    return {"units": units.height, **final_metrics(result)}


def layer_correlations(
    units: pl.DataFrame, score: str, importance: str = "accuracy_drop"
) -> pl.DataFrame:
    """Pearson and Spearman correlation of ``score`` with ``importance`` (the accuracy drop,
    or the loss rise), per layer."""
    from singledir.stats import score_correlations

    return score_correlations(
        units[score].to_numpy(), units[importance].to_numpy(), units["layer"].to_numpy()
    ).rename({"group": "layer"})


def _claim(corr: pl.DataFrame, score: str, what: str) -> Claim:
    r = corr["pearson"].to_numpy()
    finite = r[np.isfinite(r)]
    ok = None if finite.size == 0 else bool(np.all(np.abs(finite) < WEAK))
    return Claim(
        figure=FIGURE,
        claim=f"{what} is a poor predictor of a unit's importance (accuracy drop when it "
        "alone is ablated): weak correlation in every layer.",
        statistic="Pearson r per layer: "
        + ", ".join(
            f"{row['layer']} {fmt(row['pearson'], 2)} (rho {fmt(row['spearman'], 2)}, n={row['n']})"
            for row in corr.iter_rows(named=True)
        ),
        verdict=verdict_of(ok),
        value=float(np.max(np.abs(finite))) if finite.size else None,
        rule=f"holds when |Pearson r| < {WEAK} in every layer",
    )


def summarize(s: Settings, records: list[RunRecord], out_dir: Path, timer: PhaseTimer) -> Section:
    """Scatter plots per layer and the verdicts."""
    fig_dir = out_dir / "figures"
    with timer.phase("statistics"):
        units = collect_table(records, "units.parquet")
        write_table(units, out_dir / "units.parquet")
        corr_sel = layer_correlations(units, "selectivity")
        corr_mi = layer_correlations(units, "mutual_info")
        table = corr_sel.select(
            "layer",
            "n",
            pl.col("pearson").alias("r_selectivity"),
            pl.col("spearman").alias("rho_selectivity"),
        ).join(
            corr_mi.select(
                "layer",
                pl.col("pearson").alias("r_mutual_info"),
                pl.col("spearman").alias("rho_mutual_info"),
            ),
            on="layer",
        )
        if "loss_rise" in units.columns:
            # The accuracy drop of one unit is quantised (1 / samples); the loss rise is not.
            loss_sel = layer_correlations(units, "selectivity", "loss_rise")
            table = table.join(
                loss_sel.select("layer", pl.col("pearson").alias("r_selectivity_loss_rise")),
                on="layer",
            )
        write_table(table, out_dir / "correlations.parquet")
        claims = [
            _claim(corr_sel, "selectivity", "Class selectivity"),
            _claim(corr_mi, "mutual_info", "Mutual information with the class"),
        ]
    with timer.phase("report"):
        figs = [
            (
                "Unit importance against class selectivity, per layer, with least-squares lines",
                figures.scatter_figure(
                    units,
                    fig_dir / "selectivity_importance.png",
                    x="selectivity",
                    y="accuracy_drop",
                    group="layer",
                    title=f"{s.dataset} {s.model}: selectivity vs importance",
                    xlabel="class selectivity index",
                    ylabel="accuracy drop when ablated alone",
                ),
            ),
            (
                "Unit importance against mutual information with the class, per layer",
                figures.scatter_figure(
                    units,
                    fig_dir / "mutual_info_importance.png",
                    x="mutual_info",
                    y="accuracy_drop",
                    group="layer",
                    title=f"{s.dataset} {s.model}: mutual information vs importance",
                    xlabel="mutual information (bits)",
                    ylabel="accuracy drop when ablated alone",
                ),
            ),
        ]
    return Section(
        name=NAME,
        title=TITLE,
        description=(
            f"{len(records)} net(s) ({s.model} on {s.dataset}, clean labels); on the test set, "
            "each unit's class selectivity, mutual information and the accuracy drop when it "
            "alone is ablated."
        ),
        claims=claims,
        figures=figs,
        tables=[("Correlation with the accuracy drop, per layer", table)],
    )
