"""Segmented curves: any number of sites, the last one reaching the logits through an
affine tail (any runner that has the tail as a chain: a chain of ops or an fx cut, where
the tail may add values computed elsewhere in the graph, such as a residual branch).
One site is the cumulative sum through the cut graph.

Along an ordering, the levels fall into segments: a new segment starts at every event at
an earlier site (sites 1..K-1). One stacked pass per segment start (masks at sites
1..K-1, the last site left as it is) gives the last site's activity h_K and the logits
``tail(h_K)``; within the segment each last-site unit (direction) ablated adds one rank-1
term ``(fill_u - r_u) w_u`` to the logits (a cumulative sum in float64). Passes: one per
earlier-site event instead of one per level.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from singledir.engine.affine import Chain, parse_chain
from singledir.engine.directions import to_coords
from singledir.engine.plan import Setup
from singledir.engine.scoring import chunk_count, score
from singledir.engine.stacked import mask_edit, ranks_of
from singledir.engine.walk import tail_weight
from singledir.progress import make_progress

__all__ = ["segment_tail", "segment_count", "segment_curves"]


def segment_tail(engine: Setup) -> Chain | str:
    """The affine tail of the last site, or why there is none."""
    ops = engine.runner.tail_ops
    last = engine.specs[-1]
    if ops is None:
        return "the ops after the last site are not a chain"
    tail = parse_chain(ops, 0, len(last.shape) + 1, last.basis, last.unit_dim)
    if tail is None or tail.end != len(ops):
        return "the ops after the last site are not one affine layer to the logits"
    return tail


def segment_count(engine: Setup) -> int:
    """Segments per ordering: one plus the units of the earlier sites."""
    return 1 + engine.n_units - engine.specs[-1].n_units


def segment_curves(
    engine: Setup,
    tail: Chain,
    orders: torch.Tensor,
    levels: np.ndarray,
    fills: list[torch.Tensor | None],
    budget: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct counts and loss sums ``(O, L)``."""
    assert engine.runner.tail_ops is not None
    specs = engine.specs
    last = specs[-1]
    dev = engine.device
    n_ord, n = orders.shape
    ranks = ranks_of(orders)  # (O, N), 1-based
    upper = orders < last.offset  # step i+1 is an event at an earlier site
    # segment starts: level 0 and every level reached by an earlier-site event
    starts = [
        torch.cat([torch.zeros(1, dtype=torch.long), torch.nonzero(upper[o]).view(-1) + 1])
        for o in range(n_ord)
    ]
    jobs = [(o, int(s)) for o in range(n_ord) for s in starts[o].tolist()]
    # last-site units in ablation order, and how many of them each level has ablated
    last_ranks = ranks[:, last.offset :]  # (O, nK)
    last_order = torch.argsort(last_ranks, dim=1)  # (O, nK)
    level_t = torch.as_tensor(levels)
    n_last_ablated = (last_ranks.unsqueeze(1) <= level_t.view(1, -1, 1)).sum(2)  # (O, L)
    segment_of_level = [
        torch.searchsorted(starts[o], level_t, right=True) - 1 for o in range(n_ord)
    ]
    weight, fill_coords = tail_weight(tail, last, fills[-1])
    # the logits of each pass already include the tail's bias
    weight64, fill64 = weight.double(), fill_coords.double()
    basis64 = None if last.basis is None else last.basis.double()
    correct = torch.zeros(n_ord, len(levels), dtype=torch.long)
    loss = torch.zeros(n_ord, len(levels), dtype=torch.float64)
    ranks_d = ranks.to(dev)
    earlier = specs[:-1]
    n_classes = engine.n_classes
    with make_progress(quiet=None if progress else True) as bar:
        task = bar.add_task(
            "ablation curves",
            total=engine.batches.n_batches() * len(jobs),
            status=f"{n_ord} orderings x {len(levels)} levels, segments ({engine.runner.kind})",
        )
        for x, y in engine.batches:
            state = engine.runner.prefix(x)
            b = x.shape[0]
            per_job = b * (engine.row_bytes * 2 + 8 * n_classes * (last.n_units + 2))
            chunk = chunk_count(budget, per_job, len(jobs))
            for a in range(0, len(jobs), chunk):
                part = jobs[a : a + chunk]
                m = len(part)
                o_idx = torch.tensor([o for o, _ in part], device=dev)
                s_idx = torch.tensor([s for _, s in part], device=dev)
                masks = ranks_d[o_idx] <= s_idx.unsqueeze(1)
                masks[:, last.offset :] = False  # the last site: rank-1 terms below
                edit_earlier = mask_edit(earlier, masks, fills[:-1])
                captured: list[torch.Tensor] = []

                def edit(
                    k: int,
                    out: torch.Tensor,
                    edit_earlier: Any = edit_earlier,
                    captured: list[torch.Tensor] = captured,
                ) -> Any:
                    if k == len(specs) - 1:
                        captured.append(out)
                        return out
                    return edit_earlier(k, out)

                logits = engine.runner.suffix(state, m, edit).view(m, b, -1).double()
                h_last = captured[0].reshape(m, b, *captured[0].shape[1:])
                r = h_last.mean(dim=tuple(range(3, h_last.ndim))) if h_last.ndim > 3 else h_last
                coords = to_coords(r.double(), basis64, dim=2)  # (m, b, nK)
                contrib = (fill64 - coords).unsqueeze(-1) * weight64  # (m, b, nK, C)
                for j, (o, s) in enumerate(part):
                    in_segment = torch.nonzero(segment_of_level[o] == _segment_index(starts[o], s))
                    lv_idx = in_segment.view(-1)
                    if lv_idx.numel() == 0:
                        continue
                    ordered = contrib[j][:, last_order[o].to(dev)]  # (b, nK, C)
                    cs = torch.cumsum(ordered, dim=1)
                    cs = torch.cat([torch.zeros_like(cs[:, :1]), cs], dim=1)  # (b, nK+1, C)
                    # the pass left the last site whole: every last-site unit ablated by
                    # the level (before or within the segment) is a term of the sum
                    counts = n_last_ablated[o, lv_idx].to(dev)
                    lg = logits[j].unsqueeze(1) + cs[:, counts]  # (b, n_lv, C)
                    c, loss_sum = score(lg.transpose(0, 1), y)
                    correct[o, lv_idx] += c
                    loss[o, lv_idx] += loss_sum
                bar.advance(task, m)
    return correct, loss


def _segment_index(starts: torch.Tensor, start: int) -> int:
    return int(torch.searchsorted(starts, torch.tensor([start]), right=True)[0]) - 1
