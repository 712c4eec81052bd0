"""Checkpoints: a dict of tensors and plain metadata, loaded only with ``weights_only=True``.

A singledir checkpoint is::

    {"format": "singledir-checkpoint", "version": 1,
     "config": {...},      # model config for singledir.models.build_model
     "meta": {...},        # dataset, corrupt, corrupt_seed, seed, train_size, epoch, metrics...
     "state_dict": {...}}  # name -> tensor

:func:`load_checkpoint` also takes a plain ``state_dict`` (for instance a user's own torchvision
ResNet-50 trained on ImageNet, or a dict with its weights under ``"model"``/``"state_dict"``)
when the architecture is named; sizes it can read from the weights (classes, widths, input
channels, small-input stem) are inferred.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from singledir.errors import CheckpointError, ConfigError
from singledir.io import atomic_write
from singledir.models import MODEL_NAMES, build_model, model_config

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "CheckpointMeta",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_dict",
    "plain",
]

CHECKPOINT_FORMAT = "singledir-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class CheckpointMeta:
    """How a checkpoint's data is drawn again: the contract between the writer of checkpoints
    (:func:`singledir.train.train`) and every reader (:mod:`singledir.evaluation`, the CLI,
    :mod:`singledir.experiments`).

    The same fields appear in a training config dict, so :meth:`from_dict` reads either a
    checkpoint's ``meta`` or a :class:`~singledir.train.TrainConfig` dict.
    """

    dataset: str | None = None
    data_dir: str | None = None
    data_seed: int = 0
    train_size: int | None = None
    test_size: int | None = None
    corrupt: float = 0.0
    corrupt_seed: int = 0
    val_fraction: float = 0.0
    seed: int | None = None
    epoch: int | None = None

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any] | None) -> CheckpointMeta:
        """Read the fields from a checkpoint's ``meta`` (or a training config dict).

        Older checkpoints kept ``data_dir`` only in ``meta["train_config"]`` and had no
        ``data_seed`` (their subsets used ``seed``); both are read from there.
        """
        meta = dict(meta or {})
        train_cfg = meta.get("train_config")
        train_cfg = dict(train_cfg) if isinstance(train_cfg, Mapping) else {}

        def get(key: str) -> Any:
            value = meta.get(key)
            return train_cfg.get(key) if value is None else value

        def as_int(value: Any, what: str) -> int | None:
            if value is None:
                return None
            try:
                return int(value)
            except (TypeError, ValueError):
                raise CheckpointError(
                    f"checkpoint metadata {what}={value!r} is not an integer: re-save it"
                ) from None

        def as_float(value: Any, what: str) -> float:
            try:
                number = float(value or 0.0)
            except (TypeError, ValueError):
                raise CheckpointError(
                    f"checkpoint metadata {what}={value!r} is not a number: re-save it"
                ) from None
            if not math.isfinite(number):
                raise CheckpointError(f"checkpoint metadata {what}={value!r} is not finite")
            return number

        data_seed = get("data_seed")
        if data_seed is None:
            data_seed = get("seed")
        dataset, data_dir = get("dataset"), get("data_dir")
        return cls(
            dataset=str(dataset) if dataset else None,
            data_dir=str(data_dir) if data_dir else None,
            data_seed=as_int(data_seed, "data_seed") or 0,
            train_size=as_int(get("train_size"), "train_size"),
            test_size=as_int(get("test_size"), "test_size"),
            corrupt=as_float(get("corrupt"), "corrupt"),
            corrupt_seed=as_int(get("corrupt_seed"), "corrupt_seed") or 0,
            val_fraction=as_float(get("val_fraction"), "val_fraction"),
            seed=as_int(get("seed"), "seed"),
            epoch=as_int(meta.get("epoch"), "epoch"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain metadata (what :func:`save_checkpoint` stores)."""
        return asdict(self)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt ``model`` (in eval mode) and its plain metadata."""

    model: nn.Module
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    kind: str = "singledir"  # or "state_dict" for a plain state dict

    @property
    def data_meta(self) -> CheckpointMeta:
        """The typed part of ``meta`` that says how the checkpoint's data is drawn."""
        return CheckpointMeta.from_dict(self.meta)


