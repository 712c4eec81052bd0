"""Run independent tasks (an experiment's trainings) serially, in a local process pool, or as
Ray tasks on a local or remote Ray cluster.

Every executor has the same interface: :meth:`Executor.imap` takes a picklable top-level
function and a list of argument tuples and yields ``(index, result)`` pairs as tasks finish,
so a caller can show progress and record each finished task at once (resume relies on this).
The first task that raises stops the iteration and re-raises its exception in the caller.

The process pool uses the ``forkserver`` start method (``spawn`` where that is missing):
forking a process that already runs torch's thread pools can deadlock. Each worker limits
torch (and BLAS) to ``threads_per_worker`` threads so that ``workers * threads`` does not
exceed the cores and nothing is oversubscribed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from singledir.errors import ConfigError, ExecutorError

__all__ = [
    "EXECUTOR_NAMES",
    "Executor",
    "SerialExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "make_executor",
    "available_cores",
    "limit_threads",
]

EXECUTOR_NAMES = ("process", "serial", "ray")
POLL_S = 0.5  # how often a waiting executor calls its poll function


def available_cores() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def limit_threads(threads: int) -> None:
    """Limit torch's intra-op and inter-op pools and BLAS to ``threads`` threads."""
    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set once in this process: harmless
        pass


class Executor:
    """Base class: runs ``fn(*args)`` for each argument tuple and yields ``(index, result)``."""

    name = "base"
    workers = 1

    def imap(
        self,
        fn: Callable[..., Any],
        arg_tuples: Sequence[tuple[Any, ...]],
        poll: Callable[[], None] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, fn(*arg_tuples[index]))`` as tasks finish; ``poll`` is called about
        twice a second while waiting (e.g. to refresh a progress display)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """One line naming the executor and its parallelism (for logs and manifests)."""
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''})"


