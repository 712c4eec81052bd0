"""Cumulative ablation curves, their AUC, and single-unit importance (Morcos et al., 2018).

Ablating a unit replaces its output by a constant (0, the paper's choice, or the unit's mean
activity over the evaluated data) at every sample and, for conv units (channels), at every
spatial position. A *cumulative ablation curve* ablates units one after another along an
ordering (random, or by a score) and records accuracy and loss at every level.

How it is fast (and still exact up to float rounding):

- The network up to the first ablated site is computed once per batch and reused.
- Many masks go through one pass, stacked along the batch dimension.
- On flat ``nn.Sequential`` models (singledir's MLP and ConvNet11) where the sites feed an
  affine layer (Linear or conv, optional batch norm): with one site, the logits at every
  level are a cumulative sum of per-unit contributions; with two sites, each unit of the
  first site is a rank-1 (per-channel for conv) update of the second site's pre-activation,
  and each unit of the second site a rank-1 update of the logits, walked along all
  orderings at once (chosen when it is estimated to do less work than stacking one mask
  per level, i.e. unless there are few levels). When site 1 feeds a Linear layer and site 2
  is a plain ReLU, orderings are walked one at a time with site 2's units sorted by ablation
  order, so the updates only touch the still-kept units (a shrinking suffix). On CPU,
  sample chunks of the walk run on a thread pool with single-threaded torch ops.
  Single-unit importance uses the same per-unit updates: the next pre-activation plus one
  rank-1 / per-channel term per unit.
- Anything else (other models, three or more sites) runs the stacked masks through the
  cached suffix (``torch.fx`` cut or Sequential slice) or, when the model cannot be cut,
  full forward passes with hooks.

Every path is tested against a naive reference (one full forward pass per mask with a
forward hook).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from singledir._engine import (
    Chain,
    Runner,
    SequentialRunner,
    Setup,
    chunk_count,
    make_runner,
    memory_budget_bytes,
    parse_chain,
    prepared,
    score,
    score_mcb,
    score_per_class,
    seed_for,
    setup,
    unit_fill,
    unit_moments,
)
from singledir.devices import resolve_device
from singledir.errors import InputError
from singledir.progress import make_progress
from singledir.sites import SiteSpec

__all__ = [
    "ablation_curves",
    "summarize_curves",
    "ablation_auc",
    "unit_importance",
    "unit_orderings",
    "ablation_levels",
]

_TILE = 1 << 20  # elements per dense op of the incremental walk (keeps it in cache)


# ------------------------------------------------------------------------------ orderings
def ablation_levels(levels: int | str | Sequence[int], n_units: int) -> np.ndarray:
    """Ablation counts to evaluate: ``"all"`` = 0..N; an int k = k evenly spaced counts
    from 0 to N (rounded, always including 0 and N); or an explicit list of counts."""
    if isinstance(levels, str):
        if levels.strip().lower() == "all":
            return np.arange(n_units + 1, dtype=np.int64)
        try:
            levels = int(levels)
        except ValueError:
            raise InputError(f"--levels must be 'all' or a number, got {levels!r}") from None
    if isinstance(levels, int | np.integer):
        k = int(levels)
        if k < 2:
            raise InputError(f"--levels {k} is too few: use at least 2 (0 and all units) or all")
        if k > n_units + 1:
            raise InputError(
                f"--levels {k} exceeds the {n_units + 1} possible counts (0..{n_units} units): "
                f"use at most {n_units + 1} or all"
            )
        return np.unique(np.round(np.linspace(0, n_units, k)).astype(np.int64))
    arr = np.unique(np.asarray(list(levels), dtype=np.int64))
    if arr.size == 0 or arr.min() < 0 or arr.max() > n_units:
        raise InputError(f"ablation levels must lie in 0..{n_units}: fix the list of counts")
    return arr


def _pooled_scores(scores: Any, specs: Sequence[SiteSpec]) -> np.ndarray:
    n = sum(s.n_units for s in specs)
    if isinstance(scores, Mapping):
        parts = []
        for s in specs:
            if s.name not in scores:
                raise InputError(f"scores lack site {s.name!r}: give one array per chosen site")
            parts.append(np.asarray(scores[s.name], dtype=np.float64).reshape(-1))
            if parts[-1].size != s.n_units:
                raise InputError(
                    f"scores for {s.name!r} have {parts[-1].size} values but the site has "
                    f"{s.n_units} units: pass one score per unit"
                )
        arr = np.concatenate(parts)
    else:
        if isinstance(scores, torch.Tensor):
            scores = scores.detach().cpu().numpy()
        arr = np.asarray(scores, dtype=np.float64).reshape(-1)
        if arr.size != n:
            raise InputError(
                f"{arr.size} scores for {n} pooled units: pass one score per unit of the "
                "chosen sites (in forward order)"
            )
    if not np.all(np.isfinite(arr)):
        raise InputError("scores contain NaN or infinity: pass finite per-unit scores")
    return arr


def unit_orderings(
    n_units: int,
    *,
    orderings: int = 10,
    order: str = "random",
    scores: np.ndarray | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Orderings of the pooled units, shape ``(n_orderings, n_units)`` (int64).

    ``order="random"``: ordering ``o`` is ``torch.randperm(n_units)`` drawn from a
    ``torch.Generator`` seeded with :func:`singledir._engine.seed_for` ``(seed, o)``, so each
    ordering reproduces on its own. ``"ascending"``/``"descending"``: units sorted by
    ``scores`` (stable: ties keep unit order); one ordering.
    """
    if order == "random":
        if orderings < 1:
            raise InputError(f"--orderings must be >= 1, got {orderings}")
        out = torch.empty(orderings, n_units, dtype=torch.long)
        for o in range(orderings):
            g = torch.Generator().manual_seed(seed_for(seed, o))
            out[o] = torch.randperm(n_units, generator=g)
        return out
    if order in ("ascending", "descending"):
        if scores is None:
            raise InputError(f"--order {order} needs per-unit scores: pass scores or a column")
        key = scores if order == "ascending" else -scores
        return torch.as_tensor(np.argsort(key, kind="stable"), dtype=torch.long).view(1, -1)
    raise InputError(f"unknown order {order!r}: choose random, ascending or descending")


