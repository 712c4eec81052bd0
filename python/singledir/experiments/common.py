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
) -> tuple[pl.DataFrame, float]:
    """Cumulative ablation curves (random orderings) and their AUC; writes ``filename``."""
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
