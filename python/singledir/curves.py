"""Summaries of curves: the area under an ablation (or noise) curve and mean +- std bands.

The one home of these definitions; :mod:`singledir.ablation`, :mod:`singledir.noise`, the
plots, the experiments and the reports all call these functions.

Definitions
-----------
Ablation AUC (:func:`ablation_auc`): for each ordering, sort its rows by
``fraction_ablated`` x and take the trapezoid-rule area under ``accuracy`` y(x), divided by
the x span (1 when the levels include 0 and all units, so an unablatable net with accuracy 1
scores 1); a single level scores its accuracy. ``relative=True`` divides each ordering's area
by its unablated (smallest x) accuracy. The AUC is the mean over orderings.

Bands (:func:`level_bands`): mean and standard deviation (ddof 0) of a column per value of
``x`` (and per group), pooling every row with that x: orderings, repeats, seeds, nets.
:func:`net_bands` averages within each net first, then takes mean +- std across nets (the
spread between nets, not between orderings).

The area and the per-level moments are computed by the Rust core
(:func:`singledir.stats.curve_auc`, :func:`singledir.stats.level_mean_std`) whenever the
table is rectangular (every ordering has the same levels) and finite; otherwise by NumPy /
polars with the same definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from singledir.errors import InputError

__all__ = [
    "ablation_auc",
    "summarize_curves",
    "curve_matrix",
    "normalized_area",
    "mean_curve_area",
    "level_bands",
    "net_bands",
]

_CURVE_COLUMNS = ("ordering", "n_ablated", "fraction_ablated", "accuracy")


def _check_curves(df: pl.DataFrame) -> None:
    missing = set(_CURVE_COLUMNS) - set(df.columns)
    if missing:
        raise InputError(
            f"curves table lacks columns {sorted(missing)}: pass the output of ablation_curves"
        )
    if df.height == 0:
        raise InputError("curves table is empty: pass the output of ablation_curves")


def require_columns(df: pl.DataFrame, cols: Sequence[str], what: str) -> None:
    """One-line InputError naming the columns ``df`` lacks (``what``: the table's name)."""
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(
            f"{what} table lacks column(s) {', '.join(missing)} "
            f"(has {', '.join(df.columns)}): pass the table the command wrote"
        )


def curve_matrix(
    df: pl.DataFrame, value: str, *, x: str = "fraction_ablated", key: str = "ordering"
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(keys, xs, values)`` with one row per ``key`` (sorted) and its points sorted by
    ``x``: ``xs`` and ``values`` are float64 ``(n_keys, n_points)``. None when the keys do
    not all have the same number of points (the table is not rectangular)."""
    ordered = df.select(key, x, value).sort([key, x])
    counts = ordered.group_by(key).len()
    if counts["len"].n_unique() != 1:
        return None
    n_points = int(counts["len"][0])
    keys = ordered[key].to_numpy()[::n_points]
    xs = ordered[x].to_numpy().astype(np.float64).reshape(-1, n_points)
    values = ordered[value].to_numpy().astype(np.float64).reshape(-1, n_points)
    return keys, xs, values


def _areas(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Trapezoid area under each row (Rust core when finite, NumPy otherwise)."""
    from singledir.stats import curve_auc

    if np.isfinite(xs).all() and np.isfinite(ys).all():
        return curve_auc(ys, xs if xs.shape[0] > 1 else xs[0])
    return np.sum((xs[:, 1:] - xs[:, :-1]) * (ys[:, 1:] + ys[:, :-1]) / 2.0, axis=1)


def _normalized_rows(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Area divided by the x span per row; a row without span scores its first value."""
    span = xs[:, -1] - xs[:, 0]
    area = _areas(xs, ys) if xs.shape[1] > 1 else np.zeros(xs.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span > 0, area / np.where(span > 0, span, 1.0), ys[:, 0])


def normalized_area(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Trapezoid area under ``y(x)`` (points sorted by x) divided by the x span; a curve
    without span (one point, or all x equal) scores its first value."""
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or xa.shape != ya.shape or xa.size == 0:
        raise InputError(f"x and y must be 1-D of the same non-zero length, got {xa.shape}")
    order = np.argsort(xa, kind="stable")
    return float(_normalized_rows(xa[order][None, :], ya[order][None, :])[0])


def ablation_auc(
    df: pl.DataFrame, *, per_ordering: bool = False, relative: bool = False
) -> float | pl.DataFrame:
    """Normalized area under the cumulative ablation curve.

    Definition: for each ordering, sort its rows by ``fraction_ablated`` x and take the
    trapezoid-rule area under accuracy y(x); the x range is [0, 1] when the levels include
    0 and all units (``levels="all"`` or an int), so the area is already normalized (an
    unablatable network with accuracy 1 scores 1). Rows covering only part of [0, 1] are
    divided by their x span. ``relative=True`` divides each ordering's area by its
    unablated (x = 0, else smallest x) accuracy. The result is the mean over orderings, or
    with ``per_ordering=True`` a DataFrame ``ordering``, ``auc``.
    """
    _check_curves(df)
    matrix = curve_matrix(df, "accuracy")
    if matrix is not None:
        keys, xs, ys = matrix
        areas = _normalized_rows(xs, ys)
        first = ys[:, 0]
    else:  # orderings with different levels: one at a time
        parts = df.sort("fraction_ablated").partition_by("ordering", as_dict=True)
        keys_list, areas_list, first_list = [], [], []
        for (o,), part in sorted(parts.items()):
            x = part["fraction_ablated"].to_numpy().astype(np.float64)[None, :]
            y = part["accuracy"].to_numpy().astype(np.float64)[None, :]
            keys_list.append(o)
            areas_list.append(_normalized_rows(x, y)[0])
            first_list.append(y[0, 0])
        keys = np.asarray(keys_list)
        areas = np.asarray(areas_list, dtype=np.float64)
        first = np.asarray(first_list, dtype=np.float64)
    if relative:
        with np.errstate(divide="ignore", invalid="ignore"):
            areas = np.where(first > 0, areas / np.where(first > 0, first, 1.0), np.nan)
    if per_ordering:
        return pl.DataFrame(
            {"ordering": keys.astype(np.int64), "auc": areas},
            schema={"ordering": pl.Int64, "auc": pl.Float64},
        )
    return float(np.mean(areas))


def summarize_curves(df: pl.DataFrame) -> pl.DataFrame:
    """Per ablation level: ``n_ablated``, ``fraction_ablated``, ``accuracy_mean``,
    ``accuracy_std``, ``loss_mean``, ``loss_std`` (std across orderings, ddof=0; 0 for a
    single ordering), sorted by ``n_ablated``. (Loss columns only when the table has
    ``loss``.)"""
    from singledir.stats import level_mean_std

    _check_curves(df)
    metrics = ["accuracy"] + (["loss"] if "loss" in df.columns else [])
    names = [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    fractions = df.group_by("n_ablated").agg(pl.col("fraction_ablated").first())
    matrices = [curve_matrix(df, m, x="n_ablated") for m in metrics]
    rectangular = all(
        mat is not None
        and (mat[1] == mat[1][0]).all()  # every ordering has the same levels
        and (np.diff(mat[1][0]) > 0).all()  # each once
        and np.isfinite(mat[2]).all()
        for mat in matrices
    )
    if rectangular:
        columns: dict[str, np.ndarray] = {"n_ablated": matrices[0][1][0].astype(np.int64)}  # type: ignore[index]
        for m, mat in zip(metrics, matrices, strict=True):
            columns[f"{m}_mean"], columns[f"{m}_std"] = level_mean_std(mat[2])  # type: ignore[index]
        table = pl.DataFrame(columns)
    else:
        table = df.group_by("n_ablated").agg(
            *[
                e
                for m in metrics
                for e in (
                    pl.col(m).mean().alias(f"{m}_mean"),
                    pl.col(m).std(ddof=0).fill_null(0.0).alias(f"{m}_std"),
                )
            ]
        )
    table = table.with_columns(pl.col("n_ablated").cast(df.schema["n_ablated"]))
    return (
        table.join(fractions, on="n_ablated", how="left")
        .select("n_ablated", "fraction_ablated", *names)
        .sort("n_ablated")
    )


def mean_curve_area(df: pl.DataFrame, x: str, y: str) -> float:
    """Average ``y`` over all rows at each ``x`` (e.g. noise repeats at each scale), then
    :func:`normalized_area` of that mean curve (a single x scores its mean)."""
    require_columns(df, [x, y], "curves")
    if df.height == 0:
        raise InputError(f"the curves table is empty: no {y} against {x} to integrate")
    g = df.group_by(x).agg(pl.col(y).mean()).sort(x)
    return normalized_area(g[x].to_numpy(), g[y].to_numpy())


def level_bands(
    df: pl.DataFrame, x: str, y: str, by: str | Sequence[str] | None = None
) -> pl.DataFrame:
    """Mean and standard deviation (ddof 0) of ``y`` per value of ``x`` (and of the ``by``
    columns), pooling every row there (orderings, repeats, seeds, nets): columns
    ``by..., x, mean, std, n`` sorted by ``by..., x``."""
    groups = [] if by is None else [by] if isinstance(by, str) else list(by)
    require_columns(df, [*groups, x, y], "curves")
    return (
        df.group_by([*groups, x])
        .agg(
            pl.col(y).mean().alias("mean"),
            pl.col(y).std(ddof=0).fill_null(0.0).alias("std"),
            pl.len().alias("n"),
        )
        .sort([*groups, x])
    )


def net_bands(
    df: pl.DataFrame,
    x: str,
    y: str,
    by: str | Sequence[str] | None = None,
    *,
    net: str = "run_id",
) -> pl.DataFrame:
    """Mean +- std across nets: ``y`` is first averaged over the rows of each ``net`` at
    each ``x`` (its orderings or repeats), then mean and standard deviation (ddof 0) of
    those per-net curves per ``x`` (and ``by``): columns ``by..., x, mean, std, n`` (n =
    nets)."""
    groups = [] if by is None else [by] if isinstance(by, str) else list(by)
    require_columns(df, [*groups, net, x, y], "curves")
    per_net = df.group_by([*groups, net, x]).agg(pl.col(y).mean())
    return level_bands(per_net, x, y, groups or None)
