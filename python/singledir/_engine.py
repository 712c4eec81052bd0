"""Shared machinery of the ablation and noise engines (private).

- data: any supported ``data`` argument -> batches of ``(x, y)`` tensors;
- runners: run a model from its first site onward many times per batch, with the part
  before the first site computed once (flat ``nn.Sequential`` slicing, a ``torch.fx`` cut,
  or a full forward pass with hooks as the last resort), masks stacked along the batch;
- affine chains: the linear map from a site's units to the next pre-activation (Linear or
  conv, optional batch norm), used for rank-1 / per-channel incremental updates;
- scoring: accuracy and cross-entropy of stacked logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from singledir.errors import InputError, SiteError
from singledir.sites import SiteSpec, resolve_sites, site_hooks, site_specs

Edit = Callable[[int, torch.Tensor], torch.Tensor]

DEFAULT_BATCH = 1024
METHODS = ("auto", "stacked", "hooks")


# ----------------------------------------------------------------------------------- data
def _tensor(v: Any, what: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    try:
        return torch.as_tensor(np.asarray(v))
    except Exception:
        raise InputError(f"{what} cannot be turned into a tensor: pass tensors or arrays") from None


def iter_batches(data: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches from a tuple of tensors, an object with ``.x``/``.y`` (or
    ``.loader(batch_size)``), a torch Dataset or a DataLoader."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, tuple | list) and len(data) == 2:
        x, y = _tensor(data[0], "inputs"), _tensor(data[1], "labels")
    elif isinstance(getattr(data, "x", None), torch.Tensor) and hasattr(data, "y"):
        x, y = data.x, _tensor(data.y, "labels")
    else:
        if isinstance(data, DataLoader):
            loader: Any = data
        elif hasattr(data, "loader") and callable(data.loader):
            loader = data.loader(batch_size)
        elif isinstance(data, Dataset):
            loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        else:
            raise InputError(
                f"cannot read data of type {type(data).__name__}: pass (x, y) tensors, a "
                "Dataset or a DataLoader"
            )
        for item in loader:
            if not isinstance(item, tuple | list) or len(item) < 2:
                raise InputError("data batches must be (inputs, labels) pairs: fix the loader")
            yield _tensor(item[0], "inputs"), _tensor(item[1], "labels")
        return
    if x.shape[0] != y.shape[0]:
        raise InputError(
            f"{x.shape[0]} inputs but {y.shape[0]} labels: pass one label per input sample"
        )
    for i in range(0, int(x.shape[0]), batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]


def check_labels(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    if y.ndim != 1:
        raise InputError(f"labels must be 1-D class indices, got shape {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise InputError("labels must be integer class indices: pass an int64 tensor")
    y = y.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise InputError(
            f"labels must lie in 0..{n_classes - 1} (the model's {n_classes} outputs): "
            "check the data matches the model"
        )
    return y


class Batches:
    """Re-iterable batches on a device, with the sample count checked (non-empty)."""

    def __init__(self, data: Any, batch_size: int, device: torch.device, dtype: torch.dtype):
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        first = next(iter(iter_batches(data, batch_size)), None)
        if first is None or first[0].shape[0] == 0:
            raise InputError("the data set is empty: pass at least one sample")
        self.sample_x = first[0][:2].to(device, dtype)
        self._count: int | None = None
        self.n_classes: int | None = None  # set once known: labels are then checked

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in iter_batches(self.data, self.batch_size):
            if x.shape[0] == 0:
                continue
            if self.n_classes is not None:
                y = check_labels(y, self.n_classes)
            yield x.to(self.device, self.dtype), y.to(self.device)

    def count(self) -> int:
        """Number of samples (from the data's length when it has one, else by a pass)."""
        from torch.utils.data import DataLoader

        if self._count is not None:
            return self._count
        d = self.data
        n_known: int | None = None
        if isinstance(d, tuple | list) and len(d) == 2:
            n_known = int(_tensor(d[0], "inputs").shape[0])
        elif isinstance(getattr(d, "x", None), torch.Tensor):
            n_known = int(d.x.shape[0])
        elif isinstance(d, DataLoader):
            if d.batch_size is not None and not d.drop_last and hasattr(d.sampler, "__len__"):
                n_known = len(d.sampler)  # type: ignore[arg-type]
        elif hasattr(d, "__len__") and hasattr(d, "__getitem__"):
            n_known = len(d)
        if n_known is not None:
            self._count = n_known
            return n_known
        n = 0
        for x, _ in iter_batches(self.data, self.batch_size):
            n += int(x.shape[0])
        self._count = n
        return n


@contextmanager
def prepared(model: nn.Module, device: torch.device) -> Iterator[torch.dtype]:
    """Model on ``device`` in eval mode inside the block; its mode and device are restored."""
    was_training = model.training
    params = list(model.parameters()) + list(model.buffers())
    old_device = params[0].device if params else torch.device("cpu")
    dtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)
    model.to(device)
    model.eval()
    try:
        yield dtype
    finally:
        model.train(was_training)
        model.to(old_device)


