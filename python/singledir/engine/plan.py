"""The plan: which path a (model, data, sites) triple takes through the engine, and why.

:func:`setup` resolves and measures the sites, traces the model and picks the runner
(:mod:`singledir.engine.runners`); :func:`plan_curves` then picks the curve path:

- ``cumsum``: one site whose ops to the logits are affine: the logits at every level are a
  cumulative sum of per-unit contributions;
- ``walk`` / ``walk-linear``: two sites, the first reaching the second's pre-activation
  through an affine chain and the second reaching the logits through one: each event is a
  rank-1 (per-channel) update, chosen when the work estimate is below stacked masks;
- ``native-walk``: the chain to the logits is Linear [BN] layers with ReLUs between them
  over 2-D activations, on CPU in float32: the Rust walk (:mod:`singledir.engine.native_walk`);
- ``kwalk``: three or more sites linked by affine layers (ReLU between): every event a
  rank-1 / per-channel update, recomputing only after the next nonlinearity;
- ``level-walk``: two or more sites linked by affine layers at a few levels (units only):
  the first site's ablations as rank-1 updates, each level recomputed over the kept units
  only (:mod:`singledir.engine.levelwalk`);
- ``segments``: two or more sites where no walk applies but the last site has an affine
  tail: one stacked pass per earlier-site event, rank-1 logit terms for the last site;
- ``stacked``: stacked masks through the cached suffix (chain, fx cut or hooks).

The decision depends only on the graph (not on how the model is written) and is returned
as a :class:`Plan` with a readable ``repr``.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from singledir.engine.affine import Chain, parse_chain
from singledir.engine.batches import Batches
from singledir.engine.directions import apply_directions
from singledir.engine.mlp_chain import MlpChain, native_chain
from singledir.engine.runners import ChainRunner, Runner, make_runner
from singledir.errors import InputError, SlowPathWarning
from singledir.sites import Located, SiteSpec, UnitDim, locate_sites

__all__ = [
    "Plan",
    "Setup",
    "setup",
    "prepared",
    "plan_curves",
    "memory_budget_bytes",
    "warn_slow_path",
]

DEFAULT_BATCH = 1024


@dataclass(frozen=True)
class Plan:
    """Which path a model takes: ``runner`` (``chain``, ``fx`` or ``hooks``), ``path``
    (``native-walk``, ``cumsum``, ``walk``, ``walk-linear``, ``kwalk``, ``level-walk``,
    ``segments``, ``stacked``),
    the sites with their unit axes and unit counts, and the reasons for both choices."""

    runner: str
    path: str
    sites: tuple[str, ...]
    unit_dims: tuple[int, ...]
    n_units: tuple[int, ...]
    runner_reason: str
    path_reason: str

    def __repr__(self) -> str:
        sites = ", ".join(
            f"{s} (dim {d}, {n})"
            for s, d, n in zip(self.sites, self.unit_dims, self.n_units, strict=True)
        )
        return (
            f"Plan(path={self.path!r}: {self.path_reason}; runner={self.runner!r}: "
            f"{self.runner_reason}; sites: {sites})"
        )

    __str__ = __repr__


@dataclass
class Setup:
    """Everything an engine needs about a (model, data, sites) triple."""

    model: nn.Module
    batches: Batches
    located: Located
    specs: list[SiteSpec]
    runner: Runner
    runner_reason: str
    n_units: int
    n_classes: int
    device: torch.device
    dtype: torch.dtype
    row_bytes: int

    @property
    def sites(self) -> list[str]:
        return [s.name for s in self.specs]

    def for_site(self, k: int) -> Setup:
        """A setup for site k alone (its own runner and cut)."""
        spec = self.specs[k]
        located = Located(
            names=[spec.name],
            specs=[spec],
            gm=self.located.gm,
            nodes=None if self.located.nodes is None else [self.located.nodes[k]],
            why_untraced=self.located.why_untraced,
        )
        method = "hooks" if self.runner.kind == "hooks" else "auto"
        runner, why = make_runner(self.model, located, self.batches.sample_x, method)
        return Setup(
            **{
                **self.__dict__,
                "located": located,
                "specs": [spec],
                "runner": runner,
                "runner_reason": why,
                "n_units": spec.n_units,
            }
        )


@contextmanager
def prepared(model: nn.Module, device: torch.device) -> Iterator[torch.dtype]:
    """Model on ``device`` in eval mode inside the block; its mode and device are restored."""
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
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


def warn_slow_path(engine: Setup, method: str) -> None:
    """One :class:`SlowPathWarning` at the user's line (the first frame outside singledir,
    however many of its functions are in between) when the model fell back to hooks without
    ``method="hooks"`` asked for."""
    if engine.runner.kind == "hooks" and method != "hooks":
        warnings.warn(engine.runner_reason, SlowPathWarning, stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    """``warnings.warn``'s stacklevel, counted from the function calling this one, of the
    first frame whose code lies outside the singledir package."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame = sys._getframe(2)  # the caller of the function that called this one
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def memory_budget_bytes(memory_budget_mb: float | None, device: torch.device) -> int:
    if memory_budget_mb is not None:
        try:
            budget_mb = float(memory_budget_mb)
        except (TypeError, ValueError):
            budget_mb = math.nan
        if not math.isfinite(budget_mb) or budget_mb <= 0:
            raise InputError(
                f"memory budget must be a positive finite number of MB, got {memory_budget_mb!r}"
            )
        return int(budget_mb * 2**20)
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
            out = model(sample_x[:1])
        if isinstance(out, torch.Tensor):
            total[0] += 4 * out.numel() * out.element_size()  # functional calls are unhooked
    finally:
        for h in handles:
            h.remove()
    return max(total[0], 4)


