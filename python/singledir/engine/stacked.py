"""Stacked masks: many ablation masks go through one pass of the cached suffix, stacked
along the batch dimension; plus the per-unit moments (fill values, noise scales).

Edits see a site's output with its unit axis on dim 1. A unit is replaced by its fill at
every position; a direction d by ``h <- h - (h.d - fill) d``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from singledir.engine.directions import from_coords, to_coords
from singledir.engine.plan import Setup
from singledir.engine.runners import Runner
from singledir.engine.scoring import chunk_count, score
from singledir.errors import InputError
from singledir.progress import make_progress
from singledir.sites import SiteSpec

__all__ = [
    "mask_edit",
    "stacked_curves",
    "unit_fill",
    "unit_moments",
    "ranks_of",
    "pooled_units",
]


def mask_edit(
    specs: Sequence[SiteSpec], masks: torch.Tensor, fills: list[torch.Tensor | None]
) -> Any:
    """An edit that ablates, for stacked mask m, the units (directions) where ``masks[m]``
    is True (pooled index)."""
    m_count = masks.shape[0]

    def edit(k: int, out: torch.Tensor) -> torch.Tensor:
        spec = specs[k]
        seg = masks[:, spec.offset : spec.offset + spec.n_units]
        if not bool(seg.any()):
            return out
        view = out.reshape(m_count, -1, *out.shape[1:])
        extra = [1] * (out.ndim - 2)
        mk = seg.view(m_count, 1, spec.n_units, *extra)
        fill = fills[k]
        if spec.basis is None:
            f = (
                torch.zeros((), dtype=out.dtype, device=out.device)
                if fill is None
                else fill.view(1, 1, spec.n_units, *extra)
            )
            return torch.where(mk, f, view).view(out.shape)
        coords = to_coords(view, spec.basis, dim=2)  # (M, B, k, *pos)
        target = 0.0 if fill is None else fill.view(1, 1, spec.n_units, *extra)
        change = torch.where(
            mk, target - coords, torch.zeros((), dtype=out.dtype, device=out.device)
        )
        return (view + from_coords(change, spec.basis, dim=2)).view(out.shape)

    return edit


def pooled_units(specs: Sequence[SiteSpec]) -> tuple[torch.Tensor, torch.Tensor]:
    """For each pooled unit index: its site ``(N,)`` and its unit within the site ``(N,)``."""
    n = sum(s.n_units for s in specs)
    site_of = torch.empty(n, dtype=torch.long)
    unit_of = torch.empty(n, dtype=torch.long)
    for k, s in enumerate(specs):
        site_of[s.offset : s.offset + s.n_units] = k
        unit_of[s.offset : s.offset + s.n_units] = torch.arange(s.n_units)
    return site_of, unit_of


def ranks_of(orders: torch.Tensor) -> torch.Tensor:
    """``ranks[o, u]`` = 1-based position of unit u in ordering o."""
    ranks = torch.empty_like(orders)
    n_ord, n = orders.shape
    ranks.scatter_(1, orders, torch.arange(1, n + 1).expand(n_ord, n).contiguous())
    return ranks


def stacked_curves(
    engine: Setup,
    orders: torch.Tensor,
    levels: np.ndarray,
    fills: list[torch.Tensor | None],
    budget: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct counts and loss sums ``(O, L)``: one stacked mask per (ordering, level)."""
    runner = engine.runner
    ranks = ranks_of(orders)
    n_ord = ranks.shape[0]
    jobs_o = torch.arange(n_ord).repeat_interleave(len(levels))
    jobs_level = torch.as_tensor(levels).repeat(n_ord)
    n_jobs = int(jobs_o.numel())
    correct = torch.zeros(n_jobs, dtype=torch.long)
    loss = torch.zeros(n_jobs, dtype=torch.float64)
    ranks_d = ranks.to(engine.device)
    with make_progress(quiet=None if progress else True) as bar:
        task = bar.add_task(
            "ablation curves",
            total=engine.batches.n_batches() * n_jobs,
            status=f"{n_ord} orderings x {len(levels)} levels, stacked masks ({runner.kind})",
        )
        for x, y in engine.batches:
            state = runner.prefix(x)
            per_mask = max(1, x.shape[0]) * engine.row_bytes * 2
            chunk = chunk_count(budget, per_mask, n_jobs)
            for a in range(0, n_jobs, chunk):
                b = min(n_jobs, a + chunk)
                o = jobs_o[a:b].to(engine.device)
                level = jobs_level[a:b].to(engine.device)
                masks = ranks_d[o] <= level.unsqueeze(1)
                logits = runner.suffix(state, b - a, mask_edit(engine.specs, masks, fills))
                c, s = score(logits.view(b - a, x.shape[0], -1), y)
                correct[a:b] += c
                loss[a:b] += s
                bar.advance(task, b - a)
    return correct.view(n_ord, -1), loss.view(n_ord, -1)


def unit_fill(means: list[torch.Tensor] | None, n_sites: int, value: str) -> list:
    """Per-site replacement values for ablated units (None = zeros, or the unit means)."""
    if value == "zero":
        return [None] * n_sites
    if value == "mean":
        assert means is not None
        return list(means)
    raise InputError(f"unknown ablation value {value!r}: choose zero or mean")


def unit_moments(
    engine: Setup, runner: Runner | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mean and standard deviation (population) of every unit's (direction's) activity over
    the data, per site, over samples and positions. Accumulated in float64."""
    runner = runner or engine.runner
    sums = [torch.zeros(s.n_units, dtype=torch.float64, device=engine.device) for s in engine.specs]
    squares = [torch.zeros_like(t) for t in sums]
    counts = [0 for _ in engine.specs]

    def observe(k: int, out: torch.Tensor) -> torch.Tensor:
        coords = to_coords(out, engine.specs[k].basis, dim=1)
        o = coords.double().transpose(0, 1).reshape(coords.shape[1], -1)
        sums[k] += o.sum(1)
        squares[k] += (o * o).sum(1)
        counts[k] += o.shape[1]
        return out

    with torch.no_grad():
        for x, _y in engine.batches:
            runner.suffix(runner.prefix(x), 1, observe)
    means, stds = [], []
    for k in range(len(sums)):
        m = sums[k] / counts[k]
        v = (squares[k] / counts[k] - m * m).clamp_min(0)
        means.append(m.to(engine.dtype))
        stds.append(v.sqrt().to(engine.dtype))
    return means, stds
