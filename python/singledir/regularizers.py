"""A class-selectivity regularizer (Leavitt & Morcos, "Selectivity considered harmful", ICLR
2021): add ``-ALPHA * mean class selectivity`` of chosen units to the training loss, so that
ALPHA > 0 raises selectivity and ALPHA < 0 lowers it.

Selectivity is computed per batch and differentiably: for each unit, the class-conditional
means of its activity over the batch's samples of each class present (a conv unit's feature
map is first averaged over space), ``mu_max`` the largest of them and ``mu_rest`` the mean of
the others; ``SI = (mu_max - mu_rest) / (mu_max + mu_rest + eps)``, the index of
:func:`singledir.class_selectivity` with a small ``eps`` against division by zero. The mean
is over all units of the chosen sites pooled. Use it in any loop::

    with SelectivityRegularizer(model, alpha=-1.0, num_classes=10) as reg:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y) + reg.penalty(y)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from singledir.errors import SiteError

__all__ = ["SELECTIVITY_EPS", "batch_class_selectivity", "SelectivityRegularizer"]

SELECTIVITY_EPS = 1e-6


def batch_class_selectivity(
    acts: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    eps: float = SELECTIVITY_EPS,
    unit_dim: int = 1,
) -> torch.Tensor:
    """Class selectivity of every unit of one batch, differentiable in ``acts``.

    Parameters
    ----------
    acts:
        ``(batch, ...)`` activity with the units along ``unit_dim`` (1: ``(N, C, H, W)``
        channels; -1: features of ``(N, T, C)`` sequences); every other dimension but the
        batch is averaged (positions).
    labels:
        ``(batch,)`` class indices in ``0..num_classes-1``.
    num_classes, eps:
        Class count; the constant added to the denominator.

    Returns
    -------
    torch.Tensor
        ``(units,)``: ``(mu_max - mu_rest) / (mu_max + mu_rest + eps)`` over the classes
        present in the batch; zeros (no gradient) when fewer than two classes are present.
    """
    a = _unit_activity(acts, unit_dim)
    onehot = F.one_hot(labels.long(), int(num_classes)).to(a.dtype)  # (B, K)
    counts = onehot.sum(0)
    present = counts > 0
    n_present = int(present.sum())
    if n_present < 2:
        return a.new_zeros(a.shape[1])
    # Class-mean weights (B, K present): the selection happens on the labels, so the graph
    # through the activity is one matmul and a few elementwise ops.
    weights = onehot[:, present] / counts[present]
    means = weights.t() @ a  # (K present, units)
    mu_max = means.max(0).values
    mu_rest = (means.sum(0) - mu_max) / (n_present - 1)
    return (mu_max - mu_rest) / (mu_max + mu_rest + eps)


def _unit_activity(acts: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """``(batch, units)``: the units along ``unit_dim``, averaged over every other axis."""
    a = acts.movedim(unit_dim, 1) if unit_dim % acts.ndim != 1 else acts
    return a.flatten(2).mean(2) if a.ndim > 2 else a


class SelectivityRegularizer:
    """Captures the outputs of ``layers`` during forward passes and turns them into the
    penalty ``-alpha * mean selectivity`` (see the module docstring).

    Parameters
    ----------
    model:
        Any ``nn.Module``; hooks are attached while the ``with`` block is open.
    alpha:
        ALPHA: > 0 rewards selectivity, < 0 penalizes it, 0 adds nothing.
    num_classes:
        Number of classes of the labels.
    layers:
        Sites as in :func:`singledir.resolve_sites` (``"all"``: the model's default sites).
    sample_x:
        An input batch: the sites are then located as the ablation engine does (forward
        order, each runs once, the unit axis inferred from the neighbouring operations, e.g.
        the last dim of a sequence Linear's ``(N, T, C)`` output). Without one, units are
        along ``unit_dim``.
    unit_dim:
        The unit axis (an int for every site, or a dict ``site -> dim``); overrides the
        inferred one. Default: inferred with ``sample_x``, else 1.
    eps:
        Added to the denominator of the index.

    Raises
    ------
    SiteError
        The model has no sites (no ReLU modules and no ``site_names``), or a name is unknown.
    """

    def __init__(
        self,
        model: nn.Module,
        alpha: float,
        num_classes: int,
        layers: str | Sequence[str] = "all",
        *,
        sample_x: torch.Tensor | None = None,
        unit_dim: int | Mapping[str, int] | None = None,
        eps: float = SELECTIVITY_EPS,
    ) -> None:
        from singledir.sites import default_sites, locate_sites, resolve_sites

        if layers in ("all", "") and not default_sites(model, sample_x):
            raise SiteError(
                f"the selectivity regularizer found no sites in {type(model).__name__} "
                "(no activations): name the layers to regularize (selectivity_layers, "
                "--selectivity-layers)"
            )
        if sample_x is not None:
            with torch.no_grad():
                specs = locate_sites(model, layers, sample_x, unit_dim=unit_dim).specs
            self.sites = [spec.name for spec in specs]
            self.unit_dims = {spec.name: spec.unit_dim for spec in specs}
            kinds = {spec.name: spec.kind for spec in specs}
        else:
            self.sites = resolve_sites(model, layers)
            self.unit_dims = {
                name: int(unit_dim.get(name, 1) if isinstance(unit_dim, Mapping) else unit_dim or 1)
                for name in self.sites
            }
            kinds = {}
        modules = dict(model.named_modules())
        calls = [n for n in self.sites if kinds.get(n, "module") != "module" or n not in modules]
        if calls:
            raise SiteError(
                f"the selectivity regularizer hooks modules that run once, and "
                f"{', '.join(calls)} is a function call in forward (or one call of a module "
                "that runs twice): use one nn.ReLU (or other activation) module per call "
                "there, or name module sites"
            )
        self.model = model
        self.alpha = float(alpha)
        self.num_classes = int(num_classes)
        self.eps = float(eps)
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> SelectivityRegularizer:
        modules = dict(self.model.named_modules())
        for name in self.sites:

            def keep(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
                if torch.is_grad_enabled():  # training passes only (eval passes run no_grad)
                    self._outputs[name] = out

            self._handles.append(modules[name].register_forward_hook(keep))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()

    def mean_selectivity(self, labels: torch.Tensor) -> torch.Tensor:
        """Mean selectivity over the pooled units of the last forward pass (differentiable)."""
        missing = [s for s in self.sites if s not in self._outputs]
        if missing:
            raise SiteError(
                f"no output captured at {', '.join(missing)}: run the model's forward pass "
                "inside the regularizer's with-block, with gradients on, before the penalty"
            )
        # All sites' units pooled into one (batch, units) matrix: one pass of the index.
        activity = [_unit_activity(self._outputs[s], self.unit_dims[s]) for s in self.sites]
        pooled = torch.cat(activity, 1)
        self._outputs.clear()
        return batch_class_selectivity(pooled, labels, self.num_classes, self.eps).mean()

    def penalty(self, labels: torch.Tensor) -> torch.Tensor:
        """``-alpha * mean selectivity`` of the last forward pass, to add to the loss."""
        return -self.alpha * self.mean_selectivity(labels)
