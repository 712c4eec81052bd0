"""How a training run reads its data: the validation split held out of the training set, the
shuffled training batches (in-memory tensors indexed by a seeded permutation, or a
``DataLoader`` for streamed datasets) and the evaluation batches in dataset order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from singledir.data import ImageFolderData, LabeledData
from singledir.errors import ConfigError
from singledir.monitor import seeded_subset, take_samples
from singledir.train_config import TrainConfig

__all__ = ["AnyData", "split_validation", "eval_batches", "train_batches"]

AnyData = LabeledData | ImageFolderData


def split_validation(cfg: TrainConfig, data: Any) -> tuple[Any, LabeledData | None]:
    """(training part, validation split) of the training set (see the module docstring)."""
    needs_memory = cfg.val_fraction > 0 or cfg.monitors_auc
    if needs_memory and not isinstance(data, LabeledData):
        raise ConfigError(
            f"the AUC monitor and the validation split need an in-memory dataset, not "
            f"{cfg.dataset}: drop --auc-every/--val-fraction or use another --dataset"
        )
    if cfg.val_fraction <= 0:
        return data, None
    n = len(data)
    n_val = int(round(cfg.val_fraction * n))
    if not 1 <= n_val < n - 1:
        raise ConfigError(
            f"val_fraction {cfg.val_fraction} of {n} training samples leaves no validation "
            "or no training samples: choose a fraction such as 0.1"
        )
    val_idx = seeded_subset(n, n_val, cfg.data_seed)
    keep = torch.ones(n, dtype=torch.bool)
    keep[val_idx] = False
    return take_samples(data, keep.nonzero().flatten()), take_samples(data, val_idx)


def eval_batches(data: AnyData, batch_size: int, device: torch.device) -> Iterator[tuple[Any, Any]]:
    """Evaluation batches ``(x, y)`` on ``device`` in dataset order (and true labels)."""
    if isinstance(data, LabeledData):
        for start in range(0, len(data), batch_size):
            yield (
                data.x[start : start + batch_size].to(device, non_blocking=True),
                data.y[start : start + batch_size].to(device, non_blocking=True),
            )
    else:
        for xb, yb in data.loader(batch_size, shuffle=False):
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


def train_batches(
    data: AnyData, batch_size: int, gen: torch.Generator, device: torch.device, epoch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shuffled training batches ``(x, y, true_y)`` on ``device``."""
    if isinstance(data, LabeledData):
        n = len(data)
        perm = torch.randperm(n, generator=gen).to(data.x.device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            if idx.shape[0] == 1 and n > 1:
                break  # batch norm cannot train on a single sample
            yield (
                data.x.index_select(0, idx),
                data.y.index_select(0, idx),
                data.true_y.index_select(0, idx),
            )
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        loader: DataLoader[Any] = DataLoader(
            _WithTrueLabels(data.dataset, data.true_y),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
            num_workers=data.num_workers,
            pin_memory=device.type == "cuda",
        )
        for xb, yb, tb in loader:
            yield (
                xb.to(device, non_blocking=True),
                yb.to(device, non_blocking=True),
                tb.to(device, non_blocking=True),
            )


class _WithTrueLabels(Dataset[tuple[torch.Tensor, int, int]]):
    """A streamed dataset's ``(image, label)`` items with the true label appended."""

    def __init__(self, dataset: Any, true_y: torch.Tensor) -> None:
        self.dataset = dataset
        self.true_y = true_y.tolist()

    def __len__(self) -> int:
        return len(self.true_y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        x, y = self.dataset[i]
        return x, int(y), int(self.true_y[i])
