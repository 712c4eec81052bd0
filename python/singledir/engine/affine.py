"""Affine chains: the linear map from a site's units (or directions) to the next
pre-activation, read off a chain of ops (:class:`~singledir.engine.runners.ChainOp`):
``[pass] [mean pool [flatten] | flatten] (Linear | Conv1d/2d/3d) [pass] [BatchNorm eval] [pass]``,
where consecutive Linear layers (with only passes, site-independent additions and one mean
over positions between them, as in a transformer's ``fc2 -> + residual -> mean -> head``)
compose into one Linear map. Units on the last axis of ``(N, *positions, C)`` may go
through per-position Linear layers before that mean: they commute with it.

They give the incremental fast paths their rank-1 (Linear) and per-channel (conv) updates:
changing unit u (or direction d) of the site by ``delta`` changes the chain's output by
``delta`` times the weight column of u (or the weight times d).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from singledir.engine.runners import ChainOp

__all__ = ["Chain", "parse_chain"]


class _Composite(nn.Module):
    """The linear part of consecutive Linear (and eval batch-norm) layers as one weight
    ``(out, in)``; the chain's ops still run the real layers (biases, added terms)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = weight


def _bn_scale(bn: nn.Module) -> torch.Tensor | None:
    """The eval batch-norm scale ``gamma / sqrt(var + eps)``, None in training mode."""
    assert isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d)
    if bn.training or bn.running_var is None:
        return None
    var = bn.running_var
    assert isinstance(var, torch.Tensor)
    scale = torch.rsqrt(var + float(bn.eps))  # type: ignore[arg-type]
    if isinstance(bn.weight, torch.Tensor):
        scale = scale * bn.weight
    return scale.detach()


def _composite(layers: Sequence[tuple[nn.Module, torch.Tensor | None]]) -> nn.Module:
    """One weight for Linear maps applied in order (each with its optional BN scale),
    multiplied in float64."""
    total: torch.Tensor | None = None
    dtype = torch.float32
    for layer, scale in layers:
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        dtype = weight.dtype
        w = weight.detach().double()
        if scale is not None:
            w = w * scale.double().unsqueeze(1)
        total = w if total is None else w @ total
    assert total is not None
    return _Composite(total.to(dtype))


