"""The incremental walk: exact ablation curves without a forward pass per mask.

- One site with an affine tail (``cumsum``): logits(level) = logits(0) + the cumulative sum
  of the per-unit (per-direction) contributions taken in ordering order (float64).
- Two sites (``walk``): along the events 'one more unit of site 1', each a rank-1
  (per-channel for conv) update of site 2's pre-activation, site 2's activity and the
  logits at the segment start are recomputed densely; within a segment each ablated site-2
  unit is a rank-1 update of the logits. ``walk-linear``: site 1 feeds a Linear layer and
  site 2 is its ReLU: one ordering at a time, site 2's units in ablation order, updates
  touching only the still-kept suffix.
- Directions: site activity is taken in the basis coordinates and the consumer's weight
  times each direction plays the weight column (the walk stays rank-1).

On CPU, sample chunks run on a thread pool with single-threaded torch ops.

Three or more sites linked by affine layers take the K-site walk
(:mod:`singledir.engine.kwalk`); otherwise the segmented path
(:mod:`singledir.engine.segments`: rank-1 terms for the last site only) or stacked masks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from singledir.engine.affine import Chain
from singledir.engine.directions import to_coords
from singledir.engine.plan import Setup
from singledir.engine.runners import ChainOp, ChainRunner, Runner
from singledir.engine.scoring import chunk_count, score, score_classes_first, score_first_max
from singledir.progress import make_progress
from singledir.sites import SiteSpec

__all__ = [
    "cumsum_curves",
    "walk_curves",
    "walk_linear_curves",
    "run_chunks",
    "tail_affine",
    "TILE",
]

TILE = 1 << 20  # elements per dense op of the incremental walk (keeps it in cache)


def tail_weight(
    chain: Chain, spec: SiteSpec, fill: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For an affine tail (site -> logits): the weight ``(units, classes)`` acting on the
    (spatially averaged) unit (direction) activity and the fill in that space ``(units,)``."""
    weight = chain.layer.weight
    assert isinstance(weight, torch.Tensor)
    wt = chain.weight_cols(torch.arange(spec.n_units, device=weight.device))
    fill_r = torch.zeros(spec.n_units, dtype=wt.dtype, device=wt.device) if fill is None else fill
    return wt, fill_r


