"""Directions: a unit generalized to any unit-norm combination of a site's units.

Ablating direction d of a site replaces the component of its activity along d by the fill
value, at every position: ``h <- h - (h.d - fill) d`` (along the unit axis). Units are the
basis vectors e_u. ``directions`` may be:

- ``"units"``: the units themselves (no basis);
- ``"random"``: per site a random orthonormal basis of its unit space (the QR factor of a
  Gaussian matrix drawn from a ``torch.Generator`` seeded with ``seed_for(seed, site
  index)``), the paper's control;
- a dict ``site -> (k, C)`` tensor or array: k directions per site, orthonormalized (QR in
  float64, order and orientation kept); sites left out use their units.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from singledir.engine.scoring import seed_for
from singledir.errors import InputError
from singledir.sites import SiteSpec

__all__ = ["apply_directions", "orthonormal_rows", "random_basis", "to_coords", "from_coords"]

_RANDOM_STREAM = 7_919  # seeds of random bases are drawn apart from the orderings' seeds


def orthonormal_rows(rows: Any, site: str, width: int) -> torch.Tensor:
    """``rows`` ``(k, width)`` orthonormalized (float64), in order: row i of the result spans
    the same space as rows 0..i. Non-finite, wrong-width or rank-deficient input is refused."""
    if isinstance(rows, torch.Tensor):
        arr = rows.detach().cpu().double().numpy()
    else:
        try:
            arr = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"directions for {site!r} are not a numeric (k, C) array") from None
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InputError(
            f"directions for {site!r} have shape {arr.shape}: pass a (k, {width}) array, k >= 1"
        )
    if arr.shape[1] != width:
        raise InputError(
            f"directions for {site!r} have width {arr.shape[1]} but the site has {width} units: "
            f"pass a (k, {width}) array"
        )
    if not np.all(np.isfinite(arr)):
        raise InputError(f"directions for {site!r} contain NaN or infinity: pass finite values")
    if arr.shape[0] > width:
        raise InputError(
            f"{arr.shape[0]} directions for {site!r} exceed its {width} units: pass at most "
            f"{width} independent directions"
        )
    q, r = np.linalg.qr(arr.T)  # arr.T = q r, columns of q orthonormal
    diag = np.abs(np.diag(r))
    scale = np.linalg.norm(arr, axis=1)
    if np.any(diag <= 1e-9 * np.maximum(scale, 1e-300)) or np.any(scale == 0):
        raise InputError(
            f"directions for {site!r} are linearly dependent (rank-deficient): pass "
            "independent directions"
        )
    q = q * np.sign(np.diag(r))[None, :]  # keep each direction's orientation
    return torch.as_tensor(q.T.copy())


def random_basis(width: int, seed: int, site_index: int) -> torch.Tensor:
    """A random orthonormal ``(width, width)`` basis (float64), reproducible from the seed."""
    g = torch.Generator().manual_seed(seed_for(seed + _RANDOM_STREAM, site_index))
    gauss = torch.randn(width, width, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    return (q * torch.sign(torch.diagonal(r)).unsqueeze(0)).t().contiguous()


def apply_directions(
    specs: Sequence[SiteSpec],
    directions: str | Mapping[str, Any],
    seed: int,
    dtype: torch.dtype,
    device: torch.device,
) -> list[SiteSpec]:
    """``specs`` with their bases set (and unit counts, offsets re-pooled)."""
    if isinstance(directions, str):
        if directions == "units":
            return list(specs)
        if directions != "random":
            raise InputError(
                f"unknown directions {directions!r}: choose units, random or a dict of arrays"
            )
        bases: dict[str, torch.Tensor] = {
            s.name: random_basis(s.width, seed, k) for k, s in enumerate(specs)
        }
    elif isinstance(directions, Mapping):
        names = {s.name for s in specs}
        extra = sorted(set(directions) - names)
        if extra:
            raise InputError(
                f"directions given for {extra}, which are not chosen sites "
                f"({', '.join(s.name for s in specs)}): key them by site name"
            )
        bases = {
            s.name: orthonormal_rows(directions[s.name], s.name, s.width)
            for s in specs
            if s.name in directions
        }
    else:
        raise InputError("directions must be 'units', 'random' or a dict site -> (k, C) array")
    out = []
    offset = 0
    for s in specs:
        basis = bases.get(s.name)
        if basis is None:
            out.append(dataclasses.replace(s, offset=offset))
            offset += s.width
            continue
        b = basis.to(device=device, dtype=dtype)
        out.append(dataclasses.replace(s, offset=offset, n_units=int(b.shape[0]), basis=b))
        offset += int(b.shape[0])
    return out


def to_coords(h: torch.Tensor, basis: torch.Tensor | None, dim: int = 1) -> torch.Tensor:
    """Coordinates of ``h`` along the basis rows on axis ``dim`` (the units when None)."""
    if basis is None:
        return h
    return torch.tensordot(h.movedim(dim, -1), basis.t(), dims=1).movedim(-1, dim)


def from_coords(a: torch.Tensor, basis: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The unit-space vector ``sum_k a_k basis_k`` on axis ``dim``."""
    return torch.tensordot(a.movedim(dim, -1), basis, dims=1).movedim(-1, dim)


def _unreadable(exc: Exception) -> str:
    """Why a directions file did not load, as one short clause (numpy's and torch's own
    messages run to paragraphs)."""
    text = str(exc)
    if "pickle" in text.lower() and "weights only" not in text.lower():
        return "it holds pickled Python objects or is not an array file, and neither is loaded"
    if "weights only" in text.lower() or "weights_only" in text:
        return "torch.load with weights_only=True cannot read it (not tensors, or not a torch file)"
    first = re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()[0].split(". ")[0] if text else ""
    return first if first and len(first) <= 100 else type(exc).__name__


def load_directions(spec: str | None, sites: Sequence[str]) -> str | dict[str, Any]:
    """Directions from a command-line value: ``units`` / ``random``, or a file: ``.npy``
    (one ``(k, C)`` array: only with a single chosen site), ``.npz`` (one array per site
    name) or ``.pt`` (a tensor for a single site, or a dict site -> tensor; loaded with
    ``weights_only=True``)."""
    from pathlib import Path

    if spec is None or spec.strip().lower() in ("", "units"):
        return "units"
    if spec.strip().lower() == "random":
        return "random"
    path = Path(spec)
    if not path.is_file():
        raise InputError(
            f"--directions {spec!r} is neither units, random nor an existing .npy/.npz/.pt file"
        )
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz", ".pt"):
        raise InputError(f"--directions {spec!r}: use a .npy, .npz or .pt file")
    try:
        if suffix == ".npy":
            loaded: Any = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                loaded = {k: archive[k] for k in archive.files}
        else:
            with warnings.catch_warnings():  # torch warns about pickle protocols on garbage
                warnings.simplefilter("ignore")
                loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise InputError(
            f"{spec} is not a NumPy .npy/.npz array or a tensor file: {_unreadable(exc)}; "
            "save a (k, C) float array with numpy.save / numpy.savez or torch.save"
        ) from None
    if isinstance(loaded, Mapping):
        return dict(loaded)
    if isinstance(loaded, np.ndarray | torch.Tensor):
        if len(sites) != 1:
            raise InputError(
                f"--directions {spec!r} holds one array but {len(sites)} sites are chosen: "
                "choose one site with --layers, or save a dict site -> array (.npz or .pt)"
            )
        return {sites[0]: loaded}
    raise InputError(f"--directions {spec!r} holds {type(loaded).__name__}: save arrays")
