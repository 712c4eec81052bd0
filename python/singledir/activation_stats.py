"""Per-unit statistics of a long-format activation table (``activations.parquet``), streamed.

The table has one row per (layer, unit, sample): ``layer`` (str), ``unit`` (int, 0-based
within the layer), ``sample`` (int), ``label`` (int), ``activation`` (float). It is read by
polars in batches (row groups of a file, slices of a frame) projected to these five columns,
and each batch goes straight to the Rust core (:class:`singledir._core.RecordStats`), which
keeps per-unit state only: memory does not grow with the number of records, the records are
never regrouped, and any record order and any number of layers work.

Passes over the table: one for counts, class means, moments, min and max (it also refuses
duplicate (layer, unit, sample) records); one more for mutual information with equal-width
bins (they need each unit's min and max first); equal-frequency bins and label shuffles need
each unit's values together, collected for groups of units of at most ``batch_rows`` records,
one more pass per group.
"""

from __future__ import annotations

import bisect
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import accumulate, islice
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from singledir import _core
from singledir.errors import DataError, InputError
from singledir.stats_common import (
    DEFAULT_BINNING,
    DEFAULT_BINS,
    Binning,
    NegativePolicy,
    checked_num_classes,
    mi_options,
    negative_policy,
    unit_frame,
)

__all__ = ["ACTIVATION_COLUMNS", "DEFAULT_BATCH_ROWS", "stats_from_activations"]

ACTIVATION_COLUMNS = ("layer", "unit", "sample", "label", "activation")

#: Records collected per pass when MI needs each unit's values together (8 bytes each).
DEFAULT_BATCH_ROWS = 20_000_000

#: Records per slice of a file handed to the core (a multiple of polars' default row group,
#: 512**2, so slices cover whole row groups of files polars wrote).
READ_BATCH_ROWS = 1 << 20

#: Slices read ahead, concurrently, while the core works on the current one.
READ_AHEAD = 3

#: Layer runs per batch handled as runs; beyond it (layers interleaved record by record) the
#: layer names are mapped record by record.
MAX_LAYER_RUNS = 256


def _scan(source: Any) -> tuple[pl.LazyFrame, str]:
    if isinstance(source, pl.LazyFrame):
        return source, "the activation table"
    if isinstance(source, pl.DataFrame):
        return source.lazy(), "the activation table"
    p = Path(source)
    where = repr(str(p))
    if not p.exists():
        raise DataError(f"activation file {where} does not exist: check the path")
    if p.is_dir():
        raise DataError(f"{where} is a folder: give the path of an activations parquet file")
    if not os.access(p, os.R_OK):
        raise DataError(f"cannot read {where}: permission denied")
    if p.stat().st_size == 0:
        raise DataError(f"{where} is empty (0 bytes): record the activations again")
    lf = pl.scan_parquet(p)
    try:
        lf.collect_schema()
    except Exception as exc:
        raise DataError(
            f"{where} is not a readable parquet file ({type(exc).__name__}): "
            "give a parquet file with columns layer, unit, sample, label, activation"
        ) from exc
    return lf, where


def _check_schema(lf: pl.LazyFrame, where: str) -> None:
    try:
        schema = lf.collect_schema()
    except Exception as exc:
        raise DataError(f"cannot read the columns of {where} ({type(exc).__name__})") from exc
    missing = [c for c in ACTIVATION_COLUMNS if c not in schema]
    if missing:
        found = ", ".join(schema.names()) or "none"
        raise DataError(
            f"{where} lacks column(s) {', '.join(missing)}: expected "
            f"{', '.join(ACTIVATION_COLUMNS)} (found {found})"
        )
    expected = {
        "layer": (lambda t: t in (pl.String, pl.Categorical) or isinstance(t, pl.Enum), "string"),
        "unit": (lambda t: t.is_integer(), "integer"),
        "sample": (lambda t: t.is_integer(), "integer"),
        "label": (lambda t: t.is_integer(), "integer"),
        "activation": (lambda t: t.is_float(), "float"),
    }
    for col, (ok, kind) in expected.items():
        dtype = schema[col]
        if not ok(dtype):
            raise DataError(
                f"column {col!r} has dtype {dtype} in {where}, expected {kind}: "
                f"cast it (e.g. pl.col({col!r}).cast(...)) and write the file again"
            )


#: A batch with the runs of its layers, ``[(name, records), ...]`` (None: the layers
#: interleave beyond ``MAX_LAYER_RUNS`` runs).
LayerRuns = list[tuple[str, int]] | None
Batch = tuple[pl.DataFrame, LayerRuns]


def _layer_runs(batch: pl.DataFrame) -> LayerRuns:
    layer = batch["layer"]
    if batch.height == 0:
        return []
    first = layer[0]
    if (layer == first).all():  # one layer: the usual batch, and a cheaper test than rle
        return [(str(first), batch.height)]
    runs = layer.rle()
    if runs.len() > MAX_LAYER_RUNS:
        return None
    lengths = runs.struct.field("len").to_list()
    names = runs.struct.field("value").cast(pl.String).to_list()
    return list(zip(names, lengths, strict=True))


