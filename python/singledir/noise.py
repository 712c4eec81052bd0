"""Noise perturbation curves (Morcos et al., 2018): accuracy as Gaussian noise is added to
every unit of the chosen sites at once, each unit's noise scaled by the standard deviation of
its own activity.

For unit u with activity standard deviation ``sigma_u`` over the evaluated data (a conv
unit = a channel: over samples and spatial positions), noise scale ``s`` adds independent
``N(0, (s * sigma_u)^2)`` noise to every element of the unit's output (every sample and,
for conv units, every position). The network before the first site is computed once per
batch and all scales of a repeat go through one stacked pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from singledir.curves import normalized_area
from singledir.devices import resolve_device
from singledir.engine.directions import from_coords
from singledir.engine.plan import memory_budget_bytes, prepared, setup, warn_slow_path
from singledir.engine.scoring import chunk_count, score, seed_for
from singledir.engine.stacked import unit_moments
from singledir.errors import InputError
from singledir.progress import make_progress
from singledir.sites import SiteSpec, UnitDim

__all__ = ["noise_curves", "noise_auc", "DEFAULT_SCALES"]

DEFAULT_SCALES = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


def noise_curves(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str] = "all",
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    repeats: int = 5,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    memory_budget_mb: float | None = None,
    unit_dim: UnitDim = None,
    directions: str | Mapping[str, Any] = "units",
    progress: bool = True,
    method: str = "auto",
) -> pl.DataFrame:
    """Accuracy and loss with scaled Gaussian noise on every unit of the chosen sites.

    Parameters
    ----------
    model, data, layers, unit_dim, batch_size, device, memory_budget_mb, progress, method:
        As in :func:`singledir.ablation.ablation_curves` (a unit's noise is added at every
        position; its sigma is over samples and positions).
    directions:
        ``"units"``, ``"random"`` or a dict ``site -> (k, C)`` (as in ``ablation_curves``):
        with directions, the noise is added along each direction d,
        ``h <- h + s * sigma_d * z_d * d`` (sigma_d the std of the coordinate ``h.d``), and
        a site's draw has k in place of its unit axis.
    scales:
        Noise scales s (non-negative): noise std of unit u is ``s * sigma_u``.
    repeats:
        Independent noise draws per scale.
    seed:
        Repeat r draws its standard normal noise from a ``torch.Generator`` (CPU) seeded
        with ``seed_for(seed, r)``: per batch, one ``(batch, *site_shape)`` draw per site in
        forward order, shared by all scales (so scale 0 is exactly the clean network and
        curves are smooth in s). Same seed, data and batch size: same numbers.

    Returns
    -------
    polars.DataFrame
        One row per (repeat, scale): ``repeat``, ``scale``, ``accuracy``, ``loss`` (mean
        cross-entropy), ``seed``.
    """
    sc = [float(s) for s in scales]
    if not sc or any(not math.isfinite(s) or s < 0 for s in sc):
        raise InputError(f"noise scales must be finite and >= 0, got {list(scales)}")
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}")
    dev = resolve_device(device)
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
        runner = engine.runner
        sigmas = unit_moments(engine)[1]
        budget = memory_budget_bytes(memory_budget_mb, dev)
        scale_t = torch.tensor(sc, dtype=dtype, device=dev)
        n_s = len(sc)
        correct = torch.zeros(repeats, n_s, dtype=torch.long)
        loss = torch.zeros(repeats, n_s, dtype=torch.float64)
        gens = [torch.Generator().manual_seed(seed_for(seed, r)) for r in range(repeats)]
        n_samples = engine.batches.count()
        n_batches = -(-n_samples // engine.batches.batch_size)
        with make_progress(quiet=None if progress else True) as bar:
            task = bar.add_task("noise curves", total=n_batches * repeats, status="")
            for x, y in engine.batches:
                state = runner.prefix(x)
                b = x.shape[0]
                chunk = chunk_count(budget, b * engine.row_bytes * 2, n_s)
                for r in range(repeats):
                    # drawn in the site's own layout (k directions in place of the unit
                    # axis), used with that axis on dim 1
                    z = [
                        torch.randn((b, *_draw_shape(spec)), generator=gens[r], dtype=dtype)
                        .to(dev)
                        .movedim(spec.unit_dim, 1)
                        for spec in engine.specs
                    ]
                    for a in range(0, n_s, chunk):
                        s_chunk = scale_t[a : a + chunk]
                        m = int(s_chunk.numel())

                        def edit(
                            k: int,
                            out: torch.Tensor,
                            s_chunk: torch.Tensor = s_chunk,
                            m: int = m,
                            b: int = b,
                            z: list[torch.Tensor] = z,
                        ) -> torch.Tensor:
                            extra = [1] * (out.ndim - 2)
                            std = s_chunk.view(m, 1, 1, *extra) * sigmas[k].view(1, 1, -1, *extra)
                            view = out.reshape(m, b, *out.shape[1:])
                            noise = std * z[k].unsqueeze(0)
                            basis = engine.specs[k].basis
                            if basis is not None:  # coordinates back to unit space
                                noise = from_coords(noise, basis, dim=2)
                            return (view + noise).view(out.shape)

                        logits = runner.suffix(state, m, edit)
                        c, s = score(logits.view(m, b, -1), y)
                        correct[r, a : a + m] += c
                        loss[r, a : a + m] += s
                    bar.advance(task, 1)
    return pl.DataFrame(
        {
            "repeat": np.repeat(np.arange(repeats, dtype=np.int64), n_s),
            "scale": np.tile(np.asarray(sc, dtype=np.float64), repeats),
            "accuracy": (correct.double() / n_samples).reshape(-1).numpy(),
            "loss": (loss / n_samples).reshape(-1).numpy(),
            "seed": np.full(repeats * n_s, int(seed), dtype=np.int64),
        }
    )


def _draw_shape(spec: SiteSpec) -> tuple[int, ...]:
    """The per-sample noise draw: the site's shape, with k directions on the unit axis."""
    shape = list(spec.shape)
    shape[spec.unit_dim - 1] = spec.n_units
    return tuple(shape)


def noise_auc(df: pl.DataFrame) -> float:
    """Normalized area under the noise curve.

    Definition: average accuracy over repeats at each scale, sort by scale s, take the
    trapezoid-rule area under mean accuracy against s and divide by the scale range
    ``max(s) - min(s)`` (so a network whose accuracy never drops scores its accuracy; with
    a single scale the result is that scale's mean accuracy).
    """
    need = {"scale", "accuracy"}
    if not need <= set(df.columns) or df.height == 0:
        raise InputError("noise table lacks scale/accuracy rows: pass the output of noise_curves")
    g = df.group_by("scale").agg(pl.col("accuracy").mean()).sort("scale")
    return normalized_area(g["scale"].to_numpy(), g["accuracy"].to_numpy())
