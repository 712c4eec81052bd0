"""Datasets the paper uses, read from their original file formats, with label corruption.

:func:`load_dataset` returns a :class:`LabeledData`: the whole split as tensors (images
normalized, ``(N, C, H, W)`` float32), the labels used for training (``y``, possibly
corrupted) and the true labels (``true_y``). Small sets live in memory so that training and
ablation never pay for a ``DataLoader`` worker; ImageNet is too large for that and comes as an
:class:`ImageFolderData` that streams from disk (its ``x`` is ``None``).

Formats
-------
- ``digits``: scikit-learn's bundled 8x8 digits (1797 images, always present) with a fixed
  stratified 75/25 train/test split (:data:`DIGITS_SPLIT_SEED`).
- ``mnist``, ``fashion-mnist``: IDX files (``train-images-idx3-ubyte`` ...), gzip or not, in a
  flat folder or torchvision's ``MNIST/raw/`` (``FashionMNIST/raw/``) layout. Both sets use the
  same file names, so a flat folder given directly is read for either: keep Fashion-MNIST in
  ``fashion-mnist/`` or ``FashionMNIST/raw/`` under the data root.
- ``cifar10``: the python pickle batches of ``cifar-10-batches-py``, read with a restricted
  unpickler that only rebuilds NumPy arrays (a pickle naming any other code is refused).
- ``imagenet``: an ImageFolder tree with ``train/`` and ``val/`` subfolders; resize, crop and
  normalize as in torchvision's reference recipe.

Search order: ``data_dir``, then the ``SINGLEDIR_DATA`` variable (and sensible subfolders such
as ``mnist/``, ``MNIST/raw/``, ``cifar-10-batches-py/``), then a torchvision download when
``download=True``. Otherwise a :class:`~singledir.errors.DataError` names the files and places
looked at.

Label corruption follows Zhang et al. (2017): a fraction ``p`` of the *training* labels, chosen
at random, is replaced by a class drawn uniformly at random (so it may equal the true one; the
expected share of changed labels is ``p (1 - 1/C)``). Everything is fixed by seeds, which the
returned object records. Test labels are never corrupted.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from singledir.errors import ConfigError, DataError

__all__ = [
    "DATASET_NAMES",
    "DIGITS_SPLIT_SEED",
    "LabeledData",
    "ImageFolderData",
    "load_dataset",
    "corrupt_labels",
    "read_idx",
    "read_cifar_batch",
    "dataset_info",
    "check_data_dir",
]

DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10", "imagenet")
DIGITS_SPLIT_SEED = 0
ENV_VAR = "SINGLEDIR_DATA"

# Per-channel normalization constants (mean, std) of each training set, on [0, 1] pixels.
_NORM: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((0.3057,), (0.3762,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "imagenet": (3, 224, 224),
}


def dataset_info(name: str) -> dict[str, Any]:
    """Input shape, class count (``None`` for ImageFolder trees) and normalization of a set."""
    key = _check_name(name)
    classes = {"imagenet": None}.get(key, 10)
    mean, std = _NORM[key]
    return {"in_shape": _SHAPES[key], "num_classes": classes, "mean": mean, "std": std}


# --------------------------------------------------------------------------------------------
# Containers


@dataclass
class LabeledData:
    """One split of a dataset, held in memory.

    Attributes
    ----------
    x:
        Normalized images, float32, shape ``(N, C, H, W)``.
    y:
        Labels used for training, int64 ``(N,)``; corrupted where ``corrupt > 0``.
    true_y:
        The dataset's own labels, int64 ``(N,)``.
    num_classes, in_shape:
        Class count and ``(C, H, W)``.
    name, split:
        Dataset name (one of :data:`DATASET_NAMES`) and ``"train"`` or ``"test"``.
    corrupt, corrupt_seed:
        Fraction of labels replaced by random ones, and the seed that drew them.
    seed:
        Seed of the ``train_size`` subset (and of nothing else).
    indices:
        Position of every sample in the full split (a subset keeps its original indices).
    replaced:
        Bool ``(N,)``: which labels were redrawn (a redrawn label may equal the true one).
    """

    x: torch.Tensor
    y: torch.Tensor
    true_y: torch.Tensor
    num_classes: int
    in_shape: tuple[int, int, int]
    name: str
    split: str
    corrupt: float = 0.0
    corrupt_seed: int = 0
    seed: int = 0
    indices: torch.Tensor | None = None
    replaced: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def changed_fraction(self) -> float:
        """Share of samples whose training label differs from the true one."""
        return float((self.y != self.true_y).float().mean()) if len(self) else 0.0

    def loader(
        self, batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> DataLoader[tuple[torch.Tensor, ...]]:
        """A DataLoader over ``(x, y)`` in the main process (the data already is in memory)."""
        gen = torch.Generator().manual_seed(int(seed))
        return DataLoader(
            TensorDataset(self.x, self.y),
            batch_size=int(batch_size),
            shuffle=shuffle,
            generator=gen,
            num_workers=0,
        )

    def to(self, device: torch.device | str) -> LabeledData:
        """A copy whose tensors live on ``device``."""
        out = LabeledData(**{**self.__dict__})
        out.x = self.x.to(device)
        out.y = self.y.to(device)
        out.true_y = self.true_y.to(device)
        return out


class _RelabeledFolder(Dataset[tuple[torch.Tensor, int]]):
    """An ImageFolder (or subset of one) returning the given, possibly corrupted, labels."""

    def __init__(self, folder: Any, indices: np.ndarray, labels: np.ndarray) -> None:
        self.folder = folder
        self.indices = indices
        self.labels = labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, _ = self.folder[int(self.indices[i])]
        return img, int(self.labels[i])


@dataclass
class ImageFolderData:
    """One split of an ImageFolder tree (ImageNet), streamed from disk.

    Same attributes as :class:`LabeledData` except that ``x`` is ``None``: images are read,
    resized, cropped and normalized by :meth:`loader`. ``y`` and ``true_y`` (labels only) are
    tensors as usual; ``classes`` lists the folder names in label order.
    """

    dataset: Any
    y: torch.Tensor
    true_y: torch.Tensor
    num_classes: int
    in_shape: tuple[int, int, int]
    name: str
    split: str
    classes: list[str]
    root: Path
    corrupt: float = 0.0
    corrupt_seed: int = 0
    seed: int = 0
    indices: torch.Tensor | None = None
    replaced: torch.Tensor | None = None
    x: None = None
    num_workers: int = 4

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def loader(
        self, batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> DataLoader[tuple[torch.Tensor, ...]]:
        """A DataLoader with worker processes decoding images (``num_workers``)."""
        gen = torch.Generator().manual_seed(int(seed))
        return DataLoader(
            self.dataset,
            batch_size=int(batch_size),
            shuffle=shuffle,
            generator=gen,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )


# --------------------------------------------------------------------------------------------
# Label corruption


def corrupt_labels(
    labels: np.ndarray | torch.Tensor, p: float, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Replace a fraction ``p`` of labels by classes drawn uniformly at random.

    Exactly ``round(p * n)`` positions, chosen at random, get a uniform random class (which may
    equal the true one), as in Zhang et al. (2017).

    Parameters
    ----------
    labels:
        Integer labels, shape ``(n,)``.
    p:
        Fraction in ``[0, 1]``; 1 makes every label random.
    num_classes:
        Number of classes to draw from.
    seed:
        Seed of the draw: the same seed gives the same labels.

    Returns
    -------
    (new_labels, replaced)
        int64 labels and a bool mask of the redrawn positions.
    """
    p = _check_fraction(p)
    y = np.asarray(labels, dtype=np.int64).copy()
    n = y.shape[0]
    rng = np.random.default_rng(int(seed))
    n_replace = int(round(p * n))
    replaced = np.zeros(n, dtype=bool)
    if n_replace:
        pos = rng.choice(n, size=n_replace, replace=False)
        y[pos] = rng.integers(0, int(num_classes), size=n_replace)
        replaced[pos] = True
    return y, replaced