def tail_affine(
    ops: Sequence[ChainOp], chain: Chain, spec: SiteSpec, fill: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`tail_weight` plus the bias ``(classes,)`` (the tail run on zeros)."""
    wt, fill_r = tail_weight(chain, spec, fill)
    zero = torch.zeros(1, *spec.shape, dtype=wt.dtype, device=wt.device)
    bias = chain.run(ops, zero)[0]
    return wt, bias, fill_r


def _reduce(h: torch.Tensor, n_lead: int) -> torch.Tensor:
    """Average over spatial dims (everything after the unit dim at ``n_lead``)."""
    if h.ndim > n_lead + 1:
        return h.mean(dim=tuple(range(n_lead + 1, h.ndim)))
    return h


def cumsum_curves(
    engine: Setup,
    runner: ChainRunner,
    tail: Chain,
    orders: torch.Tensor,
    levels: np.ndarray,
    fills: list[torch.Tensor | None],
    budget: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One site feeding an affine tail: logits(level) = logits(0) + cumulative sum of the
    per-unit contributions taken in ordering order (float64 accumulation)."""
    spec = engine.specs[0]
    n_ord, n = orders.shape
    wt, bias, fill_r = tail_affine(runner.ops, tail, spec, fills[0])
    n_cls = wt.shape[1]
    level_idx = torch.as_tensor(levels, device=engine.device)
    orders_d = orders.to(engine.device)
    wt64, bias64, fill64 = wt.double(), bias.double(), fill_r.double()
    unit_wt64 = wt64  # the logits' weight on the units themselves
    basis64 = None if spec.basis is None else spec.basis.double()
    if spec.basis is not None:
        units = torch.arange(spec.width, device=engine.device)
        unit_wt64 = dataclasses.replace(tail, basis=None).weight_cols(units).double()

    def work(h: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        correct = torch.zeros(n_ord, len(levels), dtype=torch.long)
        loss = torch.zeros(n_ord, len(levels), dtype=torch.float64)
        r = _reduce(h, 1).double()  # (b, width)
        logits0 = r @ unit_wt64 + bias64
        coords = r if basis64 is None else r @ basis64.t()  # (b, n)
        contrib = (fill64 - coords).unsqueeze(-1) * wt64  # (b, n, C)
        for o in range(n_ord):
            cs = torch.cumsum(contrib[:, orders_d[o]], dim=1)  # (b, n, C)
            cs = torch.cat([torch.zeros_like(cs[:, :1]), cs], dim=1)
            lg = (logits0.unsqueeze(1) + cs[:, level_idx]).transpose(0, 1)
            c, s = score(lg, yb)
            correct[o] += c
            loss[o] += s
        return correct, loss

    per_sample = 8.0 * (n + 1) * n_cls * 3 * _workers(engine.device)
    b_chunk = chunk_count(budget, per_sample, 256)
    return run_chunks(engine, runner, work, b_chunk, n_ord, len(levels), progress)


def walk_curves(
    engine: Setup,
    runner: ChainRunner,
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
    ops = runner.ops
    s1, s2 = engine.specs
    n1 = s1.n_units
    n_ord, n = orders.shape
    dev = engine.device
    p2 = runner.site_pos[1]
    mid = ops[chain1.end : p2 + 1]
    relu_mid = len(mid) == 1 and mid[0].kind == "relu"
    wt, bias, fill_r2 = tail_affine(ops, tail, s2, fills[1])  # (n2, C), (C,), (n2,)
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
    keep = (~m2).to(dev, engine.dtype)
    fill_bias = bias + ((1 - keep) * fill_r2) @ wt  # (O, n1+1, C)
    k_of_level = torch.zeros(n_ord, n + 1, dtype=torch.long)
    k_of_level[:, 1:] = torch.where(is1, 0, orders - n1)
    linear1 = chain1.is_linear
    seq1_d = seq1.to(dev)
    level_idx = torch.as_tensor(levels, device=dev)

    pre_numel = int(np.prod(_chain_out_shape(ops, chain1, s1, dev, engine.dtype)))
    o_grp = max(1, min(n_ord, TILE // (8 * pre_numel)))
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
    if linear1 and relu_mid and len(s2.shape) == 1 and s2.basis is None:
        return walk_linear_curves(
            engine, runner, chain1, wt, fill_r2, fill_bias, orders, levels, fill1, budget, progress
        )

    def work(h1: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct counts and loss sums ``(O, L)`` for one chunk of samples."""
        correct = torch.zeros(n_ord, len(levels), dtype=torch.long)
        loss = torch.zeros(n_ord, len(levels), dtype=torch.float64)
        b = h1.shape[0]
        pre0 = chain1.run(ops, h1)
        a1 = to_coords(h1, s1.basis)
        d1 = (-a1 if fill1 is None else _fill_view(fill1, a1) - a1).transpose(0, 1)
        if linear1 and d1.ndim > 2:  # a Linear chain sees the spatial mean
            d1 = _reduce(d1, 1)
        d1 = d1.contiguous()  # (n1, b, *spatial)
        for g0, g1, o_idx, l_idx, k_idx, bounds, wc, per_level in groups:
            og = g1 - g0
            pre = pre0.unsqueeze(0).repeat(og, *([1] * pre0.ndim))
            vals = torch.empty(int(o_idx.numel()), b, dtype=engine.dtype, device=dev)
            starts = torch.empty(n1 + 1, og, n_cls, b, dtype=engine.dtype, device=dev)
            hbuf = torch.empty_like(pre) if relu_mid else None
            for e in range(n1 + 1):
                if relu_mid:
                    h2 = torch.clamp_min(pre, 0, out=hbuf)
                else:
                    flat = pre.reshape(og * b, *pre.shape[2:]).clone()  # mid may be in-place
                    for m in mid:
                        flat = m(flat)
                    h2 = flat.view(og, b, *flat.shape[1:])
                r2 = to_coords(_reduce(h2, 2), s2.basis, dim=2)  # (og, b, n2)
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
            step_values = torch.zeros(og, n + 1, b, dtype=engine.dtype, device=dev)
            step_values[o_idx, l_idx] = fill_r2[k_idx].unsqueeze(1) - vals
            for oi in range(og):
                steps, k_lv, seg_lv = per_level[oi]
                lg = starts[seg_lv, oi]  # (N+1, C, b): segment-start logits
                contrib = wt[k_lv].unsqueeze(2) * step_values[oi].unsqueeze(1)
                for idx in steps:  # levels p steps into a segment add step p
                    lg[idx] = lg[idx - 1] + contrib[idx]
                c, s = score_classes_first(lg[level_idx], yb)
                correct[g0 + oi] += c
                loss[g0 + oi] += s
        return correct, loss

    b_chunk = max(8, TILE // (o_grp * pre_numel))
    per_sample = o_grp * ((n1 + 1) * n_cls + (n + 1) * (n_cls + 1)) * 4 + pre_numel * 16
    b_chunk = max(1, min(b_chunk, budget // (per_sample * _workers(dev))))
    return run_chunks(engine, runner, work, b_chunk, n_ord, len(levels), progress)


def walk_linear_curves(
    engine: Setup,
    runner: ChainRunner,
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
    ops = runner.ops
    s1 = engine.specs[0]
    n1 = s1.n_units
    n_ord, n = orders.shape
    n2, n_cls = wt.shape
    dev, dt = engine.device, engine.dtype
    level_idx = torch.as_tensor(levels, device=dev)
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
        pre0 = chain1.run(ops, h1)  # (b, n2)
        a1 = to_coords(h1, s1.basis)
        d1 = (-a1 if fill1 is None else _fill_view(fill1, a1) - a1).transpose(0, 1)
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
            c, s = score_first_max(lg if all_levels else lg[level_idx], yb)
            correct[o] += c
            loss[o] += s
        return correct, loss

    n_lv = n + 1
    b_chunk = max(8, (1 << 17) // max(1, n2))  # ~0.5 MB per dense op
    per_sample = (2 * n_lv * n_cls + 3 * n2 * n_cls + 4 * n2) * 4
    b_chunk = max(1, min(b_chunk, budget // (per_sample * _workers(dev))))
    return run_chunks(engine, runner, work, b_chunk, n_ord, len(levels), progress, balance=True)


def _no_grad_call(fn: Any, args: tuple[Any, ...]) -> Any:
    with torch.no_grad():  # grad mode is per thread
        return fn(*args)


def _workers(dev: torch.device) -> int:
    return 1 if dev.type != "cpu" else max(1, torch.get_num_threads())


def run_chunks(
    engine: Setup,
    runner: Runner,
    work: Any,
    b_chunk: int,
    n_ord: int,
    n_levels: int,
    progress: bool,
    balance: bool = False,
    intra_op: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``work(site_output_chunk, labels_chunk)`` over sample chunks of every batch and
    sum the results (with ``balance``, chunks of at most ``b_chunk`` samples, as equal as
    possible and as many as a multiple of the workers). On CPU the chunks go to a pool of
    threads, each running single-threaded torch ops: the incremental walk is made of many
    small ops, and independent chunks scale across cores without the per-op synchronization
    of intra-op threads (which collapses on a busy machine). With ``intra_op`` (work made of
    a few large ops, such as the level walk's convolutions) the chunks run one after
    another on torch's own threads instead, so per-chunk setup is not repeated per worker."""
    from concurrent.futures import ThreadPoolExecutor

    correct = torch.zeros(n_ord, n_levels, dtype=torch.long)
    loss = torch.zeros(n_ord, n_levels, dtype=torch.float64)
    n_batches = -(-engine.batches.count() // engine.batches.batch_size)
    workers = 1 if intra_op else _workers(engine.device)
    threads = torch.get_num_threads()
    with make_progress(quiet=None if progress else True) as bar:
        task = bar.add_task(
            "ablation curves",
            total=n_batches,
            status=f"{n_ord} orderings x {n_levels} levels, incremental, "
            + (f"{threads} intra-op thread(s)" if intra_op else f"{workers} thread(s)"),
        )
        pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        try:
            if pool is not None:
                torch.set_num_threads(1)
            for x, y in engine.batches:
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
    ops: Sequence[ChainOp], chain: Chain, spec: SiteSpec, dev: torch.device, dtype: Any
) -> tuple[int, ...]:
    """Per-sample shape of a chain's output."""
    with torch.no_grad():
        out = chain.run(ops, torch.zeros(1, *spec.shape, device=dev, dtype=dtype))
    return tuple(int(v) for v in out.shape[1:])
