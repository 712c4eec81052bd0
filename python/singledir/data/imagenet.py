"""ImageNet: an ImageFolder tree with ``train/`` and ``val/`` subfolders, streamed from disk
(:class:`ImageFolderData`); resize, crop and normalize as in torchvision's reference recipe."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from singledir.data.files import candidate_dirs, missing, roots
from singledir.data.splits import NORM, SplitRequest, corrupt_labels, subset_indices
from singledir.errors import DataError

__all__ = ["ImageFolderData", "load_imagefolder"]


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


def load_imagefolder(
    request: SplitRequest,
    data_dir: str | os.PathLike[str] | None,
    image_size: int | None,
    num_workers: int,
) -> ImageFolderData:
    """The ``request``ed split of an ImageFolder tree (``train/`` or ``val/`` under a root)."""
    from torchvision import datasets, transforms

    split, p, corrupt_seed, seed = (
        request.split,
        request.corrupt,
        request.corrupt_seed,
        request.seed,
    )

    sub = "train" if split == "train" else "val"
    dirs = candidate_dirs("imagenet", roots(data_dir))
    root = next((d for d in dirs if (d / sub).is_dir()), None)
    if root is None:
        raise missing("imagenet", [f"{sub}/<class>/<image>"], dirs)
    side = int(image_size or 224)
    mean, std = NORM["imagenet"]
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
    idx = subset_indices(labels.shape[0], request.size, seed, request.size_name)
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
