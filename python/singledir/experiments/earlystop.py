"""Beyond the paper: stopping at the ablation AUC's peak, measured on training data only,
against a held-out validation split (Morcos et al. 2018, Sec. 3.3 and Fig. 4 suggest it).

Each seed trains one net in the overfitting regime of Fig. 4a,b (few samples, noisy labels)
with a validation split held out of its training set; every epoch records the test loss, the
validation loss and the ablation AUC (relative to unablated accuracy, on a fixed subset of
the training samples with their labels as trained: :class:`singledir.AUCMonitor`). Three
epochs are then chosen from each trajectory: the AUC's peak (no held-out data), the lowest
validation loss, and the oracle, the lowest test loss. Their test accuracies are compared to
the oracle's over seeds (the units; paired).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from singledir.claims import INCONCLUSIVE, Claim, fmt, mean_claim
from singledir.experiments.common import claim_seed_of
from singledir.experiments.runner import (
    PhaseTimer,
    RunRecord,
    collect_table,
    final_metrics,
    make_spec,
    seeds_of,
    train_config,
    train_net,
    write_run_table,
)
from singledir.experiments.settings import Settings
from singledir.io import write_table
from singledir.report import Section

NAME = "earlystop"
TITLE = "Beyond the paper: early stopping at the AUC's peak, without held-out data"
FIGURE = "Sec. 3.3 (beyond)"
# "Nearly as good": the AUC's choice may lose at most this much test accuracy (2 points)
# against the validation split's choice.
MARGIN = 0.02
CHOICES = ("auc", "val_loss", "oracle")
_LABELS = {"auc": "highest AUC", "val_loss": "lowest val loss", "oracle": "lowest test loss"}


def plan(s: Settings) -> list[dict[str, Any]]:
    """One run per seed: monitored every epoch, with a validation split; never stopped."""
    return [
        make_spec(
            f"seed{seed}",
            {"seed": seed},
            train_config(
                s,
                seed=seed,
                corrupt=s.corrupt,
                corrupt_seed=seed,
                val_fraction=s.val_fraction,
                auc_every=1,
                auc_samples=s.ablation_samples,
                auc_orderings=s.orderings,
                auc_levels=s.levels,
                auc_relative=True,
            ),
            {"margin": MARGIN},
        )
        for seed in seeds_of(s)
    ]


def choose_epochs(metrics: pl.DataFrame) -> dict[str, int]:
    """The epoch each criterion picks (the first one on ties): highest ``auc``, lowest
    ``val_loss``, lowest ``test_loss``."""
    m = metrics.sort("epoch")
    epochs = m["epoch"].to_numpy()
    auc = m["auc"].fill_null(np.nan).to_numpy().astype(np.float64)
    return {
        "auc": int(epochs[int(np.nanargmax(auc))]),
        "val_loss": int(epochs[int(np.argmin(m["val_loss"].to_numpy()))]),
        "oracle": int(epochs[int(np.argmin(m["test_loss"].to_numpy()))]),
    }


def run(spec: dict[str, Any], run_dir: Path, timer: PhaseTimer) -> dict[str, Any]:
    """Train with the monitor; the trajectory and the three choices."""
    result = train_net(spec, run_dir, timer)
    metrics: pl.DataFrame = result.metrics
    with timer.phase("statistics"):
        picks = choose_epochs(metrics)
        by_epoch = {int(r["epoch"]): r for r in metrics.to_dicts()}
        rows = [
            {
                "choice": name,
                "epoch": epoch,
                "test_acc": float(by_epoch[epoch]["test_acc"]),
                "test_loss": float(by_epoch[epoch]["test_loss"]),
                "gap_to_oracle": float(
                    by_epoch[picks["oracle"]]["test_acc"] - by_epoch[epoch]["test_acc"]
                ),
            }
            for name, epoch in picks.items()
        ]
    write_run_table(metrics, run_dir, "epochs.parquet")
    write_run_table(pl.DataFrame(rows), run_dir, "choices.parquet")
    return {**final_metrics(result), **{f"epoch_{k}": v for k, v in picks.items()}}


def summarize(s: Settings, records: list[RunRecord], out_dir: Path, timer: PhaseTimer) -> Section:
    """Gaps to the oracle per choice, and the non-inferiority of the AUC's choice."""
    fig_dir = out_dir / "figures"
    with timer.phase("statistics"):
        epochs = collect_table(records, "epochs.parquet").sort(["seed", "epoch"])
        choices = collect_table(records, "choices.parquet").sort(["seed", "choice"])
        write_table(epochs, out_dir / "epochs.parquet")
        write_table(choices, out_dir / "choices.parquet")
        seeds = sorted(choices["seed"].unique().to_list())

        def per_seed(choice: str, column: str) -> np.ndarray:
            part = choices.filter(pl.col("choice") == choice).sort("seed")
            return part[column].to_numpy().astype(np.float64)

        last_acc = np.array(
            [
                float(epochs.filter(pl.col("seed") == sd).sort("epoch")["test_acc"][-1])
                for sd in seeds
            ]
        )
        gap_auc, gap_val = per_seed("auc", "gap_to_oracle"), per_seed("val_loss", "gap_to_oracle")
        claims = [
            mean_claim(
                FIGURE,
                "Stopping at the AUC's peak (training data only) is nearly as good as stopping "
                f"at the lowest validation loss: it loses less than {fmt(MARGIN * 100, 0)} "
                "points of test accuracy more than the validation split does.",
                gap_auc - gap_val,
                expect="less",
                null=MARGIN,
                what="extra test-accuracy loss of the AUC's choice over the validation's "
                "(gap to oracle, AUC minus val)",
                units="seeds",
                seed=claim_seed_of(s, NAME, "auc_vs_val"),
            ),
            mean_claim(
                FIGURE,
                "Stopping at the AUC's peak beats training to the last epoch (higher test "
                "accuracy).",
                per_seed("auc", "test_acc") - last_acc,
                expect="greater",
                what="test-accuracy gain of the AUC's choice over the last epoch",
                units="seeds",
                seed=claim_seed_of(s, NAME, "auc_vs_last"),
            ),
        ]
        table = _gap_table(choices, claim_seed_of(s, NAME, "table"))
    with timer.phase("report"):
        figs = [
            (
                "Test loss, validation loss and AUC over training, with each criterion's epoch",
                _trajectory_figure(epochs, choices, fig_dir / "earlystop_trajectories.png", s),
            ),
            (
                "Test-accuracy gap to the oracle epoch per criterion (mean and 95% interval)",
                _gap_figure(table, fig_dir / "earlystop_gaps.png"),
            ),
        ]
    return Section(
        name=NAME,
        title=TITLE,
        description=(
            f"{len(records)} net(s) ({s.model} on {s.dataset}, {s.train_size or 'all'} training "
            f"samples of which {fmt(s.val_fraction * 100, 0)}% held out for validation, "
            f"{fmt(s.corrupt * 100, 0)}% of labels corrupted, {s.epochs} epochs); every epoch "
            f"the relative ablation AUC on {s.ablation_samples or 'all'} training samples "
            f"({s.orderings} orderings, {s.levels} levels). Epochs chosen by the AUC's peak, "
            "the lowest validation loss and the lowest test loss (oracle)."
        ),
        claims=claims,
        figures=figs,
        tables=[("Test accuracy lost against the oracle epoch, per criterion", table)],
        notes=_notes(claims),
    )


