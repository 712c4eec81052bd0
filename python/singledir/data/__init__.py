"""Datasets the paper uses, read from their original file formats, with label corruption.

:func:`load_dataset` returns a :class:`LabeledData`: the whole split as tensors (images
normalized, ``(N, C, H, W)`` float32), the labels used for training (``y``, possibly
corrupted) and the true labels (``true_y``). Small sets live in memory so that training and
ablation never pay for a ``DataLoader`` worker; ImageNet is too large for that and comes as an
:class:`ImageFolderData` that streams from disk (its ``x`` is ``None``).

One module per family of formats:

- :mod:`~singledir.data.digits`: scikit-learn's bundled 8x8 digits (always present).
- :mod:`~singledir.data.mnist`: MNIST and Fashion-MNIST IDX files, gzip or not.
- :mod:`~singledir.data.cifar`: the CIFAR-10 python batches, through an unpickler that only
  rebuilds NumPy arrays.
- :mod:`~singledir.data.imagenet`: an ImageFolder tree with ``train/`` and ``val/``.
- :mod:`~singledir.data.files`: where files are looked for: ``data_dir`` (which must exist
  when given), then ``$SINGLEDIR_DATA`` and its usual subfolders, then a torchvision download
  when ``download=True``; otherwise a :class:`~singledir.errors.DataError` names the files and
  places looked at.
- :mod:`~singledir.data.splits`: what every set shares: names, shapes, normalization, seeded
  subsets and label corruption.

Label corruption follows Zhang et al. (2017): a fraction ``p`` of the *training* labels, chosen
at random, is replaced by a class drawn uniformly at random (so it may equal the true one; the
expected share of changed labels is ``p (1 - 1/C)``). Everything is fixed by seeds, which the
returned object records. Test labels are never corrupted.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from singledir.data.cifar import cifar_arrays, read_cifar_batch
from singledir.data.digits import DIGITS_SPLIT_SEED, digits_arrays
from singledir.data.files import check_data_dir
from singledir.data.imagenet import ImageFolderData, load_imagefolder
from singledir.data.mnist import mnist_arrays, read_idx
from singledir.data.splits import (
    DATASET_NAMES,
    ENV_VAR,
    LabeledData,
    SplitRequest,
    check_fraction,
    check_name,
    corrupt_labels,
    dataset_info,
    normalize,
    subset_indices,
)
from singledir.errors import ConfigError, DataError

__all__ = [
    "DATASET_NAMES",
    "DIGITS_SPLIT_SEED",
    "ENV_VAR",
    "LabeledData",
    "ImageFolderData",
    "load_dataset",
    "corrupt_labels",
    "read_idx",
    "read_cifar_batch",
    "dataset_info",
    "check_data_dir",
]


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
    key = check_name(name)
    check_data_dir(data_dir, key, download=download)
    split_key = {"train": "train", "test": "test", "val": "test"}.get(str(split).lower())
    if split_key is None:
        raise ConfigError(f"unknown split {split!r}: choose 'train' or 'test'")
    p = check_fraction(corrupt)
    if split_key == "test":
        p = 0.0
    request = SplitRequest(
        split=split_key,
        size=train_size if split_key == "train" else test_size,
        size_name="train_size" if split_key == "train" else "test_size",
        seed=int(seed),
        corrupt=p,
        corrupt_seed=int(corrupt_seed),
    )
    if key == "imagenet":
        return load_imagefolder(request, data_dir, image_size, num_workers)

    if key == "digits":
        images, labels = digits_arrays(split_key)
    elif key in ("mnist", "fashion-mnist"):
        images, labels = mnist_arrays(key, split_key, data_dir, download)
    else:
        images, labels = cifar_arrays(split_key, data_dir, download)

    num_classes = 10
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{key} labels fall outside 0..{num_classes - 1}: check the label files")
    idx = subset_indices(labels.shape[0], request.size, request.seed, request.size_name)
    images, true_y = images[idx], labels[idx]
    y, replaced = corrupt_labels(true_y, p, num_classes, corrupt_seed)
    x = normalize(key, images)
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