# ----------------------------------------------------------------------- generic engine
def _mask_edit(
    specs: Sequence[SiteSpec], masks: torch.Tensor, fills: list[torch.Tensor | None]
) -> Any:
    """An edit that ablates, for stacked mask m, the units where ``masks[m]`` is True."""
    m_count = masks.shape[0]

    def edit(k: int, out: torch.Tensor) -> torch.Tensor:
        spec = specs[k]
        seg = masks[:, spec.offset : spec.offset + spec.n_units]
        if not bool(seg.any()):
            return out
        view = out.view(m_count, -1, *out.shape[1:])
        extra = [1] * (out.ndim - 2)
        mk = seg.view(m_count, 1, spec.n_units, *extra)
        fill = fills[k]
        f = (
            torch.zeros((), dtype=out.dtype, device=out.device)
            if fill is None
            else fill.view(1, 1, spec.n_units, *extra)
        )
        return torch.where(mk, f, view).view(out.shape)

    return edit


def _generic_curves(
    st: Setup,
    runner: Runner,
    ranks: torch.Tensor,
    levels: np.ndarray,
    fills: list[torch.Tensor | None],
    budget: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    n_ord = ranks.shape[0]
    jobs_o = torch.arange(n_ord).repeat_interleave(len(levels))
    jobs_l = torch.as_tensor(levels).repeat(n_ord)
    n_jobs = int(jobs_o.numel())
    correct = torch.zeros(n_jobs, dtype=torch.long)
    loss = torch.zeros(n_jobs, dtype=torch.float64)
    ranks_d = ranks.to(st.device)
    n_batches = -(-st.batches.count() // st.batches.batch_size)
    with make_progress(quiet=None if progress else True) as bar:
        task = bar.add_task(
            "ablation curves",
            total=n_batches * n_jobs,
            status=f"{n_ord} orderings x {len(levels)} levels, stacked masks",
        )
        for x, y in st.batches:
            state = runner.prefix(x)
            per_mask = max(1, x.shape[0]) * st.row_bytes * 2
            chunk = chunk_count(budget, per_mask, n_jobs)
            for a in range(0, n_jobs, chunk):
                b = min(n_jobs, a + chunk)
                o = jobs_o[a:b].to(st.device)
                lv = jobs_l[a:b].to(st.device)
                masks = ranks_d[o] <= lv.unsqueeze(1)
                logits = runner.suffix(state, b - a, _mask_edit(st.specs, masks, fills))
                c, s = score(logits.view(b - a, x.shape[0], -1), y)
                correct[a:b] += c
                loss[a:b] += s
                bar.advance(task, b - a)
    return correct.view(n_ord, -1), loss.view(n_ord, -1)


# --------------------------------------------------------------------------- fast paths
def _tail_affine(
    children: Sequence[nn.Module], chain: Chain, spec: SiteSpec, fill: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For an affine tail (site -> logits): weight ``(units, classes)`` acting on the
    (spatially averaged) unit activity, the bias ``(classes,)`` and the fill value in that
    reduced space ``(units,)``."""
    wt = chain.weight_cols(torch.arange(spec.n_units, device=chain.layer.weight.device))
    zero = torch.zeros(1, *spec.shape, dtype=wt.dtype, device=wt.device)
    bias = chain.run(children, zero)[0]
    fill_r = torch.zeros(spec.n_units, dtype=wt.dtype, device=wt.device) if fill is None else fill
    return wt, bias, fill_r


def _reduce(h: torch.Tensor, n_lead: int) -> torch.Tensor:
    """Average over spatial dims (everything after the unit dim at ``n_lead``)."""
    if h.ndim > n_lead + 1:
        return h.mean(dim=tuple(range(n_lead + 1, h.ndim)))
    return h


def _fast_one_site(
    st: Setup,
    runner: SequentialRunner,
    tail: Chain,
    orders: torch.Tensor,
    levels: np.ndarray,
    fills: list[torch.Tensor | None],
    budget: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One site feeding an affine tail: logits(level) = logits(0) + cumulative sum of the
    per-unit contributions taken in ordering order (float64 accumulation)."""
    spec = st.specs[0]
    n_ord, n = orders.shape
    wt, bias, fill_r = _tail_affine(runner.children, tail, spec, fills[0])
    n_cls = wt.shape[1]
    lv = torch.as_tensor(levels, device=st.device)
    orders_d = orders.to(st.device)
    wt64, bias64, fill64 = wt.double(), bias.double(), fill_r.double()

    def work(h: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        correct = torch.zeros(n_ord, len(levels), dtype=torch.long)
        loss = torch.zeros(n_ord, len(levels), dtype=torch.float64)
        r = _reduce(h, 1).double()  # (b, n)
        logits0 = r @ wt64 + bias64
        contrib = (fill64 - r).unsqueeze(-1) * wt64  # (b, n, C)
        for o in range(n_ord):
            cs = torch.cumsum(contrib[:, orders_d[o]], dim=1)  # (b, n, C)
            cs = torch.cat([torch.zeros_like(cs[:, :1]), cs], dim=1)
            lg = (logits0.unsqueeze(1) + cs[:, lv]).transpose(0, 1)
            c, s = score(lg, yb)
            correct[o] += c
            loss[o] += s
        return correct, loss

    per_sample = 8.0 * (n + 1) * n_cls * 3 * _workers(st.device)
    b_chunk = chunk_count(budget, per_sample, 256)
    return _run_chunks(st, runner, work, b_chunk, n_ord, len(levels), progress)


def _fast_two_sites(
    st: Setup,
    runner: SequentialRunner,
    chain1: Chain,
    tail: Chain,
    orders: torch.Tensor,
    levels: np.ndarray,
    fills: list[torch.Tensor | None],
    budget: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sites, the first feeding an affine layer before the second, the second feeding an
    affine tail. Walk all orderings at once along the events 'one more unit of site 1':
    each is a rank-1 (per-channel) update of site 2's pre-activation, after which site 2's
    activity and the logits at the segment start are recomputed densely; within a segment,
    each ablated site-2 unit is a rank-1 update of the logits."""
    children = runner.children
    s1, s2 = st.specs
    n1 = s1.n_units
    n_ord, n = orders.shape
    dev = st.device
    p2 = runner.site_pos[1]
    mid = children[chain1.end : p2 + 1]
    relu_mid = len(mid) == 1 and isinstance(mid[0], nn.ReLU)
    wt, bias, fill_r2 = _tail_affine(children, tail, s2, fills[1])  # (n2, C), (C,), (n2,)
    wt_t = wt.t().contiguous()  # (C, n2)
    n_cls = wt.shape[1]

    # ordering bookkeeping: levels, segments ('site-1 count'), site-2 steps
    is1 = orders < n1  # (O, N): step i+1 ablates a site-1 unit
    seq1 = torch.stack([orders[o][is1[o]] for o in range(n_ord)])  # (O, n1)
    pos1 = torch.stack([torch.nonzero(is1[o]).view(-1) + 1 for o in range(n_ord)])
    seg_start = torch.cat([torch.zeros(n_ord, 1, dtype=torch.long), pos1], 1)  # (O, n1+1)
    seg_of = torch.cat([torch.zeros(n_ord, 1, dtype=torch.long), torch.cumsum(is1.long(), 1)], 1)
    pos_in_seg = torch.arange(n + 1).expand(n_ord, n + 1) - seg_start.gather(1, seg_of)
    ranks = torch.empty_like(orders)
    ranks.scatter_(1, orders, torch.arange(1, n + 1).expand(n_ord, n).contiguous())
    m2 = ranks[:, n1:].unsqueeze(1) <= seg_start.unsqueeze(2)  # (O, n1+1, n2) ablated at start
    keep = (~m2).to(dev, st.dtype)
    fill_bias = bias + ((1 - keep) * fill_r2) @ wt  # (O, n1+1, C)
    k_of_level = torch.zeros(n_ord, n + 1, dtype=torch.long)
    k_of_level[:, 1:] = torch.where(is1, 0, orders - n1)
    linear1 = isinstance(chain1.layer, nn.Linear)
    seq1_d = seq1.to(dev)
    lv = torch.as_tensor(levels, device=dev)

    pre_numel = int(np.prod(_chain_out_shape(children, chain1, s1, dev, st.dtype)))
    o_grp = max(1, min(n_ord, _TILE // (8 * pre_numel)))
    groups = []
    for g0 in range(0, n_ord, o_grp):
        g1 = min(n_ord, g0 + o_grp)
        o_idx, i_idx = torch.nonzero(~is1[g0:g1], as_tuple=True)  # site-2 steps
        e_idx = seg_of[g0 + o_idx, i_idx + 1]
        sort = torch.argsort(e_idx, stable=True)
        o_idx, i_idx, e_idx = o_idx[sort], i_idx[sort], e_idx[sort]
        k_idx = orders[g0 + o_idx, i_idx] - n1
        bounds = torch.searchsorted(e_idx, torch.arange(n1 + 2)).tolist()
        wc = None
        if linear1:  # weight columns of each event's unit, contiguous per event
            wc = chain1.weight_cols(seq1_d[g0:g1].t().reshape(-1)).view(n1, g1 - g0, -1)
        per_level = []
        for o in range(g0, g1):
            steps = [
                torch.nonzero(pos_in_seg[o] == p).view(-1).to(dev)
                for p in range(1, int(pos_in_seg[o].max()) + 1)
            ]
            per_level.append((steps, k_of_level[o].to(dev), seg_of[o].to(dev)))
        groups.append(
            (g0, g1, o_idx.to(dev), (i_idx + 1).to(dev), k_idx.to(dev), bounds, wc, per_level)
        )

    fill1 = fills[0]
    if linear1 and relu_mid and len(s2.shape) == 1:
        return _fast_two_linear(
            st, runner, chain1, wt, fill_r2, fill_bias, orders, levels, fill1, budget, progress
        )

    def work(h1: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct counts and loss sums ``(O, L)`` for one chunk of samples."""
        correct = torch.zeros(n_ord, len(levels), dtype=torch.long)
        loss = torch.zeros(n_ord, len(levels), dtype=torch.float64)
        b = h1.shape[0]
        pre0 = chain1.run(children, h1)
        d1 = (-h1 if fill1 is None else _fill_view(fill1, h1) - h1).transpose(0, 1)
        if linear1 and d1.ndim > 2:  # a Linear chain sees the spatial mean
            d1 = _reduce(d1, 1)
        d1 = d1.contiguous()  # (n1, b, *spatial)
        for g0, g1, o_idx, l_idx, k_idx, bounds, wc, per_level in groups:
            og = g1 - g0
            pre = pre0.unsqueeze(0).repeat(og, *([1] * pre0.ndim))
            vals = torch.empty(int(o_idx.numel()), b, dtype=st.dtype, device=dev)
            starts = torch.empty(n1 + 1, og, n_cls, b, dtype=st.dtype, device=dev)
            hbuf = torch.empty_like(pre) if relu_mid else None
            for e in range(n1 + 1):
                if relu_mid:
                    h2 = torch.clamp_min(pre, 0, out=hbuf)
                else:
                    flat = pre.reshape(og * b, *pre.shape[2:]).clone()  # mid may be in-place
                    for m in mid:
                        flat = m(flat)
                    h2 = flat.view(og, b, *flat.shape[1:])
                r2 = _reduce(h2, 2)  # (og, b, n2)
                lo, hi = bounds[e], bounds[e + 1]
                if hi > lo:  # site-2 activity at this segment's site-2 steps
                    vals[lo:hi] = r2[o_idx[lo:hi], :, k_idx[lo:hi]]
                wk = wt_t.unsqueeze(0) * keep[g0:g1, e].unsqueeze(1)  # (og, C, n2)
                torch.baddbmm(
                    fill_bias[g0:g1, e].unsqueeze(2), wk, r2.transpose(1, 2), out=starts[e]
                )
                if e < n1:  # one more site-1 unit: rank-1 / per-channel update
                    if wc is not None:
                        dcol = d1[seq1_d[g0:g1, e]]  # (og, b)
                        pre.addcmul_(dcol.unsqueeze(-1), wc[e].unsqueeze(1))
                    else:
                        units = seq1_d[g0:g1, e]
                        pre += chain1.contrib(d1[units], units)
            gvals = torch.zeros(og, n + 1, b, dtype=st.dtype, device=dev)
            gvals[o_idx, l_idx] = fill_r2[k_idx].unsqueeze(1) - vals
            for oi in range(og):
                steps, k_lv, seg_lv = per_level[oi]
                lg = starts[seg_lv, oi]  # (N+1, C, b): segment-start logits
                contrib = wt[k_lv].unsqueeze(2) * gvals[oi].unsqueeze(1)
                for idx in steps:  # levels p steps into a segment add step p
                    lg[idx] = lg[idx - 1] + contrib[idx]
                c, s = score_mcb(lg[lv], yb)
                correct[g0 + oi] += c
                loss[g0 + oi] += s
        return correct, loss

    b_chunk = max(8, _TILE // (o_grp * pre_numel))
    per_sample = o_grp * ((n1 + 1) * n_cls + (n + 1) * (n_cls + 1)) * 4 + pre_numel * 16
    b_chunk = max(1, min(b_chunk, budget // (per_sample * _workers(dev))))
    return _run_chunks(st, runner, work, b_chunk, n_ord, len(levels), progress)


def _fast_two_linear(
    st: Setup,
    runner: SequentialRunner,
    chain1: Chain,
    wt: torch.Tensor,
    fill_r2: torch.Tensor,
    fill_bias: torch.Tensor,
    orders: torch.Tensor,
    levels: np.ndarray,
    fill1: torch.Tensor | None,
    budget: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-site walk when site 1 feeds a Linear chain and site 2 is a plain ReLU: one
    ordering at a time, with site 2's units permuted into their ablation order and its
    pre-activation stored transposed ``(n2, b)``. An ablated site-2 unit's output is a
    constant from then on, so at segment ``e`` only the still-kept units (a contiguous
    suffix of rows) are updated, rectified and multiplied into the logits; the rectified
    rows left behind hold exactly the site-2 values of the segment's rank-1 logit steps."""
    children = runner.children
    n1 = st.specs[0].n_units
    n_ord, n = orders.shape
    n2, n_cls = wt.shape
    dev, dt = st.device, st.dtype
    lv = torch.as_tensor(levels, device=dev)
    plans = []
    for o in range(n_ord):
        order = orders[o]
        is1 = order < n1
        seq1 = order[is1]
        seg_start = torch.cat([torch.zeros(1, dtype=torch.long), torch.nonzero(is1).view(-1) + 1])
        seg_of = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(is1.long(), 0)])
        pos_in_seg = torch.arange(n + 1) - seg_start[seg_of]
        rank = torch.empty(n, dtype=torch.long)
        rank[order] = torch.arange(1, n + 1)
        rank2 = rank[n1:]
        perm2 = torch.argsort(rank2)  # site-2 units in ablation order
        # site-2 units ablated by each segment's start: a prefix of perm2
        cut = torch.searchsorted(rank2[perm2], seg_start, right=True).tolist() + [n2]
        perm2_d = perm2.to(dev)
        wcs = chain1.weight_cols(seq1.to(dev))[:, perm2_d].contiguous()  # (n1, n2)
        w_out = wt.t()[:, perm2_d].contiguous()  # (C, n2)
        events = [
            (
                int(seg_start[e]),
                cut[e],
                cut[e + 1],
                fill_bias[o, e].unsqueeze(1),
                w_out[:, cut[e] :],
                wcs[e, cut[e + 1] :].unsqueeze(1) if e < n1 and cut[e + 1] < n2 else None,
            )
            for e in range(n1 + 1)
        ]
        # levels p steps into a segment: (level, level - 1, sorted site-2 unit ablated)
        step2 = torch.full((n + 1,), -1, dtype=torch.long)
        step2[1:][~is1] = torch.arange(n2)
        steps = []
        for p in range(1, int(pos_in_seg.max()) + 1):
            idx = torch.nonzero(pos_in_seg == p).view(-1)
            steps.append((idx.to(dev), (idx - 1).to(dev), step2[idx].to(dev)))
        plans.append(
            (
                perm2_d,
                seq1.to(dev),
                events,
                wt[perm2_d].unsqueeze(2),  # (n2, C, 1)
                fill_r2[perm2_d].unsqueeze(1),  # (n2, 1)
                steps,
            )
        )
    all_levels = len(levels) == n + 1 and bool(np.array_equal(levels, np.arange(n + 1)))

    def work(h1: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct counts and loss sums ``(O, L)`` for one chunk of samples."""
        correct = torch.zeros(n_ord, len(levels), dtype=torch.long)
        loss = torch.zeros(n_ord, len(levels), dtype=torch.float64)
        b = h1.shape[0]
        pre0 = chain1.run(children, h1)  # (b, n2)
        d1 = (-h1 if fill1 is None else _fill_view(fill1, h1) - h1).transpose(0, 1)
        if d1.ndim > 2:  # a Linear chain sees the spatial mean
            d1 = _reduce(d1, 1)
        d1 = d1.contiguous()  # (n1, b)
        pre_t = torch.empty(n2, b, dtype=dt, device=dev)
        h2_t = torch.empty(n2, b, dtype=dt, device=dev)
        lg = torch.empty(n + 1, n_cls, b, dtype=dt, device=dev)  # (N+1, C, b) logits
        for o, (perm2_d, seq1_d, events, wt_s, fill_s, steps) in enumerate(plans):
            pre_t.copy_(pre0.index_select(1, perm2_d).t())
            d1s = d1.index_select(0, seq1_d)  # (n1, b): event e's input change
            for e, (start, lo, hi, fb, w_out_e, wcol) in enumerate(events):
                h2 = torch.clamp_min(pre_t[lo:], 0, out=h2_t[lo:])
                torch.addmm(fb, w_out_e, h2, out=lg[start])  # the segment's first level
                if wcol is not None:  # one more site-1 unit: rank-1 update of the kept rows
                    pre_t[hi:].addcmul_(wcol, d1s[e].unsqueeze(0))
            # h2_t now holds each site-2 unit's activity at the start of its segment
            contrib = wt_s * (fill_s - h2_t).unsqueeze(1)  # (n2, C, b) per site-2 step
            for idx, prev, unit in steps:  # levels p steps into a segment add step p
                lg.index_copy_(0, idx, lg.index_select(0, prev) + contrib.index_select(0, unit))
            c, s = _score_first_max(lg if all_levels else lg[lv], yb)
            correct[o] += c
            loss[o] += s
        return correct, loss

    n_lv = n + 1
    b_chunk = max(8, (1 << 17) // max(1, n2))  # ~0.5 MB per dense op
    per_sample = (2 * n_lv * n_cls + 3 * n2 * n_cls + 4 * n2) * 4
    b_chunk = max(1, min(b_chunk, budget // (per_sample * _workers(dev))))
    return _run_chunks(st, runner, work, b_chunk, n_ord, len(levels), progress, balance=True)


def _score_first_max(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`score_mcb` in fewer passes: one ``max`` gives the maximum and its first
    index; a sample is correct when that index is its label and the label's logit is the
    maximum (false for NaN logits, as in :func:`score_mcb`)."""
    m, _, b = logits.shape
    mx, first = logits.max(1)  # (M, B)
    picked = logits.gather(1, y.view(1, 1, b).expand(m, 1, b)).squeeze(1)
    hit = (first == y.view(1, b)) & (picked == mx)
    lse = mx + torch.log(torch.exp(logits - mx.unsqueeze(1)).sum(1))
    return hit.sum(1).long().cpu(), (lse - picked).double().sum(1).cpu()


def _no_grad_call(fn: Any, args: tuple[Any, ...]) -> Any:
    with torch.no_grad():  # grad mode is per thread
        return fn(*args)


def _workers(dev: torch.device) -> int:
    return 1 if dev.type != "cpu" else max(1, torch.get_num_threads())


def _run_chunks(
    st: Setup,
    runner: Runner,
    work: Any,
    b_chunk: int,
    n_ord: int,
    n_levels: int,
    progress: bool,
    balance: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``work(site_output_chunk, labels_chunk)`` over sample chunks of every batch and
    sum the results (with ``balance``, chunks of at most ``b_chunk`` samples, as equal as
    possible and as many as a multiple of the workers). On CPU the chunks go to a pool of
    threads, each running single-threaded torch ops: the incremental walk is made of many
    small ops, and independent chunks scale across cores without the per-op synchronization
    of intra-op threads (which collapses on a busy machine)."""
    from concurrent.futures import ThreadPoolExecutor

    correct = torch.zeros(n_ord, n_levels, dtype=torch.long)
    loss = torch.zeros(n_ord, n_levels, dtype=torch.float64)
    n_batches = -(-st.batches.count() // st.batches.batch_size)
    workers = _workers(st.device)
    threads = torch.get_num_threads()
    with make_progress(quiet=None if progress else True) as bar:
        task = bar.add_task(
            "ablation curves",
            total=n_batches,
            status=f"{n_ord} orderings x {n_levels} levels, incremental, {workers} thread(s)",
        )
        pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        try:
            if pool is not None:
                torch.set_num_threads(1)
            for x, y in st.batches:
                h_all = runner.prefix(x)
                step = b_chunk
                if balance:
                    n_chunks = -(-x.shape[0] // b_chunk)
                    n_chunks = -(-n_chunks // workers) * workers
                    step = max(1, -(-x.shape[0] // n_chunks))
                jobs = [(h_all[a : a + step], y[a : a + step]) for a in range(0, x.shape[0], step)]
                if pool is None:
                    results = [work(h, yb) for h, yb in jobs]
                else:
                    results = list(pool.map(lambda job: _no_grad_call(work, job), jobs))
                for c, s in results:
                    correct += c
                    loss += s
                bar.advance(task, 1)
        finally:
            if pool is not None:
                pool.shutdown()
                torch.set_num_threads(threads)
    return correct, loss


def _fill_view(fill: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return fill.view(1, -1, *([1] * (h.ndim - 2)))


def _chain_out_shape(
    children: Sequence[nn.Module], chain: Chain, spec: SiteSpec, dev: torch.device, dtype: Any
) -> tuple[int, ...]:
    """Per-sample shape of a chain's output."""
    with torch.no_grad():
        out = chain.run(children, torch.zeros(1, *spec.shape, device=dev, dtype=dtype))
    return tuple(int(v) for v in out.shape[1:])


def _fast_plan(
    runner: Runner, st: Setup, n_levels: int | None = None
) -> tuple[str, Chain | None, Chain | None] | None:
    """Which incremental path applies: ('one', tail) or ('two', chain1, tail); with
    ``n_levels``, the walk is only chosen when it is estimated to do less work."""
    if not isinstance(runner, SequentialRunner) or len(st.specs) > 2:
        return None
    children = runner.children
    last = runner.site_pos[-1]
    tail = parse_chain(children, last, len(st.specs[-1].shape) + 1)
    if tail is None or tail.end != len(children):
        return None
    if len(st.specs) == 1:
        return ("one", None, tail)
    chain1 = parse_chain(children, runner.site_pos[0], len(st.specs[0].shape) + 1)
    if chain1 is None or chain1.end > last:
        return None
    if any(
        not isinstance(m, nn.ReLU | nn.Identity | nn.Dropout)
        for m in children[chain1.end : last + 1]
    ):
        return None
    if n_levels is not None and _walk_cost(st, chain1) > n_levels * _stacked_cost(st, chain1):
        return None  # few levels: stacking the masks does less work than walking every event
    return ("two", chain1, tail)


def _layer_macs(layer: nn.Linear | nn.Conv2d, out_numel: int) -> int:
    """Multiply-adds per sample of a Linear / conv layer producing ``out_numel`` values."""
    w = layer.weight
    return int(out_numel * (w.numel() // w.shape[0]))


def _walk_cost(st: Setup, chain1: Chain) -> float:
    """Rough per-sample, per-ordering work of the two-site walk (element operations)."""
    s1, s2 = st.specs
    pre = s2.n_units * int(np.prod(s2.shape[1:]))
    per_unit_update = pre * (1 if isinstance(chain1.layer, nn.Linear) else 9)
    return (s1.n_units + 1) * (4 * pre + 2 * s2.n_units * st.n_classes + per_unit_update)


def _stacked_cost(st: Setup, chain1: Chain) -> float:
    """Rough per-sample work of one stacked mask through the suffix (element operations)."""
    s2 = st.specs[1]
    pre = s2.n_units * int(np.prod(s2.shape[1:]))
    return 2 * _layer_macs(chain1.layer, pre) + 4 * pre + 2 * s2.n_units * st.n_classes


# ------------------------------------------------------------------------------- public
def ablation_curves(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str] = "all",
    *,
    orderings: int = 10,
    levels: int | str | Sequence[int] = "all",
    order: str = "random",
    scores: Any = None,
    value: str = "zero",
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    memory_budget_mb: float | None = None,
    progress: bool = True,
    method: str = "auto",
) -> pl.DataFrame:
    """Cumulative ablation curves: accuracy and loss as units are ablated one by one.

    The units of all chosen sites are pooled into one index (sites concatenated in forward
    order; a conv site's units are its channels) and ablated cumulatively along each
    ordering; at ablation level ``n`` the first ``n`` units of the ordering are ablated.

    Parameters
    ----------
    model:
        Any ``nn.Module`` returning ``(batch, classes)`` logits; evaluated in eval mode on
        ``device`` (its mode and device are restored afterwards).
    data:
        ``(x, y)`` tensors, an object with ``.x``/``.y`` tensors (``LabeledData``) or
        ``.loader(batch_size)``, a torch ``Dataset`` or a ``DataLoader``.
    layers:
        ``"all"``, ``"lastN"``, comma-separated module names or a list of names.
    orderings:
        Number of random orderings (``order="random"``; score orders use one).
    levels:
        ``"all"`` (every count 0..N), an int k (k evenly spaced counts including 0 and N),
        or an explicit list of counts.
    order:
        ``"random"`` (ordering ``o`` is a permutation drawn from a generator seeded by
        ``(seed, o)``), ``"ascending"`` or ``"descending"`` by ``scores`` (stable ties).
    scores:
        Per-unit scores for score orders: a 1-D array over the pooled units or a dict
        ``site -> array``.
    value:
        ``"zero"`` (clamp the unit to 0, the paper's) or ``"mean"`` (its mean activity over
        the evaluated data, over samples and spatial positions).
    seed, batch_size, device, memory_budget_mb, progress:
        Seed of the orderings (recorded in the output); samples per batch; ``"cpu"``/
        ``"cuda"`` (default: CUDA when available); memory for stacked masks (default 1 GiB
        on CPU, half the free memory on CUDA); rich progress bar on/off.
    method:
        ``"auto"`` (fastest exact path), ``"stacked"`` (cached prefix + stacked masks only)
        or ``"hooks"`` (full forward passes with hooks, stacked masks): for testing.

    Returns
    -------
    polars.DataFrame
        One row per (ordering, level): ``ordering``, ``n_ablated``, ``fraction_ablated``
        (``n_ablated / N``), ``accuracy``, ``loss`` (mean cross-entropy), ``seed``.
    """
    dev = resolve_device(device)
    with prepared(model, dev) as dtype, torch.no_grad():
        st = setup(model, data, layers, batch_size, dev, dtype)
        lv = ablation_levels(levels, st.n_units)
        if order not in ("random", "ascending", "descending"):
            raise InputError(f"unknown order {order!r}: choose random, ascending or descending")
        if order != "random" and scores is None:
            raise InputError(f"--order {order} needs per-unit scores: pass scores")
        sc = _pooled_scores(scores, st.specs) if order != "random" else None
        orders = unit_orderings(st.n_units, orderings=orderings, order=order, scores=sc, seed=seed)
        runner = make_runner(model, st.sites, st.batches.sample_x, method)
        means = unit_moments(st, runner)[0] if value == "mean" else None
        fills = unit_fill(st.specs, means, value)
        budget = memory_budget_bytes(memory_budget_mb, dev)
        plan = _fast_plan(runner, st, len(lv)) if method == "auto" else None
        if plan is not None and plan[0] == "one":
            assert isinstance(runner, SequentialRunner) and plan[2] is not None
            correct, loss = _fast_one_site(st, runner, plan[2], orders, lv, fills, budget, progress)
        elif plan is not None:
            assert isinstance(runner, SequentialRunner) and plan[1] is not None
            assert plan[2] is not None
            correct, loss = _fast_two_sites(
                st, runner, plan[1], plan[2], orders, lv, fills, budget, progress
            )
        else:
            ranks = torch.empty_like(orders)
            n_ord, n = orders.shape
            ranks.scatter_(1, orders, torch.arange(1, n + 1).expand(n_ord, n).contiguous())
            correct, loss = _generic_curves(st, runner, ranks, lv, fills, budget, progress)
        n_samples = st.batches.count()
    n_ord = orders.shape[0]
    return pl.DataFrame(
        {
            "ordering": np.repeat(np.arange(n_ord, dtype=np.int64), len(lv)),
            "n_ablated": np.tile(lv, n_ord).astype(np.int64),
            "fraction_ablated": np.tile(lv / max(st.n_units, 1), n_ord).astype(np.float64),
            "accuracy": (correct.double() / n_samples).reshape(-1).numpy(),
            "loss": (loss / n_samples).reshape(-1).numpy(),
            "seed": np.full(n_ord * len(lv), int(seed), dtype=np.int64),
        }
    )


def summarize_curves(df: pl.DataFrame) -> pl.DataFrame:
    """Per ablation level: ``n_ablated``, ``fraction_ablated``, ``accuracy_mean``,
    ``accuracy_std``, ``loss_mean``, ``loss_std`` (std across orderings, ddof=0; 0 for a
    single ordering), sorted by ``n_ablated``."""
    _check_curves(df)
    return (
        df.group_by("n_ablated")
        .agg(
            pl.col("fraction_ablated").first(),
            pl.col("accuracy").mean().alias("accuracy_mean"),
            pl.col("accuracy").std(ddof=0).fill_null(0.0).alias("accuracy_std"),
            pl.col("loss").mean().alias("loss_mean"),
            pl.col("loss").std(ddof=0).fill_null(0.0).alias("loss_std"),
        )
        .sort("n_ablated")
    )


def _check_curves(df: pl.DataFrame) -> None:
    need = {"ordering", "n_ablated", "fraction_ablated", "accuracy"}
    missing = need - set(df.columns)
    if missing:
        raise InputError(
            f"curves table lacks columns {sorted(missing)}: pass the output of ablation_curves"
        )
    if df.height == 0:
        raise InputError("curves table is empty: pass the output of ablation_curves")


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def ablation_auc(
    df: pl.DataFrame, *, per_ordering: bool = False, relative: bool = False
) -> float | pl.DataFrame:
    """Normalized area under the cumulative ablation curve.

    Definition: for each ordering, sort its rows by ``fraction_ablated`` x and take the
    trapezoid-rule area under accuracy y(x); the x range is [0, 1] when the levels include
    0 and all units (``levels="all"`` or an int), so the area is already normalized (an
    unablatable network with accuracy 1 scores 1). Rows covering only part of [0, 1] are
    divided by their x span. ``relative=True`` divides each ordering's area by its
    unablated (x = 0, else smallest x) accuracy. The result is the mean over orderings, or
    with ``per_ordering=True`` a DataFrame ``ordering``, ``auc``.
    """
    _check_curves(df)
    rows = []
    for (o,), part in df.sort("fraction_ablated").group_by(["ordering"], maintain_order=True):
        x = part["fraction_ablated"].to_numpy().astype(np.float64)
        y = part["accuracy"].to_numpy().astype(np.float64)
        span = float(x[-1] - x[0])
        area = _trapezoid(x, y) / span if span > 0 else float(y[0])
        if relative:
            area = area / y[0] if y[0] > 0 else float("nan")
        rows.append((int(o), area))
    rows.sort()
    if per_ordering:
        return pl.DataFrame(
            {"ordering": [r[0] for r in rows], "auc": [r[1] for r in rows]},
            schema={"ordering": pl.Int64, "auc": pl.Float64},
        )
    return float(np.mean([r[1] for r in rows]))


# ---------------------------------------------------------------------------- importance
def _importance_site(
    st: Setup,
    spec: SiteSpec,
    runner: Runner,
    fill: torch.Tensor | None,
    budget: int,
    bar: Any,
    task: Any,
    incremental: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = spec.n_units
    correct = torch.zeros(n, dtype=torch.long)
    loss = torch.zeros(n, dtype=torch.float64)
    per_class = torch.zeros(n, st.n_classes, dtype=torch.long)
    chain = None
    spec = dataclasses.replace(spec, offset=0)  # masks below index this site's units only
    if isinstance(runner, SequentialRunner) and incremental:
        chain = parse_chain(runner.children, runner.site_pos[0], len(spec.shape) + 1)
    units_all = torch.arange(n, device=st.device)
    for x, y in st.batches:
        b = x.shape[0]
        h = runner.prefix(x)
        chunk = chunk_count(budget, b * st.row_bytes * 2, n)
        pre = None
        if chain is not None and isinstance(runner, SequentialRunner):
            pre = chain.run(runner.children, h)
        if pre is not None:  # incremental path: keep each stacked tensor cache-sized
            chunk = min(chunk, max(1, 2 * _TILE // max(1, pre.numel())))
        for a in range(0, n, chunk):
            units = units_all[a : a + chunk]
            m = units.numel()
            if chain is not None and isinstance(runner, SequentialRunner):
                assert pre is not None
                hu = h[:, units].transpose(0, 1).contiguous()  # (m, b, *spatial)
                d = -hu if fill is None else fill[units].view(m, 1, *([1] * (hu.ndim - 2))) - hu
                z = chain.add_contrib(pre, d, units)
                z = z.view(m * b, *z.shape[2:])
                for mod in runner.children[chain.end :]:
                    z = mod(z)
                logits = z
            else:
                masks = torch.zeros(m, n, dtype=torch.bool, device=st.device)
                masks[torch.arange(m, device=st.device), units] = True
                logits = runner.suffix(h, m, _mask_edit([spec], masks, [fill]))
            c, s, pc = score_per_class(logits.view(m, b, -1), y, st.n_classes)
            correct[a : a + m] += c
            loss[a : a + m] += s
            per_class[a : a + m] += pc
            bar.advance(task, m)
    return correct, loss, per_class


def unit_importance(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str] = "all",
    *,
    value: str = "zero",
    per_class: bool = True,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    memory_budget_mb: float | None = None,
    progress: bool = True,
    method: str = "auto",
) -> pl.DataFrame:
    """Single-unit importance: the accuracy drop and loss rise when one unit alone is ablated.

    Returns one row per (layer, unit): ``layer``, ``unit``, ``base_accuracy``, ``accuracy``,
    ``accuracy_drop`` (base - ablated), ``base_loss``, ``loss``, ``loss_rise`` (ablated -
    base; losses are mean cross-entropy) and, with ``per_class``, ``accuracy_drop_class_{k}``
    for every class k of the model's output (accuracy over the samples labelled k; NaN when
    the data has none). ``value``, ``data`` and the other arguments are as in
    :func:`ablation_curves`.
    """
    dev = resolve_device(device)
    with prepared(model, dev) as dtype, torch.no_grad():
        st = setup(model, data, layers, batch_size, dev, dtype)
        budget = memory_budget_bytes(memory_budget_mb, dev)
        base_c = torch.zeros(1, dtype=torch.long)
        base_l = torch.zeros(1, dtype=torch.float64)
        base_pc = torch.zeros(1, st.n_classes, dtype=torch.long)
        class_n = torch.zeros(st.n_classes, dtype=torch.long)
        n_samples = 0
        for x, y in st.batches:
            c, s, pc = score_per_class(model(x).unsqueeze(0), y, st.n_classes)
            base_c += c
            base_l += s
            base_pc += pc
            class_n += torch.bincount(y.cpu(), minlength=st.n_classes)[: st.n_classes]
            n_samples += x.shape[0]
        frames = []
        with make_progress(quiet=None if progress else True) as bar:
            task = bar.add_task(
                "unit importance",
                total=st.n_units * -(-n_samples // st.batches.batch_size),
                status="",
            )
            for spec in st.specs:
                runner = make_runner(model, [spec.name], st.batches.sample_x, method)
                sub = Setup(**{**st.__dict__, "sites": [spec.name], "specs": [spec]})
                fill = None
                if value == "mean":
                    fill = unit_moments(sub, runner)[0][0]
                elif value != "zero":
                    raise InputError(f"unknown ablation value {value!r}: choose zero or mean")
                correct, loss, pcc = _importance_site(
                    sub, spec, runner, fill, budget, bar, task, method == "auto"
                )
                base_acc = float(base_c[0]) / n_samples
                base_loss = float(base_l[0]) / n_samples
                acc = correct.double().numpy() / n_samples
                lss = loss.numpy() / n_samples
                cols: dict[str, Any] = {
                    "layer": [spec.name] * spec.n_units,
                    "unit": np.arange(spec.n_units, dtype=np.int64),
                    "base_accuracy": np.full(spec.n_units, base_acc),
                    "accuracy": acc,
                    "accuracy_drop": base_acc - acc,
                    "base_loss": np.full(spec.n_units, base_loss),
                    "loss": lss,
                    "loss_rise": lss - base_loss,
                }
                if per_class:
                    cn = class_n.double().numpy()
                    with np.errstate(invalid="ignore", divide="ignore"):
                        base_k = np.where(cn > 0, base_pc[0].double().numpy() / cn, np.nan)
                        acc_k = np.where(cn > 0, pcc.double().numpy() / cn, np.nan)
                    for k in range(st.n_classes):
                        cols[f"accuracy_drop_class_{k}"] = base_k[k] - acc_k[:, k]
                frames.append(pl.DataFrame(cols))
    return pl.concat(frames)
