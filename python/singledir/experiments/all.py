"""``all``: every experiment, each into its own subfolder, and one combined report.

``OUT/<experiment>/`` holds each experiment's results exactly as a single run would (so each
can be resumed or inspected alone); ``OUT/report.html`` and ``OUT/report.md`` gather every
section with a table of all the paper's claims first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from singledir.experiments.runner import ExperimentOutcome

NAME = "all"
TITLE = "Reproducing Morcos et al. (2018): all experiments"


def run_all_experiments(
    preset: str = "quick",
    overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    **executor_options: Any,
) -> ExperimentOutcome:
    """Run every experiment into ``out_dir`` (default ``results/all``); see
    :func:`singledir.experiments.run_experiment` for the options."""
    from singledir.experiments import run_experiment

    return run_experiment("all", preset, overrides, out_dir, **executor_options)
