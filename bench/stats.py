"""Benchmark of the statistics core on 10 million records (1,000 units x 10,000 samples,
10 classes): singledir against a vectorized NumPy version, a polars group-by pipeline and a
loop over scikit-learn's ``mutual_info_score``, checking that all give the same numbers.

Run: ``python bench/stats.py [--units 1000 --samples 10000 --classes 10 --sklearn-units 100]
[--scale-records 150000000] [--scale-file PATH]``

The scikit-learn loop is timed on the first ``--sklearn-units`` units and scaled linearly to
all units (it is a plain per-unit loop, so its cost is linear in the number of units).

Issue 9 rows: dense class selectivity against NumPy's boolean-mask mean per class and a plain
memory scan of the array (``arr.sum()``), side by side; and ``singledir stats`` on a file of
``--scale-records`` long-format records (written by the bench, 3 layers x 1000 units, unit-major
as ``singledir record`` writes them) against a polars streaming group-by computing selectivity
only and a polars scan of the five columns, each in a child process whose peak RSS is measured
(``os.wait4``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import singledir as sd
from singledir import _core
from singledir.stats import DEFAULT_BINS
from sklearn.metrics import mutual_info_score

CPU_TIMES: list[float] = []


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best wall-clock time of `repeats` calls; the CPU time (all threads) of that call is
    appended to CPU_TIMES, which tells the work apart from waiting on a shared machine."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    CPU_TIMES.append(cpu)
    return best, out


# --------------------------------------------------------------------------- NumPy references


def numpy_selectivity(a: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    onehot = np.zeros((len(y), k))
    onehot[np.arange(len(y)), y] = 1.0
    means = (onehot.T @ a.astype(np.float64)) / onehot.sum(0)[:, None]  # (k, units)
    mu_max = means.max(0)
    rest = (means.sum(0) - mu_max) / (k - 1)
    denom = mu_max + rest
    return np.where(denom > 0, (mu_max - rest) / np.where(denom > 0, denom, 1.0), 0.0)


def numpy_codes(a: np.ndarray, bins: int) -> np.ndarray:
    lo = a.min(0).astype(np.float64)
    hi = a.max(0).astype(np.float64)
    width = np.where(hi > lo, hi - lo, 1.0)
    codes = np.floor((a.astype(np.float64) - lo) * (bins / width))
    codes = np.where(hi > lo, codes, 0.0)
    return np.clip(codes, 0, bins - 1).astype(np.int64)


def numpy_mi(a: np.ndarray, y: np.ndarray, k: int, bins: int) -> np.ndarray:
    n, units = a.shape
    codes = numpy_codes(a, bins)
    flat = (np.arange(units)[None, :] * bins + codes) * k + y[:, None]
    joint = np.bincount(flat.ravel(), minlength=units * bins * k).reshape(units, bins, k) / n
    pb = joint.sum(2, keepdims=True)
    pc = joint.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log2(joint / (pb * pc)), 0.0)
    return np.maximum(terms.sum((1, 2)), 0.0)


def sklearn_mi(a: np.ndarray, y: np.ndarray, bins: int, units: int) -> np.ndarray:
    codes = numpy_codes(a[:, :units], bins)
    return np.array([mutual_info_score(y, codes[:, u]) / np.log(2) for u in range(units)])


def polars_selectivity(df: pl.DataFrame, k: int) -> np.ndarray:
    per_class = df.group_by("unit", "label").agg(pl.col("activation").cast(pl.Float64).mean())
    per_unit = (
        per_class.group_by("unit")
        .agg(mu_max=pl.col("activation").max(), total=pl.col("activation").sum())
        .with_columns(rest=(pl.col("total") - pl.col("mu_max")) / (k - 1))
        .with_columns(
            si=pl.when(pl.col("mu_max") + pl.col("rest") > 0)
            .then((pl.col("mu_max") - pl.col("rest")) / (pl.col("mu_max") + pl.col("rest")))
            .otherwise(0.0)
        )
        .sort("unit")
    )
    return per_unit["si"].to_numpy()


# --------------------------------------------------------------------------- issue 9 rows


def numpy_mask_means(a: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Class means the plain NumPy way: one boolean-mask mean per class, (k, units)."""
    return np.stack([a[y == c].mean(axis=0) for c in range(k)])


