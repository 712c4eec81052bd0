"""The level walk: cumulative ablation curves at a few levels over two or more sites linked
by affine layers (site 1 -> Linear/conv [BN] -> ReLU/pass -> site 2 -> ... -> affine tail
-> logits), doing only the work the levels need.

The event-by-event K-site walk (:mod:`singledir.engine.kwalk`) recomputes everything after
the next nonlinearity at every event; with a few dozen levels that is far more work than
one pass per level. This path walks the levels instead:

- the first site's ablations are per-channel (rank-1) updates of the second site's
  pre-activation, kept for the whole ordering (one full layer of work per ordering);
- at each level, every later site is recomputed from that pre-activation, but only over
  the units still kept: an ablated unit's value is its fill whatever its input, so the
  affine layer into a site computes only the kept output channels, and reads only the kept
  input channels (the ablated ones add the fill's constant contribution). At a level where
  a fraction ``f`` of units is kept the layer costs about ``f**2`` of a full one;
- the last site reaches the logits through an affine tail, applied in float64 to the kept
  units' (spatially averaged) activity plus the fills' constant term.

Units only (no direction bases): a direction's value is not one channel of the next
layer's input. The logits are exact up to float32 summation order.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from singledir.engine.affine import Chain
from singledir.engine.plan import Setup
from singledir.engine.runners import ChainOp, ChainRunner
from singledir.engine.scoring import score
from singledir.engine.stacked import pooled_units
from singledir.engine.walk import run_chunks, tail_affine

__all__ = ["level_walk_links", "level_walk_cost", "level_walk_curves"]


@dataclasses.dataclass
class _Layer:
    """The affine map of one chain, split into what the level walk needs: the linear part
    restricted to (input units, output units) and the constant output (bias, BN shift)."""

    chain: Chain
    constant: torch.Tensor  # (1, *out): the chain run on zeros

    def linear(self, h: torch.Tensor, inp: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The chain's linear part from input units ``inp`` (``h`` holds them on dim 1) to
        output units ``out``: ``(B, len(out), *out_positions)``."""
        chain = self.chain
        layer = chain.layer
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        if inp.numel() == 0 or out.numel() == 0:
            shape = (h.shape[0], out.numel(), *self.constant.shape[2:])
            return torch.zeros(shape, dtype=h.dtype, device=h.device)
        if chain.is_linear:
            r = h.mean(dim=tuple(range(2, h.ndim))) if h.ndim > 2 else h
            y = r @ weight.t().index_select(0, inp).index_select(1, out)
        else:
            assert isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d)
            w = weight.index_select(0, out).index_select(1, inp)
            conv_fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[w.ndim - 2]
            y = conv_fn(h, w, None, layer.stride, layer.padding, layer.dilation)  # type: ignore[arg-type]
        if chain.scale is not None:
            y = y * chain.scale[out].view(1, -1, *([1] * (y.ndim - 2)))
        return y


@dataclasses.dataclass
class _Links:
    layers: list[_Layer]  # site k -> pre-activation of site k + 1
    mids: list[list[ChainOp]]  # the ops from that pre-activation to site k + 1 (inclusive)
    tail: Chain


def level_walk_links(engine: Setup, chains: Any = None) -> _Links | str:
    """The links of a level walk, or why there are none; ``chains``: the K-site walk's links
    (:func:`~singledir.engine.kwalk.kwalk_chains`) when the caller has them already."""
    from singledir.engine.kwalk import kwalk_chains

    if len(engine.specs) < 2:
        return "one site"
    if any(s.basis is not None for s in engine.specs):
        return "directions other than units"
    found = kwalk_chains(engine) if chains is None else chains
    if isinstance(found, str):
        return found
    runner = engine.runner
    assert isinstance(runner, ChainRunner)
    if not found.tail.is_linear:
        return "the tail to the logits is not a Linear layer"
    chains = [*found.chains, found.tail]
    if any(op.kind == "add_const" for c in chains for op in runner.ops[c.start : c.end]):
        return "an affine layer adds a value from elsewhere in the graph"
    layers = []
    with torch.no_grad():
        for k, chain in enumerate(found.chains):
            zero = torch.zeros(1, *engine.specs[k].shape, device=engine.device, dtype=engine.dtype)
            layers.append(_Layer(chain, chain.run(runner.ops, zero)))
    return _Links(layers, found.mids, found.tail)


