"""Best-epoch tracking and patience for early stopping (used by :func:`singledir.train.train`
for the AUC and the validation loss)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Tracks the best value of one quantity over the epochs where it is measured.

    Parameters
    ----------
    mode:
        ``"max"`` (higher is better, the AUC) or ``"min"`` (the validation loss).
    patience:
        Stop after this many measurements in a row without a strict improvement; ``None``
        never stops (the best epoch is still tracked). NaN never improves.
    """

    def __init__(self, mode: str, patience: int | None = None) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.mode = mode
        self.patience = None if patience is None else int(patience)
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.since_best = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record ``value`` at ``epoch``; True when it is the best so far."""
        value = float(value)
        better = not math.isnan(value) and (
            self.best_value is None
            or (value > self.best_value if self.mode == "max" else value < self.best_value)
        )
        if better:
            self.best_value, self.best_epoch, self.since_best = value, int(epoch), 0
        else:
            self.since_best += 1
        return better

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` measurements have passed without improvement."""
        return self.patience is not None and self.since_best >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "patience": self.patience,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "since_best": self.since_best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value = state["best_value"]
        self.best_epoch = state["best_epoch"]
        self.since_best = int(state["since_best"])
