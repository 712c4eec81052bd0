"""Record what units do: the activations of chosen sites on a data set, per sample.

:func:`record_activation_arrays` returns one dense ``(n_samples, n_units)`` array per site
(plus the labels); :func:`record_activations` returns the same numbers in the long format
of ``activations.parquet`` (one row per sample and unit: ``layer``, ``unit``, ``sample``,
``label``, ``activation``), which ``singledir stats`` reads. A convolutional site's units
are its channels, and a channel's activation for a sample is its feature map averaged over
all spatial positions (as in Morcos et al., 2018).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from singledir.devices import resolve_device
from singledir.errors import DataError, InputError, SiteError
from singledir.progress import make_progress

__all__ = ["record_activations", "record_activation_arrays", "iter_labeled_batches"]


class _StopForward(Exception):
    """Raised from the hook of the last recorded site: the rest of the network is not needed."""


def _as_tensor(v: Any, what: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    try:
        return torch.as_tensor(np.asarray(v))
    except Exception as exc:  # noqa: BLE001 - any conversion failure is bad input
        raise InputError(f"{what} cannot be turned into a tensor: pass a tensor or array") from exc


def _xy_of(data: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(x, y) tensors when ``data`` holds them directly (tuple or an object with .x/.y)."""
    if isinstance(data, tuple | list) and len(data) == 2:
        return _as_tensor(data[0], "inputs"), _as_tensor(data[1], "labels")
    if getattr(data, "x", None) is not None and hasattr(data, "y"):
        return _as_tensor(data.x, "inputs"), _as_tensor(data.y, "labels")
    return None


