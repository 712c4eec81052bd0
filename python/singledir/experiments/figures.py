"""PNG figures in the spirit of the paper's: curves with error bands per condition, scatter
plots with regression lines, training trajectories, distributions. Matplotlib's Agg backend,
no display needed; every figure is written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from singledir.io import atomic_path  # noqa: E402

__all__ = [
    "curves_figure",
    "scatter_figure",
    "training_figure",
    "distribution_figure",
    "bars_figure",
    "save",
]


def save(fig: Any, path: Path) -> Path:
    """Save ``fig`` as PNG at ``path`` (atomically) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _colors(n: int, cmap: str = "viridis") -> list[Any]:
    cm = plt.get_cmap(cmap)
    return [cm(v) for v in (np.linspace(0.0, 0.9, n) if n > 1 else [0.3])]


def curves_figure(
    summary: pl.DataFrame,
    path: Path,
    *,
    x: str,
    y: str,
    group: str,
    std: str | None = None,
    title: str,
    xlabel: str,
    ylabel: str,
    group_label: str = "",
    vlines: dict[Any, float] | None = None,
    cmap: str = "viridis",
    styles: dict[Any, str] | None = None,
    legend_order: Sequence[Any] | None = None,
) -> Path:
    """One line per value of ``group`` (mean ``y`` against ``x``, shaded +/- ``std``).

    ``vlines`` maps a group value to an x position drawn as a dashed vertical line in the
    group's colour (the paper's marker of the dropout fraction).
    """
    groups = list(legend_order) if legend_order is not None else sorted(summary[group].unique())
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for g, color in zip(groups, _colors(len(groups), cmap), strict=True):
        part = summary.filter(pl.col(group) == g).sort(x)
        if part.height == 0:
            continue
        xs = part[x].to_numpy()
        ys = part[y].to_numpy()
        ls = (styles or {}).get(g, "-")
        ax.plot(xs, ys, ls, color=color, label=f"{group_label}{g}", lw=1.8)
        if std is not None:
            sd = np.nan_to_num(part[std].to_numpy())
            ax.fill_between(xs, ys - sd, ys + sd, color=color, alpha=0.2, lw=0)
        if vlines and g in vlines:
            ax.axvline(vlines[g], color=color, ls="--", lw=1.0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return save(fig, path)


def scatter_figure(
    df: pl.DataFrame,
    path: Path,
    *,
    x: str,
    y: str,
    title: str,
    xlabel: str,
    ylabel: str,
    group: str | None = None,
    fit: bool = True,
    annotate: str | None = None,
) -> Path:
    """Scatter of ``y`` against ``x`` (coloured by ``group``) with a least-squares line per
    group; ``annotate`` is written in the corner (e.g. the correlations)."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    groups = sorted(df[group].unique()) if group else [None]
    for g, color in zip(groups, _colors(len(groups), "tab10"), strict=True):
        part = df if g is None else df.filter(pl.col(group) == g)  # type: ignore[arg-type]
        xs = part[x].to_numpy().astype(float)
        ys = part[y].to_numpy().astype(float)
        ok = np.isfinite(xs) & np.isfinite(ys)
        xs, ys = xs[ok], ys[ok]
        label = None if g is None else str(g)
        ax.scatter(xs, ys, s=14, alpha=0.7, color=color, label=label)
        if fit and xs.size >= 2 and np.ptp(xs) > 0:
            slope, intercept = np.polyfit(xs, ys, 1)
            line_x = np.array([xs.min(), xs.max()])
            ax.plot(line_x, slope * line_x + intercept, color=color, lw=1.5)
    if annotate:
        ax.text(0.02, 0.98, annotate, transform=ax.transAxes, va="top", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if group:
        ax.legend(fontsize=8, frameon=False)
    return save(fig, path)


def training_figure(
    df: pl.DataFrame,
    path: Path,
    *,
    title: str,
    group: str = "seed",
) -> Path:
    """Train and test loss (left axis) and ablation AUC (right axis) against epoch."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax2 = ax.twinx()
    groups = sorted(df[group].unique())
    for i, g in enumerate(groups):
        part = df.filter(pl.col(group) == g).sort("epoch")
        ep = part["epoch"].to_numpy()
        suffix = f" ({group} {g})" if len(groups) > 1 else ""
        alpha = 1.0 if i == 0 else 0.55
        ax.plot(
            ep,
            part["train_loss"].to_numpy(),
            "-",
            color="tab:blue",
            alpha=alpha,
            label=f"train loss{suffix}",
        )
        ax.plot(
            ep,
            part["test_loss"].to_numpy(),
            "-",
            color="tab:red",
            alpha=alpha,
            label=f"test loss{suffix}",
        )
        ax2.plot(
            ep,
            part["auc"].to_numpy(),
            "--o",
            ms=3,
            color="k",
            alpha=alpha,
            label=f"ablation AUC{suffix}",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2.set_ylabel("area under ablation curve (relative)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, frameon=False, loc="upper center")
    return save(fig, path)


def distribution_figure(
    df: pl.DataFrame,
    path: Path,
    *,
    value: str,
    group: str,
    title: str,
    xlabel: str,
    bins: int = 30,
) -> Path:
    """Overlaid normalised histograms of ``value`` per ``group``."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    groups = sorted(df[group].unique())
    vals = df[value].to_numpy().astype(float)
    vals = vals[np.isfinite(vals)]
    edges = np.linspace(vals.min(), vals.max() if np.ptp(vals) > 0 else vals.min() + 1, bins + 1)
    for g, color in zip(groups, _colors(len(groups), "tab10"), strict=True):
        v = df.filter(pl.col(group) == g)[value].to_numpy().astype(float)
        v = v[np.isfinite(v)]
        ax.hist(
            v,
            bins=list(edges),
            density=True,
            alpha=0.5,
            color=color,
            label=f"{g} (mean {v.mean():.3f})" if v.size else str(g),
        )
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8, frameon=False)
    return save(fig, path)


def bars_figure(
    labels: Sequence[str],
    values: Sequence[float],
    path: Path,
    *,
    title: str,
    ylabel: str,
    reference: Sequence[float] | None = None,
    reference_label: str = "chance",
) -> Path:
    """Bar chart (e.g. how often the AUC's pick is in the top k), with optional reference
    markers (chance level) per bar."""
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    pos = np.arange(len(labels))
    ax.bar(pos, values, color="tab:blue", alpha=0.8, label="measured")
    if reference is not None:
        ax.scatter(pos, reference, marker="_", s=600, color="k", label=reference_label, zorder=3)
    ax.set_xticks(pos, list(labels))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, frameon=False)
    return save(fig, path)
