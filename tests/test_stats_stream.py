"""Streaming statistics of activation files (singledir.activation_stats, the Rust RecordStats)
against the in-memory dense statistics: many row groups, unsorted records, several layers,
every MI option; duplicates and absurd class counts refused; the command imports no torch."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import singledir as sd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from long_records import records
from singledir import _core, activation_stats
from singledir.errors import InputError, ShapeError

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LAYERS = {"conv": 7, "fc1": 11, "fc2": 3}


def layer_arrays(n: int, k: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    arrays = {}
    for i, (name, width) in enumerate(LAYERS.items()):
        tuning = rng.random((k, width)).astype(np.float32)
        a = rng.normal(size=(n, width)).astype(np.float32) + 2 * tuning[y]
        arrays[name] = np.maximum(a, 0) if i != 1 else a  # fc1 has negative activity
    return arrays, y


def dense_reference(arrays, y, **kwargs) -> pl.DataFrame:
    return pl.concat([sd.unit_stats(a, y, layer=name, **kwargs) for name, a in arrays.items()])


OPTIONS = [
    {},
    {"bins": 4, "bias_correction": True},
    {"binning": "equal_frequency", "bins": 5},
    {"shuffle_baseline": 2, "seed": 7},
    {"normalize": True, "negative": "clip"},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_file_with_many_row_groups_equals_dense_bit_for_bit(tmp_path, options):
    # 2,600 samples: several summation runs (1024 records) per unit.
    arrays, y = layer_arrays(2600, 4, seed=1)
    table = records(arrays, y)
    path = tmp_path / "acts.parquet"
    table.write_parquet(path, row_group_size=997)  # many row groups, units split across them
    kwargs = {"negative": "shift", **options}
    ref = dense_reference(arrays, y, **kwargs)
    for batch_rows in (10**9, 3000):  # one column pass, or one per ~unit
        got = sd.stats_from_activations(path, batch_rows=batch_rows, **kwargs)
        assert got.columns == ref.columns
        assert got.equals(ref), (options, batch_rows)
    assert sd.stats_from_activations(table, **kwargs).equals(ref)  # a DataFrame, in memory


@pytest.mark.parametrize("slice_rows", [1000, 4096, 10**6])
def test_file_read_in_slices_equals_one_read(tmp_path, monkeypatch, slice_rows):
    # Slices of the file (with reads ahead) that cut row groups and units anywhere.
    arrays, y = layer_arrays(1100, 3, seed=4)
    path = tmp_path / "acts.parquet"
    records(arrays, y).write_parquet(path, row_group_size=1500)
    ref = dense_reference(arrays, y, negative="shift")
    monkeypatch.setattr(activation_stats, "READ_BATCH_ROWS", slice_rows)
    got = sd.stats_from_activations(path, negative="shift")
    assert got.height == sum(LAYERS.values())
    assert got.equals(ref)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_long_unit_runs_added_in_parallel_equal_dense(tmp_path, monkeypatch, options):
    # Units of 9,000 records in slices of 40,000: several whole runs per slice, which the core
    # adds in parallel (runs of 4,096+ records on average), slices cutting runs and layers;
    # then fc1's unit 2 split, its second half at the end of the layer (the unit comes back:
    # MI from the first pass is given up for a second pass). Both equal dense bit for bit.
    arrays, y = layer_arrays(9000, 4, seed=3)
    table = records(arrays, y)
    n = len(y)
    start = LAYERS["conv"] * n + 2 * n  # fc1, unit 2
    moved = pl.concat(
        [
            table[: start + n // 2],
            table[start + n : (LAYERS["conv"] + LAYERS["fc1"]) * n],
            table[start + n // 2 : start + n],
            table[(LAYERS["conv"] + LAYERS["fc1"]) * n :],
        ]
    )
    assert moved.height == table.height
    monkeypatch.setattr(activation_stats, "READ_BATCH_ROWS", 40_000)
    kwargs = {"negative": "shift", **options}
    ref = dense_reference(arrays, y, **kwargs)
    for i, frame in enumerate((table, moved)):
        path = tmp_path / f"acts{i}.parquet"
        frame.write_parquet(path, row_group_size=20_000)
        assert sd.stats_from_activations(path, **kwargs).equals(ref), i


@SETTINGS
@given(st.integers(0, 2**31), st.sampled_from(OPTIONS[:3]))
def test_unsorted_records_and_interleaved_layers(tmp_path_factory, seed, options):
    arrays, y = layer_arrays(300, 3, seed=seed % 1000)
    table = records(arrays, y).sample(fraction=1.0, shuffle=True, seed=seed)
    path = tmp_path_factory.mktemp("acts") / "shuffled.parquet"
    table.write_parquet(path, row_group_size=401)
    kwargs = {"negative": "shift", **options}
    got = sd.stats_from_activations(path, **kwargs)
    ref = dense_reference(arrays, y, **kwargs)
    # Layers in order of first appearance; each unit's sums in another order: equal to
    # rounding, exact for integers, extremes and (equal-width) MI.
    order = table.unique("layer", keep="first", maintain_order=True)["layer"].to_list()
    ref = pl.concat([ref.filter(pl.col("layer") == name) for name in order])
    assert got["layer"].to_list() == ref["layer"].to_list()
    for col in ("unit", "preferred_class", "min", "max", "fraction_active"):
        assert got[col].to_list() == ref[col].to_list(), col
    for col in ("selectivity", "mutual_info", "mean", "std"):
        np.testing.assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=1e-9, err_msg=col)
    if options.get("binning") != "equal_frequency":
        np.testing.assert_array_equal(got["mutual_info"].to_numpy(), ref["mutual_info"].to_numpy())


def test_record_stats_in_batches_equals_arrays():
    arrays, y = layer_arrays(1500, 5, seed=3)
    table = records(arrays, y)
    stats = _core.RecordStats(0, negative="shift", bins=6)
    codes = np.array([stats.layer_code(n) for n in table["layer"].to_list()], dtype=np.uint32)
    columns = [table[c].to_numpy() for c in ("unit", "sample", "label")]
    values = table["activation"].to_numpy()
    while True:
        samples = columns[1] if stats.wants_samples() else None
        for lo in range(0, table.height, 4099):
            sl = slice(lo, lo + 4099)
            s = None if samples is None else samples[sl]
            stats.add(codes[sl], columns[0][sl], s, columns[2][sl], values[sl])
        if not stats.next_pass():
            break
    for (name, d), (ref_name, a) in zip(stats.finish(), arrays.items(), strict=True):
        assert name == ref_name
        ref = _core.dense_unit_summary(a, y, 5, negative="shift", bins=6)
        for key, value in ref.items():
            np.testing.assert_array_equal(d[key], value, err_msg=key)


def test_duplicate_records_refused(tmp_path):
    arrays, y = layer_arrays(40, 2, seed=0)
    table = records(arrays, y)
    doubled = pl.concat([table, table.filter((pl.col("layer") == "fc2") & (pl.col("sample") == 5))])
    path = tmp_path / "dup.parquet"
    doubled.write_parquet(path, row_group_size=100)
    with pytest.raises(InputError, match=r"layer 'fc2': two records of unit 0, sample 5") as info:
        sd.stats_from_activations(path)
    assert "\n" not in str(info.value)
    # Same (unit, sample) in two layers is not a duplicate.
    renamed = table.with_columns(pl.col("layer") + "_copy")
    assert sd.stats_from_activations(pl.concat([table, renamed]), negative="shift").height == 42


def test_absurd_class_counts_refused_before_allocating(tmp_path):
    table = records(*layer_arrays(20, 2, seed=0))
    huge = table.with_columns(
        label=pl.when(pl.col("sample") == 3).then(10**12).otherwise(pl.col("label"))
    )
    with pytest.raises(InputError, match="renumber them") as info:
        sd.stats_from_activations(huge, negative="shift")
    assert "\n" not in str(info.value) and "GB" in str(info.value)
    with pytest.raises(InputError, match="classes"):
        sd.stats_from_activations(table, num_classes=2**40)
    with pytest.raises(InputError, match="num_classes must be a positive integer"):
        sd.stats_from_activations(table, num_classes=0)
    # Dense arrays: a label of 10**12 is refused before NumPy allocates per-class counts.
    a = np.ones((4, 2), dtype=np.float32)
    with pytest.raises(InputError, match="classes for 4 samples"):
        sd.class_selectivity(a, np.array([0, 1, 0, 10**12]))
    with pytest.raises(InputError, match="classes for 4 samples"):
        sd.mutual_information(a, np.array([0, 1, 0, 1]), num_classes=10**9)
    big_sample = table.with_columns(sample=pl.col("sample") * 2**45)
    with pytest.raises(InputError, match="number the samples"):
        sd.stats_from_activations(big_sample, negative="shift")


def test_shape_errors_are_input_errors():
    with pytest.raises(ShapeError, match="labels for 2 samples"):
        _core.dense_unit_summary(
            np.ones((2, 2), np.float32), np.zeros(3, np.int64), 2, mutual_info=False
        )
    stats = _core.RecordStats(2)
    with pytest.raises(ShapeError):
        stats.add(
            np.zeros(2, np.uint32),
            np.zeros(2, np.int64),
            None,
            np.zeros(1, np.int64),
            np.zeros(2, np.float32),
        )
    assert issubclass(ShapeError, InputError)


STREAM_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys, polars as pl, singledir as sd
    out = []
    for opts in ({}, {"binning": "equal_frequency"}, {"shuffle_baseline": 2}):
        t = sd.stats_from_activations(sys.argv[1], negative="shift", batch_rows=5000, **opts)
        out.append(hashlib.sha256(t.write_csv().encode()).hexdigest())
    print(" ".join(out))
    """
)


