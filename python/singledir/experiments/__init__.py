"""Reproduce the paper's analyses, one experiment per figure.

Each experiment module (``corruption``, ``ensemble``, ``training``, ``selection``,
``dropout``, ``batchnorm``, ``selectivity``) defines ``plan(settings) -> [spec]`` (the
independent runs: one training plus its analysis each), ``run(spec, run_dir, timer)`` (done
in a worker) and ``summarize(settings, records, out_dir, timer) -> Section`` (tables,
figures and the verdicts of the paper's claims). :func:`run_experiment` ties them together:
results folder and manifest, parallel runs through an executor with resume, report.
``all`` runs every experiment into one folder and one report.

Example
-------
>>> from singledir.experiments import run_experiment
>>> outcome = run_experiment("corruption", preset="tiny", out_dir="results/tiny")  # doctest: +SKIP
>>> outcome.report_html  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from singledir.errors import ConfigError
from singledir.experiments.settings import PRESET_NAMES, Settings, resolve_settings

if TYPE_CHECKING:
    from singledir.executors import Executor
    from singledir.experiments.runner import ExperimentOutcome
    from singledir.report import Section

# The registry and the settings are light; the run machinery (runner, report, executors:
# polars, scipy, torch) is imported when an experiment runs, so that `singledir reproduce
# --help` stays fast.

__all__ = [
    "EXPERIMENTS",
    "EXPERIMENT_NAMES",
    "PRESET_NAMES",
    "Settings",
    "ExperimentOutcome",
    "resolve_settings",
    "run_experiment",
    "experiment_module",
]

# Registry: experiment name -> (module, one-line description). Order = order in `all`.
EXPERIMENTS: dict[str, str] = {
    "corruption": "Fig. 2: AUC of ablation and noise curves falls with label corruption",
    "ensemble": "Fig. 3: across seeds, nets that generalize worse have lower AUC",
    "training": "Fig. 4a,b: over training, AUC falls as test loss rises",
    "selection": "Fig. 4c: AUC picks good hyper-parameters without held-out data",
    "dropout": "Fig. 5a: dropout protects only up to its own fraction",
    "batchnorm": "Figs. 5b, 6: batch norm: robust to ablation, less selective units",
    "selectivity": "Fig. 7: class selectivity is a poor predictor of unit importance",
    "earlystop": "Beyond: stopping at the AUC's peak is nearly as good as a validation split",
    "selectivity-reg": "Beyond: regularizing selectivity (Leavitt & Morcos 2021)",
}
EXPERIMENT_NAMES = (*EXPERIMENTS, "all")


def experiment_module(name: str) -> ModuleType:
    """The module of experiment ``name`` (ConfigError for an unknown name)."""
    if name not in EXPERIMENTS:
        raise ConfigError(
            f"unknown experiment {name!r}: choose one of {', '.join(EXPERIMENT_NAMES)}"
        )
    return importlib.import_module(f"singledir.experiments.{name.replace('-', '_')}")


def _check_name(name: str) -> str:
    key = str(name).lower()
    if key not in EXPERIMENT_NAMES:
        raise ConfigError(
            f"unknown experiment {name!r}: choose one of {', '.join(EXPERIMENT_NAMES)}"
        )
    return key


def run_experiment(
    name: str,
    preset: str = "quick",
    overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    *,
    executor: Executor | str = "process",
    workers: int | None = None,
    address: str | None = None,
    progress: bool | None = None,
) -> ExperimentOutcome:
    """Run experiment ``name`` (or ``"all"``) and write its results and report.

    Parameters
    ----------
    name:
        One of :data:`EXPERIMENT_NAMES`.
    preset:
        ``tiny``, ``quick`` or ``paper`` (see :mod:`singledir.experiments.settings`).
    overrides:
        Settings to change (any :class:`Settings` field, e.g. ``{"epochs": 10}``).
    out_dir:
        Results folder (default ``results/<name>``). Finished runs found there are reused;
        a folder holding another experiment's results is refused.
    executor, workers, address:
        An :class:`~singledir.executors.Executor`, or its name (``process``, ``serial``,
        ``ray``) with the pool size and the Ray cluster address.
    progress:
        Show a progress bar (default: unless ``SINGLEDIR_QUIET`` is set).

    Returns
    -------
    ExperimentOutcome
        Paths of ``report.html`` and ``report.md``, the claims with their verdicts, the
        number of runs (and how many were already done), and the phase timings.
    """
    from singledir.devices import resolve_device
    from singledir.executors import Executor, make_executor
    from singledir.experiments.runner import (
        MANIFEST,
        ExperimentOutcome,
        PhaseTimer,
        _now,
        environment_info,
        prepare_out_dir,
        write_json,
    )
    from singledir.io import check_output_path
    from singledir.report import write_report

    key = _check_name(name)
    if str(preset).lower() not in PRESET_NAMES:
        raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESET_NAMES)}")
    names = list(EXPERIMENTS) if key == "all" else [key]
    settings = {n: resolve_settings(n, preset, overrides) for n in names}
    # Planned before anything is written, so that a setting the plan refuses leaves no trace.
    plans = {n: experiment_module(n).plan(settings[n]) for n in names}
    _check_data(settings[names[0]])
    for n in names:
        resolve_device(settings[n].device)  # a bad --device fails before anything is written
    out = Path(out_dir) if out_dir is not None else Path("results") / key
    if not out.exists():  # an existing path is prepare_out_dir's to judge (ours or not)
        check_output_path(out, folder=True)
    own_executor = not isinstance(executor, Executor)
    # Built before anything is written: a bad executor choice or an unreachable Ray
    # cluster fails fast and leaves no folder behind (the process pool starts lazily).
    ex: Executor = (
        make_executor(str(executor), workers=workers, address=address) if own_executor else executor  # type: ignore[assignment]
    )
    t0 = time.perf_counter()
    sections: list[Section] = []
    outcomes: list[ExperimentOutcome] = []
    try:
        prepare_out_dir(out, key, tuple(EXPERIMENTS) if key == "all" else ())
        if key == "all":
            for n in names:
                prepare_out_dir(out / n, n)
            # Written first, so that an interrupted `all` is recognised (and resumed).
            write_json(out / MANIFEST, {"experiment": "all", "preset": preset, "status": "running"})
        for n in names:
            sub_out = out / n if key == "all" else out
            outcome, section = _run_one(n, settings[n], plans[n], sub_out, ex, progress)
            sections.append(section)
            outcomes.append(outcome)
    finally:
        if own_executor:
            ex.close()
    if key != "all":
        outcome = outcomes[0]
        outcome.wall_s = time.perf_counter() - t0
        return outcome
    timer = PhaseTimer()
    for o in outcomes:
        timer.add(o.timings)
    with timer.phase("report"):
        meta = {
            "experiment": "all",
            "preset": preset,
            "dataset": settings[names[0]].dataset,
            "finished": _now(),
        }
        html_path, md_path = write_report(
            out, "Reproducing Morcos et al. (2018): all experiments", sections, meta
        )
    wall = time.perf_counter() - t0
    claims = [c for s in sections for c in s.claims]
    write_json(
        out / MANIFEST,
        {
            "experiment": "all",
            "preset": preset,
            "experiments": names,
            "overrides": {k: v for k, v in (overrides or {}).items() if v is not None},
            "claims": [c.to_dict() for c in claims],
            "timings": {**timer.seconds, "wall": wall},
            "report": {"html": "report.html", "markdown": "report.md"},
            "status": "complete",
            "finished": _now(),
            "environment": environment_info(),
        },
    )
    return ExperimentOutcome(
        experiment="all",
        out_dir=out,
        report_html=html_path,
        report_md=md_path,
        claims=claims,
        runs_total=sum(o.runs_total for o in outcomes),
        runs_skipped=sum(o.runs_skipped for o in outcomes),
        timings=timer.seconds,
        wall_s=wall,
    )


def _check_data(s: Settings) -> None:
    """Fail before any work when the dataset cannot be found (DataError, one line)."""
    from singledir.data import load_dataset

    if s.dataset == "imagenet":  # an ImageNet tree is checked by the runs; its folder here
        if s.data_dir is not None and not Path(s.data_dir).is_dir():
            load_dataset(s.dataset, "test", data_dir=s.data_dir)  # the one-line DataError
        return

    load_dataset(s.dataset, "test", data_dir=s.data_dir, test_size=10)


def _run_one(
    name: str,
    s: Settings,
    specs: list[dict[str, Any]],
    out: Path,
    ex: Executor,
    progress: bool | None,
) -> tuple[ExperimentOutcome, Section]:
    from singledir.experiments.runner import (
        MANIFEST,
        ExperimentOutcome,
        PhaseTimer,
        RunRecord,
        _now,
        environment_info,
        read_json,
        run_all,
        write_json,
    )
    from singledir.progress import make_progress
    from singledir.report import write_report

    module = experiment_module(name)
    t0 = time.perf_counter()
    manifest_path = out / MANIFEST
    started = _now()
    if manifest_path.exists():
        started = read_json(manifest_path).get("started", started)
    manifest: dict[str, Any] = {
        "experiment": name,
        "title": module.TITLE,
        "preset": s.preset,
        "settings": s.to_dict(),
        "seeds": sorted({int(sp["train"]["seed"]) for sp in specs}),
        "runs": [
            {"run_id": sp["run_id"], "condition": sp["condition"], "seed": sp["train"]["seed"]}
            for sp in specs
        ],
        "executor": ex.describe(),
        "status": "running",
        "started": started,
        "environment": environment_info(),
    }
    write_json(manifest_path, manifest)
    timer = PhaseTimer()
    skipped = 0
    with make_progress(quiet=None if progress is None else not progress) as bar:
        task = bar.add_task(f"{name}: runs", total=len(specs), status=ex.describe())
        done_count = [0]

        def on_done(spec: dict[str, Any], result: dict[str, Any]) -> None:
            nonlocal skipped
            if result.get("skipped"):
                skipped += 1
            else:
                timer.add({k: v for k, v in result.get("timings", {}).items() if k != "run_wall"})
            auc = result.get("auc")
            note = f" AUC {auc:.3f}" if isinstance(auc, float) else ""
            tag = " (done before)" if result.get("skipped") else ""
            done_count[0] += 1
            bar.update(task, completed=done_count[0], status=f"{spec['run_id']}{note}{tag}")

        def on_progress(completed: float, status: str) -> None:
            bar.update(task, completed=completed, status=status)

        records: list[RunRecord] = run_all(name, specs, out, ex, on_done, on_progress)
        bar.update(task, status="figures and report")
        section = module.summarize(s, records, out, timer)
    section.settings = {k: v for k, v in s.to_dict().items() if k != "extra"}
    with timer.phase("report"):
        meta = {
            "experiment": name,
            "preset": s.preset,
            "dataset": s.dataset,
            "model": s.model,
            "runs": f"{len(specs)} ({skipped} reused from an earlier run)",
            "seeds": ", ".join(str(v) for v in manifest["seeds"]),
            "executor": ex.describe(),
        }
        html_path, md_path = write_report(out, module.TITLE, [section], meta)
    wall = time.perf_counter() - t0
    manifest.update(
        {
            "status": "complete",
            "finished": _now(),
            "claims": [c.to_dict() for c in section.claims],
            "timings": {**timer.seconds, "wall": wall},
            "runs_skipped": skipped,
            "report": {"html": "report.html", "markdown": "report.md"},
        }
    )
    write_json(manifest_path, manifest)
    outcome = ExperimentOutcome(
        experiment=name,
        out_dir=out,
        report_html=html_path,
        report_md=md_path,
        claims=list(section.claims),
        runs_total=len(specs),
        runs_skipped=skipped,
        timings=dict(timer.seconds),
        wall_s=wall,
    )
    return outcome, section


def __getattr__(name: str) -> Any:
    if name == "ExperimentOutcome":  # defined with the run machinery, imported on demand
        from singledir.experiments.runner import ExperimentOutcome

        return ExperimentOutcome
    raise AttributeError(f"module 'singledir.experiments' has no attribute {name!r}")
