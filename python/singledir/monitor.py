"""The area under the cumulative ablation curve as a training-time monitor.

Morcos et al. (2018, Fig. 4) observe that reliance on single directions, measured on the
*training* data alone, peaks near the epoch of lowest test loss: the ablation AUC can stand in
for a held-out set when choosing when to stop. :class:`AUCMonitor` makes that a one-liner in
any training loop::

    monitor = singledir.AUCMonitor((x_train, y_train), samples=1000, orderings=3, levels=21)
    for epoch in range(1, epochs + 1):
        train_one_epoch(model)
        auc = monitor(model, epoch)      # eval mode inside; the model's mode is restored
    best = monitor.best_epoch

Each call is exactly ``ablation_auc(ablation_curves(model, data, layers, orderings=...,
levels=..., seed=...))`` on the monitor's fixed data, through the engine's fast paths.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import polars as pl
import torch
from torch import nn

from singledir.errors import InputError

__all__ = ["AUCMonitor", "seeded_subset", "take_samples"]

_IN_MEMORY = (
    "a sample subset needs in-memory data: pass (x, y) tensors or a LabeledData "
    "(or omit samples to monitor all of the data)"
)
_HISTORY_SCHEMA = {"epoch": pl.Int64, "auc": pl.Float64, "seconds": pl.Float64}


def seeded_subset(n: int, size: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded random subset of ``range(n)``.

    The rule, so that anyone can rebuild the subset: the first ``size`` entries of
    ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))``, sorted. ``None`` or
    a ``size >= n`` gives all of ``range(n)``.
    """
    if size is None or int(size) >= n:
        return torch.arange(n)
    if int(size) < 1:
        raise InputError(f"subset size {size} must be at least 1: give a positive sample count")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[: int(size)].sort().values


def take_samples(data: Any, indices: torch.Tensor) -> Any:
    """The samples ``indices`` of in-memory ``data``: an ``(x, y)`` pair or a dataclass with
    ``x``/``y`` tensors (``LabeledData``: ``true_y``, ``indices``, ``replaced`` follow)."""
    if isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
        idx = indices.to(x.device)
        return (x.index_select(0, idx), y.index_select(0, idx.to(y.device)))
    if dataclasses.is_dataclass(data) and isinstance(getattr(data, "x", None), torch.Tensor):
        sliced = {}
        for name in ("x", "y", "true_y", "indices", "replaced"):
            value = getattr(data, name, None)
            if isinstance(value, torch.Tensor):
                sliced[name] = value.index_select(0, indices.to(value.device))
        return dataclasses.replace(data, **sliced)  # type: ignore[type-var]
    raise InputError(_IN_MEMORY)


def _n_samples(data: Any) -> int:
    if isinstance(data, tuple | list) and len(data) == 2:
        return int(data[1].shape[0])
    labels = getattr(data, "y", None)
    if not isinstance(labels, torch.Tensor):
        raise InputError(_IN_MEMORY)
    return int(labels.shape[0])


