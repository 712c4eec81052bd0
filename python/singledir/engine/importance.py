"""Single-unit (single-direction) importance: every unit of a site ablated alone.

With an affine chain after the site (whatever the model's writing), each unit is one
rank-1 / per-channel term added to the next pre-activation and only the ops after that are
run per unit; otherwise one stacked mask per unit goes through the cached suffix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from singledir.engine.affine import parse_chain
from singledir.engine.directions import to_coords
from singledir.engine.plan import Setup
from singledir.engine.runners import ChainRunner
from singledir.engine.scoring import chunk_count, score_per_class
from singledir.engine.stacked import mask_edit
from singledir.engine.walk import TILE, tail_weight

__all__ = ["site_importance", "importance_path"]


def importance_path(site_setup: Setup, incremental: bool) -> tuple[str, Any]:
    """``("incremental", chain)`` when the site reaches an affine chain, ``("tail",
    chain)`` when the site's own tail to the logits is affine inside a graph that is not a
    chain (e.g. a residual branch added), else ``("stacked", reason)``."""
    runner = site_setup.runner
    spec = site_setup.specs[0]
    if not incremental:
        return "stacked", "method asked for"
    if not isinstance(runner, ChainRunner) or spec.unit_dim != 1:
        from singledir.engine.segments import segment_tail

        tail = segment_tail(site_setup)
        if not isinstance(tail, str):
            return "tail", tail  # one pass, then one rank-1 logit term per unit
        if spec.unit_dim != 1:
            return "stacked", "the unit axis is not dim 1 and the tail is not affine"
        return "stacked", f"not a chain after the site ({site_setup.runner_reason})"
    chain = parse_chain(runner.ops, runner.site_pos[0], len(spec.shape) + 1, spec.basis)
    if chain is None:
        return "stacked", "the site does not feed an affine layer"
    return "incremental", chain


def site_importance(
    site_setup: Setup,
    fill: torch.Tensor | None,
    budget: int,
    bar: Any,
    task: Any,
    incremental: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Correct counts ``(n,)``, loss sums ``(n,)`` and per-class correct ``(n, classes)``
    with each unit (direction) of the one site of ``site_setup`` ablated alone."""
    spec = dataclasses.replace(site_setup.specs[0], offset=0)
    runner = site_setup.runner
    n = spec.n_units
    n_classes = site_setup.n_classes
    correct = torch.zeros(n, dtype=torch.long)
    loss = torch.zeros(n, dtype=torch.float64)
    per_class = torch.zeros(n, n_classes, dtype=torch.long)
    path, chain = importance_path(site_setup, incremental)
    units_all = torch.arange(n, device=site_setup.device)
    if path == "tail":
        return _tail_importance(site_setup, chain, fill, bar, task)
    for x, y in site_setup.batches:
        b = x.shape[0]
        h = runner.prefix(x)
        chunk = chunk_count(budget, b * site_setup.row_bytes * 2, n)
        pre = None
        if path == "incremental":
            assert isinstance(runner, ChainRunner)
            pre = chain.run(runner.ops, h)
            chunk = min(chunk, max(1, 2 * TILE // max(1, pre.numel())))
            coords = to_coords(h, spec.basis)
        for a in range(0, n, chunk):
            units = units_all[a : a + chunk]
            m = units.numel()
            if pre is not None:
                assert isinstance(runner, ChainRunner)
                hu = coords[:, units].transpose(0, 1).contiguous()  # (m, b, *spatial)
                d = -hu if fill is None else fill[units].view(m, 1, *([1] * (hu.ndim - 2))) - hu
                z = chain.add_contrib(pre, d, units)
                z = z.view(m * b, *z.shape[2:])
                for op in runner.ops[chain.end :]:
                    z = op(z)
                logits = z
            else:
                masks = torch.zeros(m, n, dtype=torch.bool, device=site_setup.device)
                masks[torch.arange(m, device=site_setup.device), units] = True
                logits = runner.suffix(h, m, mask_edit([spec], masks, [fill]))
            c, s, pc = score_per_class(logits.view(m, b, -1), y, n_classes)
            correct[a : a + m] += c
            loss[a : a + m] += s
            per_class[a : a + m] += pc
            bar.advance(task, m)
    return correct, loss, per_class


def _tail_importance(
    site_setup: Setup, tail: Any, fill: torch.Tensor | None, bar: Any, task: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each unit alone through an affine tail: one pass for the logits and the site's
    activity, then ``logits + (fill_u - r_u) w_u`` per unit (float64)."""
    spec = site_setup.specs[0]
    runner = site_setup.runner
    n = spec.n_units
    weight, fill_coords = tail_weight(tail, spec, fill)
    weight64, fill64 = weight.double(), fill_coords.double()
    correct = torch.zeros(n, dtype=torch.long)
    loss = torch.zeros(n, dtype=torch.float64)
    per_class = torch.zeros(n, site_setup.n_classes, dtype=torch.long)
    for x, y in site_setup.batches:
        captured: list[torch.Tensor] = []

        def keep(_k: int, out: torch.Tensor, captured: list[torch.Tensor] = captured) -> Any:
            captured.append(out)
            return out

        logits = runner.suffix(runner.prefix(x), 1, keep).double()  # (b, C)
        h = captured[0]
        r = h.mean(dim=tuple(range(2, h.ndim))) if h.ndim > 2 else h
        coords = to_coords(r.double(), None if spec.basis is None else spec.basis.double())
        step = max(1, TILE // max(1, x.shape[0] * site_setup.n_classes))
        for a in range(0, n, step):
            units = slice(a, min(n, a + step))
            delta = (fill64[units] - coords[:, units]).t().unsqueeze(-1)  # (m, b, 1)
            stacked = logits.unsqueeze(0) + delta * weight64[units].unsqueeze(1)  # (m, b, C)
            c, s, pc = score_per_class(stacked, y, site_setup.n_classes)
            correct[units] += c
            loss[units] += s
            per_class[units] += pc
            bar.advance(task, stacked.shape[0])
    return correct, loss, per_class
