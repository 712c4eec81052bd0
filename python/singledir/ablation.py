"""Cumulative ablation curves and single-unit importance (Morcos et al., 2018): the public
functions. The engine itself lives in :mod:`singledir.engine`.

Ablating a unit replaces its output by a constant (0, the paper's choice, or the unit's mean
activity over the evaluated data) at every sample and every position (pixels, tokens).
Ablating a direction d replaces the activity's component along d: ``h <- h - (h.d - fill) d``.
A *cumulative ablation curve* ablates units (directions) one after another along an
ordering (random, or by a score) and records accuracy and loss at every level.

How it is fast (and still exact up to float rounding): the network up to the first site is
computed once per batch from the cut fx graph; many masks go through one pass, stacked
along the batch; where the graph after the sites is affine (however the model is written)
the curves are a cumulative sum (one site) or an incremental rank-1 walk (two sites), and
importance adds one rank-1 term per unit. :func:`ablation_plan` says which path a model
takes and why. Every path is tested against a naive reference (one full forward pass per
mask with a hook).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from singledir.curves import ablation_auc, summarize_curves
from singledir.devices import resolve_device
from singledir.engine.importance import importance_path, site_importance
from singledir.engine.kwalk import kwalk_curves
from singledir.engine.levelwalk import level_walk_curves
from singledir.engine.mlp_chain import MlpChain, native_chain, native_curves, native_importance
from singledir.engine.plan import (
    Plan,
    Setup,
    memory_budget_bytes,
    plan_curves,
    prepared,
    setup,
    warn_slow_path,
)
from singledir.engine.runners import ChainRunner
from singledir.engine.scoring import score_per_class, seed_for
from singledir.engine.segments import segment_curves
from singledir.engine.stacked import stacked_curves, unit_fill, unit_moments
from singledir.engine.walk import cumsum_curves, walk_curves
from singledir.errors import InputError
from singledir.progress import make_progress
from singledir.sites import SiteSpec, UnitDim

__all__ = [
    "ablation_curves",
    "ablation_plan",
    "summarize_curves",
    "ablation_auc",
    "unit_importance",
    "unit_orderings",
    "ablation_levels",
]

Directions = str | Mapping[str, Any]


# ------------------------------------------------------------------------------ orderings
def ablation_levels(levels: int | str | Sequence[int], n_units: int) -> np.ndarray:
    """Ablation counts to evaluate: ``"all"`` = 0..N; an int k = k evenly spaced counts
    from 0 to N (rounded, always including 0 and N); or an explicit list of counts."""
    if isinstance(levels, str):
        if levels.strip().lower() == "all":
            return np.arange(n_units + 1, dtype=np.int64)
        try:
            levels = int(levels)
        except ValueError:
            raise InputError(f"--levels must be 'all' or a number, got {levels!r}") from None
    if isinstance(levels, int | np.integer):
        k = int(levels)
        if k < 2:
            raise InputError(f"--levels {k} is too few: use at least 2 (0 and all units) or all")
        if k > n_units + 1:
            raise InputError(
                f"--levels {k} exceeds the {n_units + 1} possible counts (0..{n_units} units): "
                f"use at most {n_units + 1} or all"
            )
        return np.unique(np.round(np.linspace(0, n_units, k)).astype(np.int64))
    arr = np.unique(np.asarray(list(levels), dtype=np.int64))
    if arr.size == 0 or arr.min() < 0 or arr.max() > n_units:
        raise InputError(f"ablation levels must lie in 0..{n_units}: fix the list of counts")
    return arr


def _pooled_scores(scores: Any, specs: Sequence[SiteSpec]) -> np.ndarray:
    n = sum(s.n_units for s in specs)
    if isinstance(scores, Mapping):
        parts = []
        for s in specs:
            if s.name not in scores:
                raise InputError(f"scores lack site {s.name!r}: give one array per chosen site")
            parts.append(np.asarray(scores[s.name], dtype=np.float64).reshape(-1))
            if parts[-1].size != s.n_units:
                raise InputError(
                    f"scores for {s.name!r} have {parts[-1].size} values but the site has "
                    f"{s.n_units} units: pass one score per unit"
                )
        arr = np.concatenate(parts)
    else:
        if isinstance(scores, torch.Tensor):
            scores = scores.detach().cpu().numpy()
        arr = np.asarray(scores, dtype=np.float64).reshape(-1)
        if arr.size != n:
            raise InputError(
                f"{arr.size} scores for {n} pooled units: pass one score per unit of the "
                "chosen sites (in forward order)"
            )
    if not np.all(np.isfinite(arr)):
        raise InputError("scores contain NaN or infinity: pass finite per-unit scores")
    return arr


def unit_orderings(
    n_units: int,
    *,
    orderings: int = 10,
    order: str = "random",
    scores: np.ndarray | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Orderings of the pooled units, shape ``(n_orderings, n_units)`` (int64).

    ``order="random"``: ordering ``o`` is ``torch.randperm(n_units)`` drawn from a
    ``torch.Generator`` seeded with :func:`singledir.engine.scoring.seed_for` ``(seed, o)``, so each
    ordering reproduces on its own. ``"ascending"``/``"descending"``: units sorted by
    ``scores`` (stable: ties keep unit order); one ordering.
    """
    if order == "random":
        if orderings < 1:
            raise InputError(f"orderings must be >= 1, got {orderings}")
        out = torch.empty(orderings, n_units, dtype=torch.long)
        for o in range(orderings):
            g = torch.Generator().manual_seed(seed_for(seed, o))
            out[o] = torch.randperm(n_units, generator=g)
        return out
    if order in ("ascending", "descending"):
        if scores is None:
            raise InputError(f"--order {order} needs per-unit scores: pass scores or a column")
        key = scores if order == "ascending" else -scores
        return torch.as_tensor(np.argsort(key, kind="stable"), dtype=torch.long).view(1, -1)
    raise InputError(f"unknown order {order!r}: choose random, ascending or descending")


