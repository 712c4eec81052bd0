"""The K-site walk: cumulative ablation along an ordering over any number of sites linked
by affine layers (a chain of ops: site k -> [pass] Linear/conv [BN] [pass] -> ReLU/pass ->
site k+1 -> ... -> affine tail -> logits).

State per sample chunk: every site's current activity and every pre-activation after the
first site. An event "ablate unit (direction) u of site k" changes site k by
``delta * e_u`` (``delta = fill - current``), which is a rank-1 (per-channel) update of
the pre-activation of site k+1; only what lies after that nonlinearity is recomputed
(site k+1's activity with its own ablations re-applied, the dense layers after it). An
event at the last site is a rank-1 update of the logits. Orderings are walked one at a
time; every level's logits are kept and scored at the end.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from singledir.engine.affine import Chain, parse_chain
from singledir.engine.directions import from_coords, to_coords
from singledir.engine.plan import Setup
from singledir.engine.runners import ChainOp, ChainRunner
from singledir.engine.scoring import score
from singledir.engine.stacked import mask_edit, pooled_units
from singledir.engine.walk import run_chunks, tail_weight

__all__ = ["kwalk_chains", "kwalk_cost", "kwalk_curves"]


@dataclasses.dataclass
class _Links:
    """Affine chains from each site to the next pre-activation, the ops between that
    pre-activation and the next site (ReLU / pass), and the tail to the logits."""

    chains: list[Chain]
    mids: list[list[ChainOp]]
    tail: Chain


def kwalk_chains(engine: Setup) -> _Links | str:
    """The links of a K-site walk, or why there are none."""
    runner = engine.runner
    if not isinstance(runner, ChainRunner):
        return "not a chain of ops"
    specs = engine.specs
    if any(s.unit_dim != 1 for s in specs):
        return "a site's unit axis is not dim 1"
    chains, mids = [], []
    for k in range(len(specs) - 1):
        chain = parse_chain(runner.ops, runner.site_pos[k], len(specs[k].shape) + 1, specs[k].basis)
        if chain is None or chain.end > runner.site_pos[k + 1]:
            return f"site {specs[k].name!r} does not reach the next site through an affine layer"
        mid = list(runner.ops[chain.end : runner.site_pos[k + 1] + 1])
        if any(op.kind not in ("relu", "pass") for op in mid):
            return f"site {specs[k + 1].name!r} is not a ReLU of the previous affine layer"
        chains.append(chain)
        mids.append(mid)
    last = len(specs) - 1
    tail = parse_chain(
        runner.ops, runner.site_pos[last], len(specs[last].shape) + 1, specs[last].basis
    )
    if tail is None or tail.end != len(runner.ops):
        return "the ops after the last site are not one affine layer to the logits"
    return _Links(chains, mids, tail)


def kwalk_cost(engine: Setup, links: _Links) -> tuple[float, float]:
    """Rough per-sample, per-ordering work (multiply-adds) of the walk and of one stacked
    pass per level (times the level count by the caller)."""
    specs = engine.specs
    dense = [float(c.macs(int(np.prod(specs[k + 1].shape)))) for k, c in enumerate(links.chains)]
    stacked_pass = sum(dense) + 4.0 * sum(int(np.prod(s.shape)) for s in specs[1:])
    walk = 0.0
    for k, spec in enumerate(specs):
        if k == len(specs) - 1:
            per_event = 2.0 * engine.n_classes
        else:
            rank1 = int(np.prod(specs[k + 1].shape)) * (9 if not links.chains[k].is_linear else 1)
            per_event = rank1 + sum(dense[k + 1 :]) + 4.0 * int(np.prod(specs[k + 1].shape))
        walk += spec.n_units * per_event
    return walk, stacked_pass


def kwalk_curves(
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
    specs = [dataclasses.replace(s, offset=0) for s in engine.specs]
    n_sites = len(specs)
    n_ord, n = orders.shape
    dev = engine.device
    site_of, unit_of = pooled_units(engine.specs)
    wt = tail_weight(links.tail, specs[-1], fills[-1])[0].double()
    level_idx = torch.as_tensor(levels, device=dev)
    events = [
        (list(zip(site_of[orders[o]].tolist(), unit_of[orders[o]].tolist(), strict=True)))
        for o in range(n_ord)
    ]
    fill_values = [
        torch.zeros(s.n_units, dtype=engine.dtype, device=dev) if f is None else f
        for s, f in zip(specs, fills, strict=True)
    ]

    def ablated(k: int, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Site k's activity with the units (directions) in ``mask`` ablated."""
        if not bool(mask.any()):
            return h
        return mask_edit([specs[k]], mask.unsqueeze(0), [fills[k]])(0, h)

    def forward_from(k: int, pre: torch.Tensor, masks: list[torch.Tensor], state: dict) -> None:
        """Recompute site k (from its pre-activation) and everything after it."""
        for j in range(k, n_sites):
            if j > k:
                pre = links.chains[j - 1].run(runner.ops, state["h"][j - 1])
            state["pre"][j] = pre
            h = pre.clone()  # mid ops may work in place
            for op in links.mids[j - 1]:
                h = op(h)
            state["h"][j] = ablated(j, h, masks[j])
        state["logits"] = links.tail.run(runner.ops, state["h"][-1])

    def work(h0: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        correct = torch.zeros(n_ord, len(levels), dtype=torch.long)
        loss = torch.zeros(n_ord, len(levels), dtype=torch.float64)
        b = h0.shape[0]
        for o in range(n_ord):
            masks = [torch.zeros(s.n_units, dtype=torch.bool, device=dev) for s in specs]
            state: dict[str, Any] = {"h": [None] * n_sites, "pre": [None] * n_sites}
            state["h"][0] = h0.clone()
            if n_sites > 1:
                forward_from(1, links.chains[0].run(runner.ops, h0), masks, state)
            else:
                state["logits"] = links.tail.run(runner.ops, h0)
            all_logits = torch.empty(
                n + 1, b, state["logits"].shape[1], dtype=torch.float64, device=dev
            )
            logits64 = state["logits"].double()
            all_logits[0] = logits64
            for step, (k, u) in enumerate(events[o], start=1):
                h = state["h"][k]
                basis = specs[k].basis
                coord = to_coords(h, basis)[:, u]  # (b, *pos)
                delta = fill_values[k][u] - coord
                if basis is None:
                    h = h.clone()
                    h[:, u] = fill_values[k][u]
                else:
                    h = h + from_coords(delta.unsqueeze(1), basis[u : u + 1])
                state["h"][k] = h
                masks[k][u] = True
                if k == n_sites - 1:
                    reduced = (
                        delta.mean(dim=tuple(range(1, delta.ndim))) if delta.ndim > 1 else delta
                    )
                    logits64 = logits64 + reduced.double().unsqueeze(1) * wt[u].unsqueeze(0)
                    all_logits[step] = logits64
                    continue
                units = torch.tensor([u], device=dev)
                pre = state["pre"][k + 1] + links.chains[k].contrib(delta.unsqueeze(0), units)[0]
                forward_from(k + 1, pre, masks, state)
                logits64 = state["logits"].double()
                # the last site's already-ablated units are in the recomputed logits
                all_logits[step] = logits64
            c, s = score(all_logits[level_idx], yb)
            correct[o] += c
            loss[o] += s
        return correct, loss

    per_sample = 8 * (n + 1) * engine.n_classes + 16 * sum(int(np.prod(s.shape)) for s in specs)
    b_chunk = max(1, min(4096, budget // max(1, per_sample)))
    return run_chunks(engine, runner, work, b_chunk, n_ord, len(levels), progress)