def level_walk_cost(engine: Setup, links: _Links, n_levels: int) -> float:
    """Rough per-sample, per-ordering work (multiply-adds) of the level walk at
    ``n_levels`` evenly spaced levels, in the units of :func:`kwalk_cost`."""
    specs = engine.specs
    numel = [int(np.prod(s.shape)) for s in specs]
    dense = [float(layer.chain.macs(numel[k + 1])) for k, layer in enumerate(links.layers)]
    kept = 1.0 - np.linspace(0.0, 1.0, max(2, n_levels))
    per_level = sum(dense[1:]) * float((kept**2).sum())
    # gathers, mids, the mean and the float64 tail per kept value (measured: about 12
    # element operations each, which is where the two-site walk wins at every level)
    pointwise = n_levels * 12.0 * sum(numel[1:]) * float(kept.mean())
    tail = n_levels * 2.0 * specs[-1].n_units * engine.n_classes * float(kept.mean())
    return dense[0] + per_level + pointwise + tail


QUANTUM = 32  # computed units per site come in multiples of this (repeating conv shapes)
FIRST_QUANTUM = 8  # and the first site's new units per level


@dataclasses.dataclass
class _Level:
    """What one level of one ordering computes. Per site: the newly ablated units (padded
    to a multiple of FIRST_QUANTUM by repeats whose change is zeroed: the first site's
    update its pre-activation's, the later sites' their fills' constant contribution to
    the next layer); for the sites after the first, the units computed (the kept ones,
    padded with ablated ones to a multiple of QUANTUM: oneDNN builds a kernel per new
    shape, which costs more than the extra channels) and the positions among them that
    are ablated (set to 0: every ablated unit's fill enters as a constant term); the last
    site's ablated units (their fills' logit term)."""

    new: list[torch.Tensor]
    new_padding: list[int]
    computed: list[torch.Tensor]
    padding: list[torch.Tensor]
    gone_last: torch.Tensor