def plain(value: Any) -> Any:
    """``value`` as plain data that ``torch.load(weights_only=True)`` accepts.

    Dicts (string keys), lists and tuples (as lists), str, int, float, bool, None and tensors
    pass; NumPy scalars and arrays become Python numbers and tensors, paths become strings.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value.copy())
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    raise ConfigError(
        f"checkpoint metadata holds a {type(value).__name__}: "
        "store only numbers, strings, lists, dicts and tensors"
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    config: dict[str, Any],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights with its config and metadata, atomically.

    Parameters
    ----------
    path:
        Target file (conventionally ``*.pt``); its folder must exist.
    model:
        The network; its ``state_dict`` is stored on CPU.
    config:
        The model config :func:`singledir.models.build_model` rebuilds it from.
    meta:
        Plain metadata: dataset, corrupt, corrupt_seed, seed, train_size, epoch, metrics, ...
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": plain(model_config(config)),
        "meta": plain(meta or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint_dict(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> Any:
    """``torch.load(path, weights_only=True)`` with every failure as a one-line CheckpointError."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist: check the path")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} is not a file: give the path of a .pt file")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if any(m in text for m in _UNSAFE_MARKERS):
            culprit = _unsafe_global(text)
            raise CheckpointError(
                f"checkpoint {str(p)!r} would need unpickling of code{culprit}, which singledir "
                "refuses: re-save it as a dict of tensors (torch.save(model.state_dict(), path))"
            ) from None
        reason = (
            text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler" in text else text
        )
        raise CheckpointError(
            f"checkpoint {str(p)!r} is corrupted or not a torch file ({_first_line(reason)}): "
            "re-create it or restore a good copy"
        ) from None
    except Exception as exc:  # noqa: BLE001 - junk bytes break the unpickler in many ways
        # (RuntimeError, EOFError, BadZipFile, ValueError, IndexError, KeyError, struct.error...)
        raise CheckpointError(
            f"checkpoint {str(p)!r} is truncated or corrupted ({type(exc).__name__}: "
            f"{_first_line(str(exc))}): re-create it or restore a good copy"
        ) from None


# Phrases of torch's weights-only unpickler when a pickle names code it will not run.
_UNSAFE_MARKERS = ("Unsupported global", "GLOBAL ", "unrecognized function", "Unsupported class")


def _first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _unsafe_global(text: str) -> str:
    # torch's message names the offending global, e.g. "Unsupported global: GLOBAL foo.Bar".
    for marker in ("GLOBAL ", "global "):
        i = text.find(marker)
        if i >= 0:
            name = text[i + len(marker) :].split()[0].strip(".,:;'\"`")
            if name:
                return f" ({name})"
    return ""


def _find_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net", "weights"):
            found = _find_state_dict(obj.get(key))
            if found is not None:
                return found
    return None


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DataParallel / DistributedDataParallel / torch.compile wrap names.
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _infer_config(
    arch: str,
    sd: dict[str, torch.Tensor],
    num_classes: int | None,
    in_shape: tuple[int, ...] | None,
) -> dict[str, Any]:
    cfg: dict[str, Any] = {"arch": arch}
    out_weight = sd.get("fc.weight" if arch in ("resnet18", "resnet50") else "fc_out.weight")
    if num_classes is not None and out_weight is not None:
        # Checked before the model is built: a typo such as 10**9 classes would allocate first.
        if out_weight.ndim != 2 or int(out_weight.shape[0]) != int(num_classes):
            raise CheckpointError(
                f"weights do not fit {arch!r} with --num-classes {num_classes}: their last "
                f"layer has {int(out_weight.shape[0])} outputs; drop --num-classes or fix it"
            )
    if arch in ("resnet18", "resnet50"):
        w = sd.get("conv1.weight")
        fc = sd.get("fc.weight")
        cin = int(w.shape[1]) if w is not None and w.ndim == 4 else 3
        cfg["small_input"] = bool(w is not None and w.ndim == 4 and w.shape[-1] == 3)
        cfg["num_classes"] = num_classes or (int(fc.shape[0]) if fc is not None else 1000)
        default_shape = (cin, 32, 32) if cfg["small_input"] else (cin, 224, 224)
        cfg["in_shape"] = list(in_shape or default_shape)
    elif arch == "mlp":
        widths = []
        i = 1
        while f"fc{i}.weight" in sd:
            widths.append(int(sd[f"fc{i}.weight"].shape[0]))
            i += 1
        fc_out = sd.get("fc_out.weight")
        n_in = int(sd["fc1.weight"].shape[1]) if "fc1.weight" in sd else 784
        if in_shape is None:
            side = math.isqrt(n_in)
            in_shape = (
                (1, side, side)
                if side * side == n_in
                else (3, 32, 32)
                if n_in == 3072
                else (n_in, 1, 1)
            )
        cfg.update(
            widths=widths or [512, 512],
            batchnorm="bn1.weight" in sd,
            num_classes=num_classes or (int(fc_out.shape[0]) if fc_out is not None else 10),
            in_shape=list(in_shape),
        )
    else:  # convnet11
        w = sd.get("conv1.weight")
        fc_out = sd.get("fc_out.weight")
        cin = int(w.shape[1]) if w is not None and w.ndim == 4 else 3
        cfg.update(
            width=(int(w.shape[0]) / 64.0) if w is not None else 1.0,
            batchnorm="bn1.weight" in sd,
            num_classes=num_classes or (int(fc_out.shape[0]) if fc_out is not None else 10),
            in_shape=list(in_shape or (cin, 32, 32)),
        )
    return cfg


