"""The MLP-chain description of a plan, for the native (Rust) walk
(:mod:`singledir.engine.native_walk`, contract 8): from the first site's activity ``h0`` to
the logits, ``L`` affine maps ``(W (out, in), b (out,))`` with a ReLU between consecutive
maps, eval batch norm folded into its map and eval dropout / identity dropped.
``site_layers`` lists the activations that are sites (0 = h0, i = the ReLU output after map
i). Any writing of the model whose chain of ops has this form qualifies (``nn.Sequential``,
custom forward, ``torch.relu`` calls, nested modules).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from singledir.engine.runners import ChainOp, ChainRunner
from singledir.progress import make_progress
from singledir.sites import SiteSpec

if TYPE_CHECKING:
    from singledir.engine.plan import Setup

__all__ = [
    "MlpChain",
    "chain_logits",
    "mlp_chain",
    "native_chain",
    "native_curves",
    "native_importance",
    "native_walk_module",
]


@dataclass
class MlpChain:
    """Folded float32 maps to the logits and the activation index of every site."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    site_layers: list[int]


def _folded(linear: nn.Module, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    weight = linear.weight
    assert isinstance(weight, torch.Tensor)
    bias = getattr(linear, "bias", None)
    w = weight.detach().double()
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.detach().double()
    if bn is not None:
        assert isinstance(bn, nn.BatchNorm1d)
        mean, var = bn.running_mean, bn.running_var
        assert isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor)
        scale = torch.rsqrt(var.double() + float(bn.eps))
        if isinstance(bn.weight, torch.Tensor):
            scale = scale * bn.weight.detach().double()
        shift = -mean.double() * scale
        if isinstance(bn.bias, torch.Tensor):
            shift = shift + bn.bias.detach().double()
        w, b = w * scale.unsqueeze(1), b * scale + shift
    return w.float().contiguous(), b.float().contiguous()


def _is_pass(op: ChainOp) -> bool:
    """An op that leaves a 2-D activation as it is (eval dropout, identity, flatten)."""
    return op.kind == "pass" or (op.kind == "flatten" and len(op.out_shape) == 1)


def mlp_chain(runner: ChainRunner, specs: list[SiteSpec]) -> MlpChain | str:
    """The description, or why the chain is not an MLP chain of 2-D unit activations."""
    if any(len(s.shape) != 1 or s.unit_dim != 1 or s.basis is not None for s in specs):
        return "a site is not a plain 2-D unit activation"
    ops: list[ChainOp] = runner.ops
    site_of_op = {p: k for k, p in enumerate(runner.site_pos)}
    layers: list[tuple[torch.Tensor, torch.Tensor]] = []
    site_layers = [0]
    i, n = 1, len(ops)
    while True:
        while i < n and _is_pass(ops[i]):
            if i in site_of_op:
                return "a site lies before its layer's map"
            i += 1
        if i >= n or ops[i].kind != "linear":
            return "the ops are not Linear layers with ReLUs between them"
        linear = ops[i].layer
        assert linear is not None
        consumed = [i]
        i += 1
        bn = None
        if i < n and ops[i].kind == "bn":
            bn = ops[i].layer
            if not isinstance(bn, nn.BatchNorm1d) or bn.training or bn.running_var is None:
                return "a batch norm is not an eval BatchNorm1d"
            consumed.append(i)
            i += 1
        if any(p in site_of_op for p in consumed):
            return "a site is a pre-activation"
        layers.append(_folded(linear, bn))
        while i < n and _is_pass(ops[i]):
            if i in site_of_op:
                return "a site is a pre-activation"
            i += 1
        if i == n:
            break
        if ops[i].kind != "relu":
            return "a nonlinearity other than ReLU"
        activation = len(layers)
        j = i + 1
        while j < n and _is_pass(ops[j]):
            j += 1
        sites_here = [p for p in range(i, j) if p in site_of_op]
        if len(sites_here) > 1:
            return "two sites on one activation"
        if sites_here:
            site_layers.append(activation)
        i = j
    if len(site_layers) != len(specs):
        return "a site is not on the chain's activations"
    return MlpChain(layers=layers, site_layers=site_layers)


