"""Sites: what can be ablated, how to choose it, its units, and hooks on module sites.

A *site* is a module of a model (an activation module, a conv block's output, a residual
block) or a graph node (``torch.relu`` / ``F.gelu`` calls, ``x.relu()``, each call of a
module that runs more than once such as a shared ``self.relu``; named by its ``torch.fx``
node name). Its *units* are its features: channels of ``(N, C, *spatial)``
outputs, the last dimension of ``(N, *positions, C)`` outputs of Linear layers; the axis is
inferred from the neighbouring operations (:mod:`singledir.engine.graph`) or given with
``unit_dim``. A unit acts at every position; its activity for statistics is its mean over
positions.

- :func:`resolve_sites` turns a selector (``"all"``, ``"lastN"``, names) into site names in
  forward order; :func:`locate_sites` also measures each site (:class:`SiteSpec`).
- :func:`list_sites` tabulates every candidate site of a model.
- :func:`site_hooks` / :func:`ablation_hooks` edit module-site outputs during a forward
  pass; the hooks are always removed when the ``with`` block ends, even on error.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from singledir.engine.graph import (
    ACTIVATION_MODULES,
    GraphSites,
    trace,
    unit_dim_from_modules,
    unit_dim_from_neighbours,
)
from singledir.errors import InputError, SiteError

if TYPE_CHECKING:
    import polars as pl
    from torch import fx

__all__ = [
    "SiteSpec",
    "Located",
    "UnitDim",
    "resolve_sites",
    "locate_sites",
    "default_sites",
    "list_sites",
    "parse_unit_dim",
    "site_specs",
    "site_units",
    "site_hooks",
    "ablation_hooks",
    "forward_order",
]

_LAST_N = re.compile(r"^last(\d+)$")
UnitDim = int | Mapping[str, int] | None


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block (a probing pass must not update batch-norm statistics)."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


@dataclass(frozen=True)
class SiteSpec:
    """One site: its name, kind (``module``/``function``/``method``), per-sample output
    ``shape``, ``unit_dim`` (the unit axis as a dim of the full ``(N, ...)`` output), the
    ``offset`` of its first unit (or direction) in the pooled index, and an optional
    orthonormal ``basis`` ``(k, width)`` of directions: then its ``n_units`` are the k
    directions."""

    name: str
    n_units: int
    shape: tuple[int, ...]
    offset: int = 0
    unit_dim: int = 1
    kind: str = "module"
    basis: torch.Tensor | None = field(default=None, compare=False)

    @property
    def units(self) -> range:
        """Global (pooled) indices of this site's units."""
        return range(self.offset, self.offset + self.n_units)

    @property
    def width(self) -> int:
        """Size of the unit axis."""
        return int(self.shape[self.unit_dim - 1])

    @property
    def canonical_shape(self) -> tuple[int, ...]:
        """Per-sample shape with the unit axis first: ``(width, *positions)``."""
        rest = [s for i, s in enumerate(self.shape) if i != self.unit_dim - 1]
        return (self.width, *rest)


@dataclass
class Located:
    """Chosen sites of a model: names in forward order, their specs, the fx trace (None for
    a model torch.fx cannot trace, with the reason) and the site nodes in it."""

    names: list[str]
    specs: list[SiteSpec]
    gm: fx.GraphModule | None
    nodes: list[fx.Node] | None
    why_untraced: str = ""


def _declared(model: nn.Module) -> list[str] | None:
    declared = getattr(model, "site_names", None)
    return [str(n) for n in declared] if declared else None


def forward_order(
    model: nn.Module, names: Sequence[str], sample_x: torch.Tensor
) -> tuple[list[str], dict[str, int]]:
    """Run one forward pass on ``sample_x`` and report the named modules in the order they
    first finish, with how many times each ran (the path for untraceable models)."""
    modules = dict(model.named_modules())
    first: dict[str, int] = {}
    counts: dict[str, int] = {}
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: object, _o: object) -> None:
            counts[name] = counts.get(name, 0) + 1
            first.setdefault(name, len(first))

        return hook

    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        with torch.no_grad(), _eval_mode(model):
            model(sample_x)
    finally:
        for h in handles:
            h.remove()
    ran = sorted((n for n in names if n in first), key=lambda n: first[n])
    return ran, counts


