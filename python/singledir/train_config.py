"""What defines a training run: :class:`TrainConfig` (stored as ``config.json`` and in every
checkpoint), its validation, and the learning-rate schedules."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from singledir.data import DATASET_NAMES
from singledir.errors import ConfigError
from singledir.models import MODEL_NAMES, model_config, parse_widths

__all__ = [
    "TrainConfig",
    "lr_factor",
    "METRIC_COLUMNS",
    "OPTIMIZERS",
    "SCHEDULES",
    "EARLY_STOP_CRITERIA",
    "comparable",
]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "step")
METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "train_true_acc",
    "test_loss",
    "test_acc",
    "lr",
    "val_loss",
    "val_acc",
    "auc",
)
EARLY_STOP_CRITERIA = ("auc", "val-loss")
# Options that do not change the numbers a run produces; a resumed run may differ in them.
_RUNTIME_ONLY = ("data_dir", "device", "eval_batch_size", "download", "num_workers", "threads")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored as ``config.json`` and in checkpoints).

    Attributes
    ----------
    dataset, data_dir, train_size, test_size, data_seed:
        Data (see :func:`singledir.data.load_dataset`); ``data_seed`` fixes the subsets.
    model, widths, width, dropout, batchnorm, small_input:
        Architecture: ``mlp`` (hidden ``widths``), ``convnet11`` (channel multiplier
        ``width``), ``resnet18``/``resnet50`` (``small_input`` stem); dropout after each ReLU
        (mlp, convnet11) and batch norm before it.
    corrupt, corrupt_seed:
        Fraction of training labels replaced by random classes and the seed of the draw.
    epochs, batch_size, optimizer, lr, momentum, weight_decay, schedule:
        Optimization: ``sgd`` (with ``momentum``) or ``adam``; learning rate schedule
        ``constant``, ``cosine`` (per epoch, to zero) or ``step`` (x0.1 at 50% and 75%).
    snapshot_every, snapshot_epochs:
        Save a checkpoint every N epochs (and before training), and/or at the listed epochs.
    seed:
        Seed of initialization, batch order and dropout.
    device:
        ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    eval_batch_size:
        Batch size of the evaluation passes.
    train_metrics:
        ``eval``: train loss/accuracy from a pass over the training set in eval mode after each
        epoch (exact); ``running``: the mean over the epoch's batches in train mode (free).
    download, num_workers:
        Let torchvision download missing data; DataLoader workers (ImageNet only).
    image_size:
        ImageNet only: side of the square crop (default 224).
    val_fraction:
        Fraction of the training set held out (seeded by ``data_seed``, labels as drawn) as a
        validation split: ``val_loss``/``val_acc`` each epoch; the net trains on the rest.
    auc_every, auc_samples, auc_orderings, auc_levels, auc_layers, auc_relative:
        Every ``auc_every`` epochs (0 = never) the :class:`singledir.monitor.AUCMonitor`
        measures the ablation AUC on a fixed subset of ``auc_samples`` training samples
        (seeded by ``seed``; ``None`` = all), with its labels as trained (``auc`` column);
        ``auc_relative`` divides each curve by its unablated accuracy.
    early_stop, patience:
        ``"auc"`` (highest AUC) or ``"val-loss"`` (lowest validation loss): stop after
        ``patience`` monitored epochs without improvement (``None``: never stop, only keep
        the best checkpoint). The best epoch's weights are kept in ``best_auc.pt`` /
        ``best_val_loss.pt`` whenever the quantity is measured.
    selectivity_reg, selectivity_layers:
        ALPHA of the class-selectivity regularizer (Leavitt & Morcos, 2021): the loss gets
        ``-ALPHA * mean class selectivity`` of the units of ``selectivity_layers``
        (:mod:`singledir.regularizers`); 0 = off.
    threads:
        CPU threads torch may use during the run (``None``: leave torch's setting). One thread
        per process is fastest for small nets on a busy machine or in a process pool.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    data_seed: int = 0
    model: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [512, 512])
    width: float = 1.0
    dropout: float = 0.0
    batchnorm: bool = False
    small_input: bool = False
    corrupt: float = 0.0
    corrupt_seed: int = 0
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    snapshot_every: int = 0
    snapshot_epochs: list[int] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 4096
    train_metrics: str = "eval"
    download: bool = False
    num_workers: int = 4
    threads: int | None = None
    image_size: int | None = None
    val_fraction: float = 0.0
    auc_every: int = 0
    auc_samples: int | None = 1000
    auc_orderings: int = 3
    auc_levels: int = 21
    auc_layers: str = "all"
    auc_relative: bool = False
    early_stop: str | None = None
    patience: int | None = None
    selectivity_reg: float = 0.0
    selectivity_layers: str = "all"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Normalize names and raise ConfigError (one line with a hint) on a bad value."""
        self.dataset = str(self.dataset).strip().lower().replace("_", "-")
        if self.dataset not in DATASET_NAMES:
            raise ConfigError(
                f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASET_NAMES)}"
            )
        self.model = str(self.model).strip().lower()
        if self.model not in MODEL_NAMES:
            raise ConfigError(
                f"unknown model {self.model!r}: choose one of {', '.join(MODEL_NAMES)}"
            )
        self.widths = list(parse_widths(self.widths))
        self.optimizer = str(self.optimizer).lower()
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}"
            )
        self.schedule = str(self.schedule).lower()
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}"
            )
        self.train_metrics = str(self.train_metrics).lower()
        if self.train_metrics not in ("eval", "running"):
            raise ConfigError(
                f"train_metrics {self.train_metrics!r} is unknown: choose 'eval' or 'running'"
            )
        self.device = str(self.device).lower()
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}: choose auto, cpu or cuda")
        if not 0.0 <= float(self.corrupt) <= 1.0:
            raise ConfigError(f"corruption fraction {self.corrupt} is outside [0, 1]: e.g. 0.5")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"dropout {self.dropout} must be in [0, 1): give e.g. 0.2")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < (0 if name == "epochs" else 1):
                raise ConfigError(f"{name} {getattr(self, name)} must be a positive integer")
        for name in ("train_size", "test_size", "threads", "image_size"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ConfigError(f"{name} {v} must be a positive integer (or omitted for all)")
        if not float(self.lr) > 0 or not math.isfinite(float(self.lr)):
            raise ConfigError(f"learning rate {self.lr} must be a positive number, e.g. 0.01")
        if float(self.weight_decay) < 0 or not 0 <= float(self.momentum) < 1:
            raise ConfigError(
                f"weight decay {self.weight_decay} must be >= 0 and momentum {self.momentum} "
                "in [0, 1)"
            )
        if not float(self.width) > 0:
            raise ConfigError(f"width {self.width} must be positive, e.g. 0.25 or 1")
        if int(self.snapshot_every) < 0:
            raise ConfigError(f"snapshot_every {self.snapshot_every} must be >= 0 (0 = none)")
        bad = [e for e in self.snapshot_epochs if not 0 <= int(e) <= int(self.epochs)]
        if bad:
            raise ConfigError(
                f"snapshot epochs {bad} fall outside 0..{self.epochs}: give epochs of this run"
            )
        self.snapshot_epochs = sorted({int(e) for e in self.snapshot_epochs})
        self._validate_monitoring()

    def _validate_monitoring(self) -> None:
        """The validation split, AUC monitor, early stopping and regularizer options."""
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ConfigError(
                f"val_fraction {self.val_fraction} must be in [0, 1): hold out e.g. 0.1"
            )
        if int(self.auc_every) < 0:
            raise ConfigError(
                f"auc_every {self.auc_every} must be a positive number of epochs (0 = off)"
            )
        if self.auc_samples is not None and int(self.auc_samples) < 1:
            raise ConfigError(
                f"auc_samples {self.auc_samples} must be a positive integer (or omitted for all)"
            )
        if int(self.auc_orderings) < 1:
            raise ConfigError(f"auc_orderings {self.auc_orderings} must be at least 1, e.g. 3")
        if int(self.auc_levels) < 2:
            raise ConfigError(f"auc_levels {self.auc_levels} must be at least 2, e.g. 21")
        self.auc_layers = str(self.auc_layers).strip() or "all"
        self.selectivity_layers = str(self.selectivity_layers).strip() or "all"
        if self.early_stop is not None:
            self.early_stop = str(self.early_stop).strip().lower().replace("_", "-")
            if self.early_stop not in EARLY_STOP_CRITERIA:
                raise ConfigError(
                    f"unknown early-stop criterion {self.early_stop!r}: choose auc or val-loss"
                )
            if self.early_stop == "auc" and int(self.auc_every) == 0:
                raise ConfigError(
                    "early stopping on the AUC needs the monitor: pass --auc-every K (e.g. 1)"
                )
            if self.early_stop == "val-loss" and float(self.val_fraction) == 0.0:
                raise ConfigError(
                    "early stopping on the validation loss needs a validation split: "
                    "pass --val-fraction (e.g. 0.1)"
                )
        if self.patience is not None:
            if self.early_stop is None:
                raise ConfigError(
                    f"patience {self.patience} needs a criterion: add --early-stop auc "
                    "(or val-loss)"
                )
            if int(self.patience) < 1:
                raise ConfigError(f"patience {self.patience} must be at least 1 epoch, e.g. 5")
        if not math.isfinite(float(self.selectivity_reg)):
            raise ConfigError(
                f"selectivity_reg {self.selectivity_reg} must be a finite number, e.g. -1 or 1"
            )

    @property
    def monitors_auc(self) -> bool:
        """Whether the AUC monitor runs."""
        return int(self.auc_every) > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; an unknown key is a ConfigError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown training option(s) {', '.join(unknown)}: "
                f"known are {', '.join(sorted(names))}"
            )
        return cls(**data)

    def snapshot_set(self) -> list[int]:
        """Epochs at which a snapshot is saved (0 = before training)."""
        out = set(self.snapshot_epochs)
        if self.snapshot_every > 0:
            out.update(range(0, self.epochs + 1, self.snapshot_every))
        return sorted(out)

    def model_config(self, in_shape: tuple[int, int, int], num_classes: int) -> dict[str, Any]:
        """The model config (for :func:`singledir.models.build_model`) this run trains."""
        return model_config(
            {
                "arch": self.model,
                "in_shape": list(in_shape),
                "num_classes": num_classes,
                "widths": self.widths,
                "dropout": self.dropout,
                "batchnorm": self.batchnorm,
                "width": self.width,
                "small_input": self.small_input,
            }
        )


def lr_factor(schedule: str, epoch_index: int, epochs: int) -> float:
    """Learning-rate multiplier for the 0-based ``epoch_index`` of ``epochs``."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch_index / max(1, epochs)))
    if schedule == "step":
        return 0.1 ** sum(epoch_index >= m for m in (epochs // 2, (3 * epochs) // 4) if m > 0)
    return 1.0


# Options that do not change the numbers a run produces; a resumed run may differ in them.
_RUNTIME_ONLY = ("data_dir", "device", "eval_batch_size", "download", "num_workers", "threads")


def comparable(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict with every option filled in (older runs lack newer options, which then
    take their defaults) and without the options that do not change the numbers."""
    full = {f.name: getattr(_DEFAULTS, f.name) for f in fields(TrainConfig)}
    full.update(d)
    return {k: v for k, v in full.items() if k not in _RUNTIME_ONLY}


_DEFAULTS = TrainConfig()
