"""Per-unit statistics computed by the Rust core: class selectivity, mutual information with
the class, activity moments, and statistics of unit orderings (ranks, correlations, AUC).

Every function takes NumPy arrays or torch tensors (any device; they are copied to the CPU),
converts dtype and memory layout itself, and raises a one-line
:class:`~singledir.errors.InputError` (bad values) or :class:`~singledir.errors.ConfigError`
(bad option) naming the problem and the fix.

Definitions
-----------
Class selectivity (Morcos et al. 2018, after Zhou et al.)::

    SI = (mu_max - mu_rest) / (mu_max + mu_rest)

where ``mu_max`` is the largest class-conditional mean activity of the unit and ``mu_rest``
the mean of the other classes' means. SI is in [0, 1] for non-negative activity; a unit
silent on every class gets 0. Negative activity makes SI meaningless, so it is refused
unless ``negative="shift"`` (subtract the unit's minimum when it is negative) or
``negative="clip"`` (use ``max(x, 0)``, as if a ReLU followed).

Mutual information ``I(binned activity; class)`` in bits, per unit, with ``bins`` bins of
equal width between the unit's min and max, or of equal frequency (quantile edges; equal
values always share a bin). The default of 10 bins keeps the plug-in bias, about
``(bins - 1)(classes - 1) / (2 N ln 2)`` bits, below 0.01 bit for 10 classes and 6,000 or
more samples while still resolving graded tuning; use fewer bins for small samples.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from numpy.typing import NDArray

from singledir import _core
from singledir.errors import ConfigError, DataError, InputError

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_BINNING",
    "class_selectivity",
    "preferred_class",
    "mutual_information",
    "unit_stats",
    "stats_from_activations",
    "rank_units",
    "score_correlations",
    "curve_auc",
    "level_mean_std",
]

Binning = Literal["equal_width", "equal_frequency"]
NegativePolicy = Literal["error", "shift", "clip"]

DEFAULT_BINS = 10
DEFAULT_BINNING: Binning = "equal_width"
#: Records per batch when reading an activation file (some 40 bytes each in memory).
DEFAULT_BATCH_ROWS = 20_000_000

ACTIVATION_COLUMNS = ("layer", "unit", "sample", "label", "activation")
UNIT_COLUMNS = (
    "unit",
    "selectivity",
    "preferred_class",
    "mutual_info",
    "mean",
    "std",
    "min",
    "max",
    "fraction_active",
)


# --------------------------------------------------------------------------- conversion


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """NumPy view/copy of an array-like or a torch tensor (moved to the CPU)."""
    if type(x).__module__.startswith("torch"):
        t = x.detach()
        if t.dtype.is_floating_point and t.element_size() < 4:  # half, bfloat16
            t = t.float()
        return np.asarray(t.cpu().numpy())
    try:
        return np.asarray(x)
    except Exception as exc:
        raise InputError(
            f"{name} is not array-like ({type(x).__name__}): pass a NumPy array or torch tensor"
        ) from exc


def _acts(acts: Any) -> NDArray[np.float32]:
    a = _to_numpy(acts, "acts")
    if a.dtype.kind not in "fiub":
        raise InputError(f"acts must be numeric, got dtype {a.dtype}: convert it to float32")
    if a.ndim != 2:
        raise InputError(
            f"acts must be 2-D (n_samples, n_units), got shape {a.shape}: "
            "flatten or average conv feature maps over space first"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"acts is empty (shape {a.shape}): give at least one sample and unit")
    return np.ascontiguousarray(a, dtype=np.float32)


def _class_count(label_max: int, num_classes: int | None) -> int:
    """The number of classes: ``num_classes`` (checked against the largest label) or
    ``label_max + 1``; at least 2."""
    if num_classes is None:
        k = label_max + 1
    else:
        k = int(num_classes)
        if label_max >= k:
            raise InputError(
                f"label {label_max} is out of range for num_classes={k}: "
                "raise num_classes or fix the labels"
            )
    if k < 2:
        raise InputError(f"need at least 2 classes, got {k}: check the labels")
    return k


def _labels(labels: Any, n_samples: int, num_classes: int | None) -> tuple[NDArray[np.int64], int]:
    y = _to_numpy(labels, "labels")
    if y.ndim != 1:
        raise InputError(f"labels must be 1-D (n_samples,), got shape {y.shape}")
    if y.dtype.kind not in "iub":
        raise InputError(
            f"labels must be integer class indices, got dtype {y.dtype}: cast with .astype(int)"
        )
    if len(y) != n_samples:
        raise InputError(
            f"{len(y)} labels for {n_samples} samples (rows of acts): give one label per sample"
        )
    y = np.ascontiguousarray(y, dtype=np.int64)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise InputError(f"labels contain {lo}: labels must be class indices 0..n_classes-1")
    k = _class_count(hi, num_classes)
    counts = np.bincount(y, minlength=k)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise InputError(
            f"class {int(empty[0])} has no samples: every class 0..{k - 1} needs samples "
            "(relabel to consecutive indices or set num_classes)"
        )
    return y, k


def _mi_options(
    bins: int, binning: str, shuffle_baseline: int, seed: int
) -> tuple[int, str, int, int]:
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 2:
        raise ConfigError(f"bins must be an integer >= 2, got {bins!r}: e.g. bins=10")
    name = str(binning).replace("-", "_")
    if name not in ("equal_width", "equal_frequency"):
        raise ConfigError(f"unknown binning {binning!r}: use 'equal_width' or 'equal_frequency'")
    if not isinstance(shuffle_baseline, int | np.integer) or shuffle_baseline < 0:
        raise ConfigError(f"shuffle_baseline must be an integer >= 0, got {shuffle_baseline!r}")
    if not isinstance(seed, int | np.integer) or not 0 <= seed < 2**64:
        raise ConfigError(f"seed must be an integer in 0..2**64-1, got {seed!r}")
    return int(bins), name, int(shuffle_baseline), int(seed)


def _negative(negative: str) -> str:
    if negative not in ("error", "shift", "clip"):
        raise ConfigError(f"unknown negative policy {negative!r}: use 'error', 'shift' or 'clip'")
    return negative


def _combine_mi(d: dict[str, Any], shuffle_baseline: int, normalize: bool) -> NDArray[np.float64]:
    mi = np.asarray(d["mutual_info"], dtype=np.float64)
    if shuffle_baseline:
        mi = mi - d["mutual_info_shuffled"]
    if normalize:
        h = np.asarray(d["class_entropy"], dtype=np.float64)
        mi = np.divide(mi, h, out=np.zeros_like(mi), where=h > 0)
    return mi


# --------------------------------------------------------------------------- dense arrays


def class_selectivity(
    acts: Any,
    labels: Any,
    *,
    num_classes: int | None = None,
    negative: NegativePolicy = "error",
) -> NDArray[np.float64]:
    """Class selectivity index of every unit.

    Parameters
    ----------
    acts : array_like or torch.Tensor, shape (n_samples, n_units)
        Unit activity, one row per sample (float32 is used internally).
    labels : array_like or torch.Tensor of int, shape (n_samples,)
        Class index of each sample, in ``0..num_classes-1``; every class needs samples.
    num_classes : int, optional
        Number of classes; defaults to ``labels.max() + 1``.
    negative : {"error", "shift", "clip"}
        What to do with negative activity (see the module docstring). Default: refuse.

    Returns
    -------
    numpy.ndarray of float64, shape (n_units,)
        ``(mu_max - mu_rest) / (mu_max + mu_rest)``, in [0, 1]; 0 for a silent unit.

    Examples
    --------
    >>> class_selectivity([[1.0, 0.0], [0.0, 0.0]], [0, 1])
    array([1., 0.])
    """
    a = _acts(acts)
    y, k = _labels(labels, a.shape[0], num_classes)
    d = _core.dense_unit_summary(a, y, k, negative=_negative(negative), mutual_info=False)
    return np.asarray(d["selectivity"], dtype=np.float64)


def preferred_class(acts: Any, labels: Any, *, num_classes: int | None = None) -> NDArray[np.int64]:
    """Class with the largest mean activity for every unit (lowest class on ties).

    Parameters
    ----------
    acts : array_like or torch.Tensor, shape (n_samples, n_units)
    labels : array_like or torch.Tensor of int, shape (n_samples,)
    num_classes : int, optional
        Defaults to ``labels.max() + 1``.

    Returns
    -------
    numpy.ndarray of int64, shape (n_units,)
    """
    a = _acts(acts)
    y, k = _labels(labels, a.shape[0], num_classes)
    # "shift" never fails and does not move the argmax of the class means.
    d = _core.dense_unit_summary(a, y, k, negative="shift", mutual_info=False)
    return np.asarray(d["preferred_class"], dtype=np.int64)


def mutual_information(
    acts: Any,
    labels: Any,
    *,
    bins: int = DEFAULT_BINS,
    binning: Binning = DEFAULT_BINNING,
    bias_correction: bool = False,
    shuffle_baseline: int = 0,
    normalize: bool = False,
    seed: int = 0,
    num_classes: int | None = None,
) -> NDArray[np.float64]:
    """Mutual information in bits between each unit's binned activity and the class.

    Parameters
    ----------
    acts : array_like or torch.Tensor, shape (n_samples, n_units)
    labels : array_like or torch.Tensor of int, shape (n_samples,)
    bins : int
        Number of bins per unit (default 10; see the module docstring for why).
    binning : {"equal_width", "equal_frequency"}
        Equal width: ``bin = min(floor((x - min) * (bins / (max - min))), bins - 1)`` in
        float64 (a constant unit has one bin). Equal frequency: with ``s`` the sorted activity
        of the unit's ``n`` samples, edges ``s[k * n // bins]`` for ``k = 1..bins-1`` and
        ``bin = #{edges <= x}``, so equal values share a bin.
    bias_correction : bool
        Apply the Miller-Madow correction, ``- (cells - bins_used - classes_used + 1) /
        (2 N ln 2)`` over non-empty cells (the result may then dip slightly below 0).
    shuffle_baseline : int
        If > 0, subtract the mean MI over this many shuffles of the labels (each unit gets its
        own permutations, a function of ``seed``, the unit index and the repetition only).
    normalize : bool
        Divide by the class entropy H(class) in bits, giving a value in [0, 1] (plug-in).
    seed : int
        Seed of the label shuffles.
    num_classes : int, optional
        Defaults to ``labels.max() + 1``.

    Returns
    -------
    numpy.ndarray of float64, shape (n_units,)
        Plug-in MI, at most ``log2(num_classes)``; exactly 0 for a constant unit.
    """
    nb, name, shuffles, seed = _mi_options(bins, binning, shuffle_baseline, seed)
    a = _acts(acts)
    y, k = _labels(labels, a.shape[0], num_classes)
    d = _core.dense_unit_summary(
        a,
        y,
        k,
        negative=None,
        mutual_info=True,
        bins=nb,
        binning=name,
        miller_madow=bool(bias_correction),
        shuffles=shuffles,
        seed=seed,
        moments=False,
    )
    return _combine_mi(d, shuffles, normalize)


def _frame(
    d: dict[str, Any],
    units: NDArray[np.int64],
    keep: NDArray[np.bool_] | slice,
    layer: str | None,
    shuffles: int,
    normalize: bool,
    seed: int,
) -> pl.DataFrame:
    cols: dict[str, Any] = {}
    if layer is not None:
        cols["layer"] = pl.Series("layer", [layer] * len(units), dtype=pl.String)
    mi = _combine_mi(d, shuffles, normalize)
    cols["unit"] = np.asarray(units, dtype=np.int64)
    cols["selectivity"] = np.asarray(d["selectivity"])[keep]
    cols["preferred_class"] = np.asarray(d["preferred_class"], dtype=np.int64)[keep]
    cols["mutual_info"] = mi[keep]
    if shuffles:
        cols["mutual_info_shuffled"] = np.asarray(d["mutual_info_shuffled"])[keep]
        cols["shuffle_seed"] = np.full(len(units), seed, dtype=np.uint64)
    for name in ("mean", "std", "min", "max", "fraction_active"):
        cols[name] = np.asarray(d[name], dtype=np.float64)[keep]
    return pl.DataFrame(cols)


def unit_stats(
    acts: Any,
    labels: Any,
    *,
    layer: str | None = None,
    num_classes: int | None = None,
    bins: int = DEFAULT_BINS,
    binning: Binning = DEFAULT_BINNING,
    bias_correction: bool = False,
    shuffle_baseline: int = 0,
    normalize: bool = False,
    seed: int = 0,
    negative: NegativePolicy = "error",
) -> pl.DataFrame:
    """All per-unit statistics of one layer's activity in one pass.

    Parameters
    ----------
    acts, labels, num_classes
        As in :func:`class_selectivity`.
    layer : str, optional
        Layer name; when given, it is the first column.
    bins, binning, bias_correction, shuffle_baseline, normalize, seed
        As in :func:`mutual_information`.
    negative : {"error", "shift", "clip"}
        As in :func:`class_selectivity`.

    Returns
    -------
    polars.DataFrame
        One row per unit: ``layer`` (if given), ``unit``, ``selectivity``,
        ``preferred_class`` (the class defining ``mu_max``), ``mutual_info`` (bits),
        ``mutual_info_shuffled`` and ``shuffle_seed`` (only with ``shuffle_baseline``),
        ``mean``, ``std`` (population, ddof=0), ``min``, ``max``, ``fraction_active``
        (fraction of samples with activity > 0).
    """
    nb, name, shuffles, seed = _mi_options(bins, binning, shuffle_baseline, seed)
    a = _acts(acts)
    y, k = _labels(labels, a.shape[0], num_classes)
    d = _core.dense_unit_summary(
        a,
        y,
        k,
        negative=_negative(negative),
        mutual_info=True,
        bins=nb,
        binning=name,
        miller_madow=bool(bias_correction),
        shuffles=shuffles,
        seed=seed,
    )
    units = np.arange(a.shape[1], dtype=np.int64)
    return _frame(d, units, slice(None), layer, shuffles, normalize, seed)


# --------------------------------------------------------------------------- long format


def _scan(source: Any) -> tuple[pl.LazyFrame, str]:
    if isinstance(source, pl.LazyFrame):
        return source, "the activation table"
    if isinstance(source, pl.DataFrame):
        return source.lazy(), "the activation table"
    p = Path(source)
    where = repr(str(p))
    if not p.exists():
        raise DataError(f"activation file {where} does not exist: check the path")
    if p.is_dir():
        raise DataError(f"{where} is a folder: give the path of an activations parquet file")
    if not os.access(p, os.R_OK):
        raise DataError(f"cannot read {where}: permission denied")
    if p.stat().st_size == 0:
        raise DataError(f"{where} is empty (0 bytes): record the activations again")
    lf = pl.scan_parquet(p)
    try:
        lf.collect_schema()
    except Exception as exc:
        raise DataError(
            f"{where} is not a readable parquet file ({type(exc).__name__}): "
            "give a parquet file with columns layer, unit, sample, label, activation"
        ) from exc
    return lf, where


def _check_schema(lf: pl.LazyFrame, where: str) -> None:
    try:
        schema = lf.collect_schema()
    except Exception as exc:
        raise DataError(f"cannot read the columns of {where} ({type(exc).__name__})") from exc
    missing = [c for c in ACTIVATION_COLUMNS if c not in schema]
    if missing:
        found = ", ".join(schema.names()) or "none"
        raise DataError(
            f"{where} lacks column(s) {', '.join(missing)}: expected "
            f"{', '.join(ACTIVATION_COLUMNS)} (found {found})"
        )
    expected = {
        "layer": (lambda t: t in (pl.String, pl.Categorical) or isinstance(t, pl.Enum), "string"),
        "unit": (lambda t: t.is_integer(), "integer"),
        "sample": (lambda t: t.is_integer(), "integer"),
        "label": (lambda t: t.is_integer(), "integer"),
        "activation": (lambda t: t.is_float(), "float"),
    }
    for col, (ok, kind) in expected.items():
        dtype = schema[col]
        if not ok(dtype):
            raise DataError(
                f"column {col!r} has dtype {dtype} in {where}, expected {kind}: "
                f"cast it (e.g. pl.col({col!r}).cast(...)) and write the file again"
            )


def _collect(lf: pl.LazyFrame, where: str) -> pl.DataFrame:
    try:
        return lf.collect(engine="streaming")
    except Exception as exc:
        raise DataError(
            f"cannot read {where} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}): "
            "check that the file was written completely"
        ) from exc


def stats_from_activations(
    source: str | os.PathLike[str] | pl.LazyFrame | pl.DataFrame,
    *,
    bins: int = DEFAULT_BINS,
    binning: Binning = DEFAULT_BINNING,
    bias_correction: bool = False,
    shuffle_baseline: int = 0,
    normalize: bool = False,
    seed: int = 0,
    negative: NegativePolicy = "error",
    num_classes: int | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> pl.DataFrame:
    """Per-unit statistics of every layer in a long-format activation table.

    The table (``activations.parquet``) has one row per (sample, unit): ``layer`` (str),
    ``unit`` (int, 0-based within the layer), ``sample`` (int), ``label`` (int),
    ``activation`` (float). It is read lazily: one pass for an overview, then one layer at a
    time, in batches of whole units of at most about ``batch_rows`` records, so a file larger
    than memory works.

    Parameters
    ----------
    source : path, polars.LazyFrame or polars.DataFrame
        The activation table.
    bins, binning, bias_correction, shuffle_baseline, normalize, seed
        As in :func:`mutual_information`.
    negative : {"error", "shift", "clip"}
        As in :func:`class_selectivity`.
    num_classes : int, optional
        Defaults to the largest label in the table + 1.
    batch_rows : int
        Memory budget, in records, of one batch.

    Returns
    -------
    polars.DataFrame
        One row per (layer, unit), layers in order of first appearance, units ascending;
        the columns of :func:`unit_stats`.
    """
    nb, name, shuffles, seed = _mi_options(bins, binning, shuffle_baseline, seed)
    negative = _negative(negative)  # type: ignore[assignment]
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise ConfigError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    lf, where = _scan(source)
    _check_schema(lf, where)

    # A table within the budget is read once, whole; a larger one is streamed: one pass for
    # the overview, then one filtered scan per layer or batch of whole units.
    n_rows = int(_collect(lf.select(pl.len()), where).item())
    whole: pl.DataFrame | None = None
    if n_rows <= batch_rows:
        whole = _collect(lf.select(*ACTIVATION_COLUMNS), where)
    overview = _collect(
        (lf if whole is None else whole.lazy())
        .with_row_index("__row")
        .group_by("layer")
        .agg(
            first=pl.col("__row").min(),
            rows=pl.len(),
            unit_min=pl.col("unit").min(),
            unit_max=pl.col("unit").max(),
            label_min=pl.col("label").min(),
            label_max=pl.col("label").max(),
            nulls=pl.sum_horizontal(
                [pl.col(c).null_count() for c in ("unit", "sample", "label", "activation")]
            ),
            nonfinite=(~pl.col("activation").is_finite()).sum(),
        )
        .sort("first"),
        where,
    )
    if overview.height == 0:
        raise DataError(f"{where} has no rows: record some activations first")
    for row in overview.iter_rows(named=True):
        layer = row["layer"]
        if layer is None:
            raise InputError(f"{where} has rows with a null layer name: fill or drop them")
        if row["nulls"]:
            raise InputError(
                f"layer {layer!r} has {row['nulls']} null value(s) in unit, sample, label or "
                "activation: drop or fill them"
            )
        if row["nonfinite"]:
            raise InputError(
                f"layer {layer!r} has {row['nonfinite']} NaN or inf activation(s): "
                "drop or impute them first"
            )
        if row["label_min"] < 0:
            raise InputError(
                f"layer {layer!r} has label {row['label_min']}: labels must be class indices "
                "0..n_classes-1"
            )
        if row["unit_min"] < 0:
            raise InputError(
                f"layer {layer!r} has unit index {row['unit_min']}: units must be indices >= 0"
            )
        if row["unit_max"] + 1 > 4 * row["rows"] + 1024:
            raise InputError(
                f"layer {layer!r} has unit indices up to {row['unit_max']} for only "
                f"{row['rows']} records: number the units 0..n_units-1"
            )
    k = _class_count(int(overview["label_max"].max()), num_classes)  # type: ignore[arg-type]

    columns = ("unit", "label", "activation")
    pieces: list[pl.DataFrame] = []
    for row in overview.iter_rows(named=True):
        layer, span = row["layer"], int(row["unit_max"]) + 1
        per_unit = max(1, math.ceil(row["rows"] / span))
        step = span if whole is not None else max(1, batch_rows // per_unit)
        for lo in range(0, span, step):
            hi = min(span, lo + step)
            if whole is not None:
                one_layer = overview.height == 1
                part = (whole if one_layer else whole.filter(pl.col("layer") == layer)).select(
                    columns
                )
            else:
                sel = pl.col("layer") == layer
                if step < span:
                    sel = sel & pl.col("unit").is_between(lo, hi - 1)
                part = _collect(lf.filter(sel).select(columns), where)
            if part.height == 0:
                continue
            units = part["unit"].to_numpy().astype(np.int64) - lo
            labels = part["label"].to_numpy().astype(np.int64)
            values = np.ascontiguousarray(part["activation"].to_numpy(), dtype=np.float32)
            del part
            try:
                d = _core.long_unit_summary(
                    units,
                    labels,
                    values,
                    hi - lo,
                    k,
                    negative=negative,
                    mutual_info=True,
                    bins=nb,
                    binning=name,
                    miller_madow=bool(bias_correction),
                    shuffles=shuffles,
                    seed=seed,
                )
            except InputError as exc:
                raise InputError(f"layer {layer!r}: {exc}") from exc
            keep = np.asarray(d["n_samples"]) > 0
            present = np.flatnonzero(keep).astype(np.int64) + lo
            pieces.append(_frame(d, present, keep, str(layer), shuffles, normalize, seed))
    return pl.concat(pieces, how="vertical")


# --------------------------------------------------------------------------- orderings


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