def default_sites(model: nn.Module, sample_x: torch.Tensor | None = None) -> list[str]:
    """The site set used by ``layers="all"``.

    ``model.site_names`` when the model declares it (singledir's models); else, from the
    fx graph, every activation module that runs once (by module name), each call of an
    activation module that runs more than once (by fx node name: ``relu``, ``relu_1``) and
    every activation function or method call (``torch.relu``, ``F.gelu``, ``x.relu()``), in
    forward order. For a model torch.fx cannot trace: activation modules that run once in a
    forward pass on ``sample_x`` (registration order without one).
    """
    declared = _declared(model)
    if declared:
        return declared
    gm, _ = trace(model)
    if gm is not None:
        return GraphSites(model, gm).default_names()
    acts = [n for n, m in model.named_modules() if isinstance(m, ACTIVATION_MODULES) and n]
    if sample_x is not None:
        ordered, counts = forward_order(model, acts, sample_x)
        return [n for n in ordered if counts.get(n, 0) == 1]
    return acts


_NO_SITES = (
    "the model has no default sites (no activation module, activation call or declared "
    "site_names): name the sites, e.g. layers=['layer1', 'relu_1'] (CLI: --layers "
    "layer1,relu_1), with any module or fx node name"
)


def _select(layers: str | Sequence[str], defaults: list[str]) -> list[str]:
    if isinstance(layers, str):
        sel = layers.strip()
        if sel == "":
            raise SiteError("layers is empty: pass all, lastN (e.g. last3) or site names")
        if sel == "all":
            if not defaults:
                raise SiteError(_NO_SITES)
            names = list(defaults)
        elif (m := _LAST_N.match(sel)) is not None:
            n = int(m.group(1))
            if not defaults:
                raise SiteError(_NO_SITES)
            if n < 1 or n > len(defaults):
                raise SiteError(
                    f"--layers {sel} asks for {n} sites but the model has {len(defaults)} "
                    f"({', '.join(defaults[-8:])}): use "
                    + ("last1 or all" if len(defaults) == 1 else f"last1 .. last{len(defaults)}")
                )
            names = defaults[-n:]
        else:
            names = [s.strip() for s in sel.split(",") if s.strip()]
    else:
        names = [str(s) for s in layers]
    if not names:
        raise SiteError("no sites selected: pass all, lastN or module/node names")
    if len(set(names)) != len(names):
        raise SiteError(f"site listed twice in {names}: name each site once")
    return names


def _unknown(name: str, defaults: Sequence[str]) -> SiteError:
    shown = ", ".join(defaults[:40]) + (" ..." if len(defaults) > 40 else "")
    return SiteError(
        f"unknown site {name!r}: choose from {shown} (or any module or fx node name of the "
        "model; `singledir sites` lists them)"
    )


def resolve_sites(
    model: nn.Module,
    layers: str | Sequence[str] = "all",
    *,
    sample_x: torch.Tensor | None = None,
) -> list[str]:
    """Turn a site selector into site names, in forward order.

    ``layers``: ``"all"`` (see :func:`default_sites`), ``"lastN"`` (the last N of them),
    a comma-separated string or a sequence of module names (any module, e.g.
    ``"layer4.1"``) or fx node names (``"relu_1"``). With ``sample_x`` an untraceable model
    is ordered by a forward pass.

    Raises
    ------
    SiteError
        Unknown name (the message lists the valid site names), ``lastN`` with N larger than
        the number of sites, an empty selection, or a module that runs more than once.
    """
    return _resolve(model, layers, sample_x).names


@dataclass
class _Resolved:
    names: list[str]
    kinds: list[str]
    gm: fx.GraphModule | None
    nodes: list[fx.Node] | None
    why_untraced: str


