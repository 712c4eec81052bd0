"""Streaming statistics that use the file's row-group statistics: a row group whose footer
proves one layer (min == max, no nulls) is read without its layer column. Checked against
the records themselves (which layers each row group holds), against the same table in memory
and against the dense statistics; files without statistics, with categorical layers, nulls,
corrupt footers. Also the core's range checks inside its parallel run tasks: a batch out of
the current range (more classes, larger samples) takes the full checks and equals one call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import singledir as sd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from long_records import records
from singledir import _core, activation_stats
from singledir.errors import DataError, InputError

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def long_table(widths: dict[str, int], n: int, k: int, seed: int) -> pl.DataFrame:
    """Records of layers of these widths over `n` samples (every class present), activity
    >= 0, in the order `singledir record` writes."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % k)
    arrays = {
        name: np.maximum(rng.normal(size=(n, width)) + rng.random((k, width))[y], 0)
        for name, width in widths.items()
    }
    return records({name: a.astype(np.float32) for name, a in arrays.items()}, y)


def expected_groups(table: pl.DataFrame, rows: list[int]) -> list[tuple[int, str | None]]:
    """(rows, its one layer or None) of each row group, from the records themselves."""
    out, start = [], 0
    for n in rows:
        layers = table["layer"][start : start + n].unique().to_list()
        out.append((n, layers[0] if len(layers) == 1 else None))
        start += n
    return out


@pytest.mark.parametrize("row_group_size", [500, 1200, 7000, 10**6])
def test_footer_gives_each_row_groups_rows_and_single_layer(tmp_path, row_group_size):
    table = long_table({"a": 3, "bb": 2, "c": 4}, 1000, 3, seed=0)
    path = tmp_path / "acts.parquet"
    table.write_parquet(path, row_group_size=row_group_size)
    groups = activation_stats._row_group_layers(path)
    assert groups is not None
    rows = [n for n, _ in groups]
    assert sum(rows) == table.height
    assert all(n <= row_group_size for n in rows)
    assert groups == expected_groups(table, rows)
    if row_group_size == 500:  # layers of 3000, 2000 and 4000 records: every group has one
        assert all(layer is not None for _, layer in groups)
    if row_group_size == 7000:  # the first group holds layers a and bb
        assert groups[0][1] is None


def pyarrow_groups(path: Path) -> list[tuple[int, str | None]]:
    """The same from pyarrow's reading of the footer (an independent parquet reader)."""
    pq = pytest.importorskip("pyarrow.parquet")
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(j).name for j in range(meta.num_columns)]
    out = []
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        stats = group.column(names.index("layer")).statistics
        proven = (
            stats is not None and stats.has_min_max and stats.null_count == 0
        ) and stats.min == stats.max
        out.append((group.num_rows, stats.min if proven else None))
    return out


@pytest.mark.parametrize("row_group_size", [300, 1000, 4096])
@pytest.mark.parametrize("statistics", [True, False])
def test_footer_reader_agrees_with_pyarrow(tmp_path, row_group_size, statistics):
    table = long_table({"a": 3, "bb": 2, "layer-name-longer-than-twelve-bytes": 4}, 700, 3, 4)
    path = tmp_path / "acts.parquet"
    table.write_parquet(path, row_group_size=row_group_size, statistics=statistics)
    assert activation_stats._row_group_layers(path) == pyarrow_groups(path)