def _padded(count: int, quantum: int, total: int) -> int:
    return min(total, -(-count // quantum) * quantum) if count else 0


def _level_plans(
    order: torch.Tensor,
    levels: np.ndarray,
    site_of: torch.Tensor,
    unit_of: torch.Tensor,
    specs: list,
    dev: torch.device,
) -> list[_Level]:
    masks = [torch.zeros(s.n_units, dtype=torch.bool) for s in specs]
    ranks = [torch.zeros(s.n_units, dtype=torch.long) for s in specs]  # 0 = kept
    plans = []
    start = 0
    for count in levels:
        step = order[start : int(count)]
        sites = site_of[step]
        news, pads = [], []
        computed, padding = [torch.empty(0)], [torch.empty(0)]
        for k in range(len(specs)):
            units = unit_of[step[sites == k]]
            pad = -units.numel() % FIRST_QUANTUM if units.numel() else 0
            news.append(torch.cat([units, units[:1].repeat(pad)]).to(dev))
            pads.append(pad)
            if k == 0:
                continue
            masks[k][units] = True
            ranks[k][units] = torch.arange(start + 1, start + 1 + len(step))[sites == k]
            kept = torch.nonzero(~masks[k]).flatten()
            gone = torch.nonzero(masks[k]).flatten()
            n_comp = _padded(kept.numel(), QUANTUM, specs[k].n_units)
            # the most recently ablated units fill the padding (any would do)
            latest = gone[torch.argsort(ranks[k][gone], descending=True)]
            comp, where = torch.sort(torch.cat([kept, latest[: n_comp - kept.numel()]]))
            computed.append(comp.to(dev))
            padding.append(torch.nonzero(where >= kept.numel()).flatten().to(dev))
        gone_last = torch.nonzero(masks[-1]).flatten().to(dev)
        plans.append(_Level(news, pads, computed, padding, gone_last))
        start = int(count)
    return plans


def level_walk_curves(
    engine: Setup,
    links: _Links,
    orders: torch.Tensor,
    levels: np.ndarray,
    fills: list[torch.Tensor | None],
    budget: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct counts and loss sums ``(O, L)``."""
    runner = engine.runner
    assert isinstance(runner, ChainRunner)
    specs = engine.specs
    n_sites = len(specs)
    n_ord = orders.shape[0]
    dev = engine.device
    site_of, unit_of = pooled_units(specs)
    wt, tail_bias, tail_fill = tail_affine(runner.ops, links.tail, specs[-1], fills[-1])
    wt, tail_bias, tail_fill = wt.double(), tail_bias.double(), tail_fill.double()
    plans = [_level_plans(orders[o], levels, site_of, unit_of, specs, dev) for o in range(n_ord)]

    def computed(k: int, pre: torch.Tensor, step: _Level) -> torch.Tensor:
        """Site k's activity over its computed units from their pre-activations (the
        ablated ones among them set to 0: their fills are in the constant terms)."""
        h = pre
        for op in links.mids[k - 1]:
            h = op(h)
        if step.padding[k].numel():
            h[:, step.padding[k]] = 0
        return h

    def at_level(
        step: _Level, pre1: torch.Tensor, fill_terms: list[torch.Tensor | None]
    ) -> torch.Tensor:
        """Logits (float64) at one level from site 2's pre-activation."""
        h = computed(1, pre1.index_select(1, step.computed[1]), step)
        for k in range(1, n_sites - 1):
            layer = links.layers[k]
            out = step.computed[k + 1]
            pre = layer.linear(h, step.computed[k], out) + layer.constant.index_select(1, out)
            fill_term = fill_terms[k]
            if fill_term is not None:
                pre = pre + fill_term.index_select(1, out)
            h = computed(k + 1, pre, step)
        r = h.double()
        r = r.mean(dim=tuple(range(2, r.ndim))) if r.ndim > 2 else r
        logits = tail_bias + r @ wt[step.computed[-1]]
        if fills[-1] is not None and step.gone_last.numel():
            logits = logits + tail_fill[step.gone_last] @ wt[step.gone_last]
        return logits

    def change_of(k: int, h: torch.Tensor | None, step: _Level) -> torch.Tensor:
        """The change of site k's newly ablated units: fill - activity (site 0, ``h``) or
        the fill itself (later sites, whose computed activity leaves them out); padding
        repeats zeroed."""
        new = step.new[k]
        fill = fills[k]
        if h is not None:
            d = h.index_select(1, new)
            d = -d if fill is None else fill[new].view(1, -1, *([1] * (d.ndim - 2))) - d
        else:
            assert fill is not None
            positions = specs[k].shape[1:]
            d = fill[new].view(1, -1, *([1] * len(positions))).expand(1, -1, *positions)
            d = d.contiguous()
        if step.new_padding[k]:  # repeated units with a zero change: fixed shapes
            d[:, -step.new_padding[k] :] = 0
        return d

    first = links.layers[0]
    every = [torch.arange(s.n_units, device=dev) for s in specs]
    # the later sites' ablated units' fills, as constant terms of the layer after each:
    # sample-independent, so accumulated once along each ordering for every chunk
    fill_terms: list[list[list[torch.Tensor | None]]] = []
    for o in range(n_ord):
        running: list[torch.Tensor | None] = [None] * n_sites
        fill_terms.append([])
        for step in plans[o]:
            for k in range(1, n_sites - 1):
                if fills[k] is None or not step.new[k].numel():
                    continue
                term = links.layers[k].linear(change_of(k, None, step), step.new[k], every[k + 1])
                before = running[k]
                running[k] = term if before is None else before + term
            fill_terms[o].append(list(running))

    def work(h0: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        correct = torch.zeros(n_ord, len(levels), dtype=torch.long)
        loss = torch.zeros(n_ord, len(levels), dtype=torch.float64)
        full = first.chain.run(runner.ops, h0)
        # nothing ablated: the same logits for every ordering
        unablated = at_level(plans[0][0], full, fill_terms[0][0]) if int(levels[0]) == 0 else None
        for o in range(n_ord):
            pre1 = full.clone()
            all_logits = torch.empty(
                len(levels), h0.shape[0], wt.shape[1], dtype=torch.float64, device=dev
            )
            for li, step in enumerate(plans[o]):
                if step.new[0].numel():
                    pre1 += first.linear(change_of(0, h0, step), step.new[0], every[1])
                if li == 0 and unablated is not None:
                    all_logits[0] = unablated
                else:
                    all_logits[li] = at_level(step, pre1, fill_terms[o][li])
            c, s = score(all_logits, yb)
            correct[o] += c
            loss[o] += s
        return correct, loss

    per_sample = 4 * 3 * sum(int(np.prod(s.shape)) for s in specs) + 8 * len(levels) * wt.shape[1]
    b_chunk = max(1, min(4096, budget // max(1, per_sample)))
    return run_chunks(engine, runner, work, b_chunk, n_ord, len(levels), progress, intra_op=True)
