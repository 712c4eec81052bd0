"""Sites: the modules whose outputs can be ablated, how to choose them, and hooks on them.

A *site* is a module of a model whose output is ablatable: a ReLU after a Linear layer, a
conv block's output, a residual block. Its *units* are the output's dimension 1: features
of a 2-D ``(N, F)`` output, channels (feature maps) of a 4-D ``(N, C, H, W)`` output.

- :func:`resolve_sites` turns a selector (``"all"``, ``"lastN"``, names) into site names in
  forward order.
- :func:`site_units` / :func:`site_specs` measure each site's unit count and output shape
  with one forward pass on a sample batch.
- :func:`site_hooks` / :func:`ablation_hooks` edit site outputs during a forward pass; the
  hooks are always removed when the ``with`` block ends, even on error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from singledir.errors import InputError, SiteError

__all__ = [
    "SiteSpec",
    "resolve_sites",
    "default_sites",
    "site_specs",
    "site_units",
    "site_hooks",
    "ablation_hooks",
    "forward_order",
]

_LAST_N = re.compile(r"^last(\d+)$")


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
    """One site: its module name, unit count, per-sample output shape and the offset of its
    first unit in the pooled unit index (sites concatenated in forward order)."""

    name: str
    n_units: int
    shape: tuple[int, ...]
    offset: int = 0

    @property
    def units(self) -> range:
        """Global (pooled) indices of this site's units."""
        return range(self.offset, self.offset + self.n_units)


def _fx_call_counts(model: nn.Module) -> dict[str, int] | None:
    """How many times each module is called in the model's traced graph, or None when the
    model cannot be traced symbolically."""
    try:
        from torch import fx

        graph = fx.Tracer().trace(model)
    except Exception:
        return None
    counts: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            counts[str(node.target)] = counts.get(str(node.target), 0) + 1
    return counts