# ------------------------------------------------------------------------------- public
def _check_order(order: str, scores: Any) -> None:
    if order not in ("random", "ascending", "descending"):
        raise InputError(f"unknown order {order!r}: choose random, ascending or descending")
    if order != "random" and scores is None:
        raise InputError(f"--order {order} needs per-unit scores: pass scores")


def ablation_plan(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str] = "all",
    *,
    levels: int | str | Sequence[int] = "all",
    directions: Directions = "units",
    unit_dim: UnitDim = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    method: str = "auto",
) -> Plan:
    """The :class:`~singledir.engine.plan.Plan` :func:`ablation_curves` follows with these
    arguments: runner (chain, fx or hooks), path (native-walk, cumsum, walk, walk-linear,
    kwalk, level-walk, segments or stacked), sites with their unit axes, and why."""
    dev = resolve_device(device)
    with prepared(model, dev) as dtype, torch.no_grad():
        engine = setup(
            model,
            data,
            layers,
            2,
            dev,
            dtype,
            method=method,
            unit_dim=unit_dim,
            directions=directions,
            seed=seed,
        )
        n_levels = len(ablation_levels(levels, engine.n_units))
        return plan_curves(engine, n_levels, method)[0]


def ablation_curves(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str] = "all",
    *,
    orderings: int = 10,
    levels: int | str | Sequence[int] = "all",
    order: str = "random",
    scores: Any = None,
    value: str = "zero",
    directions: Directions = "units",
    unit_dim: UnitDim = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    memory_budget_mb: float | None = None,
    progress: bool = True,
    method: str = "auto",
) -> pl.DataFrame:
    """Cumulative ablation curves: accuracy and loss as units are ablated one by one.

    The units (directions) of all chosen sites are pooled into one index (sites
    concatenated in forward order) and ablated cumulatively along each ordering; at level
    ``n`` the first ``n`` of the ordering are ablated.

    Parameters
    ----------
    model:
        Any ``nn.Module`` returning ``(batch, classes)`` logits (custom ``forward``,
        functional calls, nested modules); evaluated in eval mode on ``device`` (its mode
        and device are restored afterwards).
    data:
        ``(x, y)`` tensors, an object with ``.x``/``.y`` tensors (``LabeledData``) or
        ``.loader(batch_size)``, a torch ``Dataset`` or a ``DataLoader``.
    layers:
        ``"all"``, ``"lastN"``, comma-separated module or fx node names, or a list.
    orderings, levels, order, scores:
        Number of random orderings (ordering ``o`` is a permutation drawn from a generator
        seeded by ``(seed, o)``); ``"all"`` levels (0..N), an int k (k evenly spaced counts
        including 0 and N) or a list; ``"random"``, ``"ascending"`` or ``"descending"`` by
        ``scores`` (a 1-D array over the pooled units or a dict ``site -> array``).
    value:
        ``"zero"`` (the paper's) or ``"mean"`` (the unit's, or direction coordinate's, mean
        activity over the evaluated data, over samples and positions).
    directions:
        ``"units"``, ``"random"`` (a random orthonormal basis per site drawn from ``seed``)
        or a dict ``site -> (k, C)`` array (orthonormalized); see
        :mod:`singledir.engine.directions`.
    unit_dim:
        The unit axis (dim of the ``(N, ...)`` output), an int for every site or a dict per
        site; default: inferred from the graph (channels of conv maps, last dim of Linear
        outputs).
    seed, batch_size, device, memory_budget_mb, progress:
        Seed of the orderings and random directions (recorded in the output); samples per
        batch; ``"cpu"``/``"cuda"`` (default: CUDA when available); memory for stacked
        masks (default 1 GiB on CPU, half the free memory on CUDA); rich progress bar.
    method:
        ``"auto"`` (fastest exact path, see :func:`ablation_plan`), ``"stacked"`` (cached
        prefix + stacked masks only) or ``"hooks"`` (full forward passes with hooks): for
        testing.

    Returns
    -------
    polars.DataFrame
        One row per (ordering, level): ``ordering``, ``n_ablated``, ``fraction_ablated``
        (``n_ablated / N``), ``accuracy``, ``loss`` (mean cross-entropy), ``seed``.
    """
    return ablation_curves_with_plan(
        model,
        data,
        layers,
        orderings=orderings,
        levels=levels,
        order=order,
        scores=scores,
        value=value,
        directions=directions,
        unit_dim=unit_dim,
        seed=seed,
        batch_size=batch_size,
        device=device,
        memory_budget_mb=memory_budget_mb,
        progress=progress,
        method=method,
    )[0]