class AUCMonitor:
    """Ablation AUC of a model on fixed data, measured whenever it is called.

    Parameters
    ----------
    data:
        The data to ablate on (typically the training set, with its labels as trained): any
        form :func:`singledir.ablation_curves` accepts.
    layers, orderings, levels, seed:
        As in :func:`singledir.ablation_curves` (the default: 3 random orderings, 21 evenly
        spaced levels, every site).
    samples:
        Monitor a fixed subset of this many samples of ``data`` (see :func:`seeded_subset`,
        seeded by ``seed``); ``None`` uses all of it. Needs in-memory data.
    relative:
        Divide each curve's area by its unablated accuracy (``ablation_auc(relative=True)``).
    value, unit_dim, batch_size, device, memory_budget_mb:
        Passed to :func:`singledir.ablation_curves` (``unit_dim``: the unit axis, inferred
        by default); ``device`` defaults to where the model's parameters are.

    Attributes
    ----------
    history:
        polars DataFrame ``epoch``, ``auc``, ``seconds`` (wall time of the measurement).
    best_epoch, best_auc:
        The epoch with the highest AUC so far (the first one on ties) and that AUC.
    """

    def __init__(
        self,
        data: Any,
        layers: str | Sequence[str] = "all",
        orderings: int = 3,
        levels: int | str | Sequence[int] = 21,
        seed: int = 0,
        *,
        samples: int | None = None,
        relative: bool = False,
        value: str = "zero",
        unit_dim: int | dict[str, int] | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        memory_budget_mb: float | None = None,
    ) -> None:
        if int(orderings) < 1:
            raise InputError(f"orderings {orderings} must be at least 1, e.g. 3")
        if samples is not None:
            data = take_samples(data, seeded_subset(_n_samples(data), samples, seed))
        self.data = data
        self.layers = layers if isinstance(layers, str) else list(layers)
        self.orderings = int(orderings)
        self.levels = levels if isinstance(levels, int | str) else list(levels)
        self.seed = int(seed)
        self.samples = None if samples is None else int(samples)
        self.relative = bool(relative)
        self.value = value
        self.unit_dim = unit_dim
        self.batch_size = batch_size
        self.device = device
        self.memory_budget_mb = memory_budget_mb
        self._rows: list[dict[str, Any]] = []

    # -------------------------------------------------------------------------- measuring
    def measure(self, model: nn.Module) -> float:
        """The AUC of ``model`` now, without recording it."""
        from singledir.ablation import ablation_auc, ablation_curves

        device = self.device
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        dev = torch.device(device)
        was_training = model.training
        model.eval()
        try:
            # The ablation must not draw from the global RNG of the training loop around it.
            with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
                curves = ablation_curves(
                    model,
                    self.data,
                    self.layers,
                    orderings=self.orderings,
                    levels=self.levels,
                    order="random",
                    value=self.value,
                    unit_dim=self.unit_dim,
                    seed=self.seed,
                    batch_size=self.batch_size,
                    device=dev,
                    memory_budget_mb=self.memory_budget_mb,
                    progress=False,
                )
        finally:
            model.train(was_training)
        return float(ablation_auc(curves, relative=self.relative))  # type: ignore[arg-type]

    def __call__(self, model: nn.Module, epoch: int) -> float:
        """Measure the AUC of ``model`` at ``epoch``, record it in :attr:`history`, return it."""
        t0 = time.perf_counter()
        auc = self.measure(model)
        self._rows.append({"epoch": int(epoch), "auc": auc, "seconds": time.perf_counter() - t0})
        return auc

    # ---------------------------------------------------------------------------- results
    @property
    def history(self) -> pl.DataFrame:
        """One row per measurement: ``epoch``, ``auc``, ``seconds``."""
        return pl.DataFrame(self._rows, schema=_HISTORY_SCHEMA)

    @property
    def best_epoch(self) -> int | None:
        """The epoch of the highest AUC so far (first on ties; NaN never wins), or None."""
        best = self._best()
        return None if best is None else int(best["epoch"])

    @property
    def best_auc(self) -> float | None:
        """The highest AUC so far, or None."""
        best = self._best()
        return None if best is None else float(best["auc"])

    def _best(self) -> dict[str, Any] | None:
        best = None
        for row in self._rows:
            if math.isnan(row["auc"]):
                continue
            if best is None or row["auc"] > best["auc"]:
                best = row
        return best

    # ----------------------------------------------------------------------------- resume
    def settings(self) -> dict[str, Any]:
        """What defines the measurement (a resumed monitor must have the same)."""
        return {
            "layers": self.layers,
            "orderings": self.orderings,
            "levels": self.levels,
            "seed": self.seed,
            "samples": self.samples,
            "relative": self.relative,
            "value": self.value,
            "unit_dim": self.unit_dim,
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain data (loads with ``torch.load(weights_only=True)``): settings and history."""
        return {"settings": self.settings(), "history": [dict(r) for r in self._rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the history saved by :meth:`state_dict` (same settings required)."""
        saved = state.get("settings", {})
        if saved != self.settings():
            diff = sorted(k for k in self.settings() if saved.get(k) != self.settings()[k])
            raise InputError(
                f"the monitor state was saved with other {', '.join(diff) or 'settings'}: "
                "build the AUCMonitor with the settings it was saved with"
            )
        self._rows = [
            {"epoch": int(r["epoch"]), "auc": float(r["auc"]), "seconds": float(r["seconds"])}
            for r in state.get("history", [])
        ]

    def __repr__(self) -> str:
        return (
            f"AUCMonitor(layers={self.layers!r}, orderings={self.orderings}, "
            f"levels={self.levels!r}, seed={self.seed}, samples={self.samples}, "
            f"measured={len(self._rows)}, best_epoch={self.best_epoch})"
        )
