"""Per-unit scores and their tables: importance (accuracy drop when one unit alone is
ablated), class selectivity and mutual information with the class, read from a units table or
computed on a model and its data, and the join of these into one row per ``(layer, unit)``.

The CLI's ``--order ... --by SCORE [--scores units.parquet]``, ``importance --plot`` and the
selectivity experiment (Fig. 7) all take their scores from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from singledir.errors import ConfigError, DataError

if TYPE_CHECKING:
    import polars as pl
    from torch import nn

__all__ = [
    "SCORE_ALIASES",
    "COMPUTED_SCORES",
    "canonical_score",
    "scores_from_table",
    "compute_unit_scores",
    "ordering_scores",
    "unit_stats_table",
    "join_unit_scores",
    "scores_frame",
]

# Score names computed on the fly and the column names they may have in a units table.
SCORE_ALIASES = {
    "selectivity": "selectivity",
    "class_selectivity": "selectivity",
    "mutual_info": "mutual_information",
    "mutual_information": "mutual_information",
    "mi": "mutual_information",
    "importance": "accuracy_drop",
    "accuracy_drop": "accuracy_drop",
}
COMPUTED_SCORES = ("selectivity", "mutual_info", "importance")
_KEYS = ("layer", "unit")


def canonical_score(name: str) -> str | None:
    """The canonical score a name stands for (``mi`` -> ``mutual_information``), else None."""
    return SCORE_ALIASES.get(name.strip().lower())


def scores_from_table(
    table: pl.DataFrame | str | Path,
    column: str,
    sites: Sequence[str],
    units: dict[str, int],
) -> dict[str, np.ndarray]:
    """``column`` of a units table (one row per ``(layer, unit)``) as one array per site.

    Every unit of every site must have a finite-or-NaN-free value; ``unit`` must be an integer
    column. A path is read with :func:`singledir.io.read_table`.
    """
    import polars as pl

    from singledir.io import read_table

    where = repr(str(table)) if isinstance(table, str | Path) else "the units table"
    frame: pl.DataFrame = read_table(table) if isinstance(table, str | Path) else table
    col = column
    if col not in frame.columns:
        alias = canonical_score(column)
        if alias is not None and alias in frame.columns:
            col = alias
        else:
            numeric = [c for c in frame.columns if frame[c].dtype.is_numeric() and c != "unit"]
            raise ConfigError(
                f"{where} has no column {column!r}: choose --by from "
                f"{', '.join(numeric) or '(no numeric columns)'}"
            )
    for need in _KEYS:
        if need not in frame.columns:
            raise DataError(
                f"{where} has no {need!r} column: pass a units table written by "
                "`singledir stats` or `singledir importance`"
            )
    if not frame["unit"].dtype.is_integer():
        raise DataError(
            f"the 'unit' column of {where} holds {frame['unit'].dtype} values, not integers: "
            "pass a units table written by `singledir stats` or `singledir importance`"
        )
    if frame["layer"].dtype not in (pl.String, pl.Categorical):
        raise DataError(
            f"the 'layer' column of {where} holds {frame['layer'].dtype} values, not site "
            "names: pass a units table written by `singledir stats` or `singledir importance`"
        )
    if not frame[col].dtype.is_numeric():
        raise ConfigError(f"column {col!r} of {where} is not numeric: choose another --by")
    out: dict[str, np.ndarray] = {}
    for site in sites:
        rows = frame.filter(pl.col("layer") == site).select("unit", col)
        n = units[site]
        values = np.full(n, np.nan)
        idx = rows["unit"].to_numpy().astype(np.int64, copy=False)
        ok = (idx >= 0) & (idx < n)
        values[idx[ok]] = rows[col].cast(pl.Float64).to_numpy()[ok]
        missing = int(np.isnan(values).sum())
        if missing:
            raise DataError(
                f"{where} lacks {col!r} for {missing} of {n} units of site {site!r}: "
                "compute it on the same checkpoint and layers"
            )
        out[site] = values
    return out


def compute_unit_scores(
    score: str,
    model: nn.Module,
    data: Any,
    sites: Sequence[str],
    *,
    batch_size: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """One of :data:`COMPUTED_SCORES` (or an alias) for every unit, one array per site."""
    kind = canonical_score(score)
    if kind is None:
        raise ConfigError(
            f"score {score!r} is not computed on the fly: choose selectivity, mutual_info or "
            "importance, or pass a units table (--scores units.parquet) that has that column"
        )
    if kind == "accuracy_drop":
        import polars as pl

        from singledir.ablation import unit_importance

        table = unit_importance(
            model, data, list(sites), batch_size=batch_size, device=device, progress=progress
        )
        return {
            s: table.filter(pl.col("layer") == s).sort("unit")["accuracy_drop"].to_numpy()
            for s in sites
        }
    from singledir.activations import record_activation_arrays
    from singledir.stats import class_selectivity, mutual_information

    arrays, labels = record_activation_arrays(
        model, data, list(sites), batch_size=batch_size, device=device, progress=progress
    )
    n_classes = getattr(data, "num_classes", None)
    fn = class_selectivity if kind == "selectivity" else mutual_information
    return {
        s: np.asarray(fn(arrays[s], labels, num_classes=n_classes), dtype=np.float64) for s in sites
    }


def ordering_scores(
    model: nn.Module,
    data: Any,
    sites: Sequence[str],
    units: dict[str, int],
    *,
    order: str,
    by: str | None = None,
    table: str | Path | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray] | None:
    """The per-unit scores an ordering ``order`` ("random", "ascending", "descending") sorts
    by: None for random; ``by`` read from ``table`` when given, else computed on the fly."""
    if order == "random":
        if by is not None or table is not None:
            raise ConfigError(
                "--by/--scores order units by a score: add --order ascending or descending"
            )
        return None
    if by is None:
        raise ConfigError(
            f"--order {order} needs a score: add --by selectivity, mutual_info, importance "
            "or a column of --scores units.parquet"
        )
    if table is not None:
        return scores_from_table(table, by, sites, units)
    if canonical_score(by) is None:
        raise ConfigError(
            f"--by {by!r} is not computed on the fly: choose selectivity, mutual_info or "
            "importance, or pass --scores units.parquet that has that column"
        )
    return compute_unit_scores(
        by, model, data, sites, batch_size=batch_size, device=device, progress=progress
    )


def scores_frame(
    scores: dict[str, np.ndarray], column: str, sites: Sequence[str] | None = None
) -> pl.DataFrame:
    """Per-site score arrays as a table: ``layer``, ``unit`` (int64), ``column``."""
    import polars as pl

    names = list(scores) if sites is None else list(sites)
    return pl.DataFrame(
        {
            "layer": [s for s in names for _ in range(len(scores[s]))],
            "unit": np.concatenate(
                [np.arange(len(scores[s]), dtype=np.int64) for s in names]
            ).astype(np.int64),
            column: np.concatenate([np.asarray(scores[s], dtype=np.float64) for s in names]),
        }
    )


def unit_stats_table(
    arrays: dict[str, np.ndarray], labels: np.ndarray, num_classes: int | None = None
) -> pl.DataFrame:
    """:func:`singledir.stats.unit_stats` (selectivity, preferred class, mutual information,
    activity) of each site's activations, one row per ``(layer, unit)``."""
    import polars as pl

    from singledir.stats import unit_stats

    frames = [
        unit_stats(acts, labels, layer=site, num_classes=num_classes)
        for site, acts in arrays.items()
    ]
    return pl.concat(frames, how="diagonal_relaxed")


def join_unit_scores(
    left: pl.DataFrame, right: pl.DataFrame, *, how: str = "inner"
) -> pl.DataFrame:
    """Join two per-unit tables on ``(layer, unit)``; a column both have is kept from
    ``left`` (the first table's definition wins, nothing is duplicated)."""
    for frame in (left, right):
        missing = [k for k in _KEYS if k not in frame.columns]
        if missing:
            raise DataError(f"a units table lacks {', '.join(missing)}: it cannot be joined")
    keep = [c for c in right.columns if c not in left.columns or c in _KEYS]
    return left.join(right.select(keep), on=list(_KEYS), how=how)  # type: ignore[arg-type]
