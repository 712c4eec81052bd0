"""The machinery every experiment shares: results folder, manifest, per-run directories with a
done marker (resume), parallel execution through an executor, phase timing, and the helpers
that train a net and load the data it was trained on.

Layout of a results folder::

    OUT/manifest.json            experiment, preset, settings, seeds, runs, timings
    OUT/runs/<run_id>/spec.json  what the run does (condition, training config, analysis)
    OUT/runs/<run_id>/train/     the training output (ckpt.pt, snapshots/, metrics.parquet)
    OUT/runs/<run_id>/*.parquet  the run's raw analysis results
    OUT/runs/<run_id>/result.json  summary figures and phase timings
    OUT/runs/<run_id>/DONE       written last: a run with it is never run again
    OUT/*.parquet, OUT/figures/*.png, OUT/report.html, OUT/report.md

A run's id names its condition and ends in a hash of its spec, so changing a setting makes
new runs (never silently reusing results computed with other settings).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from singledir.errors import ConfigError, DataError
from singledir.experiments.settings import Settings
from singledir.io import atomic_write, read_table, write_table

__all__ = [
    "PhaseTimer",
    "RunRecord",
    "ExperimentOutcome",
    "DONE_MARKER",
    "MANIFEST",
    "make_spec",
    "execute_run",
    "prepare_out_dir",
    "write_json",
    "read_json",
    "train_config",
    "train_net",
    "training_data",
    "eval_data",
    "final_metrics",
    "collect_table",
    "seeds_of",
]

DONE_MARKER = "DONE"
PROGRESS_FILE = "progress.json"
MANIFEST = "manifest.json"
PHASES = ("train", "ablation", "statistics", "report")


class PhaseTimer:
    """Accumulates wall seconds per phase (``train``, ``ablation``, ``statistics``, ...).

    With a ``progress_path``, it also records what the run is doing now (phase, epoch) in
    that small JSON file, which the parent process reads to show live progress.
    """

    def __init__(self, progress_path: Path | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.progress_path = progress_path

    def note(self, **info: Any) -> None:
        """Record the run's current state (best effort: progress must never fail a run)."""
        if self.progress_path is None:
            return
        try:
            text = json.dumps(info)
            atomic_write(self.progress_path, lambda tmp: tmp.write_text(text))
        except Exception:  # noqa: BLE001 - a display aid only
            pass

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name != "statistics":
            self.note(phase=name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def add(self, other: dict[str, float]) -> None:
        for k, v in other.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + float(v)


@dataclass
class RunRecord:
    """A finished run: its spec, directory and the summary it wrote (``result.json``)."""

    spec: dict[str, Any]
    run_dir: Path
    result: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.spec["run_id"])

    @property
    def condition(self) -> dict[str, Any]:
        return dict(self.spec.get("condition", {}))


