"""A checkpoint with the data it is evaluated on: the checkpoint-to-data contract.

:func:`load_for_evaluation` rebuilds a checkpoint's model and draws the split it is evaluated
on exactly as training drew it (same subset seed and size, the checkpoint's own corrupted
training labels, the same folder), through the typed
:class:`~singledir.checkpoint.CheckpointMeta` that training writes. Every reader (the CLI's
ablate, noise, importance and record commands, the experiments) goes through here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from singledir.checkpoint import CheckpointMeta
from singledir.errors import ConfigError, DataError, InputError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "EvaluationInfo",
    "Evaluation",
    "SiteUnits",
    "load_for_evaluation",
    "load_split",
    "check_data_fits",
    "site_units_of",
    "SiteChoice",
    "choose_sites",
]


@dataclass(frozen=True)
class EvaluationInfo:
    """What was loaded, as recorded in every output's JSON summary."""

    checkpoint: str
    arch: str | None
    dataset: str
    split: str
    n_samples: int
    corrupt: float
    corrupt_seed: int
    data_seed: int
    train_size: int | None
    test_size: int | None
    device: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Evaluation(NamedTuple):
    """``(model, data, info)``: a checkpoint's model in eval mode with its data split."""

    model: nn.Module
    data: Any
    info: EvaluationInfo


class SiteUnits(NamedTuple):
    """Sites in forward order and the number of units of each."""

    sites: list[str]
    units: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.units.values())


def load_split(
    meta: CheckpointMeta,
    split: str,
    *,
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
) -> Any:
    """The ``split`` of the data that ``meta`` records, drawn as training drew it.

    ``dataset``, ``data_dir``, ``train_size`` and ``test_size`` override the recorded values.
    Evaluating on another data set than the recorded one drops the recorded label corruption
    (it belongs to the other set). The training split of a run that held out a validation
    split (``val_fraction``) is the part it trained on. A recorded folder that no longer
    exists (a checkpoint from another machine) falls back to ``$SINGLEDIR_DATA``; a folder
    given here must exist.
    """
    from singledir.data import load_dataset

    name = dataset or meta.dataset
    if not name:
        raise ConfigError(
            "the checkpoint does not record its dataset: name it with --dataset "
            "(digits, mnist, fashion-mnist, cifar10, imagenet)"
        )
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}: choose 'train' or 'test'")
    corrupt = meta.corrupt if split == "train" else 0.0
    if dataset is not None and meta.dataset not in (None, dataset):
        corrupt = 0.0  # another data set: the checkpoint's corrupted labels do not apply
    folder: str | os.PathLike[str] | None
    if data_dir is not None:
        folder = data_dir  # load_dataset refuses a folder that does not exist
    else:
        recorded = meta.data_dir
        folder = recorded if recorded is not None and Path(recorded).is_dir() else None
    kwargs: dict[str, Any] = {
        "data_dir": folder,
        "seed": meta.data_seed,
        "corrupt": corrupt,
        "corrupt_seed": meta.corrupt_seed,
    }
    if split == "train":
        kwargs["train_size"] = train_size if train_size is not None else meta.train_size
    else:
        kwargs["test_size"] = test_size if test_size is not None else meta.test_size
    data = load_dataset(str(name), split, **kwargs)
    if len(data) == 0:
        raise DataError(f"the {split} split of {name} holds no samples: choose another split")
    same_draw = dataset in (None, meta.dataset) and train_size is None
    if split == "train" and meta.val_fraction > 0 and same_draw:
        # The net trained on the training set less its validation split: hold that out again,
        # by training's own rule.
        from singledir.train import TrainConfig
        from singledir.train_data import split_validation

        rule = TrainConfig(
            dataset=str(name), val_fraction=meta.val_fraction, data_seed=meta.data_seed
        )
        data, _validation = split_validation(rule, data)
    return data


def check_data_fits(model: nn.Module, data: Any) -> None:
    """Run two samples through ``model`` so that a checkpoint and a data set that do not go
    together fail here, in one line, rather than deep inside an engine."""
    import torch

    x = getattr(data, "x", None)
    if x is None:
        return
    try:
        with torch.inference_mode():
            out = model(x[:2])
    except (RuntimeError, ValueError, IndexError) as exc:
        raise InputError(
            f"inputs of shape {tuple(x.shape[1:])} do not fit the model "
            f"({str(exc).splitlines()[0][:100]}): check --dataset, --arch and --num-classes"
        ) from None
    n_classes = getattr(data, "num_classes", None)
    if isinstance(out, torch.Tensor) and out.ndim == 2 and n_classes:
        if out.shape[1] < int(n_classes):
            raise InputError(
                f"the model predicts {out.shape[1]} classes but the data have {n_classes}: "
                "check --dataset and --num-classes"
            )


