"""singledir: how much does a network rely on single directions, and what does that say
about how it generalizes? (Morcos, Barrett, Rabinowitz & Botvinick, ICLR 2018.)

The public API is re-exported here; see ``__all__``. Names are imported lazily, on first use,
through the ``_EXPORTS`` table (name -> module), so ``import singledir`` and ``singledir
--help`` do not pay for torch. To add a public name, add it to ``_EXPORTS`` and ``__all__``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from singledir import errors
from singledir.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ExecutorError,
    InputError,
    SingledirError,
    SiteError,
    SlowPathWarning,
)

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    # --- models ---
    "MLP": "singledir.models",
    "ConvNet11": "singledir.models",
    "resnet": "singledir.models",
    "build_model": "singledir.models",
    # --- statistics (Rust core) ---
    "class_selectivity": "singledir.stats",
    "preferred_class": "singledir.stats",
    "mutual_information": "singledir.stats",
    "unit_stats": "singledir.stats",
    "stats_from_activations": "singledir.stats",
    "rank_units": "singledir.stats",
    "score_correlations": "singledir.stats",
    "curve_auc": "singledir.stats",
    "level_mean_std": "singledir.stats",
    # --- data, checkpoints, training ---
    "DATASET_NAMES": "singledir.data",
    "LabeledData": "singledir.data",
    "ImageFolderData": "singledir.data",
    "load_dataset": "singledir.data",
    "Checkpoint": "singledir.checkpoint",
    "save_checkpoint": "singledir.checkpoint",
    "load_checkpoint": "singledir.checkpoint",
    "TrainConfig": "singledir.train",
    "TrainResult": "singledir.train",
    "evaluate": "singledir.train",
    "AUCMonitor": "singledir.monitor",
    "SelectivityRegularizer": "singledir.regularizers",
    "resolve_device": "singledir.devices",
    # --- ablation engine ---
    "ablation_curves": "singledir.ablation",
    "summarize_curves": "singledir.ablation",
    "ablation_auc": "singledir.ablation",
    "unit_importance": "singledir.ablation",
    "noise_curves": "singledir.noise",
    "noise_auc": "singledir.noise",
    "resolve_sites": "singledir.sites",
    "list_sites": "singledir.sites",
    "ablation_plan": "singledir.ablation",
    "record_activations": "singledir.activations",
    "record_activation_arrays": "singledir.activations",
    # --- experiments and reports ---
    "run_experiment": "singledir.experiments",
    "resolve_settings": "singledir.experiments",
    "EXPERIMENT_NAMES": "singledir.experiments",
    "make_executor": "singledir.executors",
    "Claim": "singledir.report",
    "Section": "singledir.report",
    "write_report": "singledir.report",
}

__all__ = [
    "__version__",
    "errors",
    "SingledirError",
    "InputError",
    "DataError",
    "CheckpointError",
    "ConfigError",
    "SiteError",
    "ExecutorError",
    "SlowPathWarning",
    "MLP",
    "ConvNet11",
    "resnet",
    "build_model",
    "class_selectivity",
    "preferred_class",
    "mutual_information",
    "unit_stats",
    "stats_from_activations",
    "rank_units",
    "score_correlations",
    "curve_auc",
    "level_mean_std",
    "DATASET_NAMES",
    "LabeledData",
    "ImageFolderData",
    "load_dataset",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "AUCMonitor",
    "SelectivityRegularizer",
    "resolve_device",
    "ablation_curves",
    "summarize_curves",
    "ablation_auc",
    "unit_importance",
    "noise_curves",
    "noise_auc",
    "resolve_sites",
    "list_sites",
    "ablation_plan",
    "record_activations",
    "record_activation_arrays",
    "run_experiment",
    "resolve_settings",
    "EXPERIMENT_NAMES",
    "make_executor",
    "Claim",
    "Section",
    "write_report",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'singledir' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static checkers and IDEs see the real names
    from singledir.ablation import (
        ablation_auc,
        ablation_curves,
        ablation_plan,
        summarize_curves,
        unit_importance,
    )
    from singledir.activations import record_activation_arrays, record_activations
    from singledir.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from singledir.data import DATASET_NAMES, ImageFolderData, LabeledData, load_dataset
    from singledir.devices import resolve_device
    from singledir.executors import make_executor
    from singledir.experiments import EXPERIMENT_NAMES, resolve_settings, run_experiment
    from singledir.models import MLP, ConvNet11, build_model, resnet
    from singledir.monitor import AUCMonitor
    from singledir.noise import noise_auc, noise_curves
    from singledir.regularizers import SelectivityRegularizer
    from singledir.report import Claim, Section, write_report
    from singledir.sites import list_sites, resolve_sites
    from singledir.stats import (
        class_selectivity,
        curve_auc,
        level_mean_std,
        mutual_information,
        preferred_class,
        rank_units,
        score_correlations,
        stats_from_activations,
        unit_stats,
    )
    from singledir.train import TrainConfig, TrainResult, evaluate
