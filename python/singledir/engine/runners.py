"""Runners: run a model from its first site onward many times per batch, the part before
the first site computed once (``prefix``), the rest once per stack of masks (``suffix``),
with ``edit(k, out)`` applied to the output of site k.

- :class:`ChainRunner`: the graph after the first site is a chain of single-input ops
  (however the model is written: ``nn.Sequential``, a custom ``forward``, functional
  calls, nested modules); its ops are classified for the incremental fast paths.
- :class:`FxRunner`: any traceable graph (branches, residuals): the cut graph is evaluated
  node by node with the prefix values repeated along the batch.
- :class:`HookRunner`: the fallback for models torch.fx cannot trace: full forward passes
  with hooks on module sites.

Edits see each site's output in canonical layout: the unit axis moved to dim 1.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from singledir.errors import InputError, SiteError
from singledir.sites import Located, SiteSpec, site_hooks

Edit = Callable[[int, torch.Tensor], torch.Tensor]

METHODS = ("auto", "stacked", "hooks")

__all__ = [
    "METHODS",
    "ChainOp",
    "ChainRunner",
    "Edit",
    "FxRunner",
    "HookRunner",
    "Runner",
    "evaluate_graph",
    "make_runner",
    "repeat_rows",
]


def repeat_rows(t: torch.Tensor, reps: int) -> torch.Tensor:
    """``(B, ...)`` -> ``(reps * B, ...)``: the batch repeated ``reps`` times (mask-major).
    Always a new tensor, so in-place layers downstream cannot corrupt a cached prefix."""
    if reps == 1:
        return t.clone()
    return t.unsqueeze(0).expand(reps, *t.shape).reshape(reps * t.shape[0], *t.shape[1:])


def canonical_edit(edit: Edit, k: int, out: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """Apply ``edit`` to ``out`` with the unit axis moved to dim 1, and move it back."""
    if unit_dim == 1:
        return edit(k, out)
    return edit(k, out.movedim(unit_dim, 1)).movedim(1, unit_dim)


def _fetch_attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def run_node(gm: fx.GraphModule, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
    """Evaluate one fx node with its inputs taken from ``env``."""
    if node.op == "get_attr":
        return _fetch_attr(gm, str(node.target))
    args = fx.node.map_arg(node.args, lambda n: env[n])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
    if node.op == "call_module":
        return gm.get_submodule(str(node.target))(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)  # type: ignore[operator]
    if node.op == "call_method":
        self_obj, *rest = args
        return getattr(self_obj, str(node.target))(*rest, **kwargs)
    raise RuntimeError(f"cannot evaluate fx node {node.op}")


def evaluate_graph(
    gm: fx.GraphModule, x: torch.Tensor, observe: Callable[[fx.Node, Any], None]
) -> Any:
    """Run the whole graph on ``x``, calling ``observe(node, value)`` on every value."""
    env: dict[fx.Node, Any] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node] = x
        elif node.op == "output":
            return fx.node.map_arg(node.args[0], lambda n: env[n])
        else:
            env[node] = run_node(gm, node, env)
        observe(node, env[node])
    raise RuntimeError("traced graph has no output")


class Runner:
    """Runs a model from its first site onward; ``prefix`` once per batch, ``suffix`` per
    stack of masks."""

    kind = "base"
    # ops from the last site to the logits when they form a chain (``tail_ops[0]`` is the
    # site itself), for the paths that treat the last site's tail as affine
    tail_ops: list[ChainOp] | None = None

    def prefix(self, x: torch.Tensor) -> Any:
        raise NotImplementedError

    def suffix(self, state: Any, reps: int, edit: Edit) -> torch.Tensor:
        raise NotImplementedError


class FxRunner(Runner):
    """A traced graph cut after the first site node; the suffix is evaluated node by node
    with the live prefix values repeated along the batch."""

    kind = "fx"

    def __init__(self, gm: fx.GraphModule, site_nodes: Sequence[fx.Node], unit_dims: Sequence[int]):
        self.gm = gm
        self.nodes = [n for n in gm.graph.nodes]
        index = {n: i for i, n in enumerate(self.nodes)}
        self.site_at = {index[n]: k for k, n in enumerate(site_nodes)}
        self.unit_dims = list(unit_dims)
        self.cut = index[site_nodes[0]]
        if any(i < self.cut for i in self.site_at):
            raise SiteError("sites are not in forward order")
        later = set(self.nodes[self.cut + 1 :])
        # values that carry the batch (parameters and constants are never repeated)
        self.batched: set[fx.Node] = set()
        for n in self.nodes:
            if n.op == "placeholder" or any(a in self.batched for a in n.all_input_nodes):
                self.batched.add(n)
        self.live = [
            n
            for n in self.nodes[: self.cut + 1]
            if any(u in later for u in n.users) or n is self.nodes[self.cut]
        ]

    def prefix(self, x: torch.Tensor) -> dict[fx.Node, Any]:
        env: dict[fx.Node, Any] = {}
        for node in self.nodes[: self.cut + 1]:
            env[node] = x if node.op == "placeholder" else run_node(self.gm, node, env)
        return {n: env[n] for n in self.live}

    def suffix(self, state: dict[fx.Node, Any], reps: int, edit: Edit) -> torch.Tensor:
        cut_node = self.nodes[self.cut]
        batch = state[cut_node].shape[0]
        env: dict[fx.Node, Any] = {}
        for n, v in state.items():
            if (
                n in self.batched
                and isinstance(v, torch.Tensor)
                and v.ndim >= 1
                and v.shape[0] == batch
            ):
                v = repeat_rows(v, reps)
            env[n] = v
        env[cut_node] = canonical_edit(edit, 0, env[cut_node], self.unit_dims[0])
        for i in range(self.cut + 1, len(self.nodes)):
            node = self.nodes[i]
            if node.op == "output":
                return fx.node.map_arg(node.args[0], lambda n: env[n])  # type: ignore[return-value]
            env[node] = run_node(self.gm, node, env)
            k = self.site_at.get(i)
            if k is not None:
                env[node] = canonical_edit(edit, k, env[node], self.unit_dims[k])
        raise RuntimeError("traced graph has no output")


# ---------------------------------------------------------------------------------- chain
_PASS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
_SHAPE_METHODS = frozenset({"size", "dim"})


@dataclass
class ChainOp:
    """One step of a chain: a graph node (with the shape queries it needs) applied to the
    previous step's output. ``kind``: ``linear``, ``conv``, ``bn``, ``pass``, ``flatten``,
    ``pool_mean``, ``relu``, ``add_const`` (adds a value from elsewhere in the graph),
    ``site`` (the first site itself) or ``other``; ``layer`` is the
    Linear / conv / batch-norm module of those kinds; ``out_shape`` is per-sample."""

    kind: str
    layer: nn.Module | None
    nodes: list[fx.Node]
    inp: fx.Node | None
    gm: fx.GraphModule | None
    out_shape: tuple[int, ...] = ()
    reduced: tuple[int, ...] = ()  # ``mean_over``: the dims averaged (of the full tensor)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        assert self.gm is not None and self.inp is not None
        if self.kind == "add_const":
            raise RuntimeError("an add_const op runs only inside its graph")
        env: dict[fx.Node, Any] = {self.inp: h}
        for node in self.nodes:
            env[node] = run_node(self.gm, node, env)
        return env[self.nodes[-1]]


def _is_shape_query(node: fx.Node) -> bool:
    if node.op == "call_method" and node.target in _SHAPE_METHODS:
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
        return True
    return (
        node.op == "call_function"
        and node.target is operator.getitem
        and isinstance(node.args[0], fx.Node)
        and _is_shape_query(node.args[0])
    )


def _constant_input(node: fx.Node, depth: int = 0) -> bool:
    """A value that does not depend on the input (parameters, buffers, constants)."""
    if node.op == "get_attr":
        return True
    if node.op in ("placeholder", "output") or depth > 8:
        return False
    return all(_constant_input(n, depth + 1) for n in node.all_input_nodes)


class _LinearShim(nn.Module):
    """``F.linear(h, weight, bias)`` with parameters from the graph, as a Linear-like layer."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight = weight
        self.bias = bias


