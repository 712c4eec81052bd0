"""MNIST and Fashion-MNIST: IDX files (``train-images-idx3-ubyte`` ...), gzip or not, in a
flat folder or torchvision's ``MNIST/raw/`` (``FashionMNIST/raw/``) layout. Both sets use the
same file names, so a flat folder given directly is read for either: keep Fashion-MNIST in
``fashion-mnist/`` or ``FashionMNIST/raw/`` under the data root."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from singledir.data.files import locate, read_bytes
from singledir.errors import DataError

__all__ = ["read_idx", "mnist_arrays"]

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    p = Path(path)
    raw = read_bytes(p)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path!r} is not an IDX file (bad magic number): check the file")
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path!r} is truncated (incomplete IDX header): replace the file")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    # Python integers: a product of 32-bit dims can overflow int64 (np.prod wraps to 0).
    count = math.prod(dims)
    held = (len(raw) - header) // dtype.itemsize
    if count > held:
        raise DataError(
            f"{path!r} is truncated or its header is impossible: the header promises "
            f"{' x '.join(map(str, dims))} = {count} values, the file holds {held}; "
            "replace the file"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    arr = arr.astype(dtype.newbyteorder("="), copy=True)
    arr.setflags(write=False)
    return arr


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (MNIST format), gzip-compressed or not, into a read-only array."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise DataError(f"cannot open {str(p)!r}: {exc.strerror}; check the path") from exc
    return _read_idx_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


def mnist_arrays(
    key: str, split: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 images (N, 1, 28, 28), int64 labels (N,))`` of ``split`` of ``key``."""
    img_path, lab_path = locate(key, split, data_dir, download)
    images, labels = read_idx(img_path), read_idx(lab_path).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{str(img_path)!r} and {str(lab_path)!r} do not match "
            f"(images {images.shape}, labels {labels.shape}): check the files"
        )
    return images[:, None], labels
