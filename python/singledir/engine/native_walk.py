"""The native (Rust) cumulative-ablation walk through an MLP chain, on CPU.

The chain runs from the first site's activity ``h0`` to the logits: ``L`` affine maps with a
ReLU between consecutive maps (eval BatchNorm folded in, eval Dropout dropped). Activation
``0`` is ``h0`` and activation ``i`` (``1 <= i < L``) is the ReLU output after map ``i``;
``site_layers`` says which activations are sites (sorted, starting with 0), and their units
are pooled in that order.

Both functions are exact: an ablated unit's change is propagated forward sparsely (a rank-1
update of the next pre-activation, then only the units whose ReLU output changes), logits
in float64. They agree with a float64 dense forward pass per mask except on samples whose
top-2 logit gap is below 1e-4. Results do not depend on the number of threads
(``RAYON_NUM_THREADS``). See ``rust/kernels/walk.rs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from singledir import _core
from singledir.errors import InputError

__all__ = ["mlp_curves", "mlp_importance"]


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor: no torch import needed here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _floats(x: Any, name: str, ndim: int) -> np.ndarray:
    """A C-contiguous float32 array of ``ndim`` dimensions (no silent float64 rounding)."""
    a = _numpy(x)
    if a.ndim != ndim:
        raise InputError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype != np.float32:
        raise InputError(f"{name} must be float32, got {a.dtype}: pass it as float32")
    return np.ascontiguousarray(a)


def _ints(x: Any, name: str, ndim: int) -> np.ndarray:
    """A C-contiguous int64 array of ``ndim`` dimensions (any integer dtype converted)."""
    a = _numpy(x)
    if a.ndim != ndim:
        raise InputError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{name} must hold integers, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _chain(
    h0: Any, layers: Sequence[tuple[Any, Any]], fills: Sequence[Any], labels: Any
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], list[np.ndarray], np.ndarray]:
    h = _floats(h0, "h0", 2)
    if len(layers) == 0:
        raise InputError("layers is empty: pass the (weight, bias) of every map to the logits")
    maps = []
    for i, layer in enumerate(layers):
        if len(layer) != 2:
            raise InputError(f"layers[{i}] must be a (weight, bias) pair")
        maps.append(
            (_floats(layer[0], f"layers[{i}] weight", 2), _floats(layer[1], f"layers[{i}] bias", 1))
        )
    fill_arrays = [_floats(f, f"fills[{i}]", 1) for i, f in enumerate(fills)]
    y = _ints(labels, "labels", 1)
    if y.shape[0] != h.shape[0]:
        raise InputError(f"{y.shape[0]} labels for {h.shape[0]} samples in h0")
    return h, maps, fill_arrays, y


def mlp_curves(
    h0: Any,
    layers: Sequence[tuple[Any, Any]],
    site_layers: Sequence[int],
    fills: Sequence[Any],
    orders: Any,
    levels: Any,
    labels: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative ablation along each ordering, scored at each level.

    Args:
        h0: float32 ``(B, n0)`` unit activity of the first site.
        layers: ``(W float32 (out, in), b float32 (out,))`` of the ``L`` maps to the logits.
        site_layers: activations that are sites, sorted, starting with 0.
        fills: one float32 ``(n_units,)`` per site (zeros for ``value="zero"``).
        orders: int64 ``(O, N)``, each row a permutation of the pooled units.
        levels: sorted unique numbers of ablated units, in ``0..N``.
        labels: int64 ``(B,)``.

    Returns:
        ``correct`` int64 ``(O, len(levels))`` (prediction = first index of the max) and
        ``loss_sum`` float64 ``(O, len(levels))`` (summed cross-entropy, nat).
    """
    h, maps, fill_arrays, y = _chain(h0, layers, fills, labels)
    sites = _ints(site_layers, "site_layers", 1)
    order_arr = _ints(orders, "orders", 2)
    level_arr = _ints(levels, "levels", 1)
    return _core.mlp_walk_curves(h, maps, sites, fill_arrays, order_arr, level_arr, y)


def mlp_importance(
    h0: Any,
    layers: Sequence[tuple[Any, Any]],
    site_layers: Sequence[int],
    fills: Sequence[Any],
    labels: Any,
    n_classes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pooled unit ablated alone (arguments as :func:`mlp_curves`).

    Returns:
        ``correct`` int64 ``(N,)``, ``loss_sum`` float64 ``(N,)`` and
        ``per_class_correct`` int64 ``(N, n_classes)`` (correct samples of each label).
    """
    h, maps, fill_arrays, y = _chain(h0, layers, fills, labels)
    sites = _ints(site_layers, "site_layers", 1)
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise InputError(f"n_classes must be a positive integer, got {n_classes!r}")
    return _core.mlp_walk_importance(h, maps, sites, fill_arrays, y, int(n_classes))