def test_footer_statistics_absent_or_unprovable(tmp_path):
    table = long_table({"a": 2, "b": 2}, 600, 2, seed=1)
    plain = tmp_path / "nostats.parquet"
    table.write_parquet(plain, row_group_size=300, statistics=False)
    groups = activation_stats._row_group_layers(plain)
    assert groups is not None and [n for n, _ in groups] == [300] * 8
    assert all(layer is None for _, layer in groups)
    # A null layer name: its group's null count is not 0, so nothing is proven there.
    with_null = table.with_columns(
        layer=pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("layer"))
    )
    path = tmp_path / "null.parquet"
    with_null.write_parquet(path, row_group_size=300)
    groups = activation_stats._row_group_layers(path)
    assert groups is not None and groups[0] == (300, None) and groups[1] == (300, "a")
    with pytest.raises(InputError, match="null layer name"):
        sd.stats_from_activations(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage-footer", "tiny"])
def test_unreadable_footer_is_no_statistics_and_polars_names_the_file(tmp_path, damage):
    table = long_table({"a": 2}, 300, 2, seed=2)
    path = tmp_path / "acts.parquet"
    table.write_parquet(path, row_group_size=100)
    data = path.read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbage-footer":
        length = int.from_bytes(data[-8:-4], "little")
        data = data[: -8 - length] + bytes([0xFF]) * length + data[-8:]
    else:
        data = b"PAR1"
    path.write_bytes(data)
    assert activation_stats._row_group_layers(path) is None
    with pytest.raises(DataError):
        sd.stats_from_activations(path)


def test_core_footer_reader_refuses_bad_bytes():
    with pytest.raises(DataError, match="PAR1"):
        _core.parquet_footer_length(b"12345678")
    with pytest.raises(DataError, match="footer"):
        _core.parquet_row_group_values(b"\x19\x2c", "layer")


def batches_of(path: Path, monkeypatch, slice_rows: int):
    monkeypatch.setattr(activation_stats, "READ_BATCH_ROWS", slice_rows)
    lf = pl.scan_parquet(path)
    return list(activation_stats._batches(lf, True, "the file", path))


@pytest.mark.parametrize("slice_rows", [250, 999, 5000])
def test_slices_skip_the_layer_column_only_where_proven(tmp_path, monkeypatch, slice_rows):
    table = long_table({"a": 3, "b": 2, "c": 4}, 500, 3, seed=3)  # layers of 1500, 1000, 2000
    aligned = tmp_path / "aligned.parquet"
    table.write_parquet(aligned, row_group_size=500)  # every group holds one layer
    mixed = tmp_path / "mixed.parquet"
    table.write_parquet(mixed, row_group_size=1200)  # groups 2 and 3 hold two layers
    for path in (aligned, mixed):
        start = 0
        for batch, runs in batches_of(path, monkeypatch, slice_rows):
            truth = table["layer"][start : start + batch.height].rle()
            want = list(zip(truth.struct.field("value"), truth.struct.field("len"), strict=True))
            assert runs == want
            # Where every group the slice overlaps is proven, the column is not read.
            groups = expected_groups(table, [500] * 9 if path == aligned else [1200] * 3 + [900])
            bounds = np.cumsum([0] + [n for n, _ in groups])
            first = np.searchsorted(bounds, start, side="right") - 1
            last = np.searchsorted(bounds, start + batch.height - 1, side="right") - 1
            proven = all(groups[i][1] is not None for i in range(first, last + 1))
            assert ("layer" not in batch.columns) == proven
            start += batch.height
        assert start == table.height
    plain = tmp_path / "plain.parquet"
    table.write_parquet(plain, row_group_size=500, statistics=False)
    assert all("layer" in b.columns for b, _ in batches_of(plain, monkeypatch, slice_rows))


@SETTINGS
@given(
    widths=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    n=st.integers(3, 400),
    row_group=st.integers(7, 3000),
    slice_rows=st.integers(50, 4000),
    statistics=st.booleans(),
    categorical=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_stats_equal_the_table_in_memory_and_dense(
    tmp_path_factory, widths, n, row_group, slice_rows, statistics, categorical, seed
):
    layer_widths = {f"layer{i}": w for i, w in enumerate(widths)}
    table = long_table(layer_widths, n, 3, seed)
    path = tmp_path_factory.mktemp("acts") / "acts.parquet"
    written = table.with_columns(pl.col("layer").cast(pl.Categorical)) if categorical else table
    written.write_parquet(path, row_group_size=row_group, statistics=statistics)
    original = activation_stats.READ_BATCH_ROWS
    activation_stats.READ_BATCH_ROWS = slice_rows
    try:
        got = sd.stats_from_activations(path)
    finally:
        activation_stats.READ_BATCH_ROWS = original
    assert got.equals(sd.stats_from_activations(table))
    y = table["label"][:n].to_numpy()
    start = 0
    for name, width in layer_widths.items():
        a = table["activation"][start : start + n * width].to_numpy().reshape(width, n).T
        ref = sd.unit_stats(a, y, layer=name)
        assert got.filter(pl.col("layer") == name).equals(ref), name
        start += n * width


# The core's parallel run tasks check labels and samples against the state's current range;
# a batch beyond it goes through the full checks (which grow the state), then the same tasks.

N_SAMPLES = 5000  # runs of 5,000 records: several runs per batch, added in parallel


def core_arrays(y: np.ndarray, n_units: int, seed: int):
    """Unit-major records of `n_units` units over samples labelled `y`."""
    rng = np.random.default_rng(seed)
    units = np.repeat(np.arange(n_units, dtype=np.int64), N_SAMPLES)
    samples = np.tile(np.arange(N_SAMPLES, dtype=np.int64), n_units)
    labels = np.tile(y.astype(np.int64), n_units)
    values = np.maximum(rng.normal(size=units.size), 0).astype(np.float32)
    return units, samples, labels, values


def some_labels(k: int, seed: int, n: int = N_SAMPLES) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


def summary_of(batches, n_classes: int = 0) -> dict:
    stats = _core.RecordStats(n_classes, negative="error", bins=7)
    code = stats.layer_code("l")
    while True:
        with_samples = stats.wants_samples()
        for units, samples, labels, values in batches:
            runs = (np.array([code], dtype=np.uint32), np.array([units.size], dtype=np.uint64))
            stats.add_runs(*runs, units, samples if with_samples else None, labels, values)
        if not stats.next_pass():
            break
    ((_, d),) = stats.finish()
    return d


def in_two(arrays, early: np.ndarray):
    """The records in two batches: `early` ones first (each batch in record order)."""
    return [tuple(a[mask] for a in arrays) for mask in (early, ~early)]


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_parallel_runs_that_raise_the_class_count_equal_one_call():
    # Samples 0..2499 have labels 0..2, the others 0..6; the first batch holds units 0-2's
    # first halves, so the second (all units' other records) is beyond its class count.
    half = N_SAMPLES // 2
    y = np.concatenate([some_labels(3, 1, half), some_labels(7, 2, N_SAMPLES - half)])
    arrays = core_arrays(y, 6, seed=5)
    whole = summary_of([arrays])
    assert_same(summary_of(in_two(arrays, (arrays[1] < half) & (arrays[0] < 3))), whole)
    # Against the dense kernel on the same values (samples x units), bit for bit.
    dense = _core.dense_unit_summary(arrays[3].reshape(6, N_SAMPLES).T.copy(), y, 7, bins=7)
    assert_same(whole, dense)


def test_parallel_runs_with_new_samples_and_units_equal_one_call():
    # The second batch holds units never seen and samples past the first batch's bitsets.
    units, samples, labels, values = core_arrays(some_labels(4, 3), 4, 6)
    early = (samples < 2000) & (units < 2)
    arrays = (units, samples, labels, values)
    assert_same(summary_of(in_two(arrays, early), 4), summary_of([arrays], 4))


@pytest.mark.parametrize(
    ("column", "at", "value", "n_classes", "message"),
    [
        (2, 3 * N_SAMPLES + 17, -1, 0, "label -1 is negative"),
        (2, 4 * N_SAMPLES + 3, 12, 3, "label 12 is out of range for num_classes=3"),
        (1, 2 * N_SAMPLES + 9, -4, 0, "sample index -4 is negative"),
        (1, 2 * N_SAMPLES + 9, 8, 0, "two records of unit 2, sample 8"),
        (3, 5 * N_SAMPLES - 1, np.nan, 0, "unit 4"),
    ],
    ids=["negative-label", "label-beyond-classes", "negative-sample", "duplicate", "nan"],
)
def test_errors_inside_parallel_runs_name_the_record(column, at, value, n_classes, message):
    arrays = list(core_arrays(some_labels(3, 4), 6, seed=7))
    arrays[column][at] = value
    with pytest.raises(InputError, match=message):
        summary_of([tuple(arrays)], n_classes=n_classes)


@pytest.mark.parametrize("dictionary", [True, False])
def test_files_pyarrow_writes(tmp_path, dictionary):
    # Another writer: pyarrow's footers (its own statistics fields and encodings).
    pq = pytest.importorskip("pyarrow.parquet")
    table = long_table({"a": 3, "b": 2, "c": 4}, 500, 3, seed=5)
    path = tmp_path / "acts.parquet"
    pq.write_table(table.to_arrow(), path, row_group_size=500, use_dictionary=dictionary)
    groups = activation_stats._row_group_layers(path)
    assert groups == expected_groups(table, [500] * 9)
    assert all(layer is not None for _, layer in groups)
    assert sd.stats_from_activations(path).equals(sd.stats_from_activations(table))
