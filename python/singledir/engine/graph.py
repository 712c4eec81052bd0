"""The model's graph: a ``torch.fx`` trace, the sites in it, and each site's unit axis.

A *site* is a module (an activation module, or any named module: a conv block, a residual
block) or a graph node: ``torch.relu`` / ``F.relu`` / ``F.gelu`` / any
``torch.nn.functional`` activation call, methods such as ``x.relu()`` and each call of a
module that runs more than once (a shared ``self.relu``: ``relu``, ``relu_1``), named by its
fx node name. A module site's output is the last node of the module's region in the graph
(fx records each node's module path in ``node.meta["nn_module_stack"]``).

The *unit axis* of a site is inferred from the operations that produce and consume it:
channels (dim 1) next to conv, batch-norm and pooling layers, the last dimension next to
Linear, LayerNorm, attention and embedding layers; a 2-D ``(N, C)`` output has dim 1.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from singledir.errors import SiteError

__all__ = [
    "ACTIVATION_MODULES",
    "GraphSites",
    "SiteNode",
    "is_activation_node",
    "node_kind",
    "trace",
    "unit_dim_from_neighbours",
]

ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.Softplus,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
)
ACTIVATION_FUNCTIONS: frozenset[Any] = frozenset(
    {
        torch.relu,
        torch.relu_,
        F.relu,
        F.relu_,
        F.relu6,
        F.gelu,
        F.silu,
        F.mish,
        F.elu,
        F.celu,
        F.selu,
        F.leaky_relu,
        F.softplus,
        F.hardtanh,
        F.hardswish,
        F.hardsigmoid,
        torch.tanh,
        torch.sigmoid,
        F.tanh,
        F.sigmoid,
    }
)
ACTIVATION_METHODS = frozenset({"relu", "relu_", "tanh", "sigmoid", "sigmoid_", "tanh_"})

_ELEMENTWISE_MODULES = (*ACTIVATION_MODULES, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_ELEMENTWISE_FUNCTIONS = ACTIVATION_FUNCTIONS | {
    operator.add,
    operator.iadd,
    operator.mul,
    operator.sub,
    operator.truediv,
    torch.add,
    torch.mul,
    torch.sub,
    F.dropout,
}
_LAST_DIM_MODULES = (nn.Linear, nn.LayerNorm, nn.Embedding, nn.MultiheadAttention, nn.Bilinear)
_CHANNEL_MODULES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool2d,
)
_LAST_DIM_FUNCTIONS = frozenset(
    {F.linear, F.layer_norm, torch.matmul, operator.matmul, F.embedding}
)
_CHANNEL_FUNCTIONS = frozenset(
    {
        F.conv1d,
        F.conv2d,
        F.conv3d,
        F.batch_norm,
        F.max_pool1d,
        F.max_pool2d,
        F.avg_pool1d,
        F.avg_pool2d,
        F.adaptive_avg_pool1d,
        F.adaptive_avg_pool2d,
        F.group_norm,
    }
)


def trace(model: nn.Module) -> tuple[fx.GraphModule | None, str]:
    """A symbolic trace of ``model`` with torch's own modules as leaves, or ``(None, why)``
    when the model cannot be traced (data-dependent control flow, unsupported calls)."""
    try:
        graph = fx.Tracer().trace(model)
        return fx.GraphModule(model, graph), ""
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: use hooks
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"torch.fx cannot trace the model ({msg[:100]})"


def is_activation_node(gm: fx.GraphModule, node: fx.Node) -> bool:
    """An activation call: a ReLU/GELU/... module, function or method."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), ACTIVATION_MODULES)
    if node.op == "call_function":
        return node.target in ACTIVATION_FUNCTIONS
    if node.op == "call_method":
        return node.target in ACTIVATION_METHODS
    return False


@dataclass(frozen=True)
class SiteNode:
    """A site located in the graph: its user-facing name, kind (``module``, ``call``,
    ``function`` or ``method``; see :func:`node_kind`) and the graph node whose output is
    ablated."""

    name: str
    kind: str
    node: fx.Node


