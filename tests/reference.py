"""Naive references for the ablation and noise engines: one full forward pass per mask,
the ablation (or noise) applied by a forward hook, everything in float64 so the engine's
float32 fast paths are judged against exact-ish truth."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

MARGIN = 1e-4  # top-1 vs top-2 logit gap below which a float32 prediction may flip


def as_double(model: nn.Module) -> nn.Module:
    """A float64 eval-mode copy of ``model``."""
    return copy.deepcopy(model).double().eval()


def _hooked_forward(model: nn.Module, x: torch.Tensor, edits: dict[str, object]) -> torch.Tensor:
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, fn in edits.items():
            handles.append(modules[name].register_forward_hook(lambda _m, _i, o, fn=fn: fn(o)))
        with torch.no_grad():
            return model(x)
    finally:
        for h in handles:
            h.remove()


def site_shapes(model: nn.Module, sites: Sequence[str], x: torch.Tensor) -> list[int]:
    """Units (dim 1) of each site's output."""
    sizes: dict[str, int] = {}
    edits = {s: (lambda o, s=s: (sizes.__setitem__(s, o.shape[1]), o)[1]) for s in sites}
    _hooked_forward(model, x[:1], edits)
    return [sizes[s] for s in sites]


def masked_logits(
    model64: nn.Module,
    x: torch.Tensor,
    sites: Sequence[str],
    ablated: np.ndarray,
    fills: Sequence[np.ndarray] | None = None,
) -> torch.Tensor:
    """Logits with the pooled units where ``ablated`` is True replaced (zero or fill)."""
    sizes = site_shapes(model64, sites, x.double())
    edits = {}
    off = 0
    for k, s in enumerate(sites):
        sel = torch.as_tensor(ablated[off : off + sizes[k]])
        fill = None if fills is None else torch.as_tensor(fills[k], dtype=torch.float64)

        def edit(o: torch.Tensor, sel=sel, fill=fill) -> torch.Tensor:
            o = o.clone()
            idx = torch.nonzero(sel).view(-1)
            if idx.numel():
                o[:, idx] = 0.0 if fill is None else fill[idx].view(1, -1, *([1] * (o.ndim - 2)))
            return o

        edits[s] = edit
        off += sizes[k]
    return _hooked_forward(model64, x.double(), edits)


def summarize(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, float, int]:
    """(correct count, mean cross-entropy, number of borderline samples)."""
    top2 = logits.topk(2, dim=1).values
    border = int(((top2[:, 0] - top2[:, 1]) < MARGIN).sum())
    correct = int((logits.argmax(1) == y).sum())
    loss = float(torch.nn.functional.cross_entropy(logits, y))
    return correct, loss, border


def naive_curves(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sites: Sequence[str],
    orders: np.ndarray,
    levels: Sequence[int],
    fills: Sequence[np.ndarray] | None = None,
) -> list[tuple[int, int, int, float, int]]:
    """Rows (ordering, level, correct, loss, borderline) by one hooked pass per mask."""
    m64 = as_double(model)
    n = orders.shape[1]
    rows = []
    for o in range(orders.shape[0]):
        for lv in levels:
            ablated = np.zeros(n, dtype=bool)
            ablated[orders[o, :lv]] = True
            c, loss, b = summarize(masked_logits(m64, x, sites, ablated, fills), y)
            rows.append((o, int(lv), c, loss, b))
    return rows


def naive_importance(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    site: str,
    fills: Sequence[np.ndarray] | None = None,
    units: Sequence[int] | None = None,
) -> list[tuple[int, float, int, np.ndarray]]:
    """Per unit of ``site`` (or of ``units``): (correct, loss, borderline, per-class
    correct)."""
    m64 = as_double(model)
    n = site_shapes(m64, [site], x.double())[0]
    n_cls = int(m64(x[:1].double()).shape[1])
    out = []
    for u in range(n) if units is None else units:
        ablated = np.zeros(n, dtype=bool)
        ablated[u] = True
        lg = masked_logits(m64, x, [site], ablated, fills)
        c, loss, b = summarize(lg, y)
        hit = (lg.argmax(1) == y).long()
        per = torch.zeros(n_cls, dtype=torch.long).index_add_(0, y, hit).numpy()
        out.append((c, loss, b, per))
    return out


def naive_noise(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sites: Sequence[str],
    scale: float,
    sigmas: Sequence[torch.Tensor],
    noise: Sequence[torch.Tensor],
) -> tuple[int, float, int]:
    """Accuracy with ``scale * sigma_u * noise`` added to every unit (noise given)."""
    m64 = as_double(model)
    edits = {}
    for k, s in enumerate(sites):
        sig = sigmas[k].double()
        z = noise[k].double()

        def edit(o: torch.Tensor, sig=sig, z=z) -> torch.Tensor:
            return o + scale * sig.view(1, -1, *([1] * (o.ndim - 2))) * z

        edits[s] = edit
    return summarize(_hooked_forward(m64, x.double(), edits), y)


def naive_moments(
    model: nn.Module, x: torch.Tensor, sites: Sequence[str]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-site unit means and (population) standard deviations over samples and spatial
    positions, from one float64 pass that keeps every activation."""
    m64 = as_double(model)
    acts: dict[str, torch.Tensor] = {}
    edits = {s: (lambda o, s=s: (acts.__setitem__(s, o.detach().clone()), o)[1]) for s in sites}
    _hooked_forward(m64, x.double(), edits)
    means, stds = [], []
    for s in sites:
        a = acts[s].transpose(0, 1).reshape(acts[s].shape[1], -1)
        means.append(a.mean(1).numpy())
        stds.append(a.std(1, unbiased=False).numpy())
    return means, stds