def _classify(gm: fx.GraphModule, node: fx.Node, op: ChainOp) -> tuple[str, nn.Module | None]:
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        if isinstance(m, nn.Linear):
            return "linear", m
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            return "conv", m
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
            return "bn", m
        if isinstance(m, _PASS_MODULES):
            return "pass", None
        if isinstance(m, nn.ReLU):
            return "relu", None
        if isinstance(m, nn.Flatten):
            return ("flatten" if m.start_dim == 1 and m.end_dim == -1 else "other"), None
        if isinstance(m, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d | nn.AdaptiveAvgPool3d):
            size = m.output_size
            ones = size == 1 or (isinstance(size, tuple) and all(s == 1 for s in size))
            return ("pool_mean" if ones else "other"), None
        return "other", None
    if node.op == "call_function":
        if node.target in (F.relu, torch.relu, torch.relu_, F.relu_):
            return "relu", None
        if node.target is F.dropout and not node.kwargs.get("training", False):
            return "pass", None
        if node.target is F.linear:
            w = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
            b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
            if (
                isinstance(w, fx.Node)
                and w.op == "get_attr"
                and (b is None or (isinstance(b, fx.Node) and b.op == "get_attr"))
            ):
                weight = _fetch_attr(gm, str(w.target))
                bias = None if b is None else _fetch_attr(gm, str(b.target))
                return "linear", _LinearShim(weight, bias)
        if node.target is torch.flatten:
            return "reshape", None
        if node.target in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, torch.mean):
            return "reduce", None
        return "other", None
    if node.op == "call_method":
        if node.target in ("relu", "relu_"):
            return "relu", None
        if node.target in ("view", "reshape", "flatten"):
            return "reshape", None
        if node.target == "contiguous":
            return "pass", None
        if node.target == "mean":
            return "reduce", None
    return "other", None


