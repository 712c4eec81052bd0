"""Accuracy and cross-entropy of stacked logits, and the seed derivation every engine uses.

The prediction of a sample is the first class holding the maximum logit (as ``argmax``);
losses are summed in float64 and divided by the sample count by the caller.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "score",
    "score_per_class",
    "score_classes_first",
    "score_first_max",
    "seed_for",
    "chunk_count",
]


def score(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct counts (int64) and summed cross-entropy (float64) per stacked mask, for
    ``logits`` of shape ``(M, B, C)`` and labels ``(B,)``."""
    return score_classes_first(logits.transpose(1, 2).contiguous(), y)


def score_per_class(
    logits: torch.Tensor, y: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :func:`score` plus correct counts per class ``(M, n_classes)``."""
    hit_out: list[torch.Tensor] = []
    correct, loss = score_classes_first(logits.transpose(1, 2).contiguous(), y, hit_out)
    hit = hit_out[0].double()  # (M, B)
    per = torch.zeros(hit.shape[0], n_classes, dtype=torch.float64, device=hit.device)
    per.index_add_(1, y, hit)
    return correct, loss, per.round().long().cpu()


def score_classes_first(
    logits: torch.Tensor, y: torch.Tensor, hits: list[torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`score` for logits laid out ``(M, C, B)`` (classes before samples), which keeps
    every reduction over classes vectorized along samples."""
    m, c, b = logits.shape
    top = logits.amax(1)  # (M, B)
    picked = logits.gather(1, y.view(1, 1, b).expand(m, 1, b)).squeeze(1)
    before = torch.arange(c, device=y.device).view(c, 1) < y.view(1, b)  # (C, B)
    tie_before = ((logits == top.unsqueeze(1)) & before).any(1)
    hit = (picked == top) & ~tie_before  # (M, B)
    if hits is not None:
        hits.append(hit)
    lse = top + torch.log(torch.exp(logits - top.unsqueeze(1)).sum(1))
    return hit.sum(1).long().cpu(), (lse - picked).double().sum(1).cpu()


def score_first_max(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`score_classes_first` in fewer passes: one ``max`` gives the maximum and its
    first index; a sample is correct when that index is its label and the label's logit is
    the maximum (false for NaN logits, as in :func:`score_classes_first`)."""
    m, _, b = logits.shape
    top, first = logits.max(1)  # (M, B)
    picked = logits.gather(1, y.view(1, 1, b).expand(m, 1, b)).squeeze(1)
    hit = (first == y.view(1, b)) & (picked == top)
    lse = top + torch.log(torch.exp(logits - top.unsqueeze(1)).sum(1))
    return hit.sum(1).long().cpu(), (lse - picked).double().sum(1).cpu()


def seed_for(seed: int, index: int) -> int:
    """A 63-bit seed derived from ``(seed, index)`` by NumPy's SeedSequence."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(index)]).generate_state(
        2, dtype=np.uint32
    )
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def chunk_count(budget: int, per_item_bytes: float, cap: int) -> int:
    """How many items of ``per_item_bytes`` fit the budget (at least 1, at most cap)."""
    return int(max(1, min(cap, math.floor(budget / max(per_item_bytes, 1.0)))))
