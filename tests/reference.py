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


def inputs64(x: torch.Tensor) -> torch.Tensor:
    """Floating inputs in float64; integer inputs (token ids) as they are."""
    return x.double() if x.is_floating_point() else x


_HOOKABLE: dict[tuple[int, tuple[str, ...]], tuple[nn.Module, nn.Module, dict[str, str]]] = {}


def hookable(model: nn.Module, sites: Sequence[str]) -> tuple[nn.Module, dict[str, str]]:
    """A model to hook and the module to hook for each site: ``model`` itself when every
    site is a module that runs once; else a traced copy in which each graph-node site (an fx
    node name such as ``relu_1``, or ``r`` for the first call of a module ``r`` that runs
    twice) is followed by an ``nn.Identity`` module, so that a forward hook can edit that one
    call's output. Cached per model and site list (one trace per reference run)."""
    key = (id(model), tuple(sites))
    hit = _HOOKABLE.get(key)
    if hit is not None and hit[0] is model:
        return hit[1], hit[2]
    _HOOKABLE.clear()  # keep the latest model only
    _HOOKABLE[key] = (model, *_hookable(model, sites))
    return _HOOKABLE[key][1], _HOOKABLE[key][2]


def _hookable(model: nn.Module, sites: Sequence[str]) -> tuple[nn.Module, dict[str, str]]:
    from torch import fx

    modules = dict(model.named_modules())
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - an untraceable model: module sites only
        return model, {s: s for s in sites}
    calls = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    nodes = [s for s in sites if not (s in modules and s and calls.count(s) <= 1)]
    if not nodes:
        return model, {s: s for s in sites}
    by_name = {n.name: n for n in gm.graph.nodes}
    targets = {s: s for s in sites}
    for s in nodes:
        node = by_name[s]
        targets[s] = f"site_hook_{s.replace('.', '_')}"
        gm.add_submodule(targets[s], nn.Identity())
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(targets[s], (node,))
        node.replace_all_uses_with(new, delete_user_cb=lambda u, new=new: u is not new)
    gm.graph.lint()
    gm.recompile()
    return gm, targets


def _hooked_forward(model: nn.Module, x: torch.Tensor, edits: dict[str, object]) -> torch.Tensor:
    model, targets = hookable(model, list(edits))
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, fn in edits.items():
            handles.append(
                modules[targets[name]].register_forward_hook(lambda _m, _i, o, fn=fn: fn(o))
            )
        with torch.no_grad():
            return model(x)
    finally:
        for h in handles:
            h.remove()


def _dim(unit_dims: Sequence[int] | None, k: int) -> int:
    return 1 if unit_dims is None else int(unit_dims[k])


def site_shapes(
    model: nn.Module,
    sites: Sequence[str],
    x: torch.Tensor,
    unit_dims: Sequence[int] | None = None,
    bases: Sequence[torch.Tensor | None] | None = None,
) -> list[int]:
    """Units (on each site's unit axis; the basis rows when given) of each site's output."""
    sizes: dict[str, int] = {}
    edits = {
        s: (lambda o, s=s, k=k: (sizes.__setitem__(s, o.shape[_dim(unit_dims, k)]), o)[1])
        for k, s in enumerate(sites)
    }
    _hooked_forward(model, x[:1], edits)
    out = [sizes[s] for s in sites]
    if bases is not None:
        out = [n if b is None else int(b.shape[0]) for n, b in zip(out, bases, strict=True)]
    return out


