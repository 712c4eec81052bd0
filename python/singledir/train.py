"""Training the paper's networks, with corrupted labels, dropout and batch norm.

:func:`train` runs one :class:`TrainConfig` into an output folder::

    out_dir/config.json              the TrainConfig (written first)
    out_dir/metrics.parquet          one row per epoch: epoch, train_loss, train_acc,
                                     train_true_acc, test_loss, test_acc, lr
    out_dir/snapshots/epoch_0005.pt  checkpoints at the requested epochs (0 = before training)
    out_dir/ckpt.pt                  the final checkpoint
    out_dir/resume.pt                model, optimizer and RNG state after the last finished
                                     epoch (removed once the run completes)

Every file is written atomically. Run the same config into the same folder again and it
resumes after the last finished epoch; on CPU the final weights are bit-identical to those of
an uninterrupted run (same seeds, same batch order, same dropout masks).

In-memory datasets stay as tensors on the training device: batches are drawn by indexing a
seeded permutation, with no ``DataLoader`` and no worker processes, so a few epochs of a small
MLP take seconds and :func:`train` can run inside process-pool workers. ``train_acc`` is
measured on the training labels actually used (possibly corrupted), ``train_true_acc`` on the
true ones.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import polars as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from singledir.checkpoint import read_checkpoint_dict, save_checkpoint
from singledir.data import DATASET_NAMES, ImageFolderData, LabeledData, load_dataset
from singledir.devices import resolve_device
from singledir.errors import CheckpointError, ConfigError
from singledir.io import atomic_write, read_table, write_table
from singledir.models import MODEL_NAMES, build_model, model_config, parse_widths

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "evaluate",
    "lr_factor",
    "METRIC_COLUMNS",
    "OPTIMIZERS",
    "SCHEDULES",
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
)
RESUME_FORMAT = "singledir-resume"
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


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out_dir: Path
    checkpoint: Path
    snapshots: dict[int, Path]
    metrics: pl.DataFrame
    config: TrainConfig
    resumed_from: int | None = None
    seconds: float = 0.0

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's metrics row."""
        rows = self.metrics.to_dicts()
        return rows[-1] if rows else {}


def lr_factor(schedule: str, epoch_index: int, epochs: int) -> float:
    """Learning-rate multiplier for the 0-based ``epoch_index`` of ``epochs``."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch_index / max(1, epochs)))
    if schedule == "step":
        return 0.1 ** sum(epoch_index >= m for m in (epochs // 2, (3 * epochs) // 4) if m > 0)
    return 1.0


AnyData = LabeledData | ImageFolderData


def _batches(data: AnyData, batch_size: int, device: torch.device) -> Iterator[tuple[Any, Any]]:
    """Evaluation batches ``(x, y)`` on ``device`` in dataset order (and true labels)."""
    if isinstance(data, LabeledData):
        for start in range(0, len(data), batch_size):
            yield (
                data.x[start : start + batch_size].to(device, non_blocking=True),
                data.y[start : start + batch_size].to(device, non_blocking=True),
            )
    else:
        for xb, yb in data.loader(batch_size, shuffle=False):
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


@torch.no_grad()
def _eval_pass(
    model: nn.Module, data: AnyData, batch_size: int, device: torch.device
) -> tuple[float, float, float]:
    """(mean loss on data.y, accuracy on data.y, accuracy on data.true_y) in eval mode."""
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    correct_true = torch.zeros((), dtype=torch.int64, device=device)
    true_y = data.true_y.to(device)
    pos = 0
    for xb, yb in _batches(data, batch_size, device):
        out = model(xb)
        loss += F.cross_entropy(out, yb, reduction="sum").double()
        pred = out.argmax(1)
        correct += (pred == yb).sum()
        correct_true += (pred == true_y[pos : pos + yb.shape[0]]).sum()
        pos += yb.shape[0]
    n = max(1, len(data))
    return float(loss) / n, int(correct) / n, int(correct_true) / n


def evaluate(
    model: nn.Module,
    data: AnyData,
    *,
    batch_size: int = 4096,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``data`` (its ``y`` labels), eval mode.

    Returns ``{"loss", "acc", "true_acc"}``; ``true_acc`` uses the uncorrupted labels. The
    model is left in eval mode on ``device`` (default: where its parameters are).
    """
    if device is None:
        p = next(model.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")
    else:
        dev = torch.device(device)
    model.to(dev)
    loss, acc, true_acc = _eval_pass(model, data, int(batch_size), dev)
    return {"loss": loss, "acc": acc, "true_acc": true_acc}


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in _RUNTIME_ONLY}