def _gap_table(choices: pl.DataFrame, seed: int) -> pl.DataFrame:
    from singledir.inference import as_units, bootstrap_interval

    rows = []
    for k, name in enumerate(CHOICES):
        part = choices.filter(pl.col("choice") == name).sort("seed")
        gaps = part["gap_to_oracle"].to_numpy().astype(np.float64)
        ci = bootstrap_interval(lambda v: float(v.mean()), [as_units(gaps)], seed=seed + k)
        rows.append(
            {
                "choice": _LABELS[name],
                "mean_epoch": float(part["epoch"].mean()),  # type: ignore[arg-type]
                "mean_test_acc": float(part["test_acc"].mean()),  # type: ignore[arg-type]
                "gap_to_oracle": float(gaps.mean()),
                "gap_ci_low": ci.low,
                "gap_ci_high": ci.high,
                "seeds": int(gaps.size),
            }
        )
    return pl.DataFrame(rows)


def _trajectory_figure(
    epochs: pl.DataFrame, choices: pl.DataFrame, path: Path, s: Settings
) -> Path:
    import matplotlib.pyplot as plt

    from singledir.experiments.figures import save

    fig, ax = plt.subplots(figsize=(6.6, 4.2))
    ax2 = ax.twinx()
    seeds = sorted(epochs["seed"].unique().to_list())
    colors = {"auc": "tab:red", "val_loss": "tab:green", "oracle": "k"}
    for i, sd in enumerate(seeds):
        part = epochs.filter(pl.col("seed") == sd).sort("epoch")
        ep = part["epoch"].to_numpy()
        first = i == 0
        alpha = 1.0 if first else 0.4
        ax.plot(ep, part["test_loss"], color="tab:blue", alpha=alpha, label="test loss" * first)
        ax.plot(ep, part["val_loss"], "g:", alpha=alpha, label="val loss" * first)
        ax2.plot(ep, part["auc"], "r--", alpha=alpha, label="AUC" * first)
        picks = choices.filter(pl.col("seed") == sd)
        for row in picks.to_dicts():
            ax.axvline(row["epoch"], color=colors[row["choice"]], alpha=0.25 * alpha, lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2.set_ylabel("ablation AUC (relative, training data)")
    ax.set_title(f"{s.dataset} {s.model}, {fmt(s.corrupt * 100, 0)}% labels corrupted")
    handles = ax.get_legend_handles_labels()
    handles2 = ax2.get_legend_handles_labels()
    ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], fontsize=8, frameon=False)
    return save(fig, path)


def _gap_figure(table: pl.DataFrame, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from singledir.experiments.figures import save

    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    pos = np.arange(table.height)
    mean = table["gap_to_oracle"].to_numpy() * 100
    low = np.nan_to_num(table["gap_ci_low"].to_numpy() * 100, nan=0.0)
    high = np.nan_to_num(table["gap_ci_high"].to_numpy() * 100, nan=0.0)
    err = np.vstack([np.clip(mean - low, 0, None), np.clip(high - mean, 0, None)])
    ax.bar(pos, mean, color=["tab:red", "tab:green", "0.5"], alpha=0.8)
    ax.errorbar(pos, mean, yerr=err, fmt="none", color="k", capsize=4)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(pos, table["choice"].to_list())
    ax.set_ylabel("test accuracy below the oracle's (points)")
    ax.set_title("Cost of each stopping criterion")
    return save(fig, path)


def _notes(claims: list[Claim]) -> list[str]:
    notes = []
    if any(c.verdict == INCONCLUSIVE for c in claims):
        notes.append(
            "An exact sign-flip test over n seeds cannot reach p < 0.05 with fewer than 5 "
            "seeds: use --seeds 5 or more (the paper preset) for a verdict."
        )
    return notes