def masked_logits(
    model64: nn.Module,
    x: torch.Tensor,
    sites: Sequence[str],
    ablated: np.ndarray,
    fills: Sequence[np.ndarray] | None = None,
    unit_dims: Sequence[int] | None = None,
    bases: Sequence[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Logits with the pooled units where ``ablated`` is True replaced (zero or fill) at
    every position of their unit axis; with ``bases[k]`` ``(d, C)`` (orthonormal rows), the
    pooled index of site k runs over its directions and ablating direction v sets
    ``h <- h - (h.v - fill) v`` by an explicit loop over the ablated directions."""
    sizes = site_shapes(model64, sites, inputs64(x), unit_dims, bases)
    edits = {}
    off = 0
    for k, s in enumerate(sites):
        sel = torch.as_tensor(ablated[off : off + sizes[k]])
        fill = None if fills is None else torch.as_tensor(fills[k], dtype=torch.float64)
        dim = _dim(unit_dims, k)
        basis = None if bases is None or bases[k] is None else bases[k].double()

        def edit(o: torch.Tensor, sel=sel, fill=fill, dim=dim, basis=basis) -> torch.Tensor:
            o = o.movedim(dim, -1).clone()  # units last: (..., C)
            idx = torch.nonzero(sel).view(-1)
            for u in idx.tolist():
                target = 0.0 if fill is None else float(fill[u])
                if basis is None:
                    o[..., u] = target
                else:
                    v = basis[u]
                    o = o - ((o @ v) - target).unsqueeze(-1) * v
            return o.movedim(-1, dim)

        edits[s] = edit
        off += sizes[k]
    return _hooked_forward(model64, inputs64(x), edits)


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
    unit_dims: Sequence[int] | None = None,
    bases: Sequence[torch.Tensor | None] | None = None,
) -> list[tuple[int, int, int, float, int]]:
    """Rows (ordering, level, correct, loss, borderline) by one hooked pass per mask."""
    m64 = as_double(model)
    n = orders.shape[1]
    rows = []
    for o in range(orders.shape[0]):
        for lv in levels:
            ablated = np.zeros(n, dtype=bool)
            ablated[orders[o, :lv]] = True
            lg = masked_logits(m64, x, sites, ablated, fills, unit_dims, bases)
            c, loss, b = summarize(lg, y)
            rows.append((o, int(lv), c, loss, b))
    return rows


def naive_importance(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    site: str,
    fills: Sequence[np.ndarray] | None = None,
    units: Sequence[int] | None = None,
    unit_dim: int = 1,
    basis: torch.Tensor | None = None,
) -> list[tuple[int, float, int, np.ndarray]]:
    """Per unit of ``site`` (or of ``units``): (correct, loss, borderline, per-class
    correct)."""
    m64 = as_double(model)
    n = site_shapes(m64, [site], inputs64(x), [unit_dim], [basis])[0]
    n_cls = int(m64(inputs64(x[:1])).shape[1])
    out = []
    for u in range(n) if units is None else units:
        ablated = np.zeros(n, dtype=bool)
        ablated[u] = True
        lg = masked_logits(m64, x, [site], ablated, fills, [unit_dim], [basis])
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
    unit_dims: Sequence[int] | None = None,
) -> tuple[int, float, int]:
    """Accuracy with ``scale * sigma_u * noise`` added to every unit (noise given, in the
    site's own layout; sigma along its unit axis)."""
    m64 = as_double(model)
    edits = {}
    for k, s in enumerate(sites):
        sig = sigmas[k].double()
        z = noise[k].double()
        dim = _dim(unit_dims, k)

        def edit(o: torch.Tensor, sig=sig, z=z, dim=dim) -> torch.Tensor:
            shape = [1] * o.ndim
            shape[dim] = -1
            return o + scale * sig.view(shape) * z

        edits[s] = edit
    return summarize(_hooked_forward(m64, inputs64(x), edits), y)


def naive_moments(
    model: nn.Module,
    x: torch.Tensor,
    sites: Sequence[str],
    unit_dims: Sequence[int] | None = None,
    bases: Sequence[torch.Tensor | None] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-site unit (direction coordinate) means and (population) standard deviations over
    samples and positions, from one float64 pass that keeps every activation."""
    m64 = as_double(model)
    acts: dict[str, torch.Tensor] = {}
    edits = {s: (lambda o, s=s: (acts.__setitem__(s, o.detach().clone()), o)[1]) for s in sites}
    _hooked_forward(m64, inputs64(x), edits)
    means, stds = [], []
    for k, s in enumerate(sites):
        a = acts[s].movedim(_dim(unit_dims, k), -1)
        a = a.reshape(-1, a.shape[-1])
        if bases is not None and bases[k] is not None:
            a = a @ bases[k].double().t()
        a = a.t()
        means.append(a.mean(1).numpy())
        stds.append(a.std(1, unbiased=False).numpy())
    return means, stds
