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

from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from singledir import _core
from singledir.stats_common import (
    DEFAULT_BINNING,
    DEFAULT_BINS,
    Binning,
    NegativePolicy,
    acts_array,
    combine_mi,
    labels_array,
    mi_options,
    negative_policy,
    unit_frame,
)

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
    a = acts_array(acts)
    y, k = labels_array(labels, a.shape[0], num_classes)
    d = _core.dense_unit_summary(
        a, y, k, negative=negative_policy(negative), mutual_info=False, moments=False
    )
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
    a = acts_array(acts)
    y, k = labels_array(labels, a.shape[0], num_classes)
    # "shift" never fails and does not move the argmax of the class means.
    d = _core.dense_unit_summary(a, y, k, negative="shift", mutual_info=False, moments=False)
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
    nb, name, shuffles, seed = mi_options(bins, binning, shuffle_baseline, seed)
    a = acts_array(acts)
    y, k = labels_array(labels, a.shape[0], num_classes)
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
    return combine_mi(d, shuffles, normalize)


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
    nb, name, shuffles, seed = mi_options(bins, binning, shuffle_baseline, seed)
    a = acts_array(acts)
    y, k = labels_array(labels, a.shape[0], num_classes)
    d = _core.dense_unit_summary(
        a,
        y,
        k,
        negative=negative_policy(negative),
        mutual_info=True,
        bins=nb,
        binning=name,
        miller_madow=bool(bias_correction),
        shuffles=shuffles,
        seed=seed,
    )
    units = np.arange(a.shape[1], dtype=np.int64)
    return unit_frame(d, units, slice(None), layer, shuffles, normalize, seed)


# The long-format table and the ordering statistics live in their own modules; their names
# stay importable from here (the public API of the statistics).
from singledir.activation_stats import stats_from_activations  # noqa: E402
from singledir.orderings import curve_auc, level_mean_std, rank_units, score_correlations  # noqa: E402
