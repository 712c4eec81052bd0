"""PNG plots of ablation curves, noise curves and per-unit scatter plots.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot global state, so this is
safe in worker processes and threads) and written atomically through :mod:`singledir.io`.
Each plotting function takes either one curves DataFrame or a mapping ``label -> DataFrame``
to overlay several (e.g. networks trained on different label-corruption fractions), and
returns the path written.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from singledir.curves import require_columns
from singledir.errors import InputError
from singledir.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "curve_bands",
    "plot_ablation_curves",
    "plot_noise_curves",
    "plot_unit_scatter",
    "plot_importance_vs_selectivity",
]

CurvesArg = pl.DataFrame | Mapping[str, pl.DataFrame]


def _as_mapping(curves: CurvesArg) -> dict[str, pl.DataFrame]:
    if isinstance(curves, pl.DataFrame):
        return {"": curves}
    out = dict(curves)
    if not out:
        raise InputError("no curves to plot: pass at least one curves table")
    return out


def curve_bands(df: pl.DataFrame, x: str, y: str) -> pl.DataFrame:
    """Mean and standard deviation (ddof=0) of ``y`` per value of ``x`` across all rows
    with that ``x`` (orderings or repeats), sorted by ``x``
    (:func:`singledir.curves.level_bands`).

    Columns: ``x``, ``{y}_mean``, ``{y}_std`` and ``n`` (rows averaged).
    """
    from singledir.curves import level_bands

    return level_bands(df, x, y).rename({"mean": f"{y}_mean", "std": f"{y}_std"})


def _seed_text(frames: Mapping[str, pl.DataFrame]) -> str:
    seeds: set[int] = set()
    for df in frames.values():
        if "seed" in df.columns:
            seeds.update(int(s) for s in df["seed"].drop_nulls().unique().to_list())
    if not seeds:
        return ""
    return "seed " + ",".join(str(s) for s in sorted(seeds))


def _new_axes(size: tuple[float, float] = (6.0, 4.2)) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    return fig, ax


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return Path(path)


def _title(base: str, frames: Mapping[str, pl.DataFrame], extra: str | None) -> str:
    seed = _seed_text(frames)
    head = f"{base} ({seed})" if seed else base
    if not extra:
        return head
    return head + "\n" + "\n".join(textwrap.wrap(extra, width=90))


def plot_ablation_curves(
    curves: CurvesArg,
    path: str | os.PathLike[str],
    *,
    metric: str = "accuracy",
    x: str = "fraction_ablated",
    title: str | None = None,
    subtitle: str | None = None,
) -> Path:
    """Accuracy (or loss) against the fraction of units ablated: the mean across orderings
    as a line, mean ± one standard deviation as a band; the seed(s) in the title.

    Parameters
    ----------
    curves:
        A curves table (columns ``ordering``, ``n_ablated``, ``fraction_ablated``,
        ``accuracy``, ``loss``, ``seed``) or a mapping ``label -> table`` to overlay.
    path:
        PNG file to write (atomically).
    metric:
        ``"accuracy"`` or ``"loss"`` (any numeric column).
    x:
        ``"fraction_ablated"`` or ``"n_ablated"``.
    title, subtitle:
        Title (default "Cumulative ablation") and extra text appended to it.
    """
    frames = _as_mapping(curves)
    fig, ax = _new_axes()
    for label, df in frames.items():
        require_columns(df, [x, metric], "curves")
        band = curve_bands(df, x, metric)
        xs = band[x].to_numpy().astype(float)
        mean = band[f"{metric}_mean"].to_numpy().astype(float)
        std = np.nan_to_num(band[f"{metric}_std"].to_numpy().astype(float))
        n_ord = df["ordering"].n_unique() if "ordering" in df.columns else 1
        name = f"{label} " if label else ""
        (line,) = ax.plot(xs, mean, lw=1.6, label=f"{name}mean ± std, {n_ord} orderings")
        ax.fill_between(xs, mean - std, mean + std, alpha=0.25, color=line.get_color(), lw=0)
    ax.set_xlabel("fraction of units ablated" if x == "fraction_ablated" else "units ablated")
    ax.set_ylabel(metric)
    if metric == "accuracy":
        ax.set_ylim(-0.02, 1.02)
    if x == "fraction_ablated":
        ax.set_xlim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(_title(title or "Cumulative ablation", frames, subtitle), fontsize=9)
    return _save(fig, path)


def plot_noise_curves(
    curves: CurvesArg,
    path: str | os.PathLike[str],
    *,
    metric: str = "accuracy",
    title: str | None = None,
    subtitle: str | None = None,
) -> Path:
    """Accuracy (or loss) against the noise scale (in units of each unit's activity std):
    mean across repeats with a ± one std band, markers at the measured scales."""
    frames = _as_mapping(curves)
    fig, ax = _new_axes()
    for label, df in frames.items():
        require_columns(df, ["scale", metric], "noise curves")
        band = curve_bands(df, "scale", metric)
        xs = band["scale"].to_numpy().astype(float)
        mean = band[f"{metric}_mean"].to_numpy().astype(float)
        std = np.nan_to_num(band[f"{metric}_std"].to_numpy().astype(float))
        n_rep = df["repeat"].n_unique() if "repeat" in df.columns else 1
        name = f"{label} " if label else ""
        (line,) = ax.plot(
            xs, mean, marker="o", ms=3, lw=1.6, label=f"{name}mean ± std, {n_rep} repeats"
        )
        ax.fill_between(xs, mean - std, mean + std, alpha=0.25, color=line.get_color(), lw=0)
    ax.set_xlabel("noise scale (x unit activity std)")
    ax.set_ylabel(metric)
    if metric == "accuracy":
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(_title(title or "Noise perturbation", frames, subtitle), fontsize=9)
    return _save(fig, path)


def plot_unit_scatter(
    units: pl.DataFrame,
    path: str | os.PathLike[str],
    *,
    x: str,
    y: str,
    color_by: str | None = "layer",
    title: str | None = None,
    subtitle: str | None = None,
) -> Path:
    """Scatter of two per-unit columns (one point per unit), coloured by ``color_by``
    (default the layer), with Pearson's r over all finite points in the title."""
    require_columns(units, [x, y], "units")
    if units.height == 0:
        raise InputError("the units table is empty: nothing to plot")
    fig, ax = _new_axes()
    groups: list[tuple[str, pl.DataFrame]]
    if color_by and color_by in units.columns:
        groups = [(str(k[0]), g) for k, g in units.group_by(color_by, maintain_order=True)]
    else:
        groups = [("", units)]
    for label, g in groups:
        ax.scatter(
            g[x].cast(pl.Float64).to_numpy(),
            g[y].cast(pl.Float64).to_numpy(),
            s=8,
            alpha=0.6,
            label=label or None,
        )
    xv = units[x].cast(pl.Float64).to_numpy()
    yv = units[y].cast(pl.Float64).to_numpy()
    ok = np.isfinite(xv) & np.isfinite(yv)
    extra = []
    if ok.sum() >= 3 and np.std(xv[ok]) > 0 and np.std(yv[ok]) > 0:
        r = float(np.corrcoef(xv[ok], yv[ok])[0, 1])
        extra.append(f"Pearson r={r:.3f} (n={int(ok.sum())})")
    if subtitle:
        extra.append(subtitle)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize=7, loc="best", markerscale=2)
    base = title or f"{y} vs {x}"
    ax.set_title(" | ".join([base, *extra]), fontsize=9)
    return _save(fig, path)


def plot_importance_vs_selectivity(
    units: pl.DataFrame,
    path: str | os.PathLike[str],
    *,
    selectivity: str = "selectivity",
    importance: str = "accuracy_drop",
    title: str | None = None,
    subtitle: str | None = None,
) -> Path:
    """Per-unit importance (accuracy drop when the unit alone is ablated) against class
    selectivity, one point per unit coloured by layer (the paper's Fig. 5 style).

    ``units`` must hold both columns, e.g. the output of ``singledir importance`` joined
    with ``singledir stats`` on ``(layer, unit)``.
    """
    return plot_unit_scatter(
        units,
        path,
        x=selectivity,
        y=importance,
        title=title or "Unit importance vs class selectivity",
        subtitle=subtitle,
    )
