"""Statistics of unit orderings and curves, computed by the Rust core: stable ranks of units by
a score, Pearson/Spearman correlations of two scores within groups (layers), the trapezoid
area under many curves at once, and per-level mean and std across orderings.

Every function takes NumPy arrays or torch tensors (any device) and raises a one-line
:class:`~singledir.errors.InputError` or :class:`~singledir.errors.ConfigError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from singledir import _core
from singledir.errors import ConfigError, InputError
from singledir.stats_common import to_numpy as _to_numpy

__all__ = ["rank_units", "score_correlations", "curve_auc", "level_mean_std"]


def _vector(x: Any, name: str) -> NDArray[np.float64]:
    v = _to_numpy(x, name)
    if v.dtype.kind not in "fiub":
        raise InputError(f"{name} must be numeric, got dtype {v.dtype}")
    if v.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {v.shape}")
    return np.ascontiguousarray(v, dtype=np.float64)


def _matrix(x: Any, name: str) -> NDArray[np.float64]:
    m = _to_numpy(x, name)
    if m.dtype.kind not in "fiub":
        raise InputError(f"{name} must be numeric, got dtype {m.dtype}")
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2:
        raise InputError(f"{name} must be 2-D (rows, points), got shape {m.shape}")
    return np.ascontiguousarray(m, dtype=np.float64)


def rank_units(scores: Any, *, descending: bool = False) -> NDArray[np.int64]:
    """Order of units by score, stable (ties keep their index order in both directions).

    Parameters
    ----------
    scores : array_like or torch.Tensor, shape (n_units,)
        Any per-unit score (selectivity, MI, importance...); must be finite.
    descending : bool
        Highest score first.

    Returns
    -------
    numpy.ndarray of int64, shape (n_units,)
        ``order[i]`` is the unit at position ``i`` (e.g. the i-th unit to ablate).
    """
    return np.asarray(_core.stable_order(_vector(scores, "scores"), descending), dtype=np.int64)


def score_correlations(x: Any, y: Any, groups: Any = None) -> pl.DataFrame:
    """Pearson and Spearman correlation between two per-unit scores, within each group.

    Parameters
    ----------
    x, y : array_like or torch.Tensor, shape (n_units,)
        Two scores of the same units (e.g. selectivity and ablation importance).
    groups : array_like, shape (n_units,), optional
        Group (e.g. layer name) of each unit; all units form one group when omitted.

    Returns
    -------
    polars.DataFrame
        Columns ``group`` (only when ``groups`` is given; sorted), ``n``, ``pearson``,
        ``spearman`` (ties get average ranks). A group with fewer than 2 units or a constant
        score gets NaN correlations.
    """
    xs, ys = _vector(x, "x"), _vector(y, "y")
    if len(xs) != len(ys):
        raise InputError(f"x has {len(xs)} values and y {len(ys)}: give one value per unit")
    if groups is None:
        uniq: np.ndarray | None = None
        codes = np.zeros(len(xs), dtype=np.int64)
        n_groups = 1
    else:
        g = _to_numpy(groups, "groups")
        if g.ndim != 1 or len(g) != len(xs):
            raise InputError(
                f"groups has shape {g.shape}, expected ({len(xs)},): give one group per unit"
            )
        uniq, inverse = np.unique(g, return_inverse=True)
        codes = np.ascontiguousarray(inverse, dtype=np.int64)
        n_groups = len(uniq)
    r = _core.group_correlations(xs, ys, codes, n_groups)
    cols: dict[str, Any] = {}
    if uniq is not None:
        cols["group"] = uniq.tolist()
    cols["n"] = np.asarray(r["n"], dtype=np.int64)
    cols["pearson"] = np.asarray(r["pearson"], dtype=np.float64)
    cols["spearman"] = np.asarray(r["spearman"], dtype=np.float64)
    return pl.DataFrame(cols)


def curve_auc(y: Any, x: Any = None) -> NDArray[np.float64]:
    """Trapezoid area under each row of ``y`` (many curves at once).

    Parameters
    ----------
    y : array_like or torch.Tensor, shape (n_curves, n_points) or (n_points,)
        Curve values, e.g. accuracy at each ablation level.
    x : array_like, shape (n_points,) or (n_curves, n_points), optional
        Abscissae shared by all curves or per curve. Default: ``n_points`` evenly spaced
        points on [0, 1] (fraction ablated), so a constant curve's AUC is its value.

    Returns
    -------
    numpy.ndarray of float64, shape (n_curves,)
        Same as ``numpy.trapezoid(y, x, axis=-1)``.
    """
    ys = _matrix(y, "y")
    n_points = ys.shape[1]
    if x is None:
        xs = np.linspace(0.0, 1.0, n_points)
    else:
        xs = _to_numpy(x, "x")
        if xs.shape not in ((n_points,), ys.shape):
            raise InputError(
                f"x has shape {xs.shape}; expected ({n_points},) or {ys.shape} to match y"
            )
        xs = np.ascontiguousarray(xs, dtype=np.float64).ravel()
    return np.asarray(_core.trapezoid_rows(ys, np.ascontiguousarray(xs)), dtype=np.float64)


def level_mean_std(
    values: Any, *, ddof: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and standard deviation across orderings (axis 0) at each level.

    Parameters
    ----------
    values : array_like or torch.Tensor, shape (n_orderings, n_levels)
        E.g. accuracy of each random ablation ordering at each ablation level.
    ddof : int
        Delta degrees of freedom of the std (0: population, like ``numpy.std``).

    Returns
    -------
    (mean, std) : tuple of numpy.ndarray of float64, each shape (n_levels,)
    """
    v = _to_numpy(values, "values")
    if v.ndim != 2:
        raise InputError(f"values must be 2-D (n_orderings, n_levels), got shape {v.shape}")
    if not isinstance(ddof, int) or ddof < 0:
        raise ConfigError(f"ddof must be a non-negative integer, got {ddof!r}")
    m, s = _core.level_mean_std(_matrix(v, "values"), ddof)
    return np.asarray(m, dtype=np.float64), np.asarray(s, dtype=np.float64)