def _resolve(
    model: nn.Module, layers: str | Sequence[str], sample_x: torch.Tensor | None
) -> _Resolved:
    gm, why = trace(model)
    if gm is not None:
        graph = GraphSites(model, gm)
        defaults = _declared(model) or graph.default_names()
        names = _select(layers, defaults)
        found = []
        for name in names:
            site = graph.find(name)
            if site is None:
                if name in dict(model.named_modules()) and name:
                    gm = None  # a module the graph does not cut cleanly: use hooks
                    break
                raise _unknown(name, defaults)
            found.append(site)
        if gm is not None:
            found.sort(key=lambda s: graph.index[s.node])
            return _Resolved(
                [s.name for s in found], [s.kind for s in found], gm, [s.node for s in found], ""
            )
        why = "a chosen module is not a clean cut of the fx graph"
    declared = _declared(model)
    defaults = declared if declared is not None else default_sites(model, sample_x)
    names = _select(layers, defaults)
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules or name == "":
            if gm is None and why.startswith("torch.fx"):
                raise SiteError(
                    f"unknown site {name!r}: this model cannot be traced by torch.fx, so only "
                    f"module names work; choose from {', '.join(defaults[:40])}"
                )
            raise _unknown(name, defaults)
    if sample_x is not None:
        ordered, counts = forward_order(model, names, sample_x)
        for name in names:
            c = counts.get(name, 0)
            if c != 1:
                raise SiteError(
                    f"module {name!r} runs {c} times per forward pass: choose a module that "
                    "runs exactly once (e.g. a block rather than a shared ReLU)"
                    + (
                        "; one call of it is a site only where torch.fx can trace the model"
                        if c > 1 and why.startswith("torch.fx")
                        else ""
                    )
                )
        names = ordered
    return _Resolved(names, ["module"] * len(names), None, None, why)


def _observe(
    model: nn.Module, names: Sequence[str], gm: fx.GraphModule | None, nodes: Any, x: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, list[nn.Module]]]:
    """One forward pass on ``x`` recording each site's output (and, for hooks, the leaf
    modules that ran before each site finished)."""
    outs: dict[str, torch.Tensor] = {}
    trails: dict[str, list[nn.Module]] = {}
    if gm is not None:
        from singledir.engine.runners import evaluate_graph

        wanted = {n: s for n, s in zip(nodes, names, strict=True)}

        def seen(node: Any, value: Any) -> None:
            if node in wanted:
                outs[wanted[node]] = value

        with torch.no_grad(), _eval_mode(model):
            evaluate_graph(gm, x, seen)
        return outs, trails
    trail: list[nn.Module] = []
    modules = dict(model.named_modules())
    handles = []

    def leaf_hook(m: nn.Module, _i: object, _o: object) -> None:
        trail.append(m)

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            if name not in outs and isinstance(out, torch.Tensor):
                outs[name] = out
                trails[name] = list(trail)

        return hook

    try:
        for m in model.modules():
            if not list(m.children()):
                handles.append(m.register_forward_hook(leaf_hook))
        for name in names:
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        with torch.no_grad(), _eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return outs, trails


def parse_unit_dim(text: str | None) -> UnitDim:
    """A command-line ``--unit-dim``: ``D`` (every site) or ``site=D,site=D``."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        if "=" not in text:
            return int(text)
        out: dict[str, int] = {}
        for part in text.split(","):
            name, _, dim = part.partition("=")
            out[name.strip()] = int(dim)
        return out
    except ValueError:
        raise InputError(
            f"--unit-dim {text!r}: pass an integer (e.g. 2) or site=dim pairs (e.g. gelu=2,fc=1)"
        ) from None


def _as_dim(value: object) -> int | None:
    """``value`` as an axis index, or None when it is not an integer (1.5, "x", True)."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _check_unit_dim(unit_dim: object) -> None:
    """Refuse a ``unit_dim`` that is neither None, an integer nor a dict site -> integer."""
    if unit_dim is None:
        return
    fix = "pass an integer (e.g. unit_dim=2) or a dict site -> integer (e.g. {'gelu': 2})"
    if isinstance(unit_dim, Mapping):
        for name, value in unit_dim.items():
            if not isinstance(name, str) or _as_dim(value) is None:
                raise InputError(f"unit_dim {{{name!r}: {value!r}}} is not site -> integer: {fix}")
    elif _as_dim(unit_dim) is None:
        raise InputError(f"unit_dim {unit_dim!r} is not an integer: {fix}")