def _describe_mismatch(exc: RuntimeError) -> str:
    text = str(exc)
    if "size mismatch for" in text:
        i = text.index("size mismatch for")
        return _first_line(text[i:], 160)
    for marker in ("Missing key(s) in state_dict:", "Unexpected key(s) in state_dict:"):
        if marker in text:
            i = text.index(marker)
            return _first_line(text[i:], 160)
    return _first_line(text, 160)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    in_shape: tuple[int, int, int] | None = None,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Rebuild the model stored in ``path`` and return it in eval mode.

    Parameters
    ----------
    path:
        A singledir checkpoint, or a plain state dict (then ``arch`` is required).
    arch:
        Architecture (one of :data:`singledir.models.MODEL_NAMES`) of a plain state dict; for a
        singledir checkpoint it must match the stored one.
    num_classes, in_shape:
        Override what cannot be read from a plain state dict (defaults are inferred).
    map_location:
        Device the weights and the model are put on.

    Raises
    ------
    CheckpointError
        Missing, truncated or corrupted file; a pickle that would run code; weights that do not
        fit the architecture.
    """
    p = Path(path)
    obj = read_checkpoint_dict(p, map_location=map_location)
    arch_key = str(arch).lower() if arch else None
    if arch_key is not None and arch_key not in MODEL_NAMES:
        raise CheckpointError(
            f"unknown architecture {arch!r}: choose one of {', '.join(MODEL_NAMES)}"
        )
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        version = obj.get("version")
        if not isinstance(version, int) or version > CHECKPOINT_VERSION:
            raise CheckpointError(
                f"checkpoint {str(p)!r} has format version {version!r}, newer than this "
                f"singledir ({CHECKPOINT_VERSION}): upgrade singledir"
            )
        config = dict(obj.get("config") or {})
        meta = dict(obj.get("meta") or {})
        sd = obj.get("state_dict")
        if not isinstance(sd, dict):
            raise CheckpointError(f"checkpoint {str(p)!r} has no state_dict: re-create it")
        if arch_key is not None and arch_key != str(config.get("arch", "")).lower():
            raise CheckpointError(
                f"checkpoint {str(p)!r} holds a {config.get('arch')!r} model, not {arch_key!r}: "
                "drop --arch or name the right one"
            )
        kind = "singledir"
    else:
        found = _find_state_dict(obj)
        if found is None:
            raise CheckpointError(
                f"{str(p)!r} holds neither a singledir checkpoint nor a state dict of tensors: "
                "save torch.save(model.state_dict(), path)"
            )
        if arch_key is None:
            raise CheckpointError(
                f"{str(p)!r} is a plain state dict without a model config: name its "
                f"architecture (--arch, one of {', '.join(MODEL_NAMES)})"
            )
        sd = _strip_prefix(found)
        config = _infer_config(arch_key, sd, num_classes, in_shape)
        meta = {}
        kind = "state_dict"
    try:
        model = build_model(config)
    except ConfigError as exc:
        raise CheckpointError(
            f"checkpoint {str(p)!r} has an unusable model config: {exc}"
        ) from None
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights in {str(p)!r} do not fit {config.get('arch')!r} "
            f"({_describe_mismatch(exc)}): name the right --arch / number of classes"
        ) from None
    model.to(map_location)
    model.eval()
    return Checkpoint(model=model, config=model_config(config), meta=meta, path=p, kind=kind)
