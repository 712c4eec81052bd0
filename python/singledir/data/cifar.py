"""CIFAR-10: the python pickle batches of ``cifar-10-batches-py``, read with a restricted
unpickler that only rebuilds NumPy arrays (a pickle naming any other code is refused)."""

from __future__ import annotations

import functools
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from singledir.data.files import locate, read_bytes
from singledir.errors import DataError

__all__ = ["read_cifar_batch", "cifar_arrays"]


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, bytes and NumPy arrays; refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


@functools.lru_cache(maxsize=8)
def _read_cifar_cached(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    raw = read_bytes(Path(path))
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        if "is not allowed" in str(exc):
            raise DataError(
                f"{path!r} refers to code ({exc}); refusing to unpickle it: "
                "use the original CIFAR-10 python batches"
            ) from exc
        raise DataError(f"{path!r} is not a readable pickle batch ({exc}): replace it") from exc
    except Exception as exc:  # truncated pickles raise EOFError, ValueError, ...
        raise DataError(
            f"{path!r} is not a readable pickle batch ({type(exc).__name__}): "
            "the file is damaged or truncated; replace it"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path!r} does not hold a CIFAR batch dict: use cifar-10-batches-py")
    d = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}
    if "data" not in d or "labels" not in d:
        raise DataError(f"{path!r} lacks 'data' or 'labels': use the CIFAR-10 python batches")
    data = np.asarray(d["data"])
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise DataError(
            f"{path!r} holds data of shape {data.shape} and {labels.shape[0]} labels; "
            "expected (N, 3072) uint8 and N labels: use the CIFAR-10 python batches"
        )
    x = data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)
    x.setflags(write=False)
    labels.setflags(write=False)
    return x, labels


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch safely: ``(uint8 images (N, 3, 32, 32), labels (N,))``."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise DataError(f"cannot open {str(p)!r}: {exc.strerror}; check the path") from exc
    return _read_cifar_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


def cifar_arrays(
    split: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 images (N, 3, 32, 32), int64 labels (N,))`` of ``split``."""
    parts = [read_cifar_batch(f) for f in locate("cifar10", split, data_dir, download)]
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