def forward_order(
    model: nn.Module, names: Sequence[str], sample_x: torch.Tensor
) -> tuple[list[str], dict[str, int]]:
    """Run one forward pass on ``sample_x`` and report the named modules in the order they
    first run, with how many times each ran."""
    modules = dict(model.named_modules())
    first: dict[str, int] = {}
    counts: dict[str, int] = {}
    tick = [0]
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: object, _o: object) -> None:
            counts[name] = counts.get(name, 0) + 1
            if name not in first:
                first[name] = tick[0]
                tick[0] += 1

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

    ``model.site_names`` when the model declares it (singledir's models), else every
    :class:`torch.nn.ReLU` module that runs exactly once per forward pass, in forward order
    (found with a symbolic trace, or with a forward pass on ``sample_x`` when the model
    cannot be traced; registration order is the last resort).
    """
    declared = getattr(model, "site_names", None)
    if declared:
        return [str(n) for n in declared]
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU) and n]
    if sample_x is not None:
        ordered, counts = forward_order(model, relus, sample_x)
        return [n for n in ordered if counts.get(n, 0) == 1]
    fx_counts = _fx_call_counts(model)
    if fx_counts is not None:
        return [n for n in relus if fx_counts.get(n, 0) == 1]
    return relus


def resolve_sites(
    model: nn.Module,
    layers: str | Sequence[str] = "all",
    *,
    sample_x: torch.Tensor | None = None,
) -> list[str]:
    """Turn a site selector into module names, in forward order.

    Parameters
    ----------
    model:
        Any :class:`torch.nn.Module`.
    layers:
        ``"all"`` (the default site set, see :func:`default_sites`), ``"lastN"`` (the last N
        of the default set), a comma-separated string of module names, or a sequence of
        module names. Any module of the model can be named, e.g. ``"layer4.1"``.
    sample_x:
        Optional input batch; when given, named sites are ordered by a forward pass and a
        module that does not run exactly once per pass is refused.

    Raises
    ------
    SiteError
        Unknown name (the message lists the valid site names), ``lastN`` with N larger than
        the number of sites, an empty selection, or a module that runs more than once.
    """
    defaults = default_sites(model, sample_x)
    if isinstance(layers, str):
        sel = layers.strip()
        if sel in ("", "all"):
            names = list(defaults)
        elif (m := _LAST_N.match(sel)) is not None:
            n = int(m.group(1))
            if n < 1 or n > len(defaults):
                raise SiteError(
                    f"--layers {sel} asks for {n} sites but the model has {len(defaults)}: "
                    f"use last1 .. last{len(defaults)} or all"
                )
            names = defaults[-n:]
        else:
            names = [s.strip() for s in sel.split(",") if s.strip()]
    else:
        names = [str(s) for s in layers]
    if not names:
        raise SiteError("no sites selected: pass all, lastN or module names")
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules or name == "":
            shown = ", ".join(defaults[:40]) + (" ..." if len(defaults) > 40 else "")
            raise SiteError(
                f"unknown site {name!r}: choose from {shown} (or any module name of the model)"
            )
    if len(set(names)) != len(names):
        raise SiteError(f"site listed twice in {names}: name each site once")
    if sample_x is not None:
        ordered, counts = forward_order(model, names, sample_x)
        for name in names:
            c = counts.get(name, 0)
            if c != 1:
                raise SiteError(
                    f"module {name!r} runs {c} times per forward pass: choose a module that "
                    "runs exactly once (e.g. a block rather than a shared ReLU)"
                )
        return ordered
    rank = {n: i for i, n in enumerate(defaults)}
    if all(n in rank for n in names):
        return sorted(names, key=lambda n: rank[n])
    fx_order = _fx_module_order(model)
    if fx_order is not None and all(n in fx_order for n in names):
        return sorted(names, key=lambda n: fx_order[n])
    return names


def _fx_module_order(model: nn.Module) -> dict[str, int] | None:
    """Position of every module (leaf or container) by the first call of it or of one of
    its descendants in a symbolic trace, or None when the model cannot be traced."""
    try:
        from torch import fx

        graph = fx.Tracer().trace(model)
    except Exception:
        return None
    pos: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            parts = str(node.target).split(".")
            for k in range(1, len(parts) + 1):
                pos.setdefault(".".join(parts[:k]), len(pos))
    return pos


def site_specs(model: nn.Module, sites: Sequence[str], sample_x: torch.Tensor) -> list[SiteSpec]:
    """Unit count, per-sample output shape and pooled offset of each site, measured by one
    forward pass on ``sample_x`` (a batch of at least one sample)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            if not isinstance(out, torch.Tensor) or out.ndim < 2:
                raise SiteError(
                    f"site {name!r} does not output a (batch, units, ...) tensor: "
                    "choose a layer whose output is a tensor"
                )
            shapes[name] = tuple(int(s) for s in out.shape[1:])

        return hook

    with site_hooks(model, {}, observers={s: make_hook(s) for s in sites}):
        with torch.no_grad(), _eval_mode(model):
            try:
                model(sample_x)
            except SiteError:
                raise
            except Exception as exc:
                raise InputError(
                    f"input of shape {tuple(sample_x.shape)} does not fit the model "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
                    "pass data shaped like the model's training data"
                ) from None
    specs = []
    offset = 0
    for name in sites:
        if name not in shapes:
            raise SiteError(f"site {name!r} did not run in a forward pass: choose a used module")
        shape = shapes[name]
        specs.append(SiteSpec(name=name, n_units=shape[0], shape=shape, offset=offset))
        offset += shape[0]
    return specs


def site_units(model: nn.Module, sites: Sequence[str], sample_x: torch.Tensor) -> dict[str, int]:
    """Number of units of each site (features of a 2-D output, channels of a 4-D one)."""
    return {s.name: s.n_units for s in site_specs(model, sites, sample_x)}


@contextmanager
def site_hooks(
    model: nn.Module,
    edits: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    *,
    observers: Mapping[str, Callable[..., None]] | None = None,
) -> Iterator[None]:
    """Replace each named site's output by ``edits[name](output)`` during forward passes
    (and call ``observers[name](module, input, output)``); hooks are removed on exit."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, fn in edits.items():
            if name not in modules:
                raise SiteError(f"unknown site {name!r}: name a module of the model")

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
    """Ablate units during forward passes.

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