def write_records(path: Path, n_layers: int, n_units: int, n_samples: int, k: int = 10) -> None:
    """Unit-major long-format records (layer, unit, sample), generated lazily and streamed to
    parquet by polars (row groups of 2^20 records)."""
    frames = []
    for layer in range(n_layers):
        i = pl.int_range(0, n_units * n_samples, dtype=pl.Int64)
        unit, sample = i // n_samples, i % n_samples
        label = (sample * 7919 + 13) % k
        noise = (pl.struct(i.alias("i")).hash(layer) % (1 << 24)).cast(pl.Float32) / (1 << 24)
        tuning = ((unit * 31 + label * 17) % k).cast(pl.Float32) / k
        activation = (noise * 2.0 - 0.8 + tuning).clip(lower_bound=0.0).cast(pl.Float32)
        frames.append(
            pl.LazyFrame().select(
                layer=pl.lit(f"layer{layer}"),
                unit=unit,
                sample=sample,
                label=label,
                activation=activation,
            )
        )
    pl.concat(frames).sink_parquet(path, row_group_size=1 << 20)


def write_records_in_child(path: Path, n_layers: int, n_units: int, n_samples: int) -> None:
    """`write_records` in a child process, so that this process stays small: a child's peak
    memory counts its parent's memory at fork."""
    code = (
        "from pathlib import Path\nimport polars as pl\n"
        + inspect.getsource(write_records)
        + f"write_records(Path({str(path)!r}), {n_layers}, {n_units}, {n_samples})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


CHILD_STATS = """
import sys, time
t = time.perf_counter()
from singledir.cli.app import main
sys.argv = ["singledir", "stats", sys.argv[1], "--out", sys.argv[2]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print("SECONDS", time.perf_counter() - t)
# Peak RSS of this process's own memory (VmHWM: a fresh count since exec; ru_maxrss of a
# child would include the parent's memory at fork).
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("PEAK_KB", peak.split()[1])
"""

CHILD_GROUPBY = """
import sys, time
t = time.perf_counter()
import polars as pl
k = 10
per_class = pl.scan_parquet(sys.argv[1]).group_by("layer", "unit", "label").agg(
    pl.col("activation").cast(pl.Float64).mean()
)
si = (
    per_class.group_by("layer", "unit")
    .agg(mu_max=pl.col("activation").max(), total=pl.col("activation").sum())
    .with_columns(rest=(pl.col("total") - pl.col("mu_max")) / (k - 1))
    .with_columns(
        selectivity=pl.when(pl.col("mu_max") + pl.col("rest") > 0)
        .then((pl.col("mu_max") - pl.col("rest")) / (pl.col("mu_max") + pl.col("rest")))
        .otherwise(0.0)
    )
    .select("layer", "unit", "selectivity")
    .collect(engine="streaming")
)
si.write_parquet(sys.argv[2])
print("SECONDS", time.perf_counter() - t)
# Peak RSS of this process's own memory (VmHWM: a fresh count since exec; ru_maxrss of a
# child would include the parent's memory at fork).
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("PEAK_KB", peak.split()[1])
"""

CHILD_SCAN = """
import sys, time
t = time.perf_counter()
import polars as pl
n = 0
cols = ["layer", "unit", "sample", "label", "activation"]
for batch in pl.scan_parquet(sys.argv[1]).select(cols).collect_batches():
    n += batch.height
print("SECONDS", time.perf_counter() - t)
# Peak RSS of this process's own memory (VmHWM: a fresh count since exec; ru_maxrss of a
# child would include the parent's memory at fork).
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("PEAK_KB", peak.split()[1])
"""


def run_child(code: str, *args: str) -> tuple[float, float, float, float]:
    """(wall s of the whole process, s inside it after start-up, peak RSS GB, CPU s)."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        raise RuntimeError(f"child failed ({status}): {err[-2000:]}")

    def field(key: str) -> float:
        return float(next(line.split()[1] for line in out.splitlines() if line.startswith(key)))

    return wall, field("SECONDS"), field("PEAK_KB") / 2**20, usage.ru_utime + usage.ru_stime


def scale_rows(path: Path, repeats: int) -> list[tuple[str, float, float, float, float]]:
    """`singledir stats` on the file against polars, best of `repeats` each (by wall)."""
    rows: list[tuple[str, float, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, code in (
            ("singledir stats (all statistics, CLI)", CHILD_STATS),
            ("polars streaming group-by (selectivity only)", CHILD_GROUPBY),
            ("polars scan of the five columns", CHILD_SCAN),
        ):
            out = str(Path(tmp) / f"{len(rows)}.parquet")
            best = min(
                (run_child(code, str(path), out) for _ in range(repeats)), key=lambda r: r[0]
            )
            rows.append((name, *best))
            print(
                f"  {name:46s} {best[0]:6.2f} s (inside {best[1]:5.2f} s)  peak {best[2]:.2f} GB"
                f"  cpu {best[3]:5.2f} s"
            )
        ours = pl.read_parquet(Path(tmp) / "0.parquet").sort("layer", "unit")
        theirs = pl.read_parquet(Path(tmp) / "1.parquet").sort("layer", "unit")
        np.testing.assert_allclose(
            ours["selectivity"].to_numpy(), theirs["selectivity"].to_numpy(), rtol=1e-9
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--units", type=int, default=1000)
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--bins", type=int, default=DEFAULT_BINS)
    p.add_argument("--sklearn-units", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scale-records", type=int, default=150_000_000)
    p.add_argument("--scale-file", type=Path, default=None, help="reuse this records file")
    args = p.parse_args()
    n, units, k, bins = args.samples, args.units, args.classes, args.bins

    rng = np.random.default_rng(0)
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    tuning = rng.random((k, units)).astype(np.float32)
    a = np.maximum(rng.normal(size=(n, units)).astype(np.float32) + 2 * tuning[y], 0)
    unit_idx = np.tile(np.arange(units, dtype=np.int64), n)
    labels_long = np.repeat(y, units)
    values = a.ravel()
    df = pl.DataFrame({"unit": unit_idx, "label": labels_long, "activation": values})
    # The same records in random order: the long-format kernel must regroup them by unit
    # (records in sample-major or unit-major order are used as they are).
    perm = rng.permutation(n * units)
    shuffled = (unit_idx[perm], labels_long[perm], values[perm])
    print(f"{n * units:,} records ({units} units x {n} samples, {k} classes), {bins} bins")

    rows: list[tuple[str, str, float, float]] = []

    def record(task: str, name: str, seconds: float, scale: float = 1.0) -> None:
        cpu = CPU_TIMES[-1] * scale
        rows.append((task, name, seconds, cpu))
        print(f"  {task:12s} {name:50s} {seconds * 1e3:10.1f} ms  cpu {cpu * 1e3:10.1f} ms")

    r = args.repeats
    t, si_sd = best_of(lambda: sd.class_selectivity(a, y), r)
    record("selectivity", "singledir (dense array)", t)
    t, d_long = best_of(
        lambda: _core.long_unit_summary(unit_idx, labels_long, values, units, k, mutual_info=False),
        r,
    )
    record("selectivity", "singledir (long-format records)", t)
    t, d_shuf = best_of(
        lambda: _core.long_unit_summary(*shuffled, units, k, mutual_info=False),
        r,
    )
    record("selectivity", "singledir (long-format records, shuffled)", t)
    np.testing.assert_allclose(d_shuf["selectivity"], si_sd, rtol=1e-9, atol=1e-12)
    t, si_np = best_of(lambda: numpy_selectivity(a, y, k), r)
    record("selectivity", "NumPy (one-hot matmul)", t)
    t, si_pl = best_of(lambda: polars_selectivity(df, k), r)
    record("selectivity", "polars group-by pipeline", t)
    np.testing.assert_allclose(d_long["selectivity"], si_sd, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(si_np, si_sd, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(si_pl, si_sd, rtol=1e-9, atol=1e-12)

    t, mi_sd = best_of(lambda: sd.mutual_information(a, y, bins=bins), r)
    record("MI", "singledir (dense array)", t)
    t, d_long = best_of(
        lambda: _core.long_unit_summary(
            unit_idx, labels_long, values, units, k, negative=None, moments=False
        ),
        r,
    )
    record("MI", "singledir (long-format records)", t)
    t, d_shuf = best_of(
        lambda: _core.long_unit_summary(*shuffled, units, k, negative=None, moments=False), r
    )
    record("MI", "singledir (long-format records, shuffled)", t)
    np.testing.assert_allclose(d_shuf["mutual_info"], mi_sd, rtol=1e-9, atol=1e-12)
    t, mi_np = best_of(lambda: numpy_mi(a, y, k, bins), r)
    record("MI", "NumPy (vectorized bincount)", t)
    m = min(args.sklearn_units, units)
    t, mi_sk = best_of(lambda: sklearn_mi(a, y, bins, m), 1)
    record(
        "MI", f"scikit-learn loop (timed on {m} units, x{units / m:g})", t * units / m, units / m
    )
    np.testing.assert_allclose(d_long["mutual_info"], mi_sd, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mi_np, mi_sd, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mi_sk, mi_sd[:m], rtol=1e-9, atol=1e-12)

    t, _ = best_of(lambda: sd.unit_stats(a, y, bins=bins), r)
    record("all stats", "singledir unit_stats (dense)", t)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "acts.parquet"
        df.with_columns(
            layer=pl.lit("relu1"), sample=pl.Series(np.repeat(np.arange(n), units))
        ).write_parquet(path)
        t, table = best_of(lambda: sd.stats_from_activations(path, bins=bins), 1)
        record("all stats", "singledir stats_from_activations (parquet)", t)
        np.testing.assert_allclose(table["selectivity"].to_numpy(), si_sd, rtol=1e-9)

    print("all implementations agree (rtol 1e-9)")
    wall = {(task, name): s for task, name, s, _ in rows}
    cpu = {(task, name): c for task, name, _, c in rows}
    polars_key = ("selectivity", "polars group-by pipeline")
    sklearn_key = next(key for key in wall if key[1].startswith("scikit-learn"))
    for label, times in (("wall-clock", wall), ("CPU time", cpu)):
        for layout in ("dense array", "long-format records", "long-format records, shuffled"):
            sel_x = times[polars_key] / times[("selectivity", f"singledir ({layout})")]
            mi_x = times[sklearn_key] / times[("MI", f"singledir ({layout})")]
            print(
                f"{label}, singledir ({layout}): selectivity {sel_x:.1f}x the polars "
                f"pipeline (floor 5x); MI {mi_x:.0f}x the scikit-learn loop (floor 50x)"
            )
    threads = os.environ.get("RAYON_NUM_THREADS", str(os.cpu_count()))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"rayon threads {threads}"
    )
    print("\n| task | implementation | wall (ms) | CPU, all threads (ms) |\n|---|---|---:|---:|")
    for task, name, s, c in rows:
        print(f"| {task} | {name} | {s * 1e3:.1f} | {c * 1e3:.1f} |")

    # Issue 9: dense selectivity against NumPy's mask means and one read of the array.
    print(f"\nissue 9, dense class selectivity, {n} x {units} float32 (best of {5 * r})")
    t_sd, si = best_of(lambda: sd.class_selectivity(a, y), 5 * r)
    cpu_sd = CPU_TIMES[-1]
    t_np, means = best_of(lambda: numpy_mask_means(a, y, k), 5 * r)
    cpu_np = CPU_TIMES[-1]
    t_scan, _ = best_of(lambda: a.sum(), 5 * r)
    cpu_scan = CPU_TIMES[-1]
    mu_max = means.max(0).astype(np.float64)
    rest = (means.astype(np.float64).sum(0) - mu_max) / (k - 1)
    np.testing.assert_allclose(si, (mu_max - rest) / (mu_max + rest), rtol=1e-5)  # float32 means
    for name, t, c in (
        ("singledir class_selectivity", t_sd, cpu_sd),
        ("NumPy, one boolean-mask mean per class", t_np, cpu_np),
        ("memory scan, arr.sum()", t_scan, cpu_scan),
    ):
        print(f"  {name:40s} {t * 1e3:7.2f} ms  cpu {c * 1e3:7.2f} ms")
    print(
        f"  singledir is {t_np / t_sd:.2f}x NumPy (floor 2x), {t_sd / t_scan:.2f}x a scan "
        f"(goal <= 2x); CPU time {cpu_np / cpu_sd:.2f}x NumPy, {cpu_sd / cpu_scan:.2f}x a scan"
    )

    if args.scale_records > 0 or args.scale_file is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = args.scale_file
            if path is None:
                n_samples = args.scale_records // 3000
                path = Path(tmp) / "records.parquet"
                t0 = time.perf_counter()
                write_records_in_child(path, 3, 1000, n_samples)
                print(f"\nwrote {3000 * n_samples:,} records in {time.perf_counter() - t0:.0f} s")
            size = path.stat().st_size / 1e6
            n_rec = pl.scan_parquet(path).select(pl.len()).collect().item()
            print(f"\nissue 9, {n_rec:,} long-format records, {size:.0f} MB parquet (best of 2)")
            scale = scale_rows(path, 2)
            ours, groupby, scan = scale
            print(
                f"  singledir stats is {groupby[2] / ours[2]:.2f}x the polars group-by inside the "
                f"process ({groupby[1] / ours[1]:.2f}x whole process; floor 1x), peak "
                f"{ours[3]:.2f} GB (floor <= 1 GB), {ours[2] / scan[2]:.2f}x the scan (goal <= 2x)"
            )
            print("\n| work | wall, whole process (s) | inside (s) | peak RSS (GB) | CPU (s) |")
            print("|---|---:|---:|---:|---:|")
            for name, wall_s, inner, rss, cpu_s in scale:
                print(f"| {name} | {wall_s:.2f} | {inner:.2f} | {rss:.2f} | {cpu_s:.2f} |")
    print(json.dumps({"load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