def setup(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str],
    batch_size: int | None,
    device: torch.device,
    dtype: torch.dtype,
    *,
    method: str = "auto",
    unit_dim: UnitDim = None,
    directions: str | Mapping[str, Any] = "units",
    seed: int = 0,
) -> Setup:
    """Read the data, run the model once, locate the sites, set the directions and pick
    the runner."""
    batches = Batches(data, DEFAULT_BATCH if batch_size is None else int(batch_size), device, dtype)
    sample = batches.sample_x
    try:
        with torch.no_grad():
            out = model(sample)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"input of shape {tuple(sample.shape[1:])} does not fit the model ({msg[:120]}): "
            "pass data shaped like the model's training data"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise InputError("the model must return (batch, classes) logits: wrap it to do so")
    batches.n_classes = int(out.shape[1])
    located = locate_sites(model, layers, sample, unit_dim=unit_dim)
    specs = apply_directions(located.specs, directions, seed, dtype, device)
    located.specs = specs
    runner, why = make_runner(model, located, sample, method)
    return Setup(
        model=model,
        batches=batches,
        located=located,
        specs=specs,
        runner=runner,
        runner_reason=why,
        n_units=sum(s.n_units for s in specs),
        n_classes=int(out.shape[1]),
        device=device,
        dtype=dtype,
        row_bytes=activation_bytes_per_sample(model, sample),
    )


# ---------------------------------------------------------------------------- the plan
@dataclass
class FastPath:
    """A chosen incremental path: its name and the affine chains (or, for the native walk,
    the MLP chain) it uses."""

    name: str
    chain1: Chain | None
    tail: Chain | None
    mlp: MlpChain | None = None
    links: Any = None  # the K-site walk's chains (engine.kwalk)


def _chain_at(runner: ChainRunner, spec: SiteSpec, k: int) -> Chain | None:
    return parse_chain(runner.ops, runner.site_pos[k], len(spec.shape) + 1, spec.basis)


def fast_path(engine: Setup, n_levels: int | None) -> FastPath | str:
    """The incremental path for the curves, or the reason there is none."""
    runner = engine.runner
    if not isinstance(runner, ChainRunner):
        return f"the graph after the first site is not a chain of ops ({engine.runner_reason})"
    if len(engine.specs) > 2:
        return "more than two sites: the walk covers one or two"
    if any(s.unit_dim != 1 for s in engine.specs):
        return "a site's unit axis is not dim 1 (tokens or positions first)"
    last = len(engine.specs) - 1
    tail = _chain_at(runner, engine.specs[last], last)
    if tail is None or tail.end != len(runner.ops):
        return "the ops after the last site are not one affine layer to the logits"
    if len(engine.specs) == 1:
        return FastPath("cumsum", None, tail)
    chain1 = _chain_at(runner, engine.specs[0], 0)
    if chain1 is None or chain1.end > runner.site_pos[1]:
        return "the ops after the first site are not one affine layer before the second"
    mid = runner.ops[chain1.end : runner.site_pos[1] + 1]
    if any(op.kind not in ("relu", "pass") for op in mid):
        return "the second site is not a ReLU of the first site's affine layer"
    s2 = engine.specs[1]
    if s2.basis is not None and s2.n_units != s2.width:
        return "the second site has fewer directions than units (walk needs a full basis)"
    linear = (
        chain1.is_linear
        and len(mid) == 1
        and mid[0].kind == "relu"
        and len(s2.shape) == 1
        and s2.basis is None
    )
    if n_levels is not None and walk_cost(engine, chain1) > n_levels * stacked_cost(engine, chain1):
        return "few levels: stacking the masks does less work than walking every event"
    return FastPath("walk-linear" if linear else "walk", chain1, tail)


def walk_cost(engine: Setup, chain1: Chain) -> float:
    """Rough per-sample, per-ordering work of the two-site walk (element operations)."""
    s1, s2 = engine.specs
    pre = s2.n_units * int(np.prod(s2.shape[1:]))
    per_unit_update = pre * (1 if chain1.is_linear else 9)
    return (s1.n_units + 1) * (4 * pre + 2 * s2.n_units * engine.n_classes + per_unit_update)


