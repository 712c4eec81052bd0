"""singledir's exception hierarchy.

Every error a user can cause derives from :class:`SingledirError`; its message is one line
that names the problem and how to fix it. The CLI prints that line and exits non-zero, with
no traceback. The Rust core raises these same classes (mapped in ``rust/bindings.rs``).
"""

from __future__ import annotations

__all__ = [
    "SingledirError",
    "InputError",
    "ShapeError",
    "DataError",
    "CheckpointError",
    "ConfigError",
    "SiteError",
    "ExecutorError",
    "SlowPathWarning",
]


class SingledirError(Exception):
    """Base class of every error singledir raises on bad input or state."""

    exit_code: int = 2


class InputError(SingledirError, ValueError):
    """Arrays or values that the computation cannot accept (shape, dtype, NaN, range)."""


class ShapeError(InputError):
    """Arrays whose shapes or lengths do not agree (an :class:`InputError`, so code that
    catches InputError keeps working)."""


class DataError(SingledirError):
    """A file or dataset that is missing, unreadable or not in the expected format."""


class CheckpointError(SingledirError):
    """A checkpoint that is truncated, unsafe to load, or does not fit the architecture."""


class ConfigError(SingledirError, ValueError):
    """An unknown name or an option value out of range (model, dataset, preset, ...)."""


class SiteError(SingledirError, KeyError):
    """An ablation site (layer) that does not exist or a selector that cannot be met."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ExecutorError(SingledirError):
    """A parallel executor (process pool, Ray) that cannot be started or reached."""


class SlowPathWarning(UserWarning):
    """The model runs on the slower path (full forward passes with hooks), e.g. because
    torch.fx cannot trace it; the numbers are the same. Filter this class to silence it."""
