"""Beyond the paper: regularizing class selectivity during training (Leavitt & Morcos,
"Selectivity considered harmful", ICLR 2021), the causal test of Morcos et al.'s Fig. 7.

For every ALPHA of ``selectivity_alphas`` and every seed, a net trains with ``-ALPHA * mean
class selectivity`` of its units added to the loss (:mod:`singledir.regularizers`; ALPHA < 0
lowers selectivity, > 0 raises it; each seed starts from the same initialization for every
ALPHA). After training: the mean class selectivity of its units on the test set, its test
accuracy, and the AUC of its cumulative ablation curve on the training set. Claims of Leavitt
& Morcos: lowering selectivity does not hurt test accuracy (it may help); raising it hurts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from singledir.claims import INCONCLUSIVE, correlation_claim, fmt, mean_claim
from singledir.errors import ConfigError
from singledir.experiments.common import (
    analysis_params,
    claim_seed_of,
    load_model,
    run_ablation,
    unit_table,
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
from singledir.report import Section

NAME = "selectivity-reg"
TITLE = "Beyond the paper: regularizing class selectivity (Leavitt & Morcos, 2021)"
FIGURE = "Leavitt & Morcos 2021"
# "Does not hurt": lowering selectivity may cost at most this much test accuracy (1 point).
MARGIN = 0.01
_METRICS = (
    ("selectivity", "mean class selectivity (test set)"),
    ("test_acc", "test accuracy"),
    ("auc", "ablation AUC (training set)"),
)


def plan(s: Settings) -> list[dict[str, Any]]:
    """One run per (ALPHA, seed)."""
    alphas = sorted({float(a) for a in s.selectivity_alphas})
    if 0.0 not in alphas or min(alphas) >= 0 or max(alphas) <= 0:
        raise ConfigError(
            f"selectivity-reg compares against ALPHA 0 on both sides, got {alphas}: give "
            "--selectivity-alphas with 0, a negative and a positive value, e.g. -1,0,1"
        )
    return [
        make_spec(
            f"alpha{alpha:+g}-seed{seed}",
            {"alpha": alpha, "seed": seed},
            train_config(s, seed=seed, selectivity_reg=alpha),
            analysis_params(s),
        )
        for alpha in alphas
        for seed in seeds_of(s)
    ]


def run(spec: dict[str, Any], run_dir: Path, timer: PhaseTimer) -> dict[str, Any]:
    """Train with the regularizer; selectivity on test data, ablation AUC on training data."""
    result = train_net(spec, run_dir, timer)
    a = spec["analysis"]
    seed = int(spec["condition"]["seed"])
    model = load_model(result.checkpoint)
    units = unit_table(model, eval_data(spec["train"], a["eval_samples"]), timer)
    write_run_table(units, run_dir, "units.parquet")
    data = training_data(spec["train"], a["ablation_samples"])
    curves, auc = run_ablation(model, data, a, seed, timer, run_dir)
    from singledir.curves import ablation_auc

    per_ordering = ablation_auc(curves, per_ordering=True)
    assert isinstance(per_ordering, pl.DataFrame)
    metrics = final_metrics(result)
    row = {
        "alpha": float(spec["condition"]["alpha"]),
        "selectivity": float(units["selectivity"].mean()),  # type: ignore[arg-type]
        "test_acc": metrics["test_acc"],
        "train_acc": metrics["train_acc"],
        "auc": auc,
        "auc_per_ordering": per_ordering["auc"].to_list(),
    }
    write_run_table(pl.DataFrame([row]), run_dir, "summary.parquet")
    return {"selectivity": row["selectivity"], "auc": auc, **metrics}


def _paired(summary: pl.DataFrame, alpha: float, column: str) -> dict[int, float]:
    part = summary.filter(pl.col("alpha") == alpha)
    return {int(r["seed"]): float(r[column]) for r in part.to_dicts()}


def summarize(s: Settings, records: list[RunRecord], out_dir: Path, timer: PhaseTimer) -> Section:
    """Per-ALPHA means with intervals, and the three claims."""
    fig_dir = out_dir / "figures"
    with timer.phase("statistics"):
        summary = collect_table(records, "summary.parquet").sort(["alpha", "seed"])
        write_table(summary.drop("auc_per_ordering"), out_dir / "summary.parquet")
        alphas = sorted(summary["alpha"].unique().to_list())
        low, high = min(alphas), max(alphas)
        base = _paired(summary, 0.0, "test_acc")

        def diff(alpha: float) -> np.ndarray:
            other = _paired(summary, alpha, "test_acc")
            return np.array([other[k] - base[k] for k in sorted(base) if k in other])

        claims = [
            correlation_claim(
                FIGURE,
                "The regularizer controls selectivity: mean class selectivity rises with ALPHA.",
                summary["alpha"].to_numpy(),
                summary["selectivity"].to_numpy(),
                expect="positive",
                what="nets (ALPHA x seed)",
                seed=claim_seed_of(s, NAME, "alpha_selectivity"),
            ),
            mean_claim(
                FIGURE,
                f"Lowering selectivity (ALPHA {fmt(low, 2)}) does not hurt test accuracy: it "
                f"loses less than {fmt(MARGIN * 100, 0)} point against ALPHA 0 (it may help).",
                diff(low),
                expect="greater",
                null=-MARGIN,
                what=f"test-accuracy change, ALPHA {fmt(low, 2)} minus ALPHA 0 (paired by seed)",
                units="seeds",
                seed=claim_seed_of(s, NAME, "low_alpha_accuracy"),
            ),
            mean_claim(
                FIGURE,
                f"Raising selectivity (ALPHA {fmt(high, 2)}) hurts test accuracy against ALPHA 0.",
                diff(high),
                expect="less",
                what=f"test-accuracy change, ALPHA {fmt(high, 2)} minus ALPHA 0 (paired by seed)",
                units="seeds",
                seed=claim_seed_of(s, NAME, "high_alpha_accuracy"),
            ),
        ]
        table = _per_alpha_table(summary, claim_seed_of(s, NAME, "table"))
    with timer.phase("report"):
        figs = [
            (
                "Mean selectivity, test accuracy and ablation AUC against ALPHA (mean, 95% CI)",
                _alpha_figure(table, fig_dir / "selectivity_reg.png", s),
            )
        ]
    notes = [
        "Leavitt & Morcos's evidence is ResNets on CIFAR-10 and Tiny ImageNet; "
        "--preset paper trains ConvNet11 on CIFAR-10 (conv units: feature maps averaged "
        "over space) for the setting of their claims."
    ]
    if any(c.verdict == INCONCLUSIVE for c in claims):
        notes.append(
            "With fewer than 5 seeds an exact sign-flip test cannot reach p < 0.05: use "
            "--seeds 5 or more for a verdict on the accuracy claims."
        )
    return Section(
        name=NAME,
        title=TITLE,
        description=(
            f"{len(records)} net(s): {s.model} on {s.dataset} ({s.train_size or 'all'} training "
            f"samples, {s.epochs} epochs), ALPHA in {', '.join(fmt(a, 2) for a in alphas)}, "
            f"{s.seeds} seed(s) each (same initialization across ALPHA). Selectivity of every "
            f"unit on the test set; ablation AUC on the training set ({s.orderings} orderings)."
        ),
        claims=claims,
        figures=figs,
        tables=[("Per ALPHA: mean over seeds with 95% bootstrap intervals", table)],
        notes=notes,
    )


def _per_alpha_table(summary: pl.DataFrame, seed: int) -> pl.DataFrame:
    from singledir.inference import as_units, bootstrap_interval

    rows = []
    for k, alpha in enumerate(sorted(summary["alpha"].unique().to_list())):
        part = summary.filter(pl.col("alpha") == alpha)
        row: dict[str, Any] = {"alpha": float(alpha), "nets": part.height}
        for j, (column, _) in enumerate(_METRICS):
            if column == "auc":
                units = [np.asarray(v, dtype=np.float64) for v in part["auc_per_ordering"]]
            else:
                units = as_units(part[column].to_numpy().astype(np.float64))
            ci = bootstrap_interval(lambda v: float(v.mean()), [units], seed=seed + 10 * k + j)
            row[column] = float(np.mean([u.mean() for u in units]))
            row[f"{column}_ci_low"], row[f"{column}_ci_high"] = ci.low, ci.high
        rows.append(row)
    return pl.DataFrame(rows)


def _alpha_figure(table: pl.DataFrame, path: Path, s: Settings) -> Path:
    import matplotlib.pyplot as plt

    from singledir.experiments.figures import save

    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.6))
    x = table["alpha"].to_numpy()
    for ax, (column, label) in zip(axes, _METRICS, strict=True):
        y = table[column].to_numpy()
        lo = np.nan_to_num(table[f"{column}_ci_low"].to_numpy(), nan=0.0)
        hi = np.nan_to_num(table[f"{column}_ci_high"].to_numpy(), nan=0.0)
        ax.plot(x, y, "o-", color="tab:blue")
        ax.fill_between(x, np.minimum(lo, y), np.maximum(hi, y), color="tab:blue", alpha=0.2)
        ax.axvline(0.0, color="k", lw=0.6, alpha=0.5)
        ax.set_xlabel("ALPHA (< 0 lowers selectivity, > 0 raises it)")
        ax.set_title(label, fontsize=10)
    fig.suptitle(f"{s.dataset} {s.model}: class-selectivity regularizer", fontsize=11)
    return save(fig, path)