def _row_group_layers(path: Path) -> list[tuple[int, str | None]] | None:
    """(rows, layer) per row group of a parquet file, from its footer: the layer where the
    group's statistics prove it holds one (min == max, no nulls), else None. None when the
    footer cannot be read that way (then every slice decodes the layer column)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < 12:
                return None
            f.seek(-8, os.SEEK_END)
            length = _core.parquet_footer_length(f.read(8))
            if length + 12 > size:
                return None
            f.seek(-8 - length, os.SEEK_END)
            groups = _core.parquet_row_group_values(f.read(length), "layer")
    except (OSError, DataError, InputError):
        return None
    out: list[tuple[int, str | None]] = []
    for rows, value in groups:
        try:
            out.append((rows, None if value is None else value.decode()))
        except UnicodeDecodeError:
            out.append((rows, None))
    return out


def _slice_runs(
    groups: list[tuple[int, str | None]], starts: list[int], offset: int, length: int
) -> LayerRuns:
    """The layer runs of rows ``[offset, offset + length)`` from the row groups' layers, or
    None when a group they overlap holds more than one layer (or its layer is not proven)."""
    runs: list[tuple[str, int]] = []
    end = offset + length
    i = max(bisect.bisect_right(starts, offset) - 1, 0)
    while i < len(groups) and starts[i] < end:
        rows, layer = groups[i]
        n = min(starts[i] + rows, end) - max(starts[i], offset)
        if n > 0:
            if layer is None:
                return None
            if runs and runs[-1][0] == layer:
                runs[-1] = (layer, runs[-1][1] + n)
            else:
                runs.append((layer, n))
        i += 1
    return runs


def _read_slice(lf: pl.LazyFrame, offset: int, length: int, runs: LayerRuns) -> Batch:
    """One slice of the file and its layer runs: given (from the row groups' statistics; the
    slice is then read without its layer column), or found here, on the reader thread, while
    the core works on the previous slice."""
    if runs is not None:
        return lf.drop("layer").slice(offset, length).collect(), runs
    batch = lf.slice(offset, length).collect()
    return batch, _layer_runs(batch)


def _batches(
    lf: pl.LazyFrame, with_samples: bool, where: str, path: Path | None
) -> Iterator[Batch]:
    """The table in batches, projected to the columns this pass needs, integers as int64 and
    activations as float32 (no copy when the file has these types).

    A file (``path``) is read in slices of ``READ_BATCH_ROWS`` records (polars reads only the
    row groups a slice covers), the next ``READ_AHEAD`` slices being read while the core works
    on this one: a few slices in memory at most, however large the file. A slice whose row
    groups each hold one layer by the file's statistics is read without the layer column
    (decoding a string per record is a large part of reading such a file). Other sources
    stream through polars' batches. Each batch comes with its layer runs."""
    columns = [
        pl.col("layer"),
        pl.col("unit").cast(pl.Int64),
        pl.col("label").cast(pl.Int64),
        pl.col("activation").cast(pl.Float32),
    ]
    if with_samples:
        columns.append(pl.col("sample").cast(pl.Int64))
    projected = lf.select(columns)
    try:
        if path is None:
            for frame in projected.collect_batches():
                yield frame, _layer_runs(frame)
            return
        n_rows = int(lf.select(pl.len()).collect().item())
        groups = _row_group_layers(path)
        if groups is not None and sum(rows for rows, _ in groups) != n_rows:
            groups = None
        starts = list(accumulate((rows for rows, _ in groups or []), initial=0))
        offsets = iter(range(0, n_rows, READ_BATCH_ROWS))
        with ThreadPoolExecutor(READ_AHEAD) as reader:

            def read(offset: int) -> Future[Batch]:
                length = min(READ_BATCH_ROWS, n_rows - offset)
                runs = None if groups is None else _slice_runs(groups, starts, offset, length)
                return reader.submit(_read_slice, projected, offset, length, runs)

            pending = deque(read(offset) for offset in islice(offsets, READ_AHEAD))
            while pending:
                batch = pending.popleft().result()
                following = next(offsets, None)
                if following is not None:
                    pending.append(read(following))
                yield batch
    except (DataError, InputError):
        raise
    except Exception as exc:
        message = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise DataError(
            f"cannot read {where} ({type(exc).__name__}: {message}): "
            "check that the file was written completely"
        ) from exc


def _check_nulls(batch: pl.DataFrame, runs: LayerRuns) -> None:
    nulls = batch.null_count().row(0, named=True)
    if nulls.get("layer"):
        raise InputError("the activation table has rows with a null layer name: fill or drop them")
    bad = {c: n for c, n in nulls.items() if n and c != "layer"}
    if bad:
        row = int(batch.select(pl.any_horizontal(pl.col(list(bad)).is_null()).arg_max()).item())
        layer = _layer_at(batch, runs, row)
        raise InputError(
            f"layer {layer!r} has null value(s) in {', '.join(bad)}: drop or fill them"
        )


