"""Training the paper's networks, with corrupted labels, dropout and batch norm, and, beyond
the paper, an ablation-AUC monitor, early stopping and a class-selectivity regularizer.

:func:`train` runs one :class:`TrainConfig` into an output folder::

    out_dir/config.json              the TrainConfig (written first)
    out_dir/metrics.parquet          one row per epoch: epoch, train_loss, train_acc,
                                     train_true_acc, test_loss, test_acc, lr, val_loss,
                                     val_acc (null without a validation split), auc (null on
                                     epochs the AUC monitor skips)
    out_dir/snapshots/epoch_0005.pt  checkpoints at the requested epochs (0 = before training)
    out_dir/ckpt.pt                  the final checkpoint (the last epoch run)
    out_dir/best_auc.pt              the epoch of highest AUC (when monitored)
    out_dir/best_val_loss.pt         the epoch of lowest validation loss (with a split)
    out_dir/resume.pt                model, optimizer, RNG and monitor state after the last
                                     finished epoch (removed once the run completes)

Every file is written atomically. Run the same config into the same folder again and it
resumes after the last finished epoch; on CPU the final weights are bit-identical to those of
an uninterrupted run (same seeds, same batch order, same dropout masks). The AUC monitor does
not touch the training RNG, so monitoring never changes the weights.

In-memory datasets stay as tensors on the training device: batches are drawn by indexing a
seeded permutation, with no ``DataLoader`` and no worker processes, so a few epochs of a small
MLP take seconds and :func:`train` can run inside process-pool workers. ``train_acc`` is
measured on the training labels actually used (possibly corrupted), ``train_true_acc`` on the
true ones.

Subsets (rules in :func:`singledir.monitor.seeded_subset`): the validation split is the
subset of ``round(val_fraction * N)`` samples seeded by ``data_seed``, and the net trains on
the rest (in order); the AUC monitor's samples are the subset of ``auc_samples`` of those
training samples seeded by ``seed``, with their labels as trained.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from singledir.checkpoint import save_checkpoint
from singledir.data import LabeledData, check_data_dir, load_dataset
from singledir.devices import resolve_device
from singledir.early_stopping import EarlyStopping
from singledir.errors import ConfigError, SiteError
from singledir.io import atomic_write, check_output_path, write_table
from singledir.models import build_model
from singledir.train_config import (
    EARLY_STOP_CRITERIA,
    METRIC_COLUMNS,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    lr_factor,
)
from singledir.train_data import AnyData, eval_batches, split_validation, train_batches
from singledir.train_outputs import (
    BEST_FILES,
    check_previous,
    clear_outputs,
    completed_run,
    metrics_frame,
    read_resume,
    rng_state,
    run_meta,
    set_rng_state,
    snapshot_path,
    write_resume,
)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "evaluate",
    "resolve_device",
    "lr_factor",
    "METRIC_COLUMNS",
    "OPTIMIZERS",
    "SCHEDULES",
    "EARLY_STOP_CRITERIA",
]


@dataclass
class TrainResult:
    """What :func:`train` produced (``best``: criterion -> best-epoch checkpoint)."""

    out_dir: Path
    checkpoint: Path
    snapshots: dict[int, Path]
    metrics: pl.DataFrame
    config: TrainConfig
    resumed_from: int | None = None
    seconds: float = 0.0
    best: dict[str, Path] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's metrics row."""
        rows = self.metrics.to_dicts()
        return rows[-1] if rows else {}

    @property
    def stopped_early(self) -> bool:
        """Whether early stopping ended the run before ``config.epochs``."""
        return self.metrics.height > 0 and int(self.metrics["epoch"][-1]) < self.config.epochs


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
    for xb, yb in eval_batches(data, batch_size, device):
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


