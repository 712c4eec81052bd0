"""Record what units do: the activations of chosen sites on a data set, per sample.

:func:`record_activation_arrays` returns one dense ``(n_samples, n_units)`` array per site
(plus the labels); :func:`record_activations` returns the same numbers in the long format
of ``activations.parquet`` (one row per sample and unit: ``layer``, ``unit``, ``sample``,
``label``, ``activation``), which ``singledir stats`` reads. A convolutional site's units
are its channels (a sequence site's, the features of its last axis: see
:mod:`singledir.sites`), and a unit's activation for a sample is its mean over all
positions (pixels, tokens), as in Morcos et al., 2018.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from singledir.devices import resolve_device
from singledir.engine.batches import Batches, known_count
from singledir.engine.runners import evaluate_graph
from singledir.errors import InputError, SiteError
from singledir.progress import make_progress
from singledir.sites import Located, UnitDim, locate_sites, site_hooks

__all__ = ["record_activations", "record_activation_arrays", "activations_to_long"]


class _StopForward(Exception):
    """Raised once the last recorded site has run: the rest of the network is not needed."""


def _pick_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    """``device``, else the model's device, else the default of :func:`resolve_device`."""
    if device is None:
        for p in model.parameters():
            if p.device.type != "cpu":
                return p.device
    return resolve_device(device)


