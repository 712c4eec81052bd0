"""What every data set shares: the names and shapes of the sets, the in-memory split
(:class:`LabeledData`), seeded subsets, label corruption (Zhang et al. 2017) and the
normalization of pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from singledir.errors import ConfigError

__all__ = [
    "DATASET_NAMES",
    "ENV_VAR",
    "LabeledData",
    "SplitRequest",
    "corrupt_labels",
    "dataset_info",
    "check_name",
    "check_fraction",
    "subset_indices",
    "normalize",
]

DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10", "imagenet")
ENV_VAR = "SINGLEDIR_DATA"

# Per-channel normalization constants (mean, std) of each training set, on [0, 1] pixels.
NORM: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((0.3057,), (0.3762,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "imagenet": (3, 224, 224),
}


def dataset_info(name: str) -> dict[str, Any]:
    """Input shape, class count (``None`` for ImageFolder trees) and normalization of a set."""
    key = check_name(name)
    classes = {"imagenet": None}.get(key, 10)
    mean, std = NORM[key]
    return {"in_shape": SHAPES[key], "num_classes": classes, "mean": mean, "std": std}


@dataclass(frozen=True)
class SplitRequest:
    """Which samples of a split to load and how to label them (see ``load_dataset``)."""

    split: str  # "train" or "test"
    size: int | None  # seeded subset size, None = all
    size_name: str  # "train_size" or "test_size", for messages
    seed: int  # seed of the subset
    corrupt: float  # fraction of labels redrawn (0 for the test split)
    corrupt_seed: int


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
    p = check_fraction(p)
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


def check_fraction(p: float) -> float:
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise ConfigError(
            f"corruption fraction {p!r} is not a number: give one in [0, 1]"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"corruption fraction {value} is outside [0, 1]: give e.g. 0.5")
    return value


def check_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashion": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(
        key, key
    )
    if key not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}")
    return key


def normalize(key: str, x: np.ndarray) -> torch.Tensor:
    mean, std = NORM[key]
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    # (x * scale - m) / s, computed in place on the one float copy.
    return t.mul_(scale).sub_(m).div_(s).contiguous()


def subset_indices(n: int, size: int | None, seed: int, what: str) -> np.ndarray:
    if size is None:
        return np.arange(n)
    size = int(size)
    if size <= 0 or size > n:
        raise ConfigError(f"{what} {size} is out of range: give a size between 1 and {n}")
    rng = np.random.default_rng(int(seed))
    return np.sort(rng.choice(n, size=size, replace=False))