def stacked_cost(engine: Setup, chain1: Chain) -> float:
    """Rough per-sample work of one stacked mask through the suffix (element operations)."""
    s2 = engine.specs[1]
    pre = s2.n_units * int(np.prod(s2.shape[1:]))
    return 2 * chain1.macs(pre) + 4 * pre + 2 * s2.n_units * engine.n_classes


def _kwalk_or(engine: Setup, n_levels: int | None, why_not_walk: str) -> FastPath | str:
    """The K-site walk (event by event, three or more sites) or the level walk (two or more
    sites, units only), whichever the work estimate favours, when it beats one pass per
    level and one pass per segment."""
    from singledir.engine.kwalk import kwalk_chains, kwalk_cost
    from singledir.engine.levelwalk import level_walk_cost, level_walk_links
    from singledir.engine.segments import segment_count

    links = kwalk_chains(engine)
    if isinstance(links, str):
        return f"{why_not_walk}; K-site walk: {links}"
    walk, per_pass = kwalk_cost(engine, links)
    passes = min(n_levels or engine.n_units + 1, segment_count(engine))
    level_links = level_walk_links(engine, links)
    level = (
        level_walk_cost(engine, level_links, n_levels or engine.n_units + 1)
        if not isinstance(level_links, str)
        else math.inf
    )
    if len(engine.specs) < 3:
        walk = math.inf  # two sites: the two-site walk was considered before
    best = min(walk, level, passes * per_pass)
    if best == passes * per_pass:
        return f"{why_not_walk}; K-site and level walks: more work than stacked passes"
    if best == level:
        return FastPath("level-walk", None, links.tail, links=level_links)
    return FastPath("kwalk", None, links.tail, links=links)


def _level_walk_over_walk(engine: Setup, n_levels: int | None, walk: FastPath) -> FastPath:
    """Two sites: the level walk where its work estimate is below the two-site walk's."""
    from singledir.engine.levelwalk import level_walk_cost, level_walk_links

    links = level_walk_links(engine)
    if isinstance(links, str) or walk.chain1 is None:
        return walk
    level = level_walk_cost(engine, links, n_levels or engine.n_units + 1)
    if level < walk_cost(engine, walk.chain1):
        return FastPath("level-walk", None, walk.tail, links=links)
    return walk


def _segments_or(engine: Setup, n_levels: int | None, why_not_walk: str) -> FastPath | str:
    """The segmented path when it applies and does fewer passes than one per level."""
    from singledir.engine.segments import segment_count, segment_tail

    tail = segment_tail(engine)
    if isinstance(tail, str):
        return f"{why_not_walk}; {tail}"
    if n_levels is not None and segment_count(engine) >= n_levels:
        return f"{why_not_walk}; few levels: one pass per level is less work than segments"
    return FastPath("segments", None, tail)


def plan_curves(engine: Setup, n_levels: int | None, method: str) -> tuple[Plan, FastPath | None]:
    """The plan of the curves (and the fast path's chains when there is one)."""
    native = native_chain(engine, method)
    if method != "auto":
        found: FastPath | str = f"method {method!r} asked for"
    elif isinstance(native, MlpChain):
        found = FastPath("native-walk", None, None, native)
    else:
        found = fast_path(engine, n_levels)
        if isinstance(found, FastPath) and found.name.startswith("walk"):
            found = _level_walk_over_walk(engine, n_levels, found)
        if isinstance(found, str) and len(engine.specs) >= 2:
            found = _kwalk_or(engine, n_levels, found)
        if isinstance(found, str):
            found = _segments_or(engine, n_levels, found)
    path = found.name if isinstance(found, FastPath) else "stacked"
    reason = (
        {
            "cumsum": "one site with an affine tail: cumulative sum of unit contributions",
            "walk": "two sites linked by an affine layer: incremental walk",
            "walk-linear": "two sites, Linear then ReLU: incremental walk over kept units",
            "native-walk": "an MLP chain of 2-D activations on CPU: the Rust walk",
            "kwalk": "sites linked by affine layers: K-site walk (rank-1 updates, recompute "
            "after the next nonlinearity)",
            "level-walk": "sites linked by affine layers, few levels: walk the levels, "
            "recomputing only the kept units after the first site",
            "segments": "the last site has an affine tail: one pass per earlier-site event, "
            "rank-1 logit terms for the last site",
        }[path]
        if isinstance(found, FastPath)
        else f"stacked masks ({found})"
    )
    plan = Plan(
        runner=engine.runner.kind,
        path=path,
        sites=tuple(engine.sites),
        unit_dims=tuple(s.unit_dim for s in engine.specs),
        n_units=tuple(s.n_units for s in engine.specs),
        runner_reason=engine.runner_reason,
        path_reason=reason,
    )
    return plan, found if isinstance(found, FastPath) else None
