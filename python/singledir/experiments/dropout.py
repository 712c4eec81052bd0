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
from singledir.experiments.common import analysis_params, load_model, run_ablation
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
from singledir.report import Claim, Section, fmt, verdict_of

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
        corrupted = slope_table.filter(pl.col("corrupt") == float(s.dropout_corrupt))
        clean = slope_table.filter(pl.col("corrupt") == 0.0)
        faster = (
            corrupted["loss_per_fraction_beyond"].to_numpy()
            > corrupted["loss_per_fraction_within"].to_numpy()
        )
        claim1 = Claim(
            figure=FIGURE,
            claim="Nets trained on corrupted labels with dropout are robust to ablating up to "
            "the dropout fraction, and lose accuracy faster beyond it.",
            statistic="accuracy lost per unit fraction ablated, within [0, p] vs beyond "
            "[p, 3p]: "
            + "; ".join(
                f"p={fmt(r['dropout'], 1)}: {fmt(r['loss_per_fraction_within'], 2)} vs "
                f"{fmt(r['loss_per_fraction_beyond'], 2)}"
                for r in corrupted.iter_rows(named=True)
            ),
            verdict=verdict_of(bool(faster.all()) if faster.size else None),
            value=float(faster.mean()) if faster.size else None,
            rule="holds when, for every dropout rate, the corrupted-label nets lose accuracy "
            "faster beyond the dropout fraction than within it",
        )
        beyond_c = corrupted["loss_per_fraction_beyond"].to_numpy()
        beyond_k = clean.sort("dropout")["loss_per_fraction_beyond"].to_numpy()
        steeper = beyond_c > beyond_k if beyond_c.size == beyond_k.size else np.array([])
        claim2 = Claim(
            figure=FIGURE,
            claim="Beyond the dropout fraction, nets trained on corrupted labels lose accuracy "
            "faster than nets trained on clean labels.",
            statistic="accuracy lost per unit fraction beyond p, corrupted vs clean: "
            + "; ".join(
                f"p={fmt(p, 1)}: {fmt(a, 2)} vs {fmt(b, 2)}"
                for p, a, b in zip(corrupted["dropout"].to_list(), beyond_c, beyond_k, strict=False)
            ),
            verdict=verdict_of(bool(steeper.all()) if steeper.size else None),
            value=float(steeper.mean()) if steeper.size else None,
            rule="holds when, for every dropout rate, the corrupted-label nets' slope beyond "
            "p exceeds the clean nets'",
        )
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
        tables=[("Accuracy lost per unit fraction ablated", slope_table)],
    )