def _mean_dims(node: fx.Node, ndim: int) -> tuple[int, ...] | None:
    """The dims ``node`` (a mean or adaptive average pool to size 1) averages over an
    ``ndim``-D input, read off its arguments (not guessed from shapes); None otherwise."""
    if node.target in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d):
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        sizes = size if isinstance(size, tuple | list) else (size,)
        return tuple(range(2, ndim)) if all(s == 1 for s in sizes) else None
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if isinstance(dims, int):
        dims = (dims,)
    if not isinstance(dims, tuple | list) or not all(isinstance(d, int) for d in dims):
        return None
    return tuple(sorted(d % ndim for d in dims))


def extract_chain(
    gm: fx.GraphModule,
    site_nodes: Sequence[fx.Node],
    sample: dict[fx.Node, Any],
    *,
    side_inputs: bool = False,
) -> tuple[list[ChainOp], list[int]] | str:
    """The ops from the first site node to the output when they form a chain (each op has
    one input that depends on the sites; other inputs are parameters, constants or shape
    queries), with the op position of every site; else the reason why not. ``sample`` holds
    every node's value on a sample batch (for shapes).

    With ``side_inputs``, an addition of a value computed elsewhere in the graph (which
    cannot depend on the chain: the chain's nodes have one user each) is an ``add_const``
    op: affine in the chain's input, but only evaluable inside the whole graph."""
    nodes = list(gm.graph.nodes)
    cur = site_nodes[0]
    ops = [ChainOp("site", None, [cur], None, gm, tuple(sample[cur].shape[1:]))]
    positions = {cur: 0}
    while True:
        users = list(cur.users)
        helpers = [u for u in users if _is_shape_query(u)]
        main = [u for u in users if u not in helpers]
        # shape queries of shape queries (x.size(0) -> getitem)
        frontier = list(helpers)
        while frontier:
            nxt_q = [
                u for h in frontier for u in h.users if _is_shape_query(u) and u not in helpers
            ]
            helpers += nxt_q
            frontier = nxt_q
        main = [u for u in users if u not in helpers]
        for h in helpers:
            main += [u for u in h.users if not _is_shape_query(u) and u not in main]
        if len(main) != 1:
            return (
                f"node {cur.name!r} feeds {len(main)} ops (the graph branches after the first site)"
            )
        nxt = main[0]
        if nxt.op == "output":
            if nxt.args[0] is not cur:
                return "the model's output is not a single tensor"
            break
        side = [
            inp
            for inp in nxt.all_input_nodes
            if inp is not cur and inp not in helpers and not _constant_input(inp)
        ]
        adds = (operator.add, operator.iadd, torch.add)
        is_add = nxt.target in adds or (nxt.op == "call_method" and nxt.target == "add")
        if side and not (side_inputs and is_add and len(nxt.all_input_nodes) == 2):
            return f"op {nxt.name!r} combines the site path with another input"
        needed = sorted(
            (
                h
                for h in helpers
                if h in nxt.all_input_nodes or any(u in nxt.all_input_nodes for u in h.users)
            ),
            key=nodes.index,
        )
        op = ChainOp("other", None, [*needed, nxt], cur, gm, ())
        kind, layer = _classify(gm, nxt, op)
        value = sample[nxt]
        if not isinstance(value, torch.Tensor):
            return f"op {nxt.name!r} does not output a tensor"
        op.kind, op.layer, op.out_shape = kind, layer, tuple(value.shape[1:])
        prev_shape = ops[-1].out_shape
        if side:
            if op.out_shape != prev_shape:
                return f"op {nxt.name!r} broadcasts the site path"
            op.kind = "add_const"
        if kind == "reshape":  # a flatten when it keeps the batch and flattens the rest
            numel = 1
            for s in prev_shape:
                numel *= s
            op.kind = "flatten" if op.out_shape == (numel,) else "other"
        elif kind == "reduce":
            ndim = len(prev_shape) + 1
            dims = _mean_dims(nxt, ndim)
            keeps = len(prev_shape) > 1 and op.out_shape[:1] == prev_shape[:1]
            ones = all(s == 1 for s in op.out_shape[1:])
            if dims == tuple(range(2, ndim)) and keeps and ones:
                op.kind = "pool_mean"  # every dim after the channels, leaving (C,) or (C, 1..)
            elif dims is not None and len(op.out_shape) == ndim - 1 - len(dims):
                op.kind, op.reduced = "mean_over", dims  # e.g. over the tokens of (N, T, C)
            else:
                op.kind = "other"
        positions[nxt] = len(ops)
        ops.append(op)
        cur = nxt
    missing = [n.name for n in site_nodes if n not in positions]
    if missing:
        return f"site {missing[0]!r} is not on the chain"
    return ops, [positions[n] for n in site_nodes]


