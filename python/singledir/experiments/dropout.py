"""Fig. 5a: dropout makes a net robust to ablation only up to the dropout fraction.

Nets trained with dropout rates ``dropouts`` on clean labels and on labels corrupted with
``dropout_corrupt`` (fully, by default). Claim: beyond the dropout fraction, nets trained on
corrupted labels lose accuracy faster than within it; and faster than nets trained on clean
labels, which stay robust.
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
    mean_intervals,
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
)
from singledir.experiments.settings import Settings
from singledir.io import write_table
from singledir.report import Section, combine_claims, difference_claim, fmt, mean_claim

NAME = "dropout"
TITLE = "Dropout protects only up to its own fraction (Fig. 5a)"
FIGURE = "Fig. 5a"


def plan(s: Settings) -> list[dict[str, Any]]:
    """One run per dropout rate, label condition (clean, corrupted) and seed."""
    specs = []
    for p in s.dropouts:
        for corrupt in (0.0, float(s.dropout_corrupt)):
            for seed in seeds_of(s):
                train = train_config(
                    s, dropout=float(p), corrupt=corrupt, corrupt_seed=seed, seed=seed
                )
                cond = {"dropout": float(p), "corrupt": corrupt, "seed": seed}
                label = f"drop{p:.2f}-corrupt{corrupt:.2f}-seed{seed}"
                specs.append(make_spec(label, cond, train, analysis_params(s)))
    return specs


def run(spec: dict[str, Any], run_dir: Path, timer: PhaseTimer) -> dict[str, Any]:
    """Train with dropout; ablation curves on the training set (dropout off, eval mode)."""
    result = train_net(spec, run_dir, timer)
    a = spec["analysis"]
    model = load_model(result.checkpoint)
    data = training_data(spec["train"], a["ablation_samples"])
    _, auc = run_ablation(model, data, a, int(spec["condition"]["seed"]), timer, run_dir)
    return {"auc": auc, **final_metrics(result)}


def slopes(xs: np.ndarray, ys: np.ndarray, p: float) -> tuple[float, float]:
    """Mean accuracy lost per unit fraction ablated within ``[0, p]`` and beyond it, within
    ``[p, min(1, 3p)]`` (the curve is linearly interpolated between levels)."""
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    hi = min(1.0, 3.0 * p)
    a0, ap, ah = np.interp([0.0, p, hi], xs, ys)
    before = (a0 - ap) / p
    after = (ap - ah) / (hi - p) if hi > p else float("nan")
    return float(before), float(after)


MIN_NETS = 5  # fewer nets per condition: orderings are the units, conditional on the nets


def ordering_slopes(curves: pl.DataFrame) -> pl.DataFrame:
    """Per net and ordering: accuracy lost per unit fraction within [0, p] and beyond
    [p, min(1, 3p)] (:func:`slopes` of that ordering's curve; their mean over orderings is
    the slope of the mean curve, interpolation being linear), and ``faster`` = beyond -
    within."""
    rows = []
    for (run, o), part in curves.group_by(["run_id", "ordering"], maintain_order=True):
        p = float(part["dropout"][0])
        before, after = slopes(part["fraction_ablated"].to_numpy(), part["accuracy"].to_numpy(), p)
        rows.append(
            {
                "run_id": run,
                "ordering": int(o),
                "dropout": p,
                "corrupt": float(part["corrupt"][0]),
                "within": before,
                "beyond": after,
                "faster": after - before,
            }
        )
    return pl.DataFrame(rows)


def _units(per_ordering: pl.DataFrame, column: str) -> tuple[list[np.ndarray], str]:
    """The units of a test: nets (orderings resampled within them) when there are at least
    MIN_NETS, else the orderings themselves (inference conditional on these nets)."""
    nets = per_ordering.partition_by("run_id", as_dict=True)
    if len(nets) >= MIN_NETS:
        return [part[column].to_numpy() for _, part in sorted(nets.items())], "nets"
    values = per_ordering[column].to_numpy()
    return [np.array([v]) for v in values], (
        f"orderings of {len(nets)} net(s), conditional on these nets (fewer than {MIN_NETS})"
    )


def _faster_intervals(per_ordering: pl.DataFrame, seed: int) -> pl.DataFrame:
    groups = {}
    for (corrupt, p), part in per_ordering.group_by(["corrupt", "dropout"]):
        nets = part.partition_by("run_id", as_dict=True)
        groups[(float(corrupt), float(p))] = [
            g["faster"].to_numpy() for _, g in sorted(nets.items())
        ]
    table = mean_intervals(groups, seed, "faster")
    keys = table["group"].to_list()
    return table.drop("group", "units").with_columns(
        pl.Series("corrupt", [k[0] for k in keys]), pl.Series("dropout", [k[1] for k in keys])
    )


def summarize(s: Settings, records: list[RunRecord], out_dir: Path, timer: PhaseTimer) -> Section:
    """Curves per dropout rate with the dropout fraction marked; slope verdicts."""
    fig_dir = out_dir / "figures"
    with timer.phase("statistics"):
        curves = collect_table(records, "curves.parquet")
        write_table(curves, out_dir / "curves.parquet")
        summary = level_bands(curves, "fraction_ablated", "accuracy", by=["corrupt", "dropout"])
        rows = []
        for (corrupt, p), part in summary.group_by(["corrupt", "dropout"], maintain_order=True):
            before, after = slopes(
                part["fraction_ablated"].to_numpy(), part["mean"].to_numpy(), float(p)
            )
            rows.append(
                {
                    "corrupt": float(corrupt),
                    "dropout": float(p),
                    "loss_per_fraction_within": before,
                    "loss_per_fraction_beyond": after,
                }
            )
        slope_table = pl.DataFrame(rows).sort(["corrupt", "dropout"])
        write_table(slope_table, out_dir / "slopes.parquet")
        per_ordering = ordering_slopes(curves)
        write_table(per_ordering, out_dir / "ordering_slopes.parquet")
        parts1, parts2 = [], []
        for p in sorted(float(v) for v in s.dropouts):
            mine = per_ordering.filter(pl.col("dropout") == p)
            noisy = mine.filter(pl.col("corrupt") == float(s.dropout_corrupt))
            clean = mine.filter(pl.col("corrupt") == 0.0)
            faster, unit_name = _units(noisy, "faster")
            parts1.append(
                (
                    f"p={fmt(p, 1)}",
                    mean_claim(
                        FIGURE,
                        "",
                        faster,
                        expect="greater",
                        what="excess slope beyond p",
                        units=unit_name,
                        seed=claim_seed_of(s, NAME, f"within-beyond-{p}"),
                    ),
                )
            )
            steep_noisy, unit_name = _units(noisy, "beyond")
            steep_clean, _ = _units(clean, "beyond")
            parts2.append(
                (
                    f"p={fmt(p, 1)}",
                    difference_claim(
                        FIGURE,
                        "",
                        steep_noisy,
                        steep_clean,
                        larger_name="corrupted",
                        smaller_name="clean",
                        what="slope beyond p",
                        units=unit_name,
                        seed=claim_seed_of(s, NAME, f"corrupt-clean-{p}"),
                    ),
                )
            )
        claim1 = combine_claims(
            FIGURE,
            "Nets trained on corrupted labels with dropout are robust to ablating up to "
            "the dropout fraction, and lose accuracy faster beyond it.",
            parts1,
            what="dropout rates",
        )
        claim1.statistic = (
            "accuracy lost per unit fraction ablated beyond [p, 3p] minus within [0, p], "
            "corrupted-label nets: " + claim1.statistic
        )
        claim1.rule += f" (units: {parts1[0][1].rule.split('units: ')[1].split(')')[0]})"
        claim2 = combine_claims(
            FIGURE,
            "Beyond the dropout fraction, nets trained on corrupted labels lose accuracy "
            "faster than nets trained on clean labels.",
            parts2,
            what="dropout rates",
        )
        claim2.statistic = (
            "accuracy lost per unit fraction beyond p, corrupted minus clean: " + claim2.statistic
        )
        claim2.rule += f" (units: {parts2[0][1].rule.split('units: ')[1].split(')')[0]})"
    with timer.phase("report"):
        figs = []
        for corrupt, label in ((0.0, "clean labels"), (float(s.dropout_corrupt), "corrupted")):
            part = summary.filter(pl.col("corrupt") == corrupt)
            tag = "clean" if corrupt == 0.0 else "corrupted"
            figs.append(
                (
                    f"Ablation curves with dropout, {label} (dashed: the dropout fraction)",
                    figures.curves_figure(
                        part,
                        fig_dir / f"dropout_curves_{tag}.png",
                        x="fraction_ablated",
                        y="mean",
                        std="std",
                        group="dropout",
                        group_label="dropout ",
                        vlines={p: p for p in part["dropout"].unique().to_list()},
                        title=f"Dropout, {label} ({s.dataset} {s.model})",
                        xlabel="fraction of units ablated",
                        ylabel="training accuracy",
                        cmap="plasma",
                    ),
                )
            )
    return Section(
        name=NAME,
        title=TITLE,
        description=(
            f"{s.model} on {s.dataset} with dropout {list(s.dropouts)} after every hidden "
            f"layer, trained on clean labels and on labels {fmt(s.dropout_corrupt, 1)} "
            f"corrupted ({s.epochs} epochs); cumulative ablation on the training set with "
            "dropout off."
        ),
        claims=[claim1, claim2],
        figures=figs,
        tables=[
            (
                "Accuracy lost per unit fraction ablated (slopes of the mean curve); faster = "
                "beyond - within, with its 95% bootstrap interval over orderings (and nets)",
                slope_table.join(
                    _faster_intervals(per_ordering, claim_seed_of(s, NAME, "table")),
                    on=["corrupt", "dropout"],
                    how="left",
                ),
            )
        ],
    )