def memory_budget_bytes(memory_budget_mb: float | None, device: torch.device) -> int:
    if memory_budget_mb is not None:
        if memory_budget_mb <= 0:
            raise InputError(f"memory budget must be positive, got {memory_budget_mb} MB")
        return int(memory_budget_mb * 2**20)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    return 1024 * 2**20


def activation_bytes_per_sample(model: nn.Module, sample_x: torch.Tensor) -> int:
    """Sum of the output sizes of every leaf module for one sample (an upper bound on what
    a forward pass keeps alive without autograd)."""
    total = [0]
    handles = []

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    try:
        for m in model.modules():
            if not list(m.children()):
                handles.append(m.register_forward_hook(hook))
        with torch.no_grad():
            model(sample_x[:1])
    finally:
        for h in handles:
            h.remove()
    return max(total[0], 4)


# -------------------------------------------------------------------------------- runners
def repeat_rows(t: torch.Tensor, reps: int) -> torch.Tensor:
    """``(B, ...)`` -> ``(reps * B, ...)``: the batch repeated ``reps`` times (mask-major).
    Always a new tensor, so in-place layers downstream cannot corrupt a cached prefix."""
    if reps == 1:
        return t.clone()
    return t.unsqueeze(0).expand(reps, *t.shape).reshape(reps * t.shape[0], *t.shape[1:])


class Runner:
    """Runs a model from its first site onward; ``prefix`` once per batch, ``suffix`` per
    stack of masks. ``edit(k, out)`` is applied to the output of site ``k``."""

    kind = "base"

    def prefix(self, x: torch.Tensor) -> Any:
        raise NotImplementedError

    def suffix(self, state: Any, reps: int, edit: Edit) -> torch.Tensor:
        raise NotImplementedError


class SequentialRunner(Runner):
    """Flat ``nn.Sequential`` whose sites are direct children: slice the children."""

    kind = "sequential"

    def __init__(self, model: nn.Sequential, sites: Sequence[str]):
        names = [n for n, _ in model.named_children()]
        self.children = list(model.children())
        self.names = names
        self.site_pos = [names.index(s) for s in sites]
        self.site_of = {p: k for k, p in enumerate(self.site_pos)}

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for m in self.children[: self.site_pos[0] + 1]:
            h = m(h)
        return h

    def suffix(self, state: torch.Tensor, reps: int, edit: Edit) -> torch.Tensor:
        h = edit(0, repeat_rows(state, reps))
        for i in range(self.site_pos[0] + 1, len(self.children)):
            h = self.children[i](h)
            k = self.site_of.get(i)
            if k is not None:
                h = edit(k, h)
        return h