@dataclass
class Chain:
    """``ops[start:end]`` is the chain; ``layer`` its Linear or conv layer; ``scale`` the
    eval batch-norm scale; ``basis`` ``(k, C)`` maps the site's directions to its units."""

    start: int
    end: int
    layer: nn.Module
    reduce_spatial: bool
    scale: torch.Tensor | None
    basis: torch.Tensor | None = None

    def macs(self, out_numel: int) -> int:
        """Multiply-adds per sample of the chain's layer producing ``out_numel`` values."""
        weight = self.layer.weight
        assert isinstance(weight, torch.Tensor)
        return int(out_numel * (weight.numel() // weight.shape[0]))

    @property
    def is_linear(self) -> bool:
        return not isinstance(self.layer, nn.Conv1d | nn.Conv2d | nn.Conv3d)

    def weight_cols(self, units: torch.Tensor) -> torch.Tensor:
        """Linear layers: ``(M, out)`` = the weight columns of ``units`` (directions: the
        weight times each direction), times the BN scale."""
        weight = self.layer.weight
        assert isinstance(weight, torch.Tensor)
        if self.basis is None:
            w = weight.t()[units]
        else:
            w = self.basis[units].to(weight.dtype) @ weight.t()
        return (w * self.scale if self.scale is not None else w).contiguous()

    def _conv_weight(self, units: torch.Tensor) -> torch.Tensor:
        weight = self.layer.weight
        assert isinstance(weight, torch.Tensor)
        if self.basis is None:
            return weight[:, units]
        return torch.einsum("oc...,kc->ok...", weight, self.basis[units].to(weight.dtype))

    def contrib(self, d: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """Chain output change for per-unit input changes ``d`` of shape ``(M, B, *spatial)``
        of units ``units`` ``(M,)``: shape ``(M, B, *out)`` (bias excluded)."""
        if self.is_linear:
            r = d.mean(dim=tuple(range(2, d.ndim))) if d.ndim > 2 else d
            return r.unsqueeze(-1) * self.weight_cols(units).unsqueeze(1)
        conv = self.layer
        assert isinstance(conv, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        m, b = d.shape[0], d.shape[1]
        w = self._conv_weight(units)  # (Cout, M, *kernel)
        cout = w.shape[0]
        w = w.transpose(0, 1).reshape(m * cout, 1, *w.shape[2:])
        conv_fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[w.ndim - 2]
        out = conv_fn(
            d.transpose(0, 1),
            w,
            None,
            conv.stride,
            conv.padding,  # type: ignore[arg-type]
            conv.dilation,
            m,
        )
        out = out.view(b, m, cout, *out.shape[2:]).transpose(0, 1)
        if self.scale is not None:
            out = out * self.scale.view(1, 1, -1, *([1] * (out.ndim - 3)))
        return out

    def add_contrib(self, pre: torch.Tensor, d: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """``pre[None] + contrib(d, units)`` as one contiguous ``(M, B, *out)`` tensor."""
        if self.is_linear:
            r = d.mean(dim=tuple(range(2, d.ndim))) if d.ndim > 2 else d
            return torch.addcmul(
                pre.unsqueeze(0), r.unsqueeze(-1), self.weight_cols(units).unsqueeze(1)
            )
        return (pre.unsqueeze(0) + self.contrib(d, units)).contiguous()

    def run(self, ops: Sequence[ChainOp], h: torch.Tensor) -> torch.Tensor:
        for op in ops[self.start : self.end]:
            h = op(h)
        return h


def parse_chain(
    ops: Sequence[ChainOp],
    site_pos: int,
    site_ndim: int,
    basis: torch.Tensor | None = None,
    unit_dim: int = 1,
) -> Chain | None:
    """The affine chain right after the op at ``site_pos`` (whose output has ``site_ndim``
    dims incl. batch, units on ``unit_dim``), or None when the next ops are not of that
    form. Units off dim 1 (``(N, *positions, C)``) need a mean over every position before
    a Linear layer."""
    i = site_pos + 1
    n = len(ops)

    def skip(i: int) -> int:  # ops whose linear part is the identity
        while i < n and ops[i].kind in ("pass", "add_const"):
            i += 1
        return i

    i = skip(i)
    reduce_spatial = False
    positions = tuple(d for d in range(1, site_ndim) if d != unit_dim)
    # per-position Linear layers on the unit (last) axis, before the mean over positions
    before: list[tuple[nn.Module, torch.Tensor | None]] = []
    if site_ndim >= 3 and unit_dim == site_ndim - 1:
        while i < n and ops[i].kind == "linear":
            layer = ops[i].layer
            assert layer is not None
            before.append((layer, None))
            i = skip(i + 1)
    if unit_dim != 1 or (i < n and ops[i].kind == "mean_over"):
        if not (i < n and ops[i].kind == "mean_over" and ops[i].reduced == positions):
            return None
        reduce_spatial = True
        i += 1
    elif i < n and ops[i].kind == "pool_mean" and site_ndim >= 3:
        reduce_spatial = True
        flat = len(ops[i].out_shape) == 1
        i += 1
        if not flat:
            if i < n and ops[i].kind == "flatten":
                i += 1
            else:
                return None
    elif i < n and ops[i].kind == "flatten" and site_ndim == 2:
        i += 1
    i = skip(i)
    if i >= n or ops[i].kind not in ("linear", "conv"):
        if not before:
            return None
        return Chain(site_pos + 1, i, _composite(before), True, None, basis)
    layer = ops[i].layer
    if ops[i].kind == "linear":
        if site_ndim != 2 and not reduce_spatial:
            return None
    else:
        assert isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        conv_nd = layer.weight.ndim - 2
        if (
            before
            or site_ndim != conv_nd + 2
            or reduce_spatial
            or layer.groups != 1
            or layer.padding_mode != "zeros"
            or isinstance(layer.padding, str)
        ):
            return None
    assert layer is not None
    i = skip(i + 1)
    scale = None
    if i < n and ops[i].kind == "bn":
        scale = _bn_scale(ops[i].layer)  # type: ignore[arg-type]
        if scale is None:
            return None
        i += 1
    i = skip(i)
    if isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return Chain(site_pos + 1, i, layer, reduce_spatial, scale, basis)
    # further Linear layers on the (now 2-D) activity compose with this one
    layers = [*before, (layer, scale)]
    while i < n and ops[i].kind == "linear" and len(ops[i - 1].out_shape) == 1:
        nxt = ops[i].layer
        assert nxt is not None
        i = skip(i + 1)
        nxt_scale = None
        if i < n and ops[i].kind == "bn":
            nxt_scale = _bn_scale(ops[i].layer)  # type: ignore[arg-type]
            if nxt_scale is None:
                return None
            i += 1
        layers.append((nxt, nxt_scale))
        i = skip(i)
    if len(layers) == 1:
        return Chain(site_pos + 1, i, layer, reduce_spatial, scale, basis)
    return Chain(site_pos + 1, i, _composite(layers), reduce_spatial, None, basis)