def _wanted_unit_dim(unit_dim: UnitDim, name: str) -> int | None:
    if unit_dim is None:
        return None
    if isinstance(unit_dim, Mapping):
        value = unit_dim.get(name)
        return None if value is None else _as_dim(value)
    return _as_dim(unit_dim)


def locate_sites(
    model: nn.Module,
    layers: str | Sequence[str],
    sample_x: torch.Tensor,
    *,
    unit_dim: UnitDim = None,
) -> Located:
    """Resolve, order and measure the chosen sites with one forward pass on ``sample_x``.

    ``unit_dim`` (an int for every site, or a dict ``site -> dim``) overrides the inferred
    unit axis; dims count the batch as dim 0 and may be negative.
    """
    _check_unit_dim(unit_dim)
    resolved = _resolve(model, layers, sample_x)
    names, gm, nodes, why = resolved.names, resolved.gm, resolved.nodes, resolved.why_untraced
    if isinstance(unit_dim, Mapping):
        extra = sorted(set(unit_dim) - set(names))
        if extra:
            raise SiteError(
                f"unit_dim names {extra}, which are not chosen sites ({', '.join(names)}): "
                "key it by the chosen site names"
            )
    try:
        outs, trails = _observe(model, names, gm, nodes, sample_x)
    except SiteError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"input of shape {tuple(sample_x.shape)} does not fit the model ({msg[:120]}): "
            "pass data shaped like the model's training data"
        ) from None
    modules = dict(model.named_modules())
    specs = []
    offset = 0
    for k, name in enumerate(names):
        out = outs.get(name)
        if out is None:
            raise SiteError(f"site {name!r} did not run in a forward pass: choose a used module")
        if not isinstance(out, torch.Tensor) or out.ndim < 2:
            raise SiteError(
                f"site {name!r} does not output a (batch, units, ...) tensor: "
                "choose a layer whose output is a tensor"
            )
        ndim = out.ndim
        dim = _wanted_unit_dim(unit_dim, name)
        if dim is not None:
            if not -ndim < dim < ndim or dim % ndim == 0:
                raise InputError(
                    f"unit_dim {dim} is out of range for site {name!r} with output shape "
                    f"{tuple(out.shape)}: use 1..{ndim - 1} (or -{ndim - 1}..-1; 0 is the batch)"
                )
            dim %= ndim
        elif gm is not None and nodes is not None:
            dim = unit_dim_from_neighbours(gm, nodes[k], ndim)
        else:
            dim = unit_dim_from_modules(trails.get(name, []), modules[name], ndim)
        if dim is None:
            raise SiteError(
                f"cannot tell the unit axis of site {name!r} (output shape "
                f"{tuple(out.shape)}): pass unit_dim={{{name!r}: D}} (CLI: --unit-dim {name}=D)"
            )
        shape = tuple(int(s) for s in out.shape[1:])
        kind = resolved.kinds[k]
        specs.append(
            SiteSpec(
                name=name,
                n_units=shape[dim - 1],
                shape=shape,
                offset=offset,
                unit_dim=dim,
                kind=kind,
            )
        )
        offset += shape[dim - 1]
    return Located(names=names, specs=specs, gm=gm, nodes=nodes, why_untraced=why)


def site_specs(
    model: nn.Module, sites: Sequence[str], sample_x: torch.Tensor, *, unit_dim: UnitDim = None
) -> list[SiteSpec]:
    """Unit count, per-sample output shape, unit axis and pooled offset of each site (in
    forward order), measured by one forward pass on ``sample_x``."""
    return locate_sites(model, list(sites), sample_x, unit_dim=unit_dim).specs


def site_units(
    model: nn.Module, sites: Sequence[str], sample_x: torch.Tensor, *, unit_dim: UnitDim = None
) -> dict[str, int]:
    """Number of units of each site."""
    return {s.name: s.n_units for s in site_specs(model, sites, sample_x, unit_dim=unit_dim)}


