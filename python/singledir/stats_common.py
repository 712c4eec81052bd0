"""What the statistics modules share: conversion and validation of arrays and options, and
the per-unit table (one row per unit) that :func:`singledir.stats.unit_stats` and
:func:`singledir.stats.stats_from_activations` return."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import polars as pl
from numpy.typing import NDArray

from singledir.errors import ConfigError, InputError

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_BINNING",
    "Binning",
    "NegativePolicy",
    "to_numpy",
    "acts_array",
    "checked_num_classes",
    "class_count",
    "labels_array",
    "mi_options",
    "negative_policy",
    "combine_mi",
    "unit_frame",
]

Binning = Literal["equal_width", "equal_frequency"]
NegativePolicy = Literal["error", "shift", "clip"]

DEFAULT_BINS = 10
DEFAULT_BINNING: Binning = "equal_width"


def to_numpy(x: Any, name: str) -> np.ndarray:
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


def acts_array(acts: Any) -> NDArray[np.float32]:
    a = to_numpy(acts, "acts")
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


def checked_num_classes(num_classes: Any) -> int:
    """``num_classes`` as an int in 1..2**31-1 (a larger count is a mistake, not a request)."""
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int | np.integer)
        or not 1 <= num_classes <= 2**31 - 1
    ):
        raise InputError(
            f"num_classes must be a positive integer below 2**31, got {num_classes!r}: give the "
            "number of classes"
        )
    return int(num_classes)


def class_count(label_max: int, num_classes: int | None, n_samples: int | None = None) -> int:
    """The number of classes: ``num_classes`` (checked against the largest label) or
    ``label_max + 1``; at least 2, and at most ``n_samples`` when given (every class needs
    samples; this also refuses a label such as 10**12 before anything is allocated)."""
    if num_classes is None:
        k = label_max + 1
    else:
        k = checked_num_classes(num_classes)
        if label_max >= k:
            raise InputError(
                f"label {label_max} is out of range for num_classes={k}: "
                "raise num_classes or fix the labels"
            )
    if k < 2:
        raise InputError(f"need at least 2 classes, got {k}: check the labels")
    if n_samples is not None and k > n_samples:
        raise InputError(
            f"{k} classes for {n_samples} samples: every class needs samples, so labels must be "
            "class indices 0..n_classes-1 (renumber them) and num_classes their true count"
        )
    return k


def labels_array(
    labels: Any, n_samples: int, num_classes: int | None
) -> tuple[NDArray[np.int64], int]:
    y = to_numpy(labels, "labels")
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
    k = class_count(hi, num_classes, len(y))
    counts = np.bincount(y, minlength=k)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise InputError(
            f"class {int(empty[0])} has no samples: every class 0..{k - 1} needs samples "
            "(relabel to consecutive indices or set num_classes)"
        )
    return y, k


def mi_options(
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


def negative_policy(negative: str) -> str:
    if negative not in ("error", "shift", "clip"):
        raise ConfigError(f"unknown negative policy {negative!r}: use 'error', 'shift' or 'clip'")
    return negative


def combine_mi(d: dict[str, Any], shuffle_baseline: int, normalize: bool) -> NDArray[np.float64]:
    mi = np.asarray(d["mutual_info"], dtype=np.float64)
    if shuffle_baseline:
        mi = mi - d["mutual_info_shuffled"]
    if normalize:
        h = np.asarray(d["class_entropy"], dtype=np.float64)
        mi = np.divide(mi, h, out=np.zeros_like(mi), where=h > 0)
    return mi


def unit_frame(
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
    mi = combine_mi(d, shuffles, normalize)
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