def _unit_activity(out: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """A site's output as (batch, units): each unit's mean over the other (position) axes."""
    out = out.movedim(unit_dim, 1)
    if out.ndim > 2:
        out = out.flatten(2).mean(dim=2)
    return out


def _record_batch(model: nn.Module, located: Located, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each site's unit activity on batch ``x`` (fx graph or hooks), stopping after the
    last site."""
    current: dict[str, torch.Tensor] = {}
    specs = {s.name: s for s in located.specs}

    def keep(name: str, out: Any) -> None:
        if name not in current and isinstance(out, torch.Tensor):
            current[name] = _unit_activity(out, specs[name].unit_dim).detach().float().cpu()
        if len(current) == len(specs):
            raise _StopForward

    try:
        if located.gm is not None and located.nodes is not None:
            names = dict(zip(located.nodes, located.names, strict=True))

            def seen(node: Any, value: Any) -> None:
                if node in names:
                    keep(names[node], value)

            evaluate_graph(located.gm, x, seen)
        else:

            def recorder(name: str) -> Any:
                def record(out: torch.Tensor) -> torch.Tensor:
                    keep(name, out)
                    return out

                return record

            with site_hooks(model, {name: recorder(name) for name in located.names}):
                model(x)
    except _StopForward:
        pass
    return current


def record_activation_arrays(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str] = "all",
    *,
    unit_dim: UnitDim = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Activations of every unit of the chosen sites, as dense arrays.

    Parameters
    ----------
    model:
        Any ``torch.nn.Module``; it is run in eval mode (its mode is restored afterwards).
    data:
        Any form :mod:`singledir.engine.batches` reads: ``(x, y)`` tensors/arrays, an object
        with ``.x`` and ``.y`` (``LabeledData``), a torch Dataset of ``(x, y)`` pairs or a
        DataLoader.
    layers:
        ``"all"``, ``"lastN"``, a comma-separated string or a list of module or fx node
        names (see :func:`singledir.sites.resolve_sites`).
    unit_dim:
        The unit axis per site (int or dict), default inferred (see
        :func:`singledir.sites.locate_sites`); a unit's activity is its mean over the other
        axes (pixels, tokens).
    batch_size:
        Samples per forward pass (default 512; a DataLoader keeps its own batches).
    device:
        ``"cpu"``, ``"cuda"``...; default: the model's device, else CUDA when available.
    progress:
        Show a rich progress bar.

    Returns
    -------
    (arrays, labels)
        ``arrays[site]`` is a float32 array of shape ``(n_samples, n_units)``, in the order
        of the data; ``labels`` is an int64 array of shape ``(n_samples,)``.

    Raises
    ------
    SiteError
        Unknown site names, a selector that cannot be met, an ambiguous unit axis.
    DataError
        Empty data, or inputs and labels that differ in number.
    InputError
        Inputs whose shape does not fit the model.
    """
    dev = _pick_device(device, model)
    bs = int(batch_size) if batch_size is not None else 512
    total = known_count(data)
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.float32
    batches = Batches(data, bs, dev, dtype)
    chunks: dict[str, list[np.ndarray]] = {}
    label_chunks: list[np.ndarray] = []
    was_training = model.training
    orig_device = next((p.device for p in model.parameters()), None)
    try:
        model.eval()
        if orig_device is not None and orig_device != dev:
            model.to(dev)
        sample = batches.sample_x
        try:
            with torch.no_grad():
                out = model(sample)
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            raise InputError(
                f"inputs of shape {tuple(sample.shape[1:])} do not fit the model "
                f"({str(exc).splitlines()[0][:120]}): check the data set matches the model"
            ) from None
        # the same label check as the other entry points, when the model returns logits
        if isinstance(out, torch.Tensor) and out.ndim == 2:
            batches.n_classes = int(out.shape[1])
        located = locate_sites(model, layers, sample, unit_dim=unit_dim)
        chunks.update({s: [] for s in located.names})
        bar = make_progress(quiet=None if progress else True, transient=True)
        with bar, torch.inference_mode():
            task = bar.add_task(f"recording {len(located.names)} site(s)", total=total, status="")
            for x, y in batches:
                try:
                    current = _record_batch(model, located, x)
                except (RuntimeError, ValueError, IndexError) as exc:
                    raise InputError(
                        f"inputs of shape {tuple(x.shape[1:])} do not fit the model "
                        f"({str(exc).splitlines()[0][:120]}): check the data set matches the model"
                    ) from exc
                missing = [s for s in located.names if s not in current]
                if missing:
                    raise SiteError(
                        f"site(s) {', '.join(missing)} did not run in the forward pass: "
                        "choose modules the model calls"
                    )
                for s in located.names:
                    chunks[s].append(current[s].numpy())
                label_chunks.append(y.detach().cpu().numpy().astype(np.int64, copy=False))
                bar.update(task, advance=int(x.shape[0]))
    finally:
        if orig_device is not None and orig_device != dev:
            model.to(orig_device)
        model.train(was_training)
    arrays = {
        s: np.ascontiguousarray(np.concatenate(chunks[s], axis=0), dtype=np.float32) for s in chunks
    }
    labels = np.concatenate(label_chunks).astype(np.int64, copy=False)
    return arrays, labels


def activations_to_long(arrays: dict[str, np.ndarray], labels: np.ndarray) -> pl.DataFrame:
    """Turn per-site ``(n_samples, n_units)`` arrays into the long ``activations.parquet``
    format: rows ordered by site (as given), then unit, then sample."""
    frames = []
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    for site, arr in arrays.items():
        if arr.ndim != 2 or arr.shape[0] != n:
            raise InputError(
                f"activations of {site!r} have shape {arr.shape}, expected ({n}, n_units)"
            )
        u = arr.shape[1]
        frames.append(
            pl.DataFrame(
                {
                    "layer": pl.repeat(site, n * u, dtype=pl.String, eager=True),
                    "unit": np.repeat(np.arange(u, dtype=np.int64), n),
                    "sample": np.tile(np.arange(n, dtype=np.int64), u),
                    "label": np.tile(labels, u),
                    "activation": np.ascontiguousarray(arr.T, dtype=np.float32).reshape(-1),
                }
            )
        )
    if not frames:
        return pl.DataFrame(
            schema={
                "layer": pl.String,
                "unit": pl.Int64,
                "sample": pl.Int64,
                "label": pl.Int64,
                "activation": pl.Float32,
            }
        )
    return pl.concat(frames, how="vertical")


def record_activations(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str] = "all",
    *,
    unit_dim: UnitDim = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> pl.DataFrame:
    """Activations of every unit of the chosen sites in the long ``activations.parquet``
    format: one row per (site, unit, sample) with columns ``layer`` (str), ``unit``
    (int64), ``sample`` (int64, the sample's index in ``data``), ``label`` (int64) and
    ``activation`` (float32; a conv channel's feature map averaged over space).

    Parameters are those of :func:`record_activation_arrays`; rows are ordered by site
    (forward order), unit, then sample.

    Examples
    --------
    >>> df = record_activations(model, (x, y), layers="last2")  # doctest: +SKIP
    >>> singledir.stats_from_activations(df)  # doctest: +SKIP
    """
    arrays, labels = record_activation_arrays(
        model,
        data,
        layers,
        unit_dim=unit_dim,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    return activations_to_long(arrays, labels)