def test_streamed_results_do_not_depend_on_thread_count(tmp_path):
    table = records(*layer_arrays(3000, 4, seed=5)).sample(fraction=1.0, shuffle=True, seed=1)
    path = tmp_path / "acts.parquet"
    table.write_parquet(path, row_group_size=5000)
    outs = set()
    for threads in ("1", "3"):
        env = dict(os.environ, RAYON_NUM_THREADS=threads, POLARS_MAX_THREADS=threads)
        r = subprocess.run(
            [sys.executable, "-c", STREAM_SCRIPT, str(path)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout)
    assert len(outs) == 1


NO_TORCH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from singledir.cli.app import main
    sys.argv = ["singledir", "stats", sys.argv[1], "--out", sys.argv[2]]
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
    """
)


def test_stats_command_does_not_import_torch(tmp_path):
    path = tmp_path / "acts.parquet"
    records(*layer_arrays(50, 2, seed=0)).filter(pl.col("layer") != "fc1").write_parquet(path)
    out = tmp_path / "units.parquet"
    r = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, str(path), str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "torch": False}
    assert pl.read_parquet(out).height == 7 + 3


def test_file_hash_is_stable(tmp_path: Path):
    # The same file twice gives the same bytes of output (no hidden state between calls).
    path = tmp_path / "acts.parquet"
    records(*layer_arrays(200, 3, seed=9)).write_parquet(path, row_group_size=333)
    a = sd.stats_from_activations(path, negative="shift").write_csv()
    b = sd.stats_from_activations(path, negative="shift").write_csv()
    assert hashlib.sha256(a.encode()).digest() == hashlib.sha256(b.encode()).digest()
