"""singledir: how much does a network rely on single directions, and what does that say
about how it generalizes? (Morcos, Barrett, Rabinowitz & Botvinick, ICLR 2018.)

The public API is re-exported here; see ``__all__``.
"""

from __future__ import annotations

from singledir import errors
from singledir.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ExecutorError,
    InputError,
    SingledirError,
    SiteError,
)
from singledir.models import MLP, ConvNet11, build_model, resnet

# --- statistics (Rust core) ---
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

# isort: split
# --- data, checkpoints, training ---
from singledir.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from singledir.data import DATASET_NAMES, ImageFolderData, LabeledData, load_dataset
from singledir.train import TrainConfig, TrainResult, evaluate

# isort: split
# --- ablation engine ---
from singledir.ablation import ablation_auc, ablation_curves, summarize_curves, unit_importance
from singledir.activations import record_activation_arrays, record_activations
from singledir.noise import noise_auc, noise_curves
from singledir.sites import resolve_sites

# isort: split
# --- experiments and reports ---
from singledir.executors import make_executor
from singledir.experiments import EXPERIMENT_NAMES, resolve_settings, run_experiment
from singledir.report import Claim, Section, write_report

__version__ = "0.1.0"

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
    "MLP",
    "ConvNet11",
    "resnet",
    "build_model",
    # --- statistics (Rust core) ---
    "class_selectivity",
    "preferred_class",
    "mutual_information",
    "unit_stats",
    "stats_from_activations",
    "rank_units",
    "score_correlations",
    "curve_auc",
    "level_mean_std",
    # --- data, checkpoints, training ---
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
    # --- ablation engine ---
    "ablation_curves",
    "summarize_curves",
    "ablation_auc",
    "unit_importance",
    "noise_curves",
    "noise_auc",
    "resolve_sites",
    "record_activations",
    "record_activation_arrays",
    # --- experiments and reports ---
    "run_experiment",
    "resolve_settings",
    "EXPERIMENT_NAMES",
    "make_executor",
    "Claim",
    "Section",
    "write_report",
]
