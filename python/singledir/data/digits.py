"""The 8x8 digits bundled with scikit-learn (1797 images, always present), with a fixed
stratified 75/25 train/test split (:data:`DIGITS_SPLIT_SEED`)."""

from __future__ import annotations

import numpy as np

from singledir.errors import DataError

__all__ = ["DIGITS_SPLIT_SEED", "digits_arrays"]

DIGITS_SPLIT_SEED = 0


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(float32 images in [0, 1] (N, 1, 8, 8), int64 labels (N,))`` of ``split``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError(
            "the digits set comes with scikit-learn, which is not installed: "
            "pip install scikit-learn"
        ) from exc
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    target = np.asarray(bunch.target, dtype=np.int64)
    test_mask = np.zeros(target.shape[0], dtype=bool)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    for c in range(10):  # stratified: a quarter of each class goes to the test split
        idx = np.flatnonzero(target == c)
        rng.shuffle(idx)
        test_mask[idx[: int(round(0.25 * idx.shape[0]))]] = True
    sel = test_mask if split == "test" else ~test_mask
    return images[sel][:, None], target[sel]
