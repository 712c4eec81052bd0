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

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from singledir.errors import SiteError

__all__ = ["SELECTIVITY_EPS", "batch_class_selectivity", "SelectivityRegularizer"]

SELECTIVITY_EPS = 1e-6


def batch_class_selectivity(
    acts: torch.Tensor, labels: torch.Tensor, num_classes: int, eps: float = SELECTIVITY_EPS
) -> torch.Tensor:
    """Class selectivity of every unit of one batch, differentiable in ``acts``.

    Parameters
    ----------
    acts:
        ``(batch, units, ...)`` activity; dimensions after the units are averaged.
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
    a = acts.flatten(2).mean(2) if acts.ndim > 2 else acts
    onehot = F.one_hot(labels.long(), int(num_classes)).to(a.dtype)  # (B, K)
    counts = onehot.sum(0)
    present = counts > 0
    n_present = int(present.sum())
    if n_present < 2:
        return a.new_zeros(a.shape[1])
    means = (onehot.t() @ a)[present] / counts[present].unsqueeze(1)  # (K present, units)
    mu_max = means.max(0).values
    mu_rest = (means.sum(0) - mu_max) / (n_present - 1)
    return (mu_max - mu_rest) / (mu_max + mu_rest + eps)


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
        An input batch that orders the sites and checks each runs once per pass.
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
        eps: float = SELECTIVITY_EPS,
    ) -> None:
        from singledir.sites import default_sites, resolve_sites

        if layers in ("all", "") and not default_sites(model, sample_x):
            raise SiteError(
                f"the selectivity regularizer found no sites in {type(model).__name__} "
                "(no ReLU modules): name the layers to regularize (selectivity_layers, "
                "--selectivity-layers)"
            )
        self.sites = resolve_sites(model, layers, sample_x=sample_x)
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
        parts = [
            batch_class_selectivity(self._outputs[s], labels, self.num_classes, self.eps)
            for s in self.sites
        ]
        self._outputs.clear()
        return torch.cat(parts).mean()

    def penalty(self, labels: torch.Tensor) -> torch.Tensor:
        """``-alpha * mean selectivity`` of the last forward pass, to add to the loss."""
        return -self.alpha * self.mean_selectivity(labels)
