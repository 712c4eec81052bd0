"""Executors: serial, local process pool (forkserver/spawn, torch threads limited per worker),
Ray (a local instance running a small sweep; an unreachable address). Ray tests skip cleanly
when the ``ray`` package is absent."""

from __future__ import annotations

import importlib.util
import os
import socket

import polars as pl
import pytest
from singledir.errors import ConfigError, ExecutorError
from singledir.executors import (
    ProcessExecutor,
    SerialExecutor,
    available_cores,
    make_executor,
)

HAS_RAY = importlib.util.find_spec("ray") is not None


def square_and_threads(x: int) -> tuple[int, int, int]:
    import torch

    return x * x, torch.get_num_threads(), os.getpid()


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def test_serial_runs_in_order_in_process() -> None:
    ex = SerialExecutor()
    out = list(ex.imap(square_and_threads, [(i,) for i in range(4)]))
    assert [i for i, _ in out] == [0, 1, 2, 3]
    assert [r[0] for _, r in out] == [0, 1, 4, 9]
    assert {r[2] for _, r in out} == {os.getpid()}


def test_process_pool_results_threads_processes_and_errors() -> None:
    # One pool for all checks: starting workers (each imports torch) is the slow part.
    with ProcessExecutor(workers=2, threads_per_worker=1) as ex:
        assert ex.start_method in ("forkserver", "spawn")
        out = dict(ex.imap(square_and_threads, [(i,) for i in range(6)]))
        assert sorted(out) == list(range(6))
        assert [out[i][0] for i in range(6)] == [i * i for i in range(6)]
        assert {r[1] for r in out.values()} == {1}  # torch limited to one thread per worker
        assert os.getpid() not in {r[2] for r in out.values()}
        with pytest.raises(ValueError, match="three"):
            list(ex.imap(fail_on_three, [(i,) for i in range(5)]))
        # The pool survives a failed task.
        assert dict(ex.imap(fail_on_three, [(1,), (2,)])) == {0: 1, 1: 2}


def test_process_pool_refuses_fork() -> None:
    with pytest.raises(ConfigError, match="forkserver or spawn"):
        ProcessExecutor(workers=2, start_method="fork")


def test_make_executor_choices_and_bad_input() -> None:
    assert isinstance(make_executor("serial"), SerialExecutor)
    assert isinstance(make_executor("process", workers=1), SerialExecutor)
    pool = make_executor("process", workers=2)
    assert isinstance(pool, ProcessExecutor) and pool.workers == 2
    assert "2 workers" in pool.describe()
    pool.close()
    with pytest.raises(ConfigError, match="unknown executor"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="--workers"):
        make_executor("process", workers=0)
    with pytest.raises(ConfigError, match="--executor ray"):
        make_executor("process", address="127.0.0.1:6379")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'singledir[ray]')")
def test_ray_unreachable_address_is_one_line_error() -> None:
    port = _closed_port()
    with pytest.raises(ExecutorError, match="unreachable") as info:
        make_executor("ray", address=f"127.0.0.1:{port}")
    assert "\n" not in str(info.value) and "--address" in str(info.value)
    with pytest.raises(ExecutorError, match="HOST:PORT"):
        make_executor("ray", address="nonsense")


@pytest.mark.skipif(HAS_RAY, reason="only meaningful without ray")
def test_ray_missing_package_is_one_line_error() -> None:
    with pytest.raises(ExecutorError, match="pip install"):
        make_executor("ray")


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'singledir[ray]')")
def test_ray_local_instance_runs_a_sweep_like_serial(tmp_path) -> None:
    """A tiny sweep (the ensemble experiment) through a local Ray instance gives the same
    numbers as running it serially: results depend on seeds, not on the executor."""
    from singledir.experiments import run_experiment

    over = {"ensemble_size": 2, "epochs": 2, "orderings": 2}
    ex = make_executor("ray", workers=2)
    try:
        assert ex.name == "ray" and "ray" in ex.describe()
        out = dict(ex.imap(available_cores, [(), ()]))
        assert sorted(out) == [0, 1] and all(v >= 1 for v in out.values())
        via_ray = run_experiment(
            "ensemble", "tiny", over, tmp_path / "ray", executor=ex, progress=False
        )
    finally:
        ex.close()
    serial = run_experiment(
        "ensemble", "tiny", over, tmp_path / "serial", executor="serial", progress=False
    )
    a = pl.read_parquet(via_ray.out_dir / "runs.parquet").sort("seed")
    b = pl.read_parquet(serial.out_dir / "runs.parquet").sort("seed")
    assert a["auc"].to_list() == b["auc"].to_list()
    assert a["test_acc"].to_list() == b["test_acc"].to_list()