def load_for_evaluation(
    checkpoint: str | os.PathLike[str],
    split: str = "train",
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    device: str | None = None,
) -> Evaluation:
    """Load ``checkpoint`` (a singledir checkpoint, or a plain state dict with ``arch``) and
    the ``split`` ("train" or "test") of the data set it was trained on.

    The training split carries the checkpoint's own corrupted labels; the test split never
    does. ``device`` is checked here (so a bad one fails before any loading) and recorded;
    the model stays on the CPU until an engine moves it.
    """
    from singledir.checkpoint import load_checkpoint
    from singledir.data import dataset_info
    from singledir.devices import resolve_device

    if device is not None:
        resolve_device(device)
    in_shape = None
    if dataset is not None and arch is not None:
        in_shape = tuple(dataset_info(dataset)["in_shape"])
    ckpt = load_checkpoint(
        checkpoint,
        arch=arch,
        num_classes=num_classes,
        in_shape=in_shape,  # type: ignore[arg-type]
        map_location="cpu",
    )
    meta = ckpt.data_meta
    if not (dataset or meta.dataset):
        raise ConfigError(
            f"{str(checkpoint)!r} does not record its dataset: name it with --dataset "
            "(digits, mnist, fashion-mnist, cifar10, imagenet)"
        )
    data = load_split(
        meta,
        split,
        dataset=dataset,
        data_dir=data_dir,
        train_size=train_size,
        test_size=test_size,
    )
    check_data_fits(ckpt.model, data)
    info = EvaluationInfo(
        checkpoint=str(checkpoint),
        arch=ckpt.config.get("arch") if isinstance(ckpt.config, dict) else None,
        dataset=str(dataset or meta.dataset),
        split=split,
        n_samples=len(data),
        corrupt=float(getattr(data, "corrupt", 0.0) or 0.0),
        corrupt_seed=meta.corrupt_seed,
        data_seed=meta.data_seed,
        train_size=(train_size if train_size is not None else meta.train_size)
        if split == "train"
        else None,
        test_size=(test_size if test_size is not None else meta.test_size)
        if split == "test"
        else None,
        device=device,
    )
    return Evaluation(model=ckpt.model, data=data, info=info)


def site_units_of(
    model: nn.Module, data: Any, layers: str | Sequence[str], **site_options: Any
) -> SiteUnits:
    """Resolve the ``layers`` selector on ``model`` and count each site's units, from the
    first two samples of ``data`` (``site_options``, such as ``unit_dim``, go to the
    site resolver)."""
    import torch

    from singledir.sites import resolve_sites, site_units

    x = getattr(data, "x", None)
    sample = x[:2] if x is not None else next(iter(data.loader(2)))[0]
    with torch.inference_mode():
        sites = list(resolve_sites(model, layers, sample_x=sample))
        return SiteUnits(sites, dict(site_units(model, sites, sample, **site_options)))


class SiteChoice(NamedTuple):
    """The sites of a command line (``--layers``, ``--unit-dim``, ``--directions``): sites in
    forward order, the count of units (or of the given directions) per site, the parsed unit
    axes and the directions to pass to the engine."""

    sites: list[str]
    units: dict[str, int]
    unit_dim: Any
    directions: str | dict[str, Any]


def choose_sites(
    model: nn.Module, data: Any, layers: str, unit_dim: str | None, directions: str | None
) -> SiteChoice:
    """Parse ``--unit-dim`` and ``--directions`` and resolve ``--layers`` on ``model``; with
    explicit directions a site counts its directions, not its units."""
    from singledir.engine.directions import load_directions
    from singledir.sites import parse_unit_dim

    axes = parse_unit_dim(unit_dim)
    sites, units = site_units_of(model, data, layers, unit_dim=axes)
    chosen = load_directions(directions, sites)
    if isinstance(chosen, dict):
        units = {s: len(chosen[s]) if s in chosen else n for s, n in units.items()}
    return SiteChoice(sites, units, axes, chosen)