class SerialExecutor(Executor):
    """Runs the tasks one after another in this process (debugging, tiny runs, tests)."""

    name = "serial"

    def imap(
        self,
        fn: Callable[..., Any],
        arg_tuples: Sequence[tuple[Any, ...]],
        poll: Callable[[], None] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(arg_tuples):
            yield i, fn(*args)


def _init_worker(threads: int) -> None:
    limit_threads(threads)


class ProcessExecutor(Executor):
    """A local pool of ``workers`` processes, each limited to ``threads_per_worker`` threads.

    Parameters
    ----------
    workers:
        Number of processes; default: the available cores.
    threads_per_worker:
        torch threads per process; default: ``max(1, cores // workers)``.
    start_method:
        ``"forkserver"`` (default where available) or ``"spawn"``; never ``"fork"``.
    """

    name = "process"

    def __init__(
        self,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        start_method: str | None = None,
    ) -> None:
        cores = available_cores()
        self.workers = max(1, int(workers) if workers else cores)
        self.threads = max(1, int(threads_per_worker or cores // self.workers))
        if start_method is None:
            methods = mp.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        if start_method not in ("forkserver", "spawn"):
            raise ConfigError(
                f"start method {start_method!r} is not safe with torch: use forkserver or spawn"
            )
        self.start_method = start_method
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            try:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=mp.get_context(self.start_method),
                    initializer=_init_worker,
                    initargs=(self.threads,),
                )
            except OSError as exc:
                raise ExecutorError(
                    f"cannot start a pool of {self.workers} processes ({exc}): "
                    "use fewer --workers or --executor serial"
                ) from exc
        return self._pool

    def imap(
        self,
        fn: Callable[..., Any],
        arg_tuples: Sequence[tuple[Any, ...]],
        poll: Callable[[], None] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        if not arg_tuples:
            return
        pool = self._ensure_pool()
        futures: dict[Future[Any], int] = {
            pool.submit(fn, *args): i for i, args in enumerate(arg_tuples)
        }
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                if poll is not None:
                    poll()
                for fut in sorted(done, key=lambda f: futures[f]):
                    yield futures[fut], fut.result()
        finally:
            for fut in pending:
                fut.cancel()

    def describe(self) -> str:
        return (
            f"process pool ({self.workers} worker{'s' if self.workers != 1 else ''} x "
            f"{self.threads} thread{'s' if self.threads != 1 else ''}, {self.start_method})"
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor(Executor):
    """Runs each task as a Ray task (``num_cpus`` each) on a local or existing Ray cluster.

    Parameters
    ----------
    address:
        ``None`` starts a local Ray instance; ``"auto"`` or ``"HOST:PORT"`` (or
        ``"ray://HOST:PORT"``) connects to a running cluster.
    workers:
        CPUs of a local instance (default: the available cores); ignored for a cluster.
    cpus_per_task, gpus_per_task:
        Resources each task asks for; the task limits torch to ``cpus_per_task`` threads.
        ``gpus_per_task=None``: one GPU per task when the cluster has GPUs (Ray hides GPUs
        from tasks that ask for none), else none.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_task: float = 1.0,
        gpus_per_task: float | None = None,
        connect_timeout_s: float = 20.0,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ExecutorError(
                "--executor ray needs the ray package: pip install 'singledir[ray]'"
            ) from exc
        self._ray = ray
        self.address = address
        self.cpus_per_task = float(cpus_per_task)
        self.gpus_per_task = 0.0 if gpus_per_task is None else float(gpus_per_task)
        self._owns_instance = False
        if address is not None:
            _check_reachable(address, connect_timeout_s)
        try:
            if not ray.is_initialized():
                kwargs: dict[str, Any] = {
                    "ignore_reinit_error": True,
                    "include_dashboard": False,
                    "log_to_driver": False,
                    "logging_level": "ERROR",
                }
                if address is None:
                    kwargs["num_cpus"] = int(workers) if workers else available_cores()
                    self._owns_instance = True
                else:
                    kwargs["address"] = address
                ray.init(**kwargs)
        except ExecutorError:
            raise
        except Exception as exc:  # ray raises ConnectionError, RuntimeError, ...
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            raise ExecutorError(
                f"cannot connect to {where} ({type(exc).__name__}): check --address "
                "(HOST:PORT of a running `ray start --head`) or use --executor process"
            ) from exc
        resources = ray.cluster_resources()
        if gpus_per_task is None and resources.get("GPU", 0) >= 1:
            self.gpus_per_task = 1.0
        self.workers = max(1, int(resources.get("CPU", 1) // self.cpus_per_task))

    def imap(
        self,
        fn: Callable[..., Any],
        arg_tuples: Sequence[tuple[Any, ...]],
        poll: Callable[[], None] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        if not arg_tuples:
            return
        ray = self._ray
        remote = ray.remote(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task)(_ray_call)
        threads = max(1, int(self.cpus_per_task))
        refs = {remote.remote(threads, fn, args): i for i, args in enumerate(arg_tuples)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
                if poll is not None:
                    poll()
                for ref in done:
                    yield refs[ref], ray.get(ref)
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:  # already finished or gone: nothing to cancel
                    pass

    def describe(self) -> str:
        where = self.address or "local instance"
        return f"ray ({where}, {self.workers} task slot{'s' if self.workers != 1 else ''})"

    def close(self) -> None:
        if self._owns_instance and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns_instance = False


def _ray_call(threads: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    limit_threads(threads)
    return fn(*args)


def _check_reachable(address: str, timeout_s: float) -> None:
    """Fail fast with a one-line error when a HOST:PORT address does not answer."""
    import socket

    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port_text = hostport.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ExecutorError(
            f"Ray address {address!r} is not HOST:PORT: give e.g. --address 10.0.0.5:6379 "
            "or --address auto"
        )
    try:
        with socket.create_connection((host, int(port_text)), timeout=min(timeout_s, 5.0)):
            pass
    except OSError as exc:
        raise ExecutorError(
            f"Ray cluster at {address!r} is unreachable ({exc.strerror or exc}): start it with "
            "`ray start --head` or fix --address"
        ) from exc


def make_executor(
    kind: str = "process",
    *,
    workers: int | None = None,
    address: str | None = None,
    threads_per_worker: int | None = None,
) -> Executor:
    """Build an executor by name: ``"process"`` (default), ``"serial"`` or ``"ray"``.

    ``address`` is only meaningful for Ray; ``workers`` sizes the process pool or the local
    Ray instance. A process pool with a single worker runs serially (no pool start-up cost).
    """
    kind = kind.lower()
    if kind not in EXECUTOR_NAMES:
        raise ConfigError(f"unknown executor {kind!r}: choose one of {', '.join(EXECUTOR_NAMES)}")
    if workers is not None and int(workers) < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if address is not None and kind != "ray":
        raise ConfigError("--address is only used by --executor ray: add --executor ray")
    if kind == "serial":
        return SerialExecutor()
    if kind == "ray":
        return RayExecutor(address=address, workers=workers)
    if workers is not None and int(workers) == 1:
        return SerialExecutor()
    return ProcessExecutor(workers=workers, threads_per_worker=threads_per_worker)