class FxRunner(Runner):
    """Any symbolically traceable model: cut its graph after the first site."""

    kind = "fx"

    def __init__(self, model: nn.Module, sites: Sequence[str]):
        from torch import fx

        site_set = set(sites)

        class _Tracer(fx.Tracer):
            def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
                return qualname in site_set or super().is_leaf_module(m, qualname)

        graph = _Tracer().trace(model)
        self.gm = fx.GraphModule(model, graph)
        self.nodes = list(graph.nodes)
        site_nodes: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            if node.op == "call_module" and str(node.target) in site_set:
                if str(node.target) in site_nodes:
                    raise SiteError(f"site {node.target!r} runs twice: choose a module used once")
                site_nodes[str(node.target)] = i
        if set(site_nodes) != site_set:
            raise SiteError("a site is missing from the traced graph")
        self.site_at = {site_nodes[s]: k for k, s in enumerate(sites)}
        self.cut = site_nodes[sites[0]]
        if any(i < self.cut for i in self.site_at):
            raise SiteError("sites are not in forward order")
        later = set(self.nodes[self.cut + 1 :])
        self.live = [
            n
            for n in self.nodes[: self.cut + 1]
            if any(u in later for u in n.users) or n is self.nodes[self.cut]
        ]

    def _interp(self) -> Any:
        from torch import fx

        return fx.Interpreter(self.gm)

    def prefix(self, x: torch.Tensor) -> dict[Any, Any]:
        interp = self._interp()
        interp.args_iter = iter([x])
        env: dict[Any, Any] = {}
        interp.env = env
        for node in self.nodes[: self.cut + 1]:
            env[node] = interp.run_node(node)
        return {n: env[n] for n in self.live}

    def suffix(self, state: dict[Any, Any], reps: int, edit: Edit) -> torch.Tensor:
        batch = state[self.nodes[self.cut]].shape[0]
        env: dict[Any, Any] = {}
        for n, v in state.items():
            if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == batch:
                v = repeat_rows(v, reps)
            env[n] = v
        cut_node = self.nodes[self.cut]
        env[cut_node] = edit(0, env[cut_node])
        interp = self._interp()
        interp.env = env
        for i in range(self.cut + 1, len(self.nodes)):
            node = self.nodes[i]
            if node.op == "output":
                return interp.run_node(node)
            env[node] = interp.run_node(node)
            k = self.site_at.get(i)
            if k is not None:
                env[node] = edit(k, env[node])
        raise RuntimeError("traced graph has no output")


class HookRunner(Runner):
    """Last resort: full forward passes on the repeated batch, sites edited by hooks."""

    kind = "hooks"

    def __init__(self, model: nn.Module, sites: Sequence[str]):
        self.model = model
        self.sites = list(sites)

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def suffix(self, state: torch.Tensor, reps: int, edit: Edit) -> torch.Tensor:
        edits = {s: (lambda out, k=k: edit(k, out)) for k, s in enumerate(self.sites)}
        with site_hooks(self.model, edits):
            return self.model(repeat_rows(state, reps))


def make_runner(
    model: nn.Module, sites: Sequence[str], sample_x: torch.Tensor, method: str = "auto"
) -> Runner:
    """The fastest runner that reproduces the model: Sequential slicing, then an fx cut
    (checked against the model on ``sample_x``), then hooks."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "hooks":
        return HookRunner(model, sites)
    top = {n for n, _ in model.named_children()}
    if isinstance(model, nn.Sequential) and all(s in top for s in sites):
        return SequentialRunner(model, sites)
    try:
        runner: Runner = FxRunner(model, sites)
        with torch.no_grad():
            want = model(sample_x)
            got = runner.suffix(runner.prefix(sample_x), 2, lambda _k, t: t)
        if not (
            isinstance(got, torch.Tensor)
            and got.shape[0] == 2 * want.shape[0]
            and torch.allclose(got[: want.shape[0]], want, rtol=1e-4, atol=1e-5)
            and torch.allclose(got[want.shape[0] :], want, rtol=1e-4, atol=1e-5)
        ):
            raise RuntimeError("fx cut does not reproduce the model")
        return runner
    except Exception:
        return HookRunner(model, sites)


@dataclass
class Setup:
    """Everything an engine needs about a (model, data, sites) triple."""

    model: nn.Module
    batches: Batches
    sites: list[str]
    specs: list[SiteSpec]
    n_units: int
    n_classes: int
    device: torch.device
    dtype: torch.dtype
    row_bytes: int


def setup(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str],
    batch_size: int | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Setup:
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batches = Batches(data, int(batch_size or DEFAULT_BATCH), device, dtype)
    sample = batches.sample_x
    try:
        with torch.no_grad():
            out = model(sample)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"input of shape {tuple(sample.shape[1:])} does not fit the model ({msg}): pass "
            "data shaped like the model's training data"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise InputError("the model must return (batch, classes) logits: wrap it to do so")
    batches.n_classes = int(out.shape[1])
    sites = resolve_sites(model, layers, sample_x=sample)
    specs = site_specs(model, sites, sample)
    return Setup(
        model=model,
        batches=batches,
        sites=sites,
        specs=specs,
        n_units=sum(s.n_units for s in specs),
        n_classes=int(out.shape[1]),
        device=device,
        dtype=dtype,
        row_bytes=activation_bytes_per_sample(model, sample),
    )


# ------------------------------------------------------------------------------- scoring
def score(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct counts (int64) and summed cross-entropy (float64) per stacked mask, for
    ``logits`` of shape ``(M, B, C)`` and labels ``(B,)``."""
    return score_mcb(logits.transpose(1, 2).contiguous(), y)