def iter_labeled_batches(data: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches from a tuple ``(x, y)``, an object with ``.x``/``.y``, a torch
    Dataset of ``(x, y)`` pairs, or a DataLoader (its own batching is kept).

    Raises
    ------
    DataError
        When the data hold no samples, or inputs and labels differ in number.
    """
    if batch_size <= 0:
        raise InputError(f"batch size must be a positive integer, got {batch_size}")
    xy = _xy_of(data)
    if xy is not None:
        x, y = xy
        if x.ndim == 0 or x.shape[0] == 0:
            raise DataError("the data hold no samples: choose a non-empty split or data set")
        y = y.reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise DataError(
                f"{x.shape[0]} inputs but {y.shape[0]} labels: pass one label per sample"
            )
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    if isinstance(data, torch.utils.data.DataLoader):
        loader: Any = data
    elif callable(getattr(data, "loader", None)):
        # Streamed data (ImageFolderData): x is None and batches come from its own loader.
        if len(data) == 0:
            raise DataError("the data hold no samples: choose a non-empty split or data set")
        loader = data.loader(batch_size)
    elif isinstance(data, torch.utils.data.Dataset):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError:
            n = -1
        if n == 0:
            raise DataError("the data hold no samples: choose a non-empty split or data set")
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    else:
        raise InputError(
            f"cannot read data of type {type(data).__name__}: pass (x, y) tensors, an object "
            "with .x and .y, a torch Dataset or a DataLoader"
        )
    seen = 0
    for batch in loader:
        if not isinstance(batch, tuple | list) or len(batch) < 2:
            raise DataError("each batch must be an (inputs, labels) pair: fix the data set")
        x, y = _as_tensor(batch[0], "inputs"), _as_tensor(batch[1], "labels").reshape(-1)
        if x.shape[0] == 0:
            continue
        seen += x.shape[0]
        yield x, y
    if seen == 0:
        raise DataError("the data hold no samples: choose a non-empty split or data set")


def _n_samples(data: Any) -> int | None:
    xy = _xy_of(data)
    if xy is not None:
        return int(xy[0].shape[0]) if xy[0].ndim else 0
    if isinstance(data, torch.utils.data.DataLoader):
        try:
            return len(data.dataset)  # type: ignore[arg-type]
        except TypeError:
            return None
    try:
        return len(data)
    except TypeError:
        return None


def _resolve(model: nn.Module, layers: str | Sequence[str], sample_x: torch.Tensor) -> list[str]:
    """Site names in forward order, as the ablation engine resolves them (a forward pass on
    ``sample_x`` orders them and refuses a module that runs more than once)."""
    from singledir.sites import resolve_sites

    try:
        with torch.inference_mode():
            sites = list(resolve_sites(model, layers, sample_x=sample_x))
    except (RuntimeError, ValueError, IndexError) as exc:
        raise InputError(
            f"inputs of shape {tuple(sample_x.shape[1:])} do not fit the model "
            f"({str(exc).splitlines()[0][:120]}): check the data set or --arch"
        ) from None
    if not sites:
        raise SiteError("no sites selected: pass --layers all, lastN or module names")
    return sites


def _unit_view(out: Any, site: str) -> torch.Tensor:
    """A site's output as (batch, units): channels of a feature map are averaged over space."""
    if isinstance(out, tuple | list):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise SiteError(f"site {site!r} does not output a tensor: choose another module")
    if out.ndim < 2:
        raise SiteError(
            f"site {site!r} outputs shape {tuple(out.shape)}, not (batch, units, ...): "
            "choose another module"
        )
    if out.ndim > 2:
        out = out.flatten(2).mean(dim=2)
    return out


def record_activation_arrays(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str] = "all",
    *,
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
        ``(x, y)`` tensors/arrays, an object with ``.x`` and ``.y`` (``LabeledData``), a
        torch Dataset of ``(x, y)`` pairs or a DataLoader.
    layers:
        ``"all"``, ``"lastN"``, a comma-separated string or a list of module names
        (see :func:`singledir.sites.resolve_sites`).
    batch_size:
        Samples per forward pass (default 512; a DataLoader keeps its own batches).
    device:
        ``"cpu"``, ``"cuda"``...; default: the model's device, else CUDA when available.
    progress:
        Show a rich progress bar.

    Returns
    -------
    (arrays, labels)
        ``arrays[site]`` is a float32 array of shape ``(n_samples, n_units)`` (conv feature
        maps averaged over space), in the order of the data; ``labels`` is an int64 array
        of shape ``(n_samples,)``.

    Raises
    ------
    SiteError
        Unknown site names or a selector that cannot be met.
    DataError
        Empty data.
    InputError
        Inputs whose shape does not fit the model.
    """
    modules = dict(model.named_modules())
    dev = resolve_device(device)
    bs = int(batch_size) if batch_size is not None else 512
    total = _n_samples(data)
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.float32
    batches = iter_labeled_batches(data, bs)
    first = next(batches)  # raises DataError on empty data
    sites: list[str] = []
    chunks: dict[str, list[np.ndarray]] = {}
    label_chunks: list[np.ndarray] = []
    current: dict[str, torch.Tensor] = {}
    # Sites are in forward order for singledir models; for others the last one to fire is
    # unknown, so the forward pass is cut short only once every site has been seen.
    remaining: set[str] = set()

    def make_hook(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
            # A module called twice in one pass (a shared ReLU) is recorded at its first call.
            if name not in current:
                current[name] = _unit_view(out, name).detach().float().cpu()
            remaining.discard(name)
            if not remaining:
                raise _StopForward

        return hook

    was_training = model.training
    orig_device = next((p.device for p in model.parameters()), None)
    handles = []
    try:
        model.eval()
        if orig_device is not None and orig_device != dev:
            model.to(dev)
        sample = first[0][:2].to(dev)
        sample = sample.to(dtype) if sample.is_floating_point() else sample
        sites = _resolve(model, layers, sample)
        chunks.update({s: [] for s in sites})
        for s in sites:
            handles.append(modules[s].register_forward_hook(make_hook(s)))
        bar = make_progress(quiet=None if progress else True, transient=True)
        with bar:
            task = bar.add_task(f"recording {len(sites)} site(s)", total=total, status="")
            with torch.inference_mode():
                for x, y in itertools.chain([first], batches):
                    current.clear()
                    remaining.clear()
                    remaining.update(sites)
                    xd = x.to(dev)
                    try:
                        model(xd.to(dtype) if xd.is_floating_point() else xd)
                    except _StopForward:
                        pass
                    except (RuntimeError, ValueError, IndexError) as exc:
                        raise InputError(
                            f"inputs of shape {tuple(x.shape[1:])} do not fit the model "
                            f"({str(exc).splitlines()[0][:120]}): check the data set or --arch"
                        ) from exc
                    missing = [s for s in sites if s not in current]
                    if missing:
                        raise SiteError(
                            f"site(s) {', '.join(missing)} did not run in the forward pass: "
                            "choose modules the model calls"
                        )
                    for s in sites:
                        chunks[s].append(current[s].numpy())
                    label_chunks.append(y.detach().cpu().numpy().astype(np.int64, copy=False))
                    bar.update(task, advance=int(x.shape[0]))
    finally:
        for h in handles:
            h.remove()
        if orig_device is not None and orig_device != dev:
            model.to(orig_device)
        model.train(was_training)
    arrays = {
        s: np.ascontiguousarray(np.concatenate(chunks[s], axis=0), dtype=np.float32) for s in sites
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
        model, data, layers, batch_size=batch_size, device=device, progress=progress
    )
    return activations_to_long(arrays, labels)