@dataclass
class ExperimentOutcome:
    """What :func:`singledir.experiments.run_experiment` returns."""

    experiment: str
    out_dir: Path
    report_html: Path
    report_md: Path
    claims: list[Any] = field(default_factory=list)
    runs_total: int = 0
    runs_skipped: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | set):
        return list(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def read_json(path: Path) -> Any:
    """Read a JSON file written by :func:`write_json` (DataError when unreadable)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{str(path)!r} does not exist: check the results folder") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{str(path)!r} is not readable JSON ({type(exc).__name__}): remove it and run again"
        ) from exc


def make_spec(
    label: str,
    condition: dict[str, Any],
    train: dict[str, Any],
    analysis: dict[str, Any],
) -> dict[str, Any]:
    """A run's spec; its id is ``label`` plus a hash of everything that defines the run."""
    body = {"condition": condition, "train": train, "analysis": analysis}
    digest = hashlib.sha1(
        json.dumps(body, sort_keys=True, default=_json_default).encode()
    ).hexdigest()[:8]
    return {"run_id": f"{label}-{digest}", **body}


def execute_run(experiment: str, spec: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Run one spec of ``experiment`` in ``run_dir`` (top-level, so process pools and Ray can
    ship it). Skips a run whose done marker exists; writes ``result.json`` and then the
    marker. Returns the result dict (summary figures and ``timings``)."""
    rdir = Path(run_dir)
    done = rdir / DONE_MARKER
    if done.exists() and (rdir / "result.json").exists():
        result = read_json(rdir / "result.json")
        result["skipped"] = True
        return dict(result)
    rdir.mkdir(parents=True, exist_ok=True)
    write_json(rdir / "spec.json", spec)
    module = importlib.import_module(f"singledir.experiments.{experiment.replace('-', '_')}")
    timer = PhaseTimer(rdir / PROGRESS_FILE)
    t0 = time.perf_counter()
    result = dict(module.run(spec, rdir, timer))
    result["timings"] = {**timer.seconds, "run_wall": time.perf_counter() - t0}
    result["run_id"] = spec["run_id"]
    result["condition"] = spec.get("condition", {})
    write_json(rdir / "result.json", result)
    atomic_write(done, lambda tmp: tmp.write_text(_now() + "\n"))
    result["skipped"] = False
    return result


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def prepare_out_dir(out_dir: Path, experiment: str, subexperiments: tuple[str, ...] = ()) -> None:
    """Create ``out_dir`` or check that it holds results of this same ``experiment``.

    ``subexperiments`` (for ``all``): a folder holding only those experiments' own result
    folders (``OUT/<name>/manifest.json``) is accepted too.

    Raises
    ------
    ConfigError
        The folder holds another experiment's results, or other files.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {str(out_dir)!r} is a file: give a folder path")
    manifest = out_dir / MANIFEST
    if manifest.exists():
        previous = read_json(manifest).get("experiment")
        if previous != experiment:
            raise ConfigError(
                f"{str(out_dir)!r} holds results of experiment {previous!r}, not {experiment!r}: "
                f"choose another --out (e.g. results/{experiment}) or remove that folder"
            )
        return
    entries = (
        [p for p in out_dir.iterdir() if not p.name.startswith(".")] if out_dir.is_dir() else []
    )
    if entries and subexperiments and all(_holds_own(p, subexperiments) for p in entries):
        return
    if entries:
        raise ConfigError(
            f"{str(out_dir)!r} is not empty and holds no singledir results: "
            f"choose another --out (e.g. results/{experiment}) or an empty folder"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create --out {str(out_dir)!r} ({exc.strerror}): fix it") from exc


def _holds_own(path: Path, names: tuple[str, ...]) -> bool:
    """True when ``path`` is the results folder of experiment ``path.name`` (one of names)."""
    if not path.is_dir() or path.name not in names or not (path / MANIFEST).exists():
        return False
    try:
        return bool(read_json(path / MANIFEST).get("experiment") == path.name)
    except DataError:
        return False


def environment_info() -> dict[str, Any]:
    """Versions and machine facts for the manifest."""
    import numpy
    import torch

    from singledir import __version__

    return {
        "singledir": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "polars": pl.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda": bool(torch.cuda.is_available()),
    }


# ------------------------------------------------------------------------------------------
# Helpers the experiment modules use inside a run


def seeds_of(s: Settings, count: int | None = None) -> list[int]:
    """``count`` (default ``s.seeds``) consecutive seeds starting at ``s.seed``."""
    n = s.seeds if count is None else count
    return [s.seed + i for i in range(int(n))]


def train_config(s: Settings, **changes: Any) -> dict[str, Any]:
    """The :class:`singledir.train.TrainConfig` dict of a run under settings ``s``."""
    cfg: dict[str, Any] = {
        "dataset": s.dataset,
        "data_dir": s.data_dir,
        "train_size": s.train_size,
        "test_size": s.eval_samples,
        "data_seed": s.seed,
        "model": s.model,
        "widths": list(s.widths),
        "width": s.width,
        "dropout": 0.0,
        "batchnorm": False,
        "small_input": s.small_input,
        "corrupt": 0.0,
        "corrupt_seed": s.seed,
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "optimizer": s.optimizer,
        "lr": s.lr,
        "momentum": s.momentum,
        "weight_decay": s.weight_decay,
        "schedule": s.schedule,
        "snapshot_every": 0,
        "snapshot_epochs": [],
        "seed": s.seed,
        "device": s.device,
        "train_metrics": "eval",
    }
    for k, v in changes.items():
        cfg[k] = list(v) if isinstance(v, tuple) else v
    return cfg


def train_net(spec: dict[str, Any], run_dir: Path, timer: PhaseTimer) -> Any:
    """Train the spec's net into ``run_dir/train`` (resuming a partial training)."""
    from singledir.train import TrainConfig, train

    config = _train_config_obj(TrainConfig, spec["train"])
    epochs = int(spec["train"].get("epochs", 0))

    def on_epoch(row: dict[str, float]) -> None:
        timer.note(phase="train", epoch=int(row.get("epoch", 0)), epochs=epochs)

    with timer.phase("train"):
        return train(config, run_dir / "train", resume=True, progress=False, on_epoch=on_epoch)


def _train_config_obj(cls: Any, d: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in known}
    if hasattr(cls, "from_dict"):
        return cls.from_dict(kwargs)
    return cls(**kwargs)


def training_data(train_cfg: dict[str, Any], max_samples: int | None = None) -> Any:
    """The training split exactly as the run's net saw it (subset and corrupted labels),
    cut to a fixed random ``max_samples`` of it when it is larger."""
    from singledir.checkpoint import CheckpointMeta
    from singledir.evaluation import load_split

    meta = CheckpointMeta.from_dict(train_cfg)
    data = load_split(meta, "train", data_dir=meta.data_dir)
    return _cut(data, max_samples, seed=meta.data_seed)


def eval_data(train_cfg: dict[str, Any], max_samples: int | None = None) -> Any:
    """The run's test split (never corrupted; the subset its training evaluated on), cut to
    ``max_samples``."""
    from singledir.checkpoint import CheckpointMeta
    from singledir.evaluation import load_split

    meta = CheckpointMeta.from_dict(train_cfg)
    data = load_split(meta, "test", data_dir=meta.data_dir)
    return _cut(data, max_samples, seed=meta.data_seed)


def _cut(data: Any, max_samples: int | None, seed: int) -> Any:
    """A fixed random ``max_samples`` of ``data`` (all of it when it is smaller)."""
    n = int(data.y.shape[0])
    if max_samples is None or n <= max_samples or getattr(data, "x", None) is None:
        return data
    from singledir.monitor import seeded_subset, take_samples

    return take_samples(data, seeded_subset(n, max_samples, 10_007 + seed))


def final_metrics(train_result: Any) -> dict[str, float]:
    """Last epoch's train/test loss and accuracy, and the generalization gap."""
    metrics: pl.DataFrame = train_result.metrics
    last = metrics.sort("epoch").row(-1, named=True)
    out: dict[str, float] = {
        k: float(last[k])
        for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")
        if k in last
    }
    if "train_acc" in out and "test_acc" in out:
        out["gen_gap"] = out["train_acc"] - out["test_acc"]
    return out


def collect_table(records: list[RunRecord], filename: str) -> pl.DataFrame:
    """Concatenate ``filename`` of every run, with the run id and condition as columns."""
    frames = []
    for rec in records:
        path = rec.run_dir / filename
        if not path.exists():
            continue
        df = read_table(path)
        extra = {"run_id": rec.run_id, **rec.condition}
        for k, v in extra.items():
            if k in df.columns:
                df = df.drop(k)
            df = df.with_columns(pl.lit(v).alias(k))
        frames.append(df)
    if not frames:
        raise DataError(f"no run wrote {filename}: run the experiment again")
    return pl.concat(frames, how="diagonal_relaxed")


def write_run_table(df: pl.DataFrame, run_dir: Path, filename: str) -> Path:
    """Write one of a run's raw result tables (atomically)."""
    return write_table(df, run_dir / filename)


def _progress_of(run_dir: Path) -> tuple[float, str]:
    """(fraction of the run done, short state) from a running run's progress file."""
    try:
        info = json.loads((run_dir / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return 0.0, "starting"
    phase = str(info.get("phase", ""))
    if phase == "train" and info.get("epochs"):
        done = min(1.0, int(info.get("epoch", 0)) / max(1, int(info["epochs"])))
        return 0.8 * done, f"epoch {info.get('epoch', 0)}/{info['epochs']}"
    if phase == "train":
        return 0.0, "training"
    return 0.85, phase or "analysis"


def run_all(
    experiment: str,
    specs: list[dict[str, Any]],
    out_dir: Path,
    executor: Any,
    on_done: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> list[RunRecord]:
    """Execute every spec through ``executor`` (finished runs are skipped without being
    shipped), calling ``on_done(spec, result)`` as each finishes, and, while waiting,
    ``on_progress(runs_done_fraction, status)`` with the running runs' states. Returns
    records in the specs' order."""
    runs_dir = out_dir / "runs"
    results: dict[int, dict[str, Any]] = {}
    todo: list[int] = []
    for i, spec in enumerate(specs):
        rdir = runs_dir / spec["run_id"]
        if (rdir / DONE_MARKER).exists() and (rdir / "result.json").exists():
            res = dict(read_json(rdir / "result.json"))
            res["skipped"] = True
            results[i] = res
            if on_done is not None:
                on_done(spec, res)
        else:
            todo.append(i)
    args = [(experiment, specs[i], str(runs_dir / specs[i]["run_id"])) for i in todo]

    def poll() -> None:
        if on_progress is None:
            return
        running = [i for i in todo if i not in results and (runs_dir / specs[i]["run_id"]).exists()]
        parts = [
            (specs[i]["run_id"].rsplit("-", 1)[0], *_progress_of(runs_dir / specs[i]["run_id"]))
            for i in running
        ]
        total = len(results) + sum(frac for _, frac, _ in parts)
        status = "; ".join(f"{label} {state}" for label, _, state in parts[:3])
        on_progress(total, status)

    for j, res in executor.imap(execute_run, args, poll=poll):
        i = todo[j]
        results[i] = res
        if on_done is not None:
            on_done(specs[i], res)
    return [
        RunRecord(spec=spec, run_dir=runs_dir / spec["run_id"], result=results[i])
        for i, spec in enumerate(specs)
    ]