def _check_fraction(p: float) -> float:
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise ConfigError(
            f"corruption fraction {p!r} is not a number: give one in [0, 1]"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"corruption fraction {value} is outside [0, 1]: give e.g. 0.5")
    return value


def _check_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashion": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(
        key, key
    )
    if key not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}")
    return key


# --------------------------------------------------------------------------------------------
# File formats

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(
            f"cannot read {str(path)!r} ({type(exc).__name__}: {exc}): "
            "the file is damaged or truncated; replace it"
        ) from exc


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    p = Path(path)
    raw = _read_bytes(p)
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
    raw = _read_bytes(Path(path))
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


# --------------------------------------------------------------------------------------------
# Finding files


def _roots(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    roots: list[Path] = []
    if data_dir is not None and str(data_dir) != "":
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get(ENV_VAR, "")
    if env:
        roots.append(Path(env).expanduser())
    return roots


_SUBDIRS = {
    "mnist": ("", "mnist", "MNIST/raw", "MNIST", "mnist/raw", "mnist/MNIST/raw"),
    "fashion-mnist": (
        "",
        "fashion-mnist",
        "fashion_mnist",
        "FashionMNIST/raw",
        "FashionMNIST",
        "fashion-mnist/FashionMNIST/raw",
    ),
    "cifar10": ("cifar-10-batches-py", "", "cifar10/cifar-10-batches-py", "cifar10"),
    "imagenet": ("", "imagenet", "ImageNet", "imagenet/ILSVRC2012"),
}

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_CIFAR_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


def _find_file(folder: Path, stem: str) -> Path | None:
    # The same file under the names people actually use: gzip or not, '-' or '.' before idx.
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        p = folder / name
        if p.is_file():
            return p
    return None


def _candidate_dirs(key: str, roots: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        for sub in _SUBDIRS[key]:
            d = root / sub if sub else root
            if d not in out:
                out.append(d)
    return out


def _missing(key: str, files: Sequence[str], dirs: Sequence[Path]) -> DataError:
    where = (
        ", ".join(str(d) for d in dirs) if dirs else "nowhere (no --data-dir, no $SINGLEDIR_DATA)"
    )
    return DataError(
        f"{key} files {', '.join(files)} (optionally .gz) not found; looked in: {where}. "
        f"Pass --data-dir (data_dir=) or set {ENV_VAR} to the folder holding them"
        + ("" if key == "imagenet" else ", or --download (download=True) where a network exists")
    )


def _download(key: str, data_dir: str | os.PathLike[str] | None) -> Path:
    root = Path(data_dir or os.environ.get(ENV_VAR) or Path.home() / ".cache" / "singledir")
    try:
        import torchvision.datasets as tvd

        root.mkdir(parents=True, exist_ok=True)
        cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[key]
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:
        raise DataError(
            f"downloading {key} into {str(root)!r} failed ({type(exc).__name__}): "
            "without a network, copy the files there and pass --data-dir"
        ) from exc
    return root


def _locate(
    key: str, split: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> list[Path]:
    stems = _IDX_FILES[split] if key in ("mnist", "fashion-mnist") else _CIFAR_FILES[split]
    for attempt in range(2):
        roots = _roots(data_dir)
        if attempt == 1:
            roots = [_download(key, data_dir)]
        dirs = _candidate_dirs(key, roots)
        for d in dirs:
            found = [_find_file(d, s) for s in stems]
            if all(f is not None for f in found):
                return [f for f in found if f is not None]
        if not download or attempt == 1:
            raise _missing(key, stems, dirs)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Loading


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError(
            "the digits set comes with scikit-learn, which is not installed: "
            "pip install scikit-learn"
        ) from exc
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    target = np.asarray(bunch.target, dtype=np.int64)
    test_mask = np.zeros(target.shape[0], dtype=bool)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    for c in range(10):  # stratified: a quarter of each class goes to the test split
        idx = np.flatnonzero(target == c)
        rng.shuffle(idx)
        test_mask[idx[: int(round(0.25 * idx.shape[0]))]] = True
    sel = test_mask if split == "test" else ~test_mask
    return images[sel][:, None], target[sel]


def _normalize(key: str, x: np.ndarray) -> torch.Tensor:
    mean, std = _NORM[key]
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    # (x * scale - m) / s, computed in place on the one float copy.
    return t.mul_(scale).sub_(m).div_(s).contiguous()


def _subset_indices(n: int, size: int | None, seed: int, what: str) -> np.ndarray:
    if size is None:
        return np.arange(n)
    size = int(size)
    if size <= 0 or size > n:
        raise ConfigError(f"{what} {size} is out of range: give a size between 1 and {n}")
    rng = np.random.default_rng(int(seed))
    return np.sort(rng.choice(n, size=size, replace=False))


def check_data_dir(
    data_dir: str | os.PathLike[str] | None, name: str, *, download: bool = False
) -> None:
    """Refuse a ``data_dir`` that is given but is not a folder (unless it is to be created by
    a download): a folder named explicitly never falls back to ``$SINGLEDIR_DATA``."""
    if data_dir is None or str(data_dir) == "" or download:
        return
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"{name} data folder {str(folder)!r} does not exist: check --data-dir "
            f"(data_dir=), or drop it to use ${ENV_VAR}"
        )


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    train_size: int | None = None,
    seed: int = 0,
    corrupt: float = 0.0,
    corrupt_seed: int = 0,
    download: bool = False,
    test_size: int | None = None,
    image_size: int | None = None,
    num_workers: int = 4,
) -> LabeledData | ImageFolderData:
    """Load one split of a dataset, optionally a seeded subset, with corrupted labels.

    Parameters
    ----------
    name:
        One of :data:`DATASET_NAMES`.
    split:
        ``"train"`` or ``"test"`` (``"val"`` is accepted for ``"test"``).
    data_dir:
        Folder searched first; then ``$SINGLEDIR_DATA``.
    train_size:
        Size of a seeded random subset of the *training* split (ignored for the test split).
    seed:
        Seed of the subsets.
    corrupt, corrupt_seed:
        Fraction in [0, 1] of training labels replaced by uniform random classes, and its seed.
        Ignored for the test split: test labels are never corrupted.
    download:
        Let torchvision download MNIST, Fashion-MNIST or CIFAR-10 when no copy is found.
    test_size:
        Size of a seeded random subset of the test split (ignored for the training split).
    image_size:
        ImageNet only: side of the square crop (default 224; resize to ``image_size * 8/7``).
    num_workers:
        ImageNet only: DataLoader worker processes.

    Returns
    -------
    LabeledData, or ImageFolderData for ``imagenet`` (``x`` is ``None`` there).
    """
    key = _check_name(name)
    check_data_dir(data_dir, key, download=download)
    split_key = {"train": "train", "test": "test", "val": "test"}.get(str(split).lower())
    if split_key is None:
        raise ConfigError(f"unknown split {split!r}: choose 'train' or 'test'")
    p = _check_fraction(corrupt)
    if split_key == "test":
        p = 0.0
    size = train_size if split_key == "train" else test_size
    what = "train_size" if split_key == "train" else "test_size"

    if key == "imagenet":
        return _load_imagefolder(
            split_key, data_dir, size, what, seed, p, corrupt_seed, image_size, num_workers
        )

    if key == "digits":
        images, labels = _digits(split_key)
    elif key in ("mnist", "fashion-mnist"):
        img_path, lab_path = _locate(key, split_key, data_dir, download)
        images, labels = read_idx(img_path), read_idx(lab_path).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{str(img_path)!r} and {str(lab_path)!r} do not match "
                f"(images {images.shape}, labels {labels.shape}): check the files"
            )
        images = images[:, None]
    else:
        parts = [read_cifar_batch(f) for f in _locate(key, split_key, data_dir, download)]
        images = np.concatenate([a for a, _ in parts])
        labels = np.concatenate([b for _, b in parts])

    num_classes = 10
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{key} labels fall outside 0..{num_classes - 1}: check the label files")
    idx = _subset_indices(labels.shape[0], size, seed, what)
    images, true_y = images[idx], labels[idx]
    y, replaced = corrupt_labels(true_y, p, num_classes, corrupt_seed)
    x = _normalize(key, images)
    return LabeledData(
        x=x,
        y=torch.from_numpy(y),
        true_y=torch.from_numpy(np.array(true_y, dtype=np.int64)),
        num_classes=num_classes,
        in_shape=(int(x.shape[1]), int(x.shape[2]), int(x.shape[3])),
        name=key,
        split=split_key,
        corrupt=p,
        corrupt_seed=int(corrupt_seed),
        seed=int(seed),
        indices=torch.from_numpy(idx.astype(np.int64)),
        replaced=torch.from_numpy(replaced),
    )


