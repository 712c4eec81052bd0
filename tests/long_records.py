"""Long-format activation records as `singledir record` writes them, for the stats tests."""

from __future__ import annotations

import numpy as np
import polars as pl


def records(arrays: dict[str, np.ndarray], y: np.ndarray) -> pl.DataFrame:
    """Long records in the order `singledir record` writes: layer, unit, sample."""
    frames = []
    for name, a in arrays.items():
        n, width = a.shape
        frames.append(
            pl.DataFrame(
                {
                    "layer": name,
                    "unit": np.repeat(np.arange(width), n),
                    "sample": np.tile(np.arange(n), width),
                    "label": np.tile(y, width),
                    "activation": pl.Series(a.T.ravel(), dtype=pl.Float32),
                }
            )
        )
    return pl.concat(frames)