def chain_logits(chain: MlpChain, h0: torch.Tensor) -> torch.Tensor:
    """The logits the description gives for ``h0`` (no ablation): a check of the folding."""
    h = h0
    for k, (w, b) in enumerate(chain.layers):
        h = h @ w.t() + b
        if k < len(chain.layers) - 1:
            h = torch.relu(h)
    return h


def native_walk_module() -> ModuleType | None:
    """``singledir.engine.native_walk`` when it and its Rust kernels are present."""
    try:
        module = importlib.import_module("singledir.engine.native_walk")
    except ImportError:
        return None
    if not (hasattr(module, "mlp_curves") and hasattr(module, "mlp_importance")):
        return None
    return module


def _kernel_arrays(
    engine: Setup, chain: MlpChain, fills: list[torch.Tensor | None]
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """The chain's (weight, bias) and each site's fill as the arrays the native walk takes."""
    layers = [(w.numpy(), b.numpy()) for w, b in chain.layers]
    fill_arrays = [
        np.zeros(s.n_units, dtype=np.float32) if f is None else f.float().cpu().numpy()
        for s, f in zip(engine.specs, fills, strict=True)
    ]
    return layers, fill_arrays


def native_curves(
    engine: Setup,
    chain: MlpChain,
    orders: torch.Tensor,
    levels: np.ndarray,
    fills: list[torch.Tensor | None],
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct counts and loss sums ``(O, L)`` from the native walk, batch by batch."""
    native = native_walk_module()
    assert native is not None
    layers, fill_arrays = _kernel_arrays(engine, chain, fills)
    order_arr = orders.numpy().astype(np.int64)
    level_arr = np.asarray(levels, dtype=np.int64)
    correct = torch.zeros(orders.shape[0], len(levels), dtype=torch.long)
    loss = torch.zeros(orders.shape[0], len(levels), dtype=torch.float64)
    with make_progress(quiet=None if progress else True) as bar:
        task = bar.add_task(
            "ablation curves",
            total=engine.batches.n_batches(),
            status=f"{orders.shape[0]} orderings x {len(levels)} levels, native walk",
        )
        for x, y in engine.batches:
            h0 = engine.runner.prefix(x).float().contiguous().numpy()
            c, s = native.mlp_curves(
                h0, layers, chain.site_layers, fill_arrays, order_arr, level_arr, y.numpy()
            )
            correct += torch.as_tensor(c)
            loss += torch.as_tensor(s)
            bar.advance(task, 1)
    return correct, loss


def native_importance(
    engine: Setup, chain: MlpChain, fills: list[torch.Tensor | None], bar: Any, task: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Correct counts, loss sums and per-class correct of each pooled unit of the engine's
    sites ablated alone, from the native walk (one prefix pass per batch for all sites)."""
    native = native_walk_module()
    assert native is not None
    layers, fill_arrays = _kernel_arrays(engine, chain, fills)
    n = engine.n_units
    correct = torch.zeros(n, dtype=torch.long)
    loss = torch.zeros(n, dtype=torch.float64)
    per_class = torch.zeros(n, engine.n_classes, dtype=torch.long)
    for x, y in engine.batches:
        h0 = engine.runner.prefix(x).float().contiguous().numpy()
        c, s, pc = native.mlp_importance(
            h0, layers, chain.site_layers, fill_arrays, y.numpy(), engine.n_classes
        )
        correct += torch.as_tensor(c)
        loss += torch.as_tensor(s)
        per_class += torch.as_tensor(pc)
        bar.advance(task, n)
    return correct, loss, per_class


def native_chain(engine: Setup, method: str) -> MlpChain | str:
    """The MLP chain when the native walk applies (CPU, float32, the module present)."""
    if method != "auto":
        return f"method {method!r} asked for"
    if engine.device.type != "cpu" or engine.dtype != torch.float32:
        return "the native walk runs on CPU in float32"
    if native_walk_module() is None:
        return "singledir.engine.native_walk is not available"
    if not isinstance(engine.runner, ChainRunner):
        return "not a chain of ops"
    return mlp_chain(engine.runner, engine.specs)