def ablation_curves_with_plan(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str] = "all",
    *,
    orderings: int = 10,
    levels: int | str | Sequence[int] = "all",
    order: str = "random",
    scores: Any = None,
    value: str = "zero",
    directions: Directions = "units",
    unit_dim: UnitDim = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    memory_budget_mb: float | None = None,
    progress: bool = True,
    method: str = "auto",
) -> tuple[pl.DataFrame, Plan]:
    """:func:`ablation_curves` and the :class:`~singledir.engine.plan.Plan` it followed (the
    path the run took, for reports: no second setup to ask for it)."""
    dev = resolve_device(device)
    _check_order(order, scores)
    with prepared(model, dev) as dtype, torch.no_grad():
        engine = setup(
            model,
            data,
            layers,
            batch_size,
            dev,
            dtype,
            method=method,
            unit_dim=unit_dim,
            directions=directions,
            seed=seed,
        )
        warn_slow_path(engine, method)
        level_counts = ablation_levels(levels, engine.n_units)
        pooled = _pooled_scores(scores, engine.specs) if order != "random" else None
        orders = unit_orderings(
            engine.n_units, orderings=orderings, order=order, scores=pooled, seed=seed
        )
        means = unit_moments(engine)[0] if value == "mean" else None
        fills = unit_fill(means, len(engine.specs), value)
        budget = memory_budget_bytes(memory_budget_mb, dev)
        plan, fast = plan_curves(engine, len(level_counts), method)
        runner = engine.runner
        args = (orders, level_counts, fills, budget, progress)
        if fast is not None and fast.mlp is not None:
            correct, loss = native_curves(engine, fast.mlp, orders, level_counts, fills, progress)
        elif fast is not None and plan.path == "cumsum":
            assert isinstance(runner, ChainRunner) and fast.tail is not None
            correct, loss = cumsum_curves(engine, runner, fast.tail, *args)
        elif fast is not None and plan.path == "kwalk":
            correct, loss = kwalk_curves(engine, fast.links, *args)
        elif fast is not None and plan.path == "level-walk":
            correct, loss = level_walk_curves(engine, fast.links, *args)
        elif fast is not None and plan.path == "segments":
            assert fast.tail is not None
            correct, loss = segment_curves(engine, fast.tail, *args)
        elif fast is not None:
            assert isinstance(runner, ChainRunner) and fast.chain1 is not None
            assert fast.tail is not None
            correct, loss = walk_curves(engine, runner, fast.chain1, fast.tail, *args)
        else:
            correct, loss = stacked_curves(engine, *args)
        n_samples = engine.batches.count()
    n_ord = orders.shape[0]
    n_lv = len(level_counts)
    curves = pl.DataFrame(
        {
            "ordering": np.repeat(np.arange(n_ord, dtype=np.int64), n_lv),
            "n_ablated": np.tile(level_counts, n_ord).astype(np.int64),
            "fraction_ablated": np.tile(level_counts / max(engine.n_units, 1), n_ord).astype(
                np.float64
            ),
            "accuracy": (correct.double() / n_samples).reshape(-1).numpy(),
            "loss": (loss / n_samples).reshape(-1).numpy(),
            "seed": np.full(n_ord * n_lv, int(seed), dtype=np.int64),
        }
    )
    return curves, plan