def list_sites(model: nn.Module, data: Any, *, unit_dim: UnitDim = None) -> pl.DataFrame:
    """Every candidate site of ``model`` (the ``layers="all"`` set) as a table: ``name``,
    ``kind`` (``module``; ``call``: one call of a module that runs more than once, by its fx
    node name; ``function``; ``method``), ``n_units``, ``unit_dim`` (None where the axis
    cannot be inferred: pass ``unit_dim``), ``shape`` (per-sample output shape).

    ``data`` is anything the engines accept (only its first two samples are run).
    """
    import polars as pl

    from singledir.engine.batches import Batches

    params = [p for p in model.parameters() if p.is_floating_point()]
    dtype = params[0].dtype if params else torch.float32
    device = params[0].device if params else torch.device("cpu")
    sample = Batches(data, 2, device, dtype).sample_x
    with _eval_mode(model):
        names = resolve_sites(model, "all", sample_x=sample)
        rows: list[tuple[Any, ...]] = []
        try:  # one trace and pass for every site; site by site where an axis is unknown
            specs = locate_sites(model, names, sample, unit_dim=unit_dim).specs
            rows = [(s.name, s.kind, s.n_units, s.unit_dim, list(s.shape)) for s in specs]
        except SiteError:
            if isinstance(unit_dim, Mapping) and set(unit_dim) - set(names):
                raise
            for name in names:
                own: UnitDim = unit_dim
                if isinstance(unit_dim, Mapping):
                    own = {name: unit_dim[name]} if name in unit_dim else None
                try:
                    spec = locate_sites(model, [name], sample, unit_dim=own).specs[0]
                    rows.append((name, spec.kind, spec.n_units, spec.unit_dim, list(spec.shape)))
                except SiteError:
                    located = locate_sites(model, [name], sample, unit_dim={name: -1})
                    spec = located.specs[0]
                    rows.append((name, spec.kind, None, None, list(spec.shape)))
    return pl.DataFrame(
        rows,
        schema={
            "name": pl.String,
            "kind": pl.String,
            "n_units": pl.Int64,
            "unit_dim": pl.Int64,
            "shape": pl.List(pl.Int64),
        },
        orient="row",
    )


@contextmanager
def site_hooks(
    model: nn.Module,
    edits: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    *,
    observers: Mapping[str, Callable[..., None]] | None = None,
) -> Iterator[None]:
    """Replace each named module site's output by ``edits[name](output)`` during forward
    passes (and call ``observers[name](module, input, output)``); hooks are removed on exit."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, fn in edits.items():
            if name not in modules:
                raise SiteError(
                    f"site {name!r} is not a module: graph-node sites need a model that "
                    "torch.fx can trace"
                )

            def hook(
                _m: nn.Module, _i: object, out: torch.Tensor, fn: Callable = fn
            ) -> torch.Tensor:
                return fn(out)

            handles.append(modules[name].register_forward_hook(hook))
        for name, obs in (observers or {}).items():
            if name not in modules:
                raise SiteError(f"unknown site {name!r}: name a module of the model")
            handles.append(modules[name].register_forward_hook(obs))
        yield
    finally:
        for h in handles:
            h.remove()


def _unit_view(v: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Reshape a per-unit vector (or a per-sample ``(B, units)`` array) to broadcast over a
    site output ``(B, units, ...)``."""
    extra = out.ndim - 2
    if v.ndim == 1:
        return v.reshape(1, -1, *([1] * extra))
    return v.reshape(v.shape[0], v.shape[1], *([1] * extra))


@contextmanager
def ablation_hooks(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    values: Mapping[str, torch.Tensor] | None = None,
) -> Iterator[None]:
    """Ablate units (dim 1) of module sites during forward passes.

    ``masks[site]`` is a bool tensor, ``True`` = ablated, of shape ``(units,)`` (same for
    every sample) or ``(batch, units)`` (one mask per sample row). An ablated unit's output
    is replaced by ``values[site][unit]`` (default 0) at every position. Hooks are removed
    on exit, even on error.
    """

    def make_edit(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def edit(out: torch.Tensor) -> torch.Tensor:
            m = _unit_view(masks[name].to(out.device, torch.bool), out)
            if values is None or name not in values:
                fill = torch.zeros((), dtype=out.dtype, device=out.device)
            else:
                fill = _unit_view(values[name].to(out.device, out.dtype), out)
            return torch.where(m, fill, out)

        return edit

    with site_hooks(model, {name: make_edit(name) for name in masks}):
        yield