def train(
    config: TrainConfig | dict[str, Any],
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
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
        Paths of ``ckpt.pt``, the snapshots and the best-epoch checkpoints, and the metrics.

    Notes
    -----
    The caller's torch RNG state is left untouched (training runs inside ``fork_rng``). A final
    batch of a single sample is skipped (batch norm cannot train on it).
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    cfg.validate()
    out = check_output_path(out_dir, folder=True)
    device = resolve_device(cfg.device)  # checked before anything is written
    check_data_dir(cfg.data_dir, cfg.dataset, download=cfg.download)
    if resume:
        check_previous(out, cfg)
        done = completed_run(out, cfg)
        if done is not None:
            return TrainResult(
                out, out / "ckpt.pt", done["snapshots"], done["metrics"], cfg, best=done["best"]
            )
    start_time = time.perf_counter()

    common: dict[str, Any] = {
        "data_dir": cfg.data_dir,
        "seed": cfg.data_seed,
        "download": cfg.download,
        "num_workers": cfg.num_workers,
        "image_size": cfg.image_size,
    }
    train_data = load_dataset(
        cfg.dataset,
        "train",
        train_size=cfg.train_size,
        corrupt=cfg.corrupt,
        corrupt_seed=cfg.corrupt_seed,
        **common,
    )
    test_data = load_dataset(cfg.dataset, "test", test_size=cfg.test_size, **common)
    train_data, val_data = split_validation(cfg, train_data)
    if isinstance(train_data, LabeledData):
        train_data = train_data.to(device)
    if isinstance(test_data, LabeledData):
        test_data = test_data.to(device)
    if val_data is not None:
        val_data = val_data.to(device)
    mcfg = cfg.model_config(train_data.in_shape, train_data.num_classes)
    # Written only now that the data and the model config are known to be good.
    if not resume:
        clear_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.json", lambda p: p.write_text(json.dumps(cfg.to_dict(), indent=2)))
    (out / "snapshots").mkdir(exist_ok=True)

    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    previous_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            run = _Run(cfg, mcfg, out, train_data, test_data, val_data, device)
            return run.go(resume, progress, on_epoch, start_time)
    finally:
        torch.set_num_threads(previous_threads)


class _Run:
    """One training run's state: model, optimizer, RNG, metrics and the monitors."""

    def __init__(
        self,
        cfg: TrainConfig,
        mcfg: dict[str, Any],
        out: Path,
        train_data: AnyData,
        test_data: AnyData,
        val_data: LabeledData | None,
        device: torch.device,
    ) -> None:
        from singledir.monitor import AUCMonitor

        self.cfg, self.mcfg, self.out, self.device = cfg, mcfg, out, device
        self.train_data, self.test_data, self.val_data = train_data, test_data, val_data
        torch.manual_seed(cfg.seed)
        self.model = build_model(mcfg).to(device)
        self.optimizer = _make_optimizer(cfg, self.model)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.rows: list[dict[str, Any]] = []
        self.monitor = (
            AUCMonitor(
                train_data,
                cfg.auc_layers,
                cfg.auc_orderings,
                cfg.auc_levels,
                seed=cfg.seed,
                samples=cfg.auc_samples,
                relative=cfg.auc_relative,
                device=device,
            )
            if cfg.monitors_auc
            else None
        )
        # Criterion -> its best-epoch tracker, for every quantity this run measures.
        self.trackers: dict[str, EarlyStopping] = {}
        for name in EARLY_STOP_CRITERIA:
            measured = self.monitor is not None if name == "auc" else val_data is not None
            if measured:
                patience = cfg.patience if cfg.early_stop == name else None
                self.trackers[name] = EarlyStopping("max" if name == "auc" else "min", patience)
        self.regularizer = self._make_regularizer()

    def _make_regularizer(self) -> Any:
        if self.cfg.selectivity_reg == 0:
            return None
        from singledir.regularizers import SelectivityRegularizer

        sample = next(eval_batches(self.train_data, 2, self.device))[0]
        try:
            return SelectivityRegularizer(
                self.model,
                self.cfg.selectivity_reg,
                self.train_data.num_classes,
                self.cfg.selectivity_layers,
                sample_x=sample,
            )
        except SiteError as exc:
            raise ConfigError(f"--selectivity-reg: {exc}") from None

    # ----------------------------------------------------------------------------- state
    def _resume_state(self, epoch: int) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(self.gen, self.device),
            "metrics": self.rows,
            "monitor": None if self.monitor is None else self.monitor.state_dict(),
            "trackers": {k: t.state_dict() for k, t in self.trackers.items()},
        }

    def _load_resume(self, path: Path) -> int:
        state = read_resume(path, self.cfg)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], self.gen, self.device)
        self.rows = [dict(r) for r in state["metrics"]]
        if self.monitor is not None and state.get("monitor") is not None:
            self.monitor.load_state_dict(state["monitor"])
        for name, tracker_state in (state.get("trackers") or {}).items():
            if name in self.trackers:
                self.trackers[name].load_state_dict(tracker_state)
        return int(state["epoch"])

    def _save(self, path: Path, epoch: int, row: dict[str, Any], **extra: Any) -> Path:
        meta = run_meta(self.cfg, self.train_data, epoch, row, **extra)
        return save_checkpoint(path, self.model, self.mcfg, meta)

    # ------------------------------------------------------------------------------ loop
    def go(
        self,
        resume: bool,
        progress: bool,
        on_epoch: Callable[[dict[str, Any]], None] | None,
        start_time: float,
    ) -> TrainResult:
        from singledir.progress import make_progress

        cfg, out = self.cfg, self.out
        first_epoch, resumed_from = 1, None
        resume_path = out / "resume.pt"
        if resume and resume_path.is_file():
            resumed_from = self._load_resume(resume_path)
            first_epoch = resumed_from + 1
        snap_epochs = cfg.snapshot_set()
        snapshots = {
            e: snapshot_path(out, e)
            for e in snap_epochs
            if e < first_epoch and snapshot_path(out, e).is_file()
        }
        best = {
            name: out / BEST_FILES[name][1]
            for name in self.trackers
            if (out / BEST_FILES[name][1]).is_file()
        }
        if 0 in snap_epochs and first_epoch == 1:
            row0 = {
                **dict.fromkeys(METRIC_COLUMNS),
                "epoch": 0,
                **self._evaluate(),
                "lr": cfg.lr * lr_factor(cfg.schedule, 0, cfg.epochs),
            }
            snapshots[0] = self._save(snapshot_path(out, 0), 0, row0)

        n_batches = self._batches_per_epoch()
        stopped = False
        with make_progress(quiet=not progress) as bar:
            task = bar.add_task(
                f"train {cfg.dataset}/{cfg.model}",
                total=cfg.epochs * n_batches,
                completed=(first_epoch - 1) * n_batches,
                status="",
            )
            for epoch in range(first_epoch, cfg.epochs + 1):
                lr = cfg.lr * lr_factor(cfg.schedule, epoch - 1, cfg.epochs)
                running = self._train_epoch(epoch, lr, bar if progress else None, task, n_batches)
                row = {**dict.fromkeys(METRIC_COLUMNS), "epoch": epoch, **self._evaluate(running)}
                row["lr"] = lr
                if self.monitor is not None and epoch % cfg.auc_every == 0:
                    row["auc"] = self.monitor(self.model, epoch)
                self.rows.append(row)
                if epoch in snap_epochs:
                    snapshots[epoch] = self._save(snapshot_path(out, epoch), epoch, row)
                for name, tracker in self.trackers.items():
                    column, filename = BEST_FILES[name]
                    if row.get(column) is not None and tracker.update(epoch, row[column]):
                        best[name] = self._save(out / filename, epoch, row, best_by=name)
                stopped = cfg.early_stop is not None and self.trackers[cfg.early_stop].should_stop
                if epoch < cfg.epochs and not stopped:
                    write_resume(resume_path, self._resume_state(epoch))
                write_table(metrics_frame(self.rows), out / "metrics.parquet")
                if progress:
                    note = f" auc {row['auc']:.3f}" if row.get("auc") is not None else ""
                    bar.update(
                        task,
                        status=f"epoch {epoch}/{cfg.epochs} train {row['train_acc']:.1%} "
                        f"test {row['test_acc']:.1%}{note}",
                    )
                if on_epoch is not None:
                    on_epoch(dict(row))
                if stopped:
                    break

        final_row = self.rows[-1] if self.rows else {}
        last_epoch = int(final_row.get("epoch", cfg.epochs))
        extra = {"stopped_early": True} if stopped else {}
        ckpt = self._save(out / "ckpt.pt", last_epoch, final_row, **extra)
        metrics = metrics_frame(self.rows)
        write_table(metrics, out / "metrics.parquet")
        resume_path.unlink(missing_ok=True)
        self.model.eval()
        return TrainResult(
            out_dir=out,
            checkpoint=ckpt,
            snapshots=dict(sorted(snapshots.items())),
            metrics=metrics,
            config=cfg,
            resumed_from=resumed_from,
            seconds=time.perf_counter() - start_time,
            best=best,
        )

    def _batches_per_epoch(self) -> int:
        data, bs = self.train_data, self.cfg.batch_size
        if not isinstance(data, LabeledData):
            return len(data.loader(bs))
        n = len(data)
        return math.ceil(n / bs) - (1 if n % bs == 1 and n > 1 else 0)

    def _train_epoch(
        self, epoch: int, lr: float, bar: Any, task: Any, n_batches: int
    ) -> tuple[float, float, float]:
        """One pass over the training set; the running (loss, acc, true acc) of its batches."""
        model, optimizer, reg, device = self.model, self.optimizer, self.regularizer, self.device
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        correct_true = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        status_every = max(1, n_batches // 20)
        batches = train_batches(self.train_data, self.cfg.batch_size, self.gen, device, epoch)
        if reg is not None:
            reg.__enter__()
        try:
            for b, (xb, yb, tb) in enumerate(batches):
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                total = loss if reg is None else loss + reg.penalty(yb)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                with torch.no_grad():
                    k = yb.shape[0]
                    loss_sum += loss.detach().double() * k
                    pred = logits.argmax(1)
                    correct += (pred == yb).sum()
                    correct_true += (pred == tb).sum()
                    seen += k
                if bar is not None:
                    bar.advance(task)
                    if b % status_every == 0:
                        bar.update(
                            task,
                            status=f"epoch {epoch}/{self.cfg.epochs} "
                            f"loss {float(loss_sum) / seen:.4f} acc {int(correct) / seen:.1%}",
                        )
        finally:
            if reg is not None:
                reg.__exit__(None, None, None)
        s = max(1, seen)
        return float(loss_sum) / s, int(correct) / s, int(correct_true) / s

    def _evaluate(self, running: tuple[float, float, float] | None = None) -> dict[str, Any]:
        """Train (exact, or ``running`` when so configured), test and validation metrics."""
        bs, dev = self.cfg.eval_batch_size, self.device
        if running is None or self.cfg.train_metrics == "eval":
            tr = _eval_pass(self.model, self.train_data, bs, dev)
        else:
            tr = running
        te = _eval_pass(self.model, self.test_data, bs, dev)
        row: dict[str, Any] = {
            "train_loss": tr[0],
            "train_acc": tr[1],
            "train_true_acc": tr[2],
            "test_loss": te[0],
            "test_acc": te[1],
        }
        if self.val_data is not None:
            va = _eval_pass(self.model, self.val_data, bs, dev)
            row.update(val_loss=va[0], val_acc=va[1])
        return row