# ---------------------------------------------------------------------------- importance
def _base_scores(engine: Setup) -> tuple[int, float, int, torch.Tensor, torch.Tensor]:
    """Unablated correct count, loss sum, sample count, per-class correct and class sizes."""
    base_c = 0
    base_l = 0.0
    base_pc = torch.zeros(engine.n_classes, dtype=torch.long)
    class_n = torch.zeros(engine.n_classes, dtype=torch.long)
    n_samples = 0
    for x, y in engine.batches:
        c, s, pc = score_per_class(engine.model(x).unsqueeze(0), y, engine.n_classes)
        base_c += int(c[0])
        base_l += float(s[0])
        base_pc += pc[0]
        class_n += torch.bincount(y.cpu(), minlength=engine.n_classes)[: engine.n_classes]
        n_samples += x.shape[0]
    return base_c, base_l, n_samples, base_pc, class_n


def unit_importance(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str] = "all",
    *,
    value: str = "zero",
    per_class: bool = True,
    directions: Directions = "units",
    unit_dim: UnitDim = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    memory_budget_mb: float | None = None,
    progress: bool = True,
    method: str = "auto",
) -> pl.DataFrame:
    """Single-unit importance: the accuracy drop and loss rise when one unit (direction)
    alone is ablated.

    Returns one row per (layer, unit): ``layer``, ``unit`` (the direction index with
    ``directions``), ``base_accuracy``, ``accuracy``, ``accuracy_drop`` (base - ablated),
    ``base_loss``, ``loss``, ``loss_rise`` (ablated - base; losses are mean cross-entropy)
    and, with ``per_class``, ``accuracy_drop_class_{k}`` for every class k of the model's
    output (NaN when the data has none). The other arguments are as in
    :func:`ablation_curves`.
    """
    dev = resolve_device(device)
    if value not in ("zero", "mean"):
        raise InputError(f"unknown ablation value {value!r}: choose zero or mean")
    with prepared(model, dev) as dtype, torch.no_grad():
        engine = setup(
            model,
            data,
            layers,
            batch_size,
            dev,
            dtype,
            method=method,
            unit_dim=unit_dim,
            directions=directions,
            seed=seed,
        )
        warn_slow_path(engine, method)
        budget = memory_budget_bytes(memory_budget_mb, dev)
        base_c, base_l, n_samples, base_pc, class_n = _base_scores(engine)
        base_acc = base_c / n_samples
        base_loss = base_l / n_samples
        frames = []
        with make_progress(quiet=None if progress else True) as bar:
            task = bar.add_task(
                "unit importance", total=engine.n_units * engine.batches.n_batches(), status=""
            )
            pooled = native_chain(engine, method)
            if isinstance(pooled, MlpChain):
                # every site in one MLP chain: one native pass for all their units
                bar.update(task, status="all sites: native walk")
                fills = unit_moments(engine)[0] if value == "mean" else [None] * len(engine.specs)
                results = native_importance(engine, pooled, list(fills), bar, task)
            for k, spec in enumerate(engine.specs):
                if isinstance(pooled, MlpChain):
                    part = slice(spec.offset, spec.offset + spec.n_units)
                    correct, loss, per_class_correct = (r[part] for r in results)
                else:
                    correct, loss, per_class_correct = _site_importance(
                        engine, k, value, budget, bar, task, method
                    )
                frames.append(
                    _importance_frame(
                        spec,
                        correct,
                        loss,
                        per_class_correct,
                        n_samples,
                        base_acc,
                        base_loss,
                        base_pc,
                        class_n,
                        per_class,
                    )
                )
    return pl.concat(frames)


