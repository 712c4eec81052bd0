"""Wall time of each experiment's quick preset and the share of it spent in training,
ablation (and noise), statistics and figures/report.

Usage (from the repository root; writes nothing outside --out)::

    python bench/experiments.py --out /tmp/bench-experiments [--workers 2] [--only corruption]

Phase seconds are summed over the runs as each worker measured them (so with two workers
they can add up to about twice the wall time); shares are of their total. Prints a Markdown
table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from singledir.experiments import EXPERIMENTS, run_experiment

PHASES = ("train", "ablation", "statistics", "report")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/bench-experiments")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--only", default=",".join(EXPERIMENTS))
    parser.add_argument("--preset", default="quick")
    args = parser.parse_args()
    root = Path(args.out)
    rows = []
    for name in args.only.split(","):
        out = root / name
        if out.exists():
            shutil.rmtree(out)  # a fresh run: nothing reused
        t0 = time.perf_counter()
        outcome = run_experiment(name, args.preset, None, out, workers=args.workers, progress=False)
        wall = time.perf_counter() - t0
        phases = {p: outcome.timings.get(p, 0.0) for p in PHASES}
        total = sum(phases.values()) or 1.0
        verdicts = ", ".join(c.verdict for c in outcome.claims)
        rows.append((name, outcome.runs_total, wall, phases, total, verdicts))
        print(json.dumps({"experiment": name, "wall_s": round(wall, 1), **phases}), flush=True)
    print()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"preset {args.preset}, workers {args.workers or 'default'}"
    )
    print()
    print(
        "| experiment | runs | wall (s) | train | ablation + noise | statistics | report |"
        " verdicts |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, runs, wall, phases, total, verdicts in rows:
        shares = " | ".join(f"{100 * phases[p] / total:.0f}%" for p in PHASES)
        print(f"| {name} | {runs} | {wall:.0f} | {shares} | {verdicts} |")


if __name__ == "__main__":
    main()