def _layer_at(batch: pl.DataFrame, runs: LayerRuns, row: int) -> str:
    if "layer" in batch.columns:
        return str(batch["layer"][row])
    assert runs is not None  # a batch read without its layer column comes with its runs
    ends = list(accumulate(n for _, n in runs))
    return runs[bisect.bisect_right(ends, row)][0]


def _add_batch(
    stats: _core.RecordStats, batch: pl.DataFrame, runs: LayerRuns, with_samples: bool
) -> None:
    """One batch to the core: records in runs of one layer (the usual layout: `record`
    writes layer by layer), or, when layers interleave, one layer code per record."""
    columns = (
        _column(batch, "unit", np.int64),
        _column(batch, "sample", np.int64) if with_samples else None,
        _column(batch, "label", np.int64),
        _column(batch, "activation", np.float32),
    )
    if runs is not None:
        codes = np.array([stats.layer_code(name) for name, _ in runs], dtype=np.uint32)
        lengths = np.array([n for _, n in runs], dtype=np.uint64)
        stats.add_runs(codes, lengths, *columns)
        return
    names = batch["layer"].cast(pl.String)
    mapping = {name: stats.layer_code(name) for name in names.unique(maintain_order=True)}
    stats.add(names.replace_strict(mapping, return_dtype=pl.UInt32).to_numpy(), *columns)


def _column(batch: pl.DataFrame, name: str, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(batch[name].to_numpy(), dtype=dtype)


def stats_from_activations(
    source: str | os.PathLike[str] | pl.LazyFrame | pl.DataFrame,
    *,
    bins: int = DEFAULT_BINS,
    binning: Binning = DEFAULT_BINNING,
    bias_correction: bool = False,
    shuffle_baseline: int = 0,
    normalize: bool = False,
    seed: int = 0,
    negative: NegativePolicy = "error",
    num_classes: int | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> pl.DataFrame:
    """Per-unit statistics of every layer in a long-format activation table.

    The table is streamed (see the module docstring): a file larger than memory works, in
    memory that grows with the number of units, not of records. Records may come in any
    order; each unit's sums run over its records in the order they come, so a table in the
    order ``singledir record`` writes gives exactly the numbers of :func:`unit_stats` on the
    dense arrays.

    Parameters
    ----------
    source : path, polars.LazyFrame or polars.DataFrame
        The activation table.
    bins, binning, bias_correction, shuffle_baseline, normalize, seed
        As in :func:`singledir.stats.mutual_information`.
    negative : {"error", "shift", "clip"}
        As in :func:`singledir.stats.class_selectivity`.
    num_classes : int, optional
        Defaults to the largest label in the table + 1.
    batch_rows : int
        Records collected per pass when MI needs each unit's values together (equal-frequency
        bins or label shuffles); a larger table takes one more pass per such group of units.

    Returns
    -------
    polars.DataFrame
        One row per (layer, unit) with records, layers in order of first appearance, units
        ascending; the columns of :func:`singledir.stats.unit_stats`.

    Raises
    ------
    InputError
        Duplicate (layer, unit, sample) records, NaN or inf activations, negative indices,
        labels that would make an absurd number of classes, and the checks of
        :func:`singledir.stats.unit_stats`.
    DataError
        A missing, unreadable or empty table, or missing columns.
    """
    nb, name, shuffles, seed = mi_options(bins, binning, shuffle_baseline, seed)
    policy = negative_policy(negative)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InputError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    k = 0 if num_classes is None else checked_num_classes(num_classes)
    lf, where = _scan(source)
    path = None if isinstance(source, pl.LazyFrame | pl.DataFrame) else Path(source)
    _check_schema(lf, where)
    stats = _core.RecordStats(
        k,
        negative=policy,
        mutual_info=True,
        bins=nb,
        binning=name,
        miller_madow=bool(bias_correction),
        shuffles=shuffles,
        seed=seed,
        column_budget=batch_rows,
    )
    first = True
    while True:
        with_samples = stats.wants_samples()
        records = 0
        for batch, runs in _batches(lf, with_samples, where, path):
            if batch.height == 0:
                continue
            if first:
                _check_nulls(batch, runs)
            records += batch.height
            _add_batch(stats, batch, runs, with_samples)
        if first and records == 0:
            raise DataError(f"{where} has no rows: record some activations first")
        first = False
        if not stats.next_pass():
            break
    pieces = []
    for layer, d in stats.finish():
        keep = np.asarray(d["n_samples"]) > 0
        units = np.flatnonzero(keep).astype(np.int64)
        pieces.append(unit_frame(d, units, keep, layer, shuffles, normalize, seed))
    return pl.concat(pieces, how="vertical")
