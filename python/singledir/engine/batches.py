"""The one data adapter: every engine (ablation, noise, importance, recording) reads its
``data`` argument through :func:`iter_batches` / :class:`Batches`.

Accepted forms: a tuple ``(x, y)`` of tensors or arrays, an object with ``.x``/``.y`` tensors
(``LabeledData``) or a ``.loader(batch_size)`` method (``ImageFolderData``), a torch
``Dataset`` (or a list) of ``(x, y)`` pairs, or a ``DataLoader`` (its own batching is kept).
Empty data and a count mismatch between inputs and labels are :class:`~singledir.errors.DataError`;
a form that cannot be read or converted is an :class:`~singledir.errors.InputError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from singledir.errors import DataError, InputError

__all__ = ["Batches", "iter_batches", "check_labels", "as_tensor", "EMPTY_DATA"]

EMPTY_DATA = "the data set is empty (no samples): choose a non-empty split or data set"


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """``value`` as a tensor (tensors pass through; arrays and lists are converted)."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except Exception:  # noqa: BLE001 - any conversion failure is bad input
        raise InputError(f"{what} cannot be turned into a tensor: pass tensors or arrays") from None


def _direct_xy(data: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(x, y)`` when ``data`` holds them directly (a pair, or an object with .x/.y)."""
    if isinstance(data, tuple | list) and len(data) == 2:
        return as_tensor(data[0], "inputs"), as_tensor(data[1], "labels")
    if getattr(data, "x", None) is not None and hasattr(data, "y"):
        return as_tensor(data.x, "inputs"), as_tensor(data.y, "labels")
    return None


def iter_batches(data: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches (labels flattened to 1-D); empty batches are skipped.

    Raises
    ------
    DataError
        No samples at all, or inputs and labels differ in number.
    InputError
        A batch size below 1 or a data form that cannot be read.
    """
    from torch.utils.data import DataLoader, Dataset

    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    xy = _direct_xy(data)
    if xy is not None:
        x, y = xy
        if x.ndim == 0 or x.shape[0] == 0:
            raise DataError(EMPTY_DATA)
        y = y.reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise DataError(
                f"{x.shape[0]} inputs but {y.shape[0]} labels: pass one label per input sample"
            )
        for start in range(0, int(x.shape[0]), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    if isinstance(data, DataLoader):
        loader: Any = data
    elif callable(getattr(data, "loader", None)):
        loader = data.loader(batch_size)
    elif isinstance(data, Dataset | list | tuple):
        # a list of (x, y) pairs is a map-style dataset too (len + indexing)
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)  # type: ignore[arg-type]
    else:
        raise InputError(
            f"cannot read data of type {type(data).__name__}: pass (x, y) tensors, an object "
            "with .x and .y, a torch Dataset (or list) of (x, y) pairs or a DataLoader"
        )
    seen = 0
    for item in loader:
        if not isinstance(item, tuple | list) or len(item) < 2:
            raise DataError("data batches must be (inputs, labels) pairs: fix the data set")
        x, y = as_tensor(item[0], "inputs"), as_tensor(item[1], "labels").reshape(-1)
        if x.ndim == 0 or x.shape[0] == 0:
            continue
        if y.shape[0] != x.shape[0]:
            raise DataError(
                f"a batch has {x.shape[0]} inputs but {y.shape[0]} labels: fix the data set"
            )
        seen += int(x.shape[0])
        yield x, y
    if seen == 0:
        raise DataError(EMPTY_DATA)


def check_labels(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``y`` as int64 class indices within the model's ``n_classes`` outputs."""
    if y.ndim != 1:
        raise InputError(f"labels must be 1-D class indices, got shape {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise InputError("labels must be integer class indices: pass an int64 tensor")
    y = y.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise InputError(
            f"labels must lie in 0..{n_classes - 1} (the model's {n_classes} outputs): "
            "check the data matches the model"
        )
    return y


def _to_device(x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Floating inputs in the model's dtype; integer inputs (token ids) keep theirs."""
    return x.to(device, dtype) if x.is_floating_point() else x.to(device)


class Batches:
    """Re-iterable ``(x, y)`` batches on a device; the data are checked to be non-empty on
    construction and the labels against ``n_classes`` once that is set."""

    def __init__(self, data: Any, batch_size: int, device: torch.device, dtype: torch.dtype):
        self.data = data
        self.batch_size = int(batch_size)
        self.device = device
        self.dtype = dtype
        first = next(iter_batches(data, self.batch_size))
        self.sample_x = _to_device(first[0][:2], device, dtype)
        self._count: int | None = None
        self.n_classes: int | None = None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in iter_batches(self.data, self.batch_size):
            if self.n_classes is not None:
                y = check_labels(y, self.n_classes)
            yield _to_device(x, self.device, self.dtype), y.to(self.device)

    def count(self) -> int:
        """Number of samples (from the data's length when it has one, else by a pass)."""
        if self._count is None:
            known = known_count(self.data)
            if known is None:
                known = sum(int(x.shape[0]) for x, _ in iter_batches(self.data, self.batch_size))
            self._count = known
        return self._count

    def n_batches(self) -> int:
        return -(-self.count() // self.batch_size)


def known_count(data: Any) -> int | None:
    """The number of samples when the data form tells it without a pass, else None."""
    from torch.utils.data import DataLoader

    xy = _direct_xy(data)
    if xy is not None:
        return int(xy[0].shape[0]) if xy[0].ndim else 0
    if isinstance(data, DataLoader):
        if data.batch_size is not None and not data.drop_last and hasattr(data.sampler, "__len__"):
            return len(data.sampler)  # type: ignore[arg-type]
        return None
    try:
        return len(data)
    except TypeError:
        return None
