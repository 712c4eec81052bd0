"""Crash-safe file output: everything is written to a temporary file beside the target and
renamed into place, so an interrupted run never leaves a half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from singledir.errors import DataError

__all__ = ["atomic_path", "atomic_write", "check_output_path", "write_table", "read_table"]


def check_output_path(path: str | os.PathLike[str], *, folder: bool = False) -> Path:
    """Return ``path`` as a Path after checking that it can be written, before any work.

    A file output needs an existing, writable parent folder and must not name a folder. A
    folder output (``folder=True``, created by its writer) must not name an existing file.
    Neither may lie under an existing file (``out.parquet/x``).
    """
    p = Path(path)
    what = "output folder" if folder else "output path"
    for ancestor in p.parents:
        if ancestor.exists() or ancestor.is_symlink():
            if not ancestor.is_dir():
                raise DataError(
                    f"{what} {str(p)!r} lies under {str(ancestor)!r}, which is a file, not a "
                    "folder: choose another path"
                )
            break
    if folder:
        if p.exists() and not p.is_dir():
            raise DataError(f"{what} {str(p)!r} is a file, not a folder: give a folder path")
        existing = next((a for a in (p, *p.parents) if a.is_dir()), Path("."))
        if not os.access(existing, os.W_OK):
            raise DataError(f"folder {str(existing)!r} is not writable: choose another path")
        return p
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise DataError(
            f"output folder {str(parent)!r} does not exist: create it first or choose another path"
        )
    if not os.access(parent, os.W_OK):
        raise DataError(f"output folder {str(parent)!r} is not writable: choose another path")
    if p.is_dir():
        raise DataError(f"output path {str(p)!r} is a folder: give a file name")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    target = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_table(df: Any, path: str | os.PathLike[str]) -> Path:
    """Write a polars DataFrame as parquet, or CSV when the name ends in ``.csv``; atomically."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return atomic_write(p, lambda tmp: df.write_csv(tmp))
    return atomic_write(p, lambda tmp: df.write_parquet(tmp))


def read_table(path: str | os.PathLike[str]) -> Any:
    """Read a parquet or CSV file written by :func:`write_table` into a polars DataFrame."""
    import polars as pl

    p = Path(path)
    if not p.exists():
        raise DataError(f"file {str(p)!r} does not exist: check the path")
    if not p.is_file():
        raise DataError(f"{str(p)!r} is not a file: give the path of a parquet or CSV file")
    try:
        if p.suffix.lower() == ".csv":
            return pl.read_csv(p)
        return pl.read_parquet(p)
    except PermissionError as exc:
        raise DataError(f"cannot read {str(p)!r}: permission denied") from exc
    except Exception as exc:  # polars raises several classes for a corrupt file
        kind = "CSV" if p.suffix.lower() == ".csv" else "parquet"
        raise DataError(
            f"{str(p)!r} is not a readable {kind} file ({type(exc).__name__}): "
            "check that it was written completely"
        ) from exc
