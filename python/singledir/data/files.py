"""Finding a data set's files: the folder given (``data_dir``), then ``$SINGLEDIR_DATA`` and
the subfolders people use (``mnist/``, ``MNIST/raw/``, ``cifar-10-batches-py/``...), then a
torchvision download when asked; otherwise one DataError naming the files and places."""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

from singledir.data.splits import ENV_VAR
from singledir.errors import DataError

__all__ = ["check_data_dir", "locate", "candidate_dirs", "roots", "missing", "read_bytes"]


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


def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it is gzip-compressed."""
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


def roots(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """The folders searched, in order: ``data_dir``, then ``$SINGLEDIR_DATA``."""
    found: list[Path] = []
    if data_dir is not None and str(data_dir) != "":
        found.append(Path(data_dir).expanduser())
    env = os.environ.get(ENV_VAR, "")
    if env:
        found.append(Path(env).expanduser())
    return found


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


def candidate_dirs(key: str, folders: Sequence[Path]) -> list[Path]:
    """Each folder and the subfolders where data set ``key`` is usually kept."""
    out: list[Path] = []
    for root in folders:
        for sub in _SUBDIRS[key]:
            d = root / sub if sub else root
            if d not in out:
                out.append(d)
    return out


def missing(key: str, files: Sequence[str], dirs: Sequence[Path]) -> DataError:
    """The one-line error naming the files looked for and every place looked in."""
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


def locate(
    key: str, split: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> list[Path]:
    """The files of ``split`` of MNIST, Fashion-MNIST or CIFAR-10, found (or downloaded)."""
    stems = _IDX_FILES[split] if key in ("mnist", "fashion-mnist") else _CIFAR_FILES[split]
    for attempt in range(2):
        found_roots = roots(data_dir)
        if attempt == 1:
            found_roots = [_download(key, data_dir)]
        dirs = candidate_dirs(key, found_roots)
        for d in dirs:
            found = [_find_file(d, s) for s in stems]
            if all(f is not None for f in found):
                return [f for f in found if f is not None]
        if not download or attempt == 1:
            raise missing(key, stems, dirs)
    raise AssertionError("unreachable")
