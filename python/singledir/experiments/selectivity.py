"""Fig. 7: class selectivity is a poor predictor of how much a unit matters.

For each unit of a trained net: its importance (the drop in test accuracy when it alone is
ablated) against its class selectivity, and against its mutual information with the class,
per layer, with least-squares lines and correlations. Claim: the correlations are weak
(|Pearson r| < 0.3 in every layer).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.special import ndtr, ndtri

from singledir.experiments import figures
from singledir.experiments.common import claim_seed_of, load_model, quiet_call, unit_table
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
from singledir.inference import (
    N_BOOTSTRAP,
    as_units,
    bootstrap_interval,
    pearson,
    verdict_from_interval,
)
from singledir.io import write_table
from singledir.report import INCONCLUSIVE, Claim, Section, combine_claims
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


def _layer_weak_claim(
    units: pl.DataFrame, layer: str, score: str, seed: int, importance: str = "accuracy_drop"
) -> Claim:
    """Is |Pearson r(score, importance)| below WEAK in one layer? Estimate |r| over the
    layer's units (pooled over nets); interval: the image under |.| of the BCa bootstrap
    interval of r (units resampled within each net); p: equivalence test, the larger of the
    two one-sided Fisher z tests of r < WEAK and r > -WEAK."""
    part = units.filter(pl.col("layer") == layer)
    part = part.filter(pl.col(score).is_finite() & pl.col(importance).is_finite())
    groups = [
        as_units(np.column_stack([g[score].to_numpy(), g[importance].to_numpy()]))
        for _, g in sorted(part.partition_by("run_id", as_dict=True).items())
    ]
    n = part.height
    r = pearson(part[score].to_numpy(), part[importance].to_numpy())
    claim = Claim(
        FIGURE,
        "",
        "",
        INCONCLUSIVE,
        n=n,
        null=WEAK,
        expected="less",
        test="equivalence test (two one-sided Fisher z tests)",
        seed=seed,
        n_resamples=N_BOOTSTRAP,
        ci_level=0.95,
    )
    if n < 4 or not np.isfinite(r):
        return claim
    ci = bootstrap_interval(
        lambda *g: pearson(np.concatenate(g)[:, 0], np.concatenate(g)[:, 1]), groups, seed=seed
    )
    lo, hi = abs(ci.low), abs(ci.high)
    abs_ci = [0.0 if ci.low <= 0.0 <= ci.high else min(lo, hi), max(lo, hi)]
    se = 1.0 / math.sqrt(n - 3)
    z, z_weak = math.atanh(max(-0.999999, min(0.999999, r))), math.atanh(WEAK)
    p = max(float(ndtr((z - z_weak) / se)), float(1.0 - ndtr((z + z_weak) / se)))
    claim.estimate = claim.value = abs(r)
    claim.ci = abs_ci
    claim.p_value = p
    # the largest true |r| shown weak with 80% power: WEAK minus this distance
    claim.detectable = WEAK - math.tanh(z_weak - (float(ndtri(0.95)) + float(ndtri(0.8))) * se)
    claim.verdict = verdict_from_interval(abs_ci, WEAK, "less", p)
    return claim


def _claim(units: pl.DataFrame, score: str, what: str, s: Settings) -> Claim:
    layers = sorted(units["layer"].unique().to_list())
    parts = [
        (layer, _layer_weak_claim(units, layer, score, claim_seed_of(s, NAME, f"{score}-{layer}")))
        for layer in layers
    ]
    parts = [(f"{layer} (n={c.n})", c) for layer, c in parts]
    claim = combine_claims(
        FIGURE,
        f"{what} is a poor predictor of a unit's importance (accuracy drop when it alone is "
        f"ablated): weak correlation (|Pearson r| < {WEAK}) in every layer.",
        parts,
        what="layers",
    )
    claim.statistic = "|Pearson r| per layer: " + claim.statistic
    claim.rule += (
        f" (null |r| = {WEAK}; units: a layer's units, resampled within each net; units "
        "of one net are not independent samples, so the interval is about these nets)"
    )
    return claim


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
            _claim(units, "selectivity", "Class selectivity", s),
            _claim(units, "mutual_info", "Mutual information with the class", s),
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
