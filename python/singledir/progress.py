"""One place that makes rich progress bars, so every long loop looks the same and can be
silenced (``SINGLEDIR_QUIET=1`` or ``quiet=True``)."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["make_progress", "console", "quiet_default"]

console = Console(stderr=True)


def quiet_default() -> bool:
    """True when ``SINGLEDIR_QUIET`` is set to a non-empty, non-zero value."""
    return os.environ.get("SINGLEDIR_QUIET", "") not in ("", "0")


def make_progress(quiet: bool | None = None, transient: bool = False) -> Progress:
    """A rich Progress with description, bar, counts, elapsed and remaining time.

    Use as a context manager; it renders to stderr and is disabled when ``quiet``. Every task
    must be added with a ``status`` field (``progress.add_task(desc, total=n, status="")``),
    updated with running figures such as loss and accuracy.
    """
    if quiet is None:
        quiet = quiet_default()
    return Progress(
        # Descriptions and status hold paths and site names: shown verbatim, not as markup.
        TextColumn("{task.description}", style="bold blue", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
        transient=transient,
    )
