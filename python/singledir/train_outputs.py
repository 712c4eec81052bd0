"""The files of a training run's output folder (see :mod:`singledir.train`): their paths, the
metrics table, checkpoint metadata, the resume state, and how a folder is recognised as holding
this run (finished, interrupted) or another one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import torch

from singledir.checkpoint import CheckpointMeta, read_checkpoint_dict
from singledir.errors import CheckpointError, ConfigError
from singledir.io import atomic_write, read_table
from singledir.train_config import METRIC_COLUMNS, TrainConfig, comparable

__all__ = [
    "RESUME_FORMAT",
    "BEST_FILES",
    "snapshot_path",
    "metrics_frame",
    "run_meta",
    "rng_state",
    "set_rng_state",
    "write_resume",
    "read_resume",
    "completed_run",
    "check_previous",
    "clear_outputs",
]

RESUME_FORMAT = "singledir-resume"
# Early-stopping criterion -> (metrics column, file keeping the best epoch's weights).
BEST_FILES = {"auc": ("auc", "best_auc.pt"), "val-loss": ("val_loss", "best_val_loss.pt")}
_INT_COLUMNS = ("epoch",)


def snapshot_path(out_dir: Path, epoch: int) -> Path:
    return out_dir / "snapshots" / f"epoch_{epoch:04d}.pt"


def metrics_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """The metrics table: one row per epoch, :data:`METRIC_COLUMNS` (missing values null)."""
    schema = {c: (pl.Int64 if c in _INT_COLUMNS else pl.Float64) for c in METRIC_COLUMNS}
    return pl.DataFrame([{c: r.get(c) for c in METRIC_COLUMNS} for r in rows], schema=schema)


def run_meta(
    cfg: TrainConfig, train_data: Any, epoch: int, metrics: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """Checkpoint metadata: how the data was drawn (the typed :class:`CheckpointMeta` every
    reader uses), the epoch, its metrics, the config."""
    data_meta = CheckpointMeta.from_dict({**cfg.to_dict(), "epoch": epoch})
    return {
        **data_meta.to_dict(),
        "num_train": len(train_data),
        "selectivity_reg": cfg.selectivity_reg,
        "changed_fraction": float((train_data.y != train_data.true_y).float().mean()),
        "epoch": epoch,
        "metrics": dict(metrics),
        "train_config": cfg.to_dict(),
        **extra,
    }


def rng_state(gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"shuffle": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator, device: torch.device) -> None:
    gen.set_state(state["shuffle"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def write_resume(path: Path, state: dict[str, Any]) -> None:
    """Write the resume state (atomically)."""
    atomic_write(path, lambda p: torch.save({"format": RESUME_FORMAT, "version": 1, **state}, p))


def read_resume(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """The resume state in ``path``, checked to belong to ``cfg``'s run."""
    state = read_checkpoint_dict(path)
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a singledir resume file: delete it or pass --no-resume"
        )
    if comparable(state.get("config", {})) != comparable(cfg.to_dict()):
        raise ConfigError(
            f"{str(path)!r} belongs to a different run: choose another --out "
            "or pass --no-resume (resume=False)"
        )
    return state


def completed_run(out_dir: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """``{"snapshots", "metrics", "best"}`` of the finished run in ``out_dir`` when it matches
    ``cfg`` (also one that stopped early), else None."""
    ckpt, metrics_path = out_dir / "ckpt.pt", out_dir / "metrics.parquet"
    if not ckpt.is_file() or not metrics_path.is_file() or (out_dir / "resume.pt").exists():
        return None
    try:
        meta = read_checkpoint_dict(ckpt).get("meta", {})
    except (CheckpointError, AttributeError):
        return None
    last = meta.get("epoch")
    if not isinstance(last, int) or (last != cfg.epochs and not meta.get("stopped_early")):
        return None
    if comparable(meta.get("train_config", {})) != comparable(cfg.to_dict()):
        return None
    snaps = {e: snapshot_path(out_dir, e) for e in cfg.snapshot_set() if e <= last}
    best = {k: out_dir / name for k, (_, name) in BEST_FILES.items() if (out_dir / name).is_file()}
    if not all(p.is_file() for p in snaps.values()):
        return None
    return {"snapshots": snaps, "metrics": read_table(metrics_path), "best": best}


def check_previous(out_dir: Path, cfg: TrainConfig) -> None:
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
    old_c, new_c = comparable(old), comparable(cfg.to_dict())
    diff = sorted(k for k in set(old_c) | set(new_c) if old_c.get(k) != new_c.get(k))
    if diff:
        raise ConfigError(
            f"{str(out_dir)!r} holds a run with different {', '.join(diff)}: "
            "choose another --out, or pass --no-resume (resume=False) to overwrite it"
        )


def clear_outputs(out_dir: Path) -> None:
    names = ("ckpt.pt", "resume.pt", "metrics.parquet", *(n for _, n in BEST_FILES.values()))
    for name in names:
        (out_dir / name).unlink(missing_ok=True)
    snap_dir = out_dir / "snapshots"
    if snap_dir.is_dir():
        for p in snap_dir.glob("epoch_*.pt"):
            p.unlink()