def _snapshot_path(out_dir: Path, epoch: int) -> Path:
    return out_dir / "snapshots" / f"epoch_{epoch:04d}.pt"


def _metrics_frame(rows: list[dict[str, float]]) -> pl.DataFrame:
    schema = {c: (pl.Int64 if c == "epoch" else pl.Float64) for c in METRIC_COLUMNS}
    return pl.DataFrame([{c: r[c] for c in METRIC_COLUMNS} for r in rows], schema=schema)


def _rng_state(gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"shuffle": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], gen: torch.Generator, device: torch.device) -> None:
    gen.set_state(state["shuffle"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _completed(out_dir: Path, cfg: TrainConfig) -> TrainResult | None:
    """The finished run in ``out_dir`` when it matches ``cfg``, else None."""
    ckpt, metrics_path = out_dir / "ckpt.pt", out_dir / "metrics.parquet"
    if not ckpt.is_file() or not metrics_path.is_file() or (out_dir / "resume.pt").exists():
        return None
    try:
        meta = read_checkpoint_dict(ckpt).get("meta", {})
    except (CheckpointError, AttributeError):
        return None
    if meta.get("epoch") != cfg.epochs:
        return None
    if _comparable(meta.get("train_config", {})) != _comparable(cfg.to_dict()):
        return None
    snaps = {e: _snapshot_path(out_dir, e) for e in cfg.snapshot_set()}
    if not all(p.is_file() for p in snaps.values()):
        return None
    return TrainResult(out_dir, ckpt, snaps, read_table(metrics_path), cfg)


def _check_previous(out_dir: Path, cfg: TrainConfig) -> None:
    """A different run already in ``out_dir`` is an error (resume must not mix two runs)."""
    cfg_path = out_dir / "config.json"
    if not cfg_path.is_file():
        return
    try:
        old = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(old, dict):
        return
    diff = sorted(
        k
        for k in set(old) | set(cfg.to_dict())
        if _comparable(old).get(k) != _comparable(cfg.to_dict()).get(k)
    )
    diff = [k for k in diff if k not in _RUNTIME_ONLY]
    if diff:
        raise ConfigError(
            f"{str(out_dir)!r} holds a run with different {', '.join(diff)}: "
            "choose another --out, or pass --no-resume (resume=False) to overwrite it"
        )


def _clear_outputs(out_dir: Path) -> None:
    for name in ("ckpt.pt", "resume.pt", "metrics.parquet"):
        (out_dir / name).unlink(missing_ok=True)
    snap_dir = out_dir / "snapshots"
    if snap_dir.is_dir():
        for p in snap_dir.glob("epoch_*.pt"):
            p.unlink()


def train(
    config: TrainConfig | dict[str, Any],
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train one network as ``config`` says, writing checkpoints and metrics into ``out_dir``.

    Parameters
    ----------
    config:
        A :class:`TrainConfig` (or its dict).
    out_dir:
        Output folder (created). See the module docstring for its contents.
    resume:
        Continue an interrupted run found in ``out_dir`` (and return a finished one as is);
        ``False`` starts afresh, replacing singledir's files there.
    progress:
        Show a rich progress bar with loss and accuracy (stderr; ``SINGLEDIR_QUIET`` hides it).
    on_epoch:
        Called with each epoch's metrics row after it is saved (for live tables).

    Returns
    -------
    TrainResult
        Paths of ``ckpt.pt`` and the snapshots, and the metrics DataFrame.

    Notes
    -----
    The caller's torch RNG state is left untouched (training runs inside ``fork_rng``). A final
    batch of a single sample is skipped (batch norm cannot train on it).
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        _check_previous(out, cfg)
        done = _completed(out, cfg)
        if done is not None:
            return done
    else:
        _clear_outputs(out)
    device = resolve_device(cfg.device)
    start_time = time.perf_counter()

    train_data = load_dataset(
        cfg.dataset,
        "train",
        data_dir=cfg.data_dir,
        train_size=cfg.train_size,
        seed=cfg.data_seed,
        corrupt=cfg.corrupt,
        corrupt_seed=cfg.corrupt_seed,
        download=cfg.download,
        num_workers=cfg.num_workers,
        image_size=cfg.image_size,
    )
    test_data = load_dataset(
        cfg.dataset,
        "test",
        data_dir=cfg.data_dir,
        test_size=cfg.test_size,
        seed=cfg.data_seed,
        download=cfg.download,
        num_workers=cfg.num_workers,
        image_size=cfg.image_size,
    )
    if isinstance(train_data, LabeledData):
        train_data = train_data.to(device)
    if isinstance(test_data, LabeledData):
        test_data = test_data.to(device)
    mcfg = cfg.model_config(train_data.in_shape, train_data.num_classes)
    atomic_write(out / "config.json", lambda p: p.write_text(json.dumps(cfg.to_dict(), indent=2)))
    (out / "snapshots").mkdir(exist_ok=True)

    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    previous_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            return _run(
                cfg,
                mcfg,
                out,
                train_data,
                test_data,
                device,
                resume,
                progress,
                on_epoch,
                start_time,
            )
    finally:
        torch.set_num_threads(previous_threads)


def _meta(
    cfg: TrainConfig, train_data: AnyData, epoch: int, metrics: dict[str, float]
) -> dict[str, Any]:
    return {
        "dataset": cfg.dataset,
        "corrupt": cfg.corrupt,
        "corrupt_seed": cfg.corrupt_seed,
        "seed": cfg.seed,
        "data_seed": cfg.data_seed,
        "train_size": cfg.train_size,
        "test_size": cfg.test_size,
        "num_train": len(train_data),
        "changed_fraction": float((train_data.y != train_data.true_y).float().mean()),
        "epoch": epoch,
        "metrics": dict(metrics),
        "train_config": cfg.to_dict(),
    }


def _run(
    cfg: TrainConfig,
    mcfg: dict[str, Any],
    out: Path,
    train_data: AnyData,
    test_data: AnyData,
    device: torch.device,
    resume: bool,
    progress: bool,
    on_epoch: Callable[[dict[str, float]], None] | None,
    start_time: float,
) -> TrainResult:
    from singledir.progress import make_progress

    torch.manual_seed(cfg.seed)
    model = build_model(mcfg).to(device)
    optimizer = _make_optimizer(cfg, model)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows: list[dict[str, float]] = []
    first_epoch = 1
    resumed_from: int | None = None
    resume_path = out / "resume.pt"
    snap_epochs = cfg.snapshot_set()
    snapshots: dict[int, Path] = {}

    if resume and resume_path.is_file():
        state = read_checkpoint_dict(resume_path)
        if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
            raise CheckpointError(
                f"{str(resume_path)!r} is not a singledir resume file: "
                "delete it or pass --no-resume"
            )
        if _comparable(state.get("config", {})) != _comparable(cfg.to_dict()):
            raise ConfigError(
                f"{str(resume_path)!r} belongs to a different run: choose another --out "
                "or pass --no-resume (resume=False)"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"], gen, device)
        rows = [dict(r) for r in state["metrics"]]
        resumed_from = int(state["epoch"])
        first_epoch = resumed_from + 1
    for e in snap_epochs:
        if e < first_epoch and _snapshot_path(out, e).is_file():
            snapshots[e] = _snapshot_path(out, e)

    if 0 in snap_epochs and first_epoch == 1:
        tr = _eval_pass(model, train_data, cfg.eval_batch_size, device)
        te = _eval_pass(model, test_data, cfg.eval_batch_size, device)
        row0 = {
            "epoch": 0,
            "train_loss": tr[0],
            "train_acc": tr[1],
            "train_true_acc": tr[2],
            "test_loss": te[0],
            "test_acc": te[1],
            "lr": cfg.lr * lr_factor(cfg.schedule, 0, cfg.epochs),
        }
        snapshots[0] = save_checkpoint(
            _snapshot_path(out, 0), model, mcfg, _meta(cfg, train_data, 0, row0)
        )

    n_train = len(train_data)
    bs = cfg.batch_size
    batches_per_epoch = (
        math.ceil(n_train / bs)
        if isinstance(train_data, LabeledData)
        else len(train_data.loader(bs))
    )
    if isinstance(train_data, LabeledData) and n_train % bs == 1 and n_train > 1:
        batches_per_epoch -= 1
    status_every = max(1, batches_per_epoch // 20)

    with make_progress(quiet=not progress) as bar:
        task = bar.add_task(
            f"train {cfg.dataset}/{cfg.model}",
            total=cfg.epochs * batches_per_epoch,
            completed=(first_epoch - 1) * batches_per_epoch,
            status="",
        )
        for epoch in range(first_epoch, cfg.epochs + 1):
            lr = cfg.lr * lr_factor(cfg.schedule, epoch - 1, cfg.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            correct_true = torch.zeros((), dtype=torch.int64, device=device)
            seen = 0
            for b, (xb, yb, tb) in enumerate(_train_batches(train_data, bs, gen, device, epoch)):
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    k = yb.shape[0]
                    loss_sum += loss.detach().double() * k
                    pred = logits.argmax(1)
                    correct += (pred == yb).sum()
                    correct_true += (pred == tb).sum()
                    seen += k
                if progress:
                    bar.advance(task)
                    if b % status_every == 0:
                        bar.update(
                            task,
                            status=f"epoch {epoch}/{cfg.epochs} loss {float(loss_sum) / seen:.4f} "
                            f"acc {int(correct) / seen:.1%}",
                        )
            if cfg.train_metrics == "eval":
                tr = _eval_pass(model, train_data, cfg.eval_batch_size, device)
            else:
                s = max(1, seen)
                tr = (float(loss_sum) / s, int(correct) / s, int(correct_true) / s)
            te = _eval_pass(model, test_data, cfg.eval_batch_size, device)
            row = {
                "epoch": epoch,
                "train_loss": tr[0],
                "train_acc": tr[1],
                "train_true_acc": tr[2],
                "test_loss": te[0],
                "test_acc": te[1],
                "lr": lr,
            }
            rows.append(row)
            if epoch in snap_epochs:
                snapshots[epoch] = save_checkpoint(
                    _snapshot_path(out, epoch), model, mcfg, _meta(cfg, train_data, epoch, row)
                )
            if epoch < cfg.epochs:
                state = {
                    "format": RESUME_FORMAT,
                    "version": 1,
                    "config": cfg.to_dict(),
                    "epoch": epoch,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "rng": _rng_state(gen, device),
                    "metrics": rows,
                }
                atomic_write(resume_path, lambda p, s=state: torch.save(s, p))  # type: ignore[misc]
            write_table(_metrics_frame(rows), out / "metrics.parquet")
            if progress:
                bar.update(
                    task,
                    status=f"epoch {epoch}/{cfg.epochs} train {tr[1]:.1%} test {te[1]:.1%}",
                )
            if on_epoch is not None:
                on_epoch(dict(row))

    final_row = rows[-1] if rows else {}
    ckpt = save_checkpoint(
        out / "ckpt.pt", model, mcfg, _meta(cfg, train_data, cfg.epochs, final_row)
    )
    metrics = _metrics_frame(rows)
    write_table(metrics, out / "metrics.parquet")
    resume_path.unlink(missing_ok=True)
    model.eval()
    return TrainResult(
        out_dir=out,
        checkpoint=ckpt,
        snapshots=dict(sorted(snapshots.items())),
        metrics=metrics,
        config=cfg,
        resumed_from=resumed_from,
        seconds=time.perf_counter() - start_time,
    )


def _train_batches(
    data: AnyData, batch_size: int, gen: torch.Generator, device: torch.device, epoch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shuffled training batches ``(x, y, true_y)`` on ``device``."""
    if isinstance(data, LabeledData):
        n = len(data)
        perm = torch.randperm(n, generator=gen).to(data.x.device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            if idx.shape[0] == 1 and n > 1:
                break  # batch norm cannot train on a single sample
            yield (
                data.x.index_select(0, idx),
                data.y.index_select(0, idx),
                data.true_y.index_select(0, idx),
            )
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        loader: DataLoader[Any] = DataLoader(
            _WithTrueLabels(data.dataset, data.true_y),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
            num_workers=data.num_workers,
            pin_memory=device.type == "cuda",
        )
        for xb, yb, tb in loader:
            yield (
                xb.to(device, non_blocking=True),
                yb.to(device, non_blocking=True),
                tb.to(device, non_blocking=True),
            )


class _WithTrueLabels(Dataset[tuple[torch.Tensor, int, int]]):
    """A streamed dataset's ``(image, label)`` items with the true label appended."""

    def __init__(self, dataset: Any, true_y: torch.Tensor) -> None:
        self.dataset = dataset
        self.true_y = true_y.tolist()

    def __len__(self) -> int:
        return len(self.true_y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        x, y = self.dataset[i]
        return x, int(y), int(self.true_y[i])
