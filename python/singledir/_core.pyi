"""Type stubs of the compiled core, singledir._core (hand-written; see rust/bindings.rs).

The public, validated API is :mod:`singledir.stats`; these functions expect C-contiguous
arrays of exactly the dtypes below. Errors: :class:`singledir.errors.ShapeError` (lengths that
disagree), :class:`singledir.errors.InputError` (bad values, absurd sizes),
:class:`singledir.errors.ConfigError` (unknown option names, bins < 2).
"""

from typing import Any

import numpy as np
from numpy.typing import NDArray

def core_version() -> str: ...
def dense_unit_summary(
    acts: NDArray[np.float32],
    labels: NDArray[np.int64],
    n_classes: int,
    *,
    negative: str | None = "error",
    mutual_info: bool = True,
    bins: int = 10,
    binning: str = "equal_width",
    miller_madow: bool = False,
    shuffles: int = 0,
    seed: int = 0,
    moments: bool = True,
) -> dict[str, NDArray[Any]]: ...
def long_unit_summary(
    units: NDArray[np.int64],
    labels: NDArray[np.int64],
    values: NDArray[np.float32],
    n_units: int,
    n_classes: int,
    *,
    negative: str | None = "error",
    mutual_info: bool = True,
    bins: int = 10,
    binning: str = "equal_width",
    miller_madow: bool = False,
    shuffles: int = 0,
    seed: int = 0,
    moments: bool = True,
) -> dict[str, NDArray[Any]]: ...

class RecordStats:
    """Statistics of long-format records fed in batches over several passes."""

    def __init__(
        self,
        n_classes: int = 0,
        *,
        negative: str | None = "error",
        mutual_info: bool = True,
        bins: int = 10,
        binning: str = "equal_width",
        miller_madow: bool = False,
        shuffles: int = 0,
        seed: int = 0,
        moments: bool = True,
        column_budget: int = 20_000_000,
    ) -> None: ...
    def layer_code(self, name: str) -> int: ...
    def wants_samples(self) -> bool: ...
    def add(
        self,
        layers: NDArray[np.uint32],
        units: NDArray[np.int64],
        samples: NDArray[np.int64] | None,
        labels: NDArray[np.int64],
        values: NDArray[np.float32],
    ) -> None: ...
    def add_runs(
        self,
        codes: NDArray[np.uint32],
        lengths: NDArray[np.uint64],
        units: NDArray[np.int64],
        samples: NDArray[np.int64] | None,
        labels: NDArray[np.int64],
        values: NDArray[np.float32],
    ) -> None: ...
    def next_pass(self) -> bool: ...
    def finish(self) -> list[tuple[str, dict[str, NDArray[Any]]]]: ...

def parquet_footer_length(tail: bytes) -> int: ...
def parquet_row_group_values(footer: bytes, column: str) -> list[tuple[int, bytes | None]]: ...
def stable_order(scores: NDArray[np.float64], descending: bool = False) -> NDArray[np.int64]: ...
def group_correlations(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    groups: NDArray[np.int64],
    n_groups: int,
) -> dict[str, NDArray[Any]]: ...
def trapezoid_rows(y: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]: ...
def level_mean_std(
    values: NDArray[np.float64], ddof: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
def mlp_walk_curves(
    h0: NDArray[np.float32],
    layers: list[tuple[NDArray[np.float32], NDArray[np.float32]]],
    site_layers: NDArray[np.int64],
    fills: list[NDArray[np.float32]],
    orders: NDArray[np.int64],
    levels: NDArray[np.int64],
    labels: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.float64]]: ...
def mlp_walk_importance(
    h0: NDArray[np.float32],
    layers: list[tuple[NDArray[np.float32], NDArray[np.float32]]],
    site_layers: NDArray[np.int64],
    fills: list[NDArray[np.float32]],
    labels: NDArray[np.int64],
    n_classes: int,
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]: ...