def _load_imagefolder(
    split: str,
    data_dir: str | os.PathLike[str] | None,
    size: int | None,
    what: str,
    seed: int,
    p: float,
    corrupt_seed: int,
    image_size: int | None,
    num_workers: int,
) -> ImageFolderData:
    from torchvision import datasets, transforms

    sub = "train" if split == "train" else "val"
    dirs = _candidate_dirs("imagenet", _roots(data_dir))
    root = next((d for d in dirs if (d / sub).is_dir()), None)
    if root is None:
        raise _missing("imagenet", [f"{sub}/<class>/<image>"], dirs)
    side = int(image_size or 224)
    mean, std = _NORM["imagenet"]
    norm = transforms.Normalize(mean, std)
    if split == "train":
        tf = transforms.Compose(
            [
                transforms.RandomResizedCrop(side),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                norm,
            ]
        )
    else:
        tf = transforms.Compose(
            [
                transforms.Resize(int(round(side * 256 / 224))),
                transforms.CenterCrop(side),
                transforms.ToTensor(),
                norm,
            ]
        )
    try:
        folder = datasets.ImageFolder(str(root / sub), transform=tf)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(
            f"{str(root / sub)!r} is not an ImageFolder tree ({exc}): "
            "put images in one subfolder per class"
        ) from exc
    labels = np.asarray(folder.targets, dtype=np.int64)
    idx = _subset_indices(labels.shape[0], size, seed, what)
    true_y = labels[idx]
    num_classes = len(folder.classes)
    y, replaced = corrupt_labels(true_y, p, num_classes, corrupt_seed)
    return ImageFolderData(
        dataset=_RelabeledFolder(folder, idx, y),
        y=torch.from_numpy(y),
        true_y=torch.from_numpy(np.array(true_y, dtype=np.int64)),
        num_classes=num_classes,
        in_shape=(3, side, side),
        name="imagenet",
        split=split,
        classes=list(folder.classes),
        root=root,
        corrupt=p,
        corrupt_seed=int(corrupt_seed),
        seed=int(seed),
        indices=torch.from_numpy(idx.astype(np.int64)),
        replaced=torch.from_numpy(replaced),
        num_workers=int(num_workers),
    )