class ChainRunner(Runner):
    """The graph after the first site is a chain of ops: the prefix is the cut graph, the
    suffix runs ``ops[1:]`` with edits at the site positions."""

    kind = "chain"

    def __init__(self, fx_runner: FxRunner, ops: list[ChainOp], site_pos: list[int]):
        self.fx = fx_runner
        self.ops = ops
        self.site_pos = site_pos
        self.site_of = {p: k for k, p in enumerate(site_pos)}
        self.unit_dims = fx_runner.unit_dims

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        return self.fx.prefix(x)[self.fx.nodes[self.fx.cut]]

    def suffix(self, state: torch.Tensor, reps: int, edit: Edit) -> torch.Tensor:
        h = canonical_edit(edit, 0, repeat_rows(state, reps), self.unit_dims[0])
        for i in range(1, len(self.ops)):
            h = self.ops[i](h)
            k = self.site_of.get(i)
            if k is not None:
                h = canonical_edit(edit, k, h, self.unit_dims[k])
        return h


class HookRunner(Runner):
    """Last resort: full forward passes on the repeated batch, module sites edited by
    hooks."""

    kind = "hooks"

    def __init__(self, model: nn.Module, specs: Sequence[SiteSpec]):
        self.model = model
        self.specs = list(specs)

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def suffix(self, state: torch.Tensor, reps: int, edit: Edit) -> torch.Tensor:
        edits = {
            s.name: (lambda out, k=k, d=s.unit_dim: canonical_edit(edit, k, out, d))
            for k, s in enumerate(self.specs)
        }
        with site_hooks(self.model, edits):
            return self.model(repeat_rows(state, reps))


def make_runner(
    model: nn.Module, located: Located, sample_x: torch.Tensor, method: str = "auto"
) -> tuple[Runner, str]:
    """The fastest runner that reproduces the model (a chain, then a general fx cut, both
    checked against the model on ``sample_x``, then hooks) and a note of why."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    specs = located.specs
    node_sites = [s.name for s in specs if s.kind != "module"]
    if method == "hooks" or located.gm is None:
        if node_sites:
            raise SiteError(
                f"site {node_sites[0]!r} is a graph node: it needs the fx path (a model "
                "torch.fx can trace, method auto or stacked)"
            )
        why = (
            "hooks asked for"
            if method == "hooks"
            else (f"{located.why_untraced}: full forward passes with hooks (slower)")
        )
        return HookRunner(model, specs), why
    assert located.nodes is not None
    gm = located.gm
    fx_runner = FxRunner(gm, located.nodes, [s.unit_dim for s in specs])
    sample: dict[fx.Node, Any] = {}
    try:
        with torch.no_grad():
            want = model(sample_x)
            got_full = evaluate_graph(gm, sample_x, sample.__setitem__)
            got = fx_runner.suffix(fx_runner.prefix(sample_x), 2, lambda _k, t: t)
        b = want.shape[0]
        ok = (
            isinstance(got, torch.Tensor)
            and isinstance(got_full, torch.Tensor)
            and got.shape[0] == 2 * b
            and torch.allclose(got[:b], want, rtol=1e-4, atol=1e-5)
            and torch.allclose(got[b:], want, rtol=1e-4, atol=1e-5)
        )
    except Exception:  # noqa: BLE001 - a graph that does not run means: use hooks
        ok = False
    if not ok:
        if node_sites:
            raise SiteError(
                f"the fx graph of this model does not reproduce it, so graph-node site "
                f"{node_sites[0]!r} cannot be used: name module sites instead"
            )
        return HookRunner(model, specs), "the fx graph does not reproduce the model: hooks"
    chain = extract_chain(gm, located.nodes, sample)
    if isinstance(chain, str):
        tail = extract_chain(gm, located.nodes[-1:], sample, side_inputs=True)
        fx_runner.tail_ops = None if isinstance(tail, str) else tail[0]
        return fx_runner, f"fx cut ({chain})"
    ops, pos = chain
    chain_runner = ChainRunner(fx_runner, ops, pos)
    chain_runner.tail_ops = ops[pos[-1] :]
    return chain_runner, "chain of ops after the first site"