def score_per_class(
    logits: torch.Tensor, y: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :func:`score` plus correct counts per class ``(M, n_classes)``."""
    hit_out: list[torch.Tensor] = []
    correct, loss = score_mcb(logits.transpose(1, 2).contiguous(), y, hit_out)
    hit = hit_out[0].double()  # (M, B)
    per = torch.zeros(hit.shape[0], n_classes, dtype=torch.float64, device=hit.device)
    per.index_add_(1, y, hit)
    return correct, loss, per.round().long().cpu()


def seed_for(seed: int, index: int) -> int:
    """A 63-bit seed derived from ``(seed, index)`` by NumPy's SeedSequence."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(index)]).generate_state(
        2, dtype=np.uint32
    )
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def unit_fill(specs: Sequence[SiteSpec], means: list[torch.Tensor] | None, value: str) -> list:
    """Per-site replacement values for ablated units (zeros or the unit means)."""
    if value == "zero":
        return [None for _ in specs]
    if value == "mean":
        assert means is not None
        return list(means)
    raise InputError(f"unknown ablation value {value!r}: choose zero or mean")


def unit_moments(setup_: Setup, runner: Runner) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mean and standard deviation (population) of every unit's activity over the data,
    per site: for conv sites over samples and spatial positions. Accumulated in float64."""
    sums = [torch.zeros(s.n_units, dtype=torch.float64, device=setup_.device) for s in setup_.specs]
    sqs = [torch.zeros_like(t) for t in sums]
    counts = [0 for _ in setup_.specs]

    def observe(k: int, out: torch.Tensor) -> torch.Tensor:
        o = out.double().transpose(0, 1).reshape(out.shape[1], -1)
        sums[k] += o.sum(1)
        sqs[k] += (o * o).sum(1)
        counts[k] += o.shape[1]
        return out

    with torch.no_grad():
        for x, _y in setup_.batches:
            runner.suffix(runner.prefix(x), 1, observe)
    means, stds = [], []
    for k in range(len(sums)):
        m = sums[k] / counts[k]
        v = (sqs[k] / counts[k] - m * m).clamp_min(0)
        means.append(m.to(setup_.dtype))
        stds.append(v.sqrt().to(setup_.dtype))
    return means, stds


# ------------------------------------------------------------------------- affine chains
_PASS = (nn.Dropout, nn.Identity)


@dataclass
class Chain:
    """The affine map from a site's output to the next pre-activation in a flat Sequential:
    ``[Dropout] [AdaptiveAvgPool2d(1) [Flatten]] (Linear | Conv2d) [BatchNorm] [Dropout]``.

    ``start``/``end`` are child positions (``children[start:end]`` is the chain);
    ``contrib`` gives the change of the chain's output when one unit's input changes.
    """

    start: int
    end: int
    layer: nn.Linear | nn.Conv2d
    reduce_spatial: bool
    scale: torch.Tensor | None

    def weight_cols(self, units: torch.Tensor) -> torch.Tensor:
        """Linear layers: ``(M, out)`` = the weight columns of ``units`` (times the BN scale)."""
        w = self.layer.weight.t()[units]
        return (w * self.scale if self.scale is not None else w).contiguous()

    def contrib(self, d: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """Chain output change for per-unit input changes ``d`` of shape ``(M, B, *spatial)``
        of units ``units`` ``(M,)``: shape ``(M, B, *out)`` (bias excluded)."""
        if isinstance(self.layer, nn.Linear):
            r = d.mean(dim=tuple(range(2, d.ndim))) if d.ndim > 2 else d
            return r.unsqueeze(-1) * self.weight_cols(units).unsqueeze(1)
        conv = self.layer
        m, b = d.shape[0], d.shape[1]
        w = conv.weight[:, units]  # (Cout, M, kh, kw)
        cout = w.shape[0]
        w = w.transpose(0, 1).reshape(m * cout, 1, *w.shape[2:])
        out = F.conv2d(
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
        if isinstance(self.layer, nn.Linear):
            r = d.mean(dim=tuple(range(2, d.ndim))) if d.ndim > 2 else d
            return torch.addcmul(
                pre.unsqueeze(0), r.unsqueeze(-1), self.weight_cols(units).unsqueeze(1)
            )
        return (pre.unsqueeze(0) + self.contrib(d, units)).contiguous()

    def run(self, children: Sequence[nn.Module], h: torch.Tensor) -> torch.Tensor:
        for m in children[self.start : self.end]:
            h = m(h)
        return h


def parse_chain(children: Sequence[nn.Module], site_pos: int, site_ndim: int) -> Chain | None:
    """The affine chain right after the child at ``site_pos`` (whose output has ``site_ndim``
    dims incl. batch), or None when the next layers are not of that form."""
    i = site_pos + 1
    n = len(children)

    def skip(i: int) -> int:
        while i < n and isinstance(children[i], _PASS):
            i += 1
        return i

    i = skip(i)
    reduce_spatial = False
    if i < n and isinstance(children[i], nn.AdaptiveAvgPool2d) and site_ndim == 4:
        size = children[i].output_size
        if size not in (1, (1, 1)):
            return None
        reduce_spatial = True
        i += 1
        if i < n and isinstance(children[i], nn.Flatten):
            if children[i].start_dim != 1:
                return None
            i += 1
    elif i < n and isinstance(children[i], nn.Flatten) and site_ndim == 2:
        i += 1
    i = skip(i)
    if i >= n:
        return None
    layer = children[i]
    if isinstance(layer, nn.Linear):
        if site_ndim != 2 and not reduce_spatial:
            return None
        if reduce_spatial and not isinstance(children[i - 1], nn.Flatten):
            return None
    elif isinstance(layer, nn.Conv2d):
        if site_ndim != 4 or reduce_spatial or layer.groups != 1 or layer.padding_mode != "zeros":
            return None
    else:
        return None
    i += 1
    scale = None
    if i < n and isinstance(children[i], nn.BatchNorm1d | nn.BatchNorm2d):
        bn = children[i]
        if bn.training or bn.running_var is None:
            return None
        if isinstance(bn, nn.BatchNorm1d) != isinstance(layer, nn.Linear):
            return None
        var = bn.running_var
        assert isinstance(var, torch.Tensor)
        scale = torch.rsqrt(var + float(bn.eps))  # type: ignore[arg-type]
        if isinstance(bn.weight, torch.Tensor):
            scale = scale * bn.weight
        scale = scale.detach()
        i += 1
    i = skip(i)
    return Chain(start=site_pos + 1, end=i, layer=layer, reduce_spatial=reduce_spatial, scale=scale)


def chunk_count(budget: int, per_item_bytes: float, cap: int) -> int:
    """How many items of ``per_item_bytes`` fit the budget (at least 1, at most cap)."""
    return int(max(1, min(cap, math.floor(budget / max(per_item_bytes, 1.0)))))


def score_mcb(
    logits: torch.Tensor, y: torch.Tensor, hits: list[torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`score` for logits laid out ``(M, C, B)`` (classes before samples), which keeps
    every reduction over classes vectorized along samples. The prediction is the first
    class holding the maximum, as ``argmax``."""
    m, c, b = logits.shape
    mx = logits.amax(1)  # (M, B)
    picked = logits.gather(1, y.view(1, 1, b).expand(m, 1, b)).squeeze(1)
    before = torch.arange(c, device=y.device).view(c, 1) < y.view(1, b)  # (C, B)
    tie_before = ((logits == mx.unsqueeze(1)) & before).any(1)
    hit = (picked == mx) & ~tie_before  # (M, B)
    if hits is not None:
        hits.append(hit)
    correct = hit.sum(1)
    lse = mx + torch.log(torch.exp(logits - mx.unsqueeze(1)).sum(1))
    return correct.long().cpu(), (lse - picked).double().sum(1).cpu()
