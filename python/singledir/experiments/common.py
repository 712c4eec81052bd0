"""Analysis steps the experiments share: load a trained net, run its cumulative ablation and
noise curves, compute AUCs, and summarize curves per condition for the figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from singledir.experiments.runner import PhaseTimer, write_run_table
from singledir.experiments.settings import Settings

__all__ = [
    "quiet_call",
    "unit_table",
    "analysis_params",
    "load_model",
    "run_ablation",
    "run_noise",
    "auc_value",
    "mean_by",
    "ordering_aucs",
    "repeat_areas",
    "claim_seed_of",
    "mean_intervals",
    "with_net_auc_intervals",
]


def quiet_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with ``progress=False`` when it takes that argument (workers draw no bars)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    if "progress" in params:
        kwargs.setdefault("progress", False)
    return fn(*args, **kwargs)


def unit_table(model: Any, data: Any, timer: PhaseTimer, layers: str = "all") -> pl.DataFrame:
    """Per-unit statistics (selectivity, preferred class, mutual information, ...) of every
    site on ``data``: one row per (layer, unit)."""
    from singledir.activations import record_activation_arrays
    from singledir.unit_scores import unit_stats_table

    with timer.phase("statistics"):
        arrays, labels = quiet_call(record_activation_arrays, model, data, layers)
        return unit_stats_table(arrays, labels, getattr(data, "num_classes", None))


def analysis_params(s: Settings, **extra: Any) -> dict[str, Any]:
    """The analysis part of a run spec (what the ablation and noise steps use)."""
    params: dict[str, Any] = {
        "layers": "all",
        "orderings": s.orderings,
        "levels": s.levels,
        "ablation_samples": s.ablation_samples,
        "eval_samples": s.eval_samples,
        "noise_scales": list(s.noise_scales),
        "noise_repeats": s.noise_repeats,
    }
    params.update(extra)
    return params


def load_model(path: Path | str) -> Any:
    """The model of a checkpoint, in eval mode."""
    from singledir.checkpoint import load_checkpoint

    model = load_checkpoint(path).model
    model.eval()
    return model


def run_ablation(
    model: Any,
    data: Any,
    analysis: dict[str, Any],
    seed: int,
    timer: PhaseTimer,
    run_dir: Path | None = None,
    filename: str = "curves.parquet",
    directions: str = "units",
) -> tuple[pl.DataFrame, float]:
    """Cumulative ablation curves (random orderings) and their AUC; writes ``filename``.
    ``directions="random"`` ablates random orthonormal directions instead of units."""
    from singledir.ablation import ablation_curves

    with timer.phase("ablation"):
        df = quiet_call(
            ablation_curves,
            model,
            data,
            analysis.get("layers", "all"),
            orderings=int(analysis["orderings"]),
            levels=int(analysis["levels"]),
            order="random",
            seed=int(seed),
            **({} if directions == "units" else {"directions": directions}),
        )
    with timer.phase("statistics"):
        auc = auc_value(df)
    if run_dir is not None:
        write_run_table(df, run_dir, filename)
    return df, auc


def run_noise(
    model: Any,
    data: Any,
    analysis: dict[str, Any],
    seed: int,
    timer: PhaseTimer,
    run_dir: Path | None = None,
) -> tuple[pl.DataFrame, float]:
    """Noise perturbation curves and their AUC; writes ``noise.parquet``."""
    from singledir.noise import noise_auc, noise_curves

    with timer.phase("ablation"):
        df = quiet_call(
            noise_curves,
            model,
            data,
            analysis.get("layers", "all"),
            scales=[float(v) for v in analysis["noise_scales"]],
            repeats=int(analysis["noise_repeats"]),
            seed=int(seed),
        )
    with timer.phase("statistics"):
        auc = float(noise_auc(df))
    if run_dir is not None:
        write_run_table(df, run_dir, "noise.parquet")
    return df, auc


def auc_value(curves: pl.DataFrame, relative: bool = False) -> float:
    """Area under the cumulative ablation curve (accuracy against fraction ablated), the
    mean over orderings; ``relative`` divides each curve by its unablated accuracy."""
    from singledir.curves import ablation_auc

    value = ablation_auc(curves, relative=relative)
    return float(value)  # type: ignore[arg-type]


def mean_by(df: pl.DataFrame, group: str, value: str) -> tuple[np.ndarray, np.ndarray]:
    """(sorted group values, mean of ``value`` per group) as arrays."""
    agg = df.group_by(group).agg(pl.col(value).mean()).sort(group)
    return agg[group].to_numpy(), agg[value].to_numpy()


def ordering_aucs(
    curves: pl.DataFrame, key: str = "run_id", relative: bool = False
) -> dict[Any, np.ndarray]:
    """Per net (``key``): the AUC of each of its orderings (their mean is the net's AUC),
    the replicates the bootstrap resamples within a net."""
    from singledir.curves import ablation_auc

    out: dict[Any, np.ndarray] = {}
    for (k,), part in curves.partition_by(key, as_dict=True).items():
        per = ablation_auc(part, per_ordering=True, relative=relative)
        out[k] = per["auc"].to_numpy()  # type: ignore[index]
    return out


def repeat_areas(noise: pl.DataFrame, key: str = "run_id") -> dict[Any, np.ndarray]:
    """Per net: the normalized area under each noise repeat's curve (their mean is the
    net's noise AUC, the area being linear in the curve)."""
    from singledir.curves import mean_curve_area

    out: dict[Any, np.ndarray] = {}
    for (k,), part in noise.partition_by(key, as_dict=True).items():
        reps = part.partition_by("repeat", as_dict=True)
        out[k] = np.array(
            [mean_curve_area(r, "scale", "accuracy") for _, r in sorted(reps.items())]
        )
    return out


def claim_seed_of(s: Settings, experiment: str, name: str) -> int:
    """The resampling seed of one claim: from the experiment's seed and the claim's name."""
    from singledir.inference import claim_seed

    return claim_seed(s.seed, f"{experiment}:{name}")


def mean_intervals(
    units_by_group: dict[Any, list[np.ndarray]], seed: int, column: str = "auc"
) -> pl.DataFrame:
    """Per group: the mean over its units (each unit's value = mean of its replicates) and
    the 95% bootstrap interval (units resampled, replicates within them): columns
    ``group, {column}_mean, {column}_ci_low, {column}_ci_high, units``."""
    from singledir.inference import bootstrap_interval

    rows = []
    for i, (g, units) in enumerate(sorted(units_by_group.items())):
        ci = bootstrap_interval(lambda v: float(v.mean()), [units], seed=seed + i)
        rows.append(
            {
                "group": g,
                f"{column}_mean": float(np.mean([u.mean() for u in units])),
                f"{column}_ci_low": ci.low,
                f"{column}_ci_high": ci.high,
                "units": len(units),
            }
        )
    return pl.DataFrame(rows)


def with_net_auc_intervals(
    runs: pl.DataFrame, aucs: dict[str, np.ndarray], seed: int
) -> pl.DataFrame:
    """``runs`` with each net's 95% bootstrap interval of its AUC over its orderings
    (columns ``auc_ci_low``, ``auc_ci_high``), joined on ``run_id``."""
    intervals = mean_intervals({r: [aucs[r]] for r in runs["run_id"].to_list()}, seed)
    return runs.join(
        intervals.rename({"group": "run_id"}).select("run_id", "auc_ci_low", "auc_ci_high"),
        on="run_id",
    )