def _site_importance(
    engine: Setup, k: int, value: str, budget: int, bar: Any, task: Any, method: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Importance of site k's units, on that site's own setup (native walk or torch)."""
    spec = engine.specs[k]
    site_setup = engine.for_site(k)
    fill = unit_moments(site_setup)[0][0] if value == "mean" else None
    mlp = native_chain(site_setup, method)
    if isinstance(mlp, MlpChain):
        bar.update(task, status=f"{spec.name}: native walk")
        return native_importance(site_setup, mlp, [fill], bar, task)
    path = importance_path(site_setup, method == "auto")[0]
    bar.update(task, status=f"{spec.name}: {path}")
    return site_importance(site_setup, fill, budget, bar, task, method == "auto")


def _importance_frame(
    spec: SiteSpec,
    correct: torch.Tensor,
    loss: torch.Tensor,
    per_class_correct: torch.Tensor,
    n_samples: int,
    base_acc: float,
    base_loss: float,
    base_pc: torch.Tensor,
    class_n: torch.Tensor,
    per_class: bool,
) -> pl.DataFrame:
    acc = correct.double().numpy() / n_samples
    losses = loss.numpy() / n_samples
    cols: dict[str, Any] = {
        "layer": [spec.name] * spec.n_units,
        "unit": np.arange(spec.n_units, dtype=np.int64),
        "base_accuracy": np.full(spec.n_units, base_acc),
        "accuracy": acc,
        "accuracy_drop": base_acc - acc,
        "base_loss": np.full(spec.n_units, base_loss),
        "loss": losses,
        "loss_rise": losses - base_loss,
    }
    if per_class:
        sizes = class_n.double().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            base_k = np.where(sizes > 0, base_pc.double().numpy() / sizes, np.nan)
            acc_k = np.where(sizes > 0, per_class_correct.double().numpy() / sizes, np.nan)
        for k in range(len(sizes)):
            cols[f"accuracy_drop_class_{k}"] = base_k[k] - acc_k[:, k]
    return pl.DataFrame(cols)