class GraphSites:
    """Site lookup on a traced model: module names (any module the graph runs once) and
    node names (activation calls, each call of a shared module); the default site set;
    forward order."""

    def __init__(self, model: nn.Module, gm: fx.GraphModule):
        self.model = model
        self.gm = gm
        self.nodes = list(gm.graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.by_name = {n.name: n for n in self.nodes if n.op not in ("placeholder", "output")}
        self.regions: dict[str, list[fx.Node]] = {}
        self.calls: dict[str, int] = {}
        for node in self.nodes:
            for key in node.meta.get("nn_module_stack", {}) or {}:
                base, _, again = str(key).partition("@")
                if again:
                    self.calls[base] = max(self.calls.get(base, 1), int(again) + 1)
                else:
                    self.calls.setdefault(base, 1)
                    self.regions.setdefault(base, []).append(node)

    def default_names(self) -> list[str]:
        """Activation modules that run once (by module name), each call of an activation
        module that runs more than once (a shared ``self.relu``: by its fx node name,
        ``relu``, ``relu_1``) and activation function/method calls, in forward order."""
        out = []
        for node in self.nodes:
            if not is_activation_node(self.gm, node):
                continue
            if node.op == "call_module" and self.calls.get(str(node.target), 0) == 1:
                out.append(str(node.target))
            else:
                out.append(node.name)
        return out

    def call_names(self, module: str) -> list[str]:
        """The fx node names of the calls of a leaf module, in forward order."""
        return [n.name for n in self.nodes if n.op == "call_module" and str(n.target) == module]

    def find(self, name: str) -> SiteNode | None:
        """The site called ``name``: a module that runs once; else an fx node name (for a
        module that runs more than once, the node of that name, which fx gives its first
        call); None when neither applies cleanly.

        Raises
        ------
        SiteError
            A module that runs more than once and is not also a node name.
        """
        modules = dict(self.model.named_modules())
        node = self.by_name.get(name)
        if node is not None and node.op == "get_attr":
            node = None
        if name in modules and name:
            runs = self.calls.get(name, 0)
            if runs > 1 and node is None:
                calls = self.call_names(name)
                hint = f"name one call by its fx node name ({', '.join(calls)})" if calls else ""
                raise SiteError(
                    f"module {name!r} runs {runs} times per forward pass: "
                    + (hint + " or " if hint else "")
                    + "choose a module that runs exactly once (e.g. a block)"
                )
            if runs == 1:
                region = self.regions.get(name)
                if not region:
                    return None
                out = max(region, key=lambda n: self.index[n])
                inside = set(region)
                if any(u not in inside for n in region if n is not out for u in n.users):
                    return None  # the module leaks more than its output: not a clean cut
                return SiteNode(name=name, kind="module", node=out)
            if runs == 0 and node is None:
                return None
        if node is None:
            return None
        return SiteNode(name=name, kind=node_kind(node), node=node)


def node_kind(node: fx.Node) -> str:
    """The kind of a graph-node site: ``call`` (one call of a module, by its node name),
    ``method`` (``x.relu()``) or ``function`` (``torch.relu``, ``F.gelu``, ``x + y``)."""
    return {"call_module": "call", "call_method": "method"}.get(node.op, "function")


# ----------------------------------------------------------------------------- unit axis
def _verdict_module(m: nn.Module) -> str | None:
    if isinstance(m, _LAST_DIM_MODULES):
        return "last"
    if isinstance(m, _CHANNEL_MODULES):
        return "channel"
    return None


def _is_elementwise(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _ELEMENTWISE_MODULES)
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in ACTIVATION_METHODS | {"add", "mul", "sub"}
    return False


def _verdict(gm: fx.GraphModule, node: fx.Node) -> str | None:
    if node.op == "call_module":
        return _verdict_module(gm.get_submodule(str(node.target)))
    if node.op == "call_function":
        if node.target in _LAST_DIM_FUNCTIONS:
            return "last"
        if node.target in _CHANNEL_FUNCTIONS:
            return "channel"
    return None


def _producer(gm: fx.GraphModule, node: fx.Node, depth: int = 0) -> str | None:
    """What made ``node``'s layout: the first layout-setting op upstream through
    elementwise ops."""
    if depth > 32:
        return None
    own = _verdict(gm, node)
    if own is not None:
        return own
    if not _is_elementwise(gm, node):
        return None
    for arg in node.all_input_nodes:
        got = _producer(gm, arg, depth + 1)
        if got is not None:
            return got
    return None


def _consumers(gm: fx.GraphModule, node: fx.Node, depth: int = 0) -> set[str | None]:
    out: set[str | None] = set()
    if depth > 32:
        return out
    for user in node.users:
        own = _verdict(gm, user)
        if own is not None:
            out.add(own)
        elif _is_elementwise(gm, user):
            out |= _consumers(gm, user, depth + 1)
        else:
            out.add(None)
    return out


def unit_dim_from_neighbours(gm: fx.GraphModule, node: fx.Node, ndim: int) -> int | None:
    """The unit axis (as a dim of the full ``(N, ...)`` output) of ``node``, from the ops
    around it, or None when they do not say (or disagree)."""
    if ndim == 2:
        return 1
    verdicts = {_producer(gm, node)} | _consumers(gm, node)
    dims = {1 if v == "channel" else ndim - 1 for v in verdicts if v is not None}
    return dims.pop() if len(dims) == 1 else None


def unit_dim_from_modules(
    leaf_trail: Sequence[nn.Module], site: nn.Module, ndim: int
) -> int | None:
    """The unit axis of a module site in a model that cannot be traced: from the site module
    itself, else from the last layout-setting leaf module that ran before it finished."""
    if ndim == 2:
        return 1
    for m in [site, *reversed(leaf_trail)]:
        v = _verdict_module(m)
        if v is not None:
            return 1 if v == "channel" else ndim - 1
        if m is not site and not isinstance(m, _ELEMENTWISE_MODULES):
            return None
    return None
