"""AUCMonitor (against ablation_auc and a naive hooked reference) and the class-selectivity
regularizer (against singledir.class_selectivity, a plain NumPy loop and finite differences)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import reference as ref
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from singledir import (
    AUCMonitor,
    SelectivityRegularizer,
    ablation_auc,
    ablation_curves,
    resolve_sites,
)
from singledir.ablation import ablation_levels, unit_orderings
from singledir.data import load_dataset
from singledir.errors import InputError, SiteError
from singledir.models import MLP
from singledir.monitor import seeded_subset, take_samples
from singledir.regularizers import batch_class_selectivity
from singledir.stats import class_selectivity
from torch import nn


class Block(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class UserNet(nn.Module):
    """Written as a user would: nested blocks, a functional call, a custom forward."""

    def __init__(self) -> None:
        super().__init__()
        self.b1 = Block(64, 24)
        self.b2 = Block(24, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b1(torch.flatten(x, 1))
        h = self.b2(F.dropout(h, 0.1, self.training) * 1.0)
        return self.head(h)


class UserConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 12, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(12 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.conv(x))
        return self.fc(F.max_pool2d(h, 2).flatten(1))


def _digits(n: int = 200):
    data = load_dataset("digits", "train")
    idx = seeded_subset(len(data), n, 0)
    return take_samples(data, idx)


def _trained(model: nn.Module, data, steps: int = 60) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(model(data.x), data.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _naive_auc(model, x, y, sites, orderings, levels, seed) -> tuple[float, int]:
    """Trapezoid area of the naive hooked curves, mean over orderings (a NumPy loop)."""
    n = sum(ref.site_shapes(model, sites, x[:2]))
    orders = unit_orderings(n, orderings=orderings, seed=seed).numpy()
    lv = ablation_levels(levels, n)
    rows = ref.naive_curves(model, x, y, sites, orders, list(lv))
    areas = []
    for o in range(orderings):
        acc = np.array([r[2] / len(y) for r in rows if r[0] == o])
        frac = lv / n
        areas.append(float(np.sum(np.diff(frac) * (acc[1:] + acc[:-1]) / 2)))
    return float(np.mean(areas)), sum(r[4] for r in rows)


@pytest.mark.parametrize("kind", ["mlp", "user", "conv"])
def test_monitor_equals_ablation_auc_and_the_naive_reference(kind):
    data = _digits()
    torch.manual_seed(1)
    model = {"mlp": lambda: MLP(64, [32, 16]), "user": UserNet, "conv": UserConv}[kind]()
    _trained(model, data)
    model.train()
    monitor = AUCMonitor(data, orderings=3, levels=11, seed=4)
    rng = torch.get_rng_state()
    auc = monitor(model, epoch=7)
    assert model.training  # mode restored
    assert torch.equal(torch.get_rng_state(), rng)  # the training RNG is untouched
    curves = ablation_curves(model, data, "all", orderings=3, levels=11, seed=4, progress=False)
    assert auc == ablation_auc(curves)
    sites = resolve_sites(model, "all", sample_x=data.x[:2])
    naive, borderline = _naive_auc(model, data.x, data.y, sites, 3, 11, 4)
    # A float32 prediction may flip only on borderline samples (top-2 logit gap < 1e-4).
    assert abs(auc - naive) <= borderline / len(data) + 1e-12
    model.eval()
    monitor(model, epoch=8)
    assert not model.training
    assert 0.0 < auc < 1.0


def test_history_best_epoch_and_state_round_trip(tmp_path):
    data = _digits(200)
    torch.manual_seed(0)
    model = MLP(64, [16, 16])
    monitor = AUCMonitor((data.x, data.y), orderings=2, levels=6, samples=150, seed=3)
    assert monitor.history.height == 0 and monitor.best_epoch is None
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    values = []
    for epoch in range(1, 5):
        for _ in range(10):
            loss = F.cross_entropy(model(data.x), data.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        values.append(monitor(model, epoch))
    hist = monitor.history
    assert hist.columns == ["epoch", "auc", "seconds"]
    assert hist.schema["epoch"] == pl.Int64 and hist["epoch"].to_list() == [1, 2, 3, 4]
    assert hist["auc"].to_list() == values and (hist["seconds"] > 0).all()
    assert monitor.best_epoch == 1 + int(np.argmax(values)) and monitor.best_auc == max(values)
    # The subset rule of the docstring, rebuilt by hand.
    idx = torch.randperm(200, generator=torch.Generator().manual_seed(3))[:150].sort().values
    assert torch.equal(monitor.data[0], data.x[idx])
    curves = ablation_curves(
        model, (data.x[idx], data.y[idx]), orderings=2, levels=6, seed=3, progress=False
    )
    assert values[-1] == ablation_auc(curves)

    torch.save(monitor.state_dict(), tmp_path / "m.pt")
    again = AUCMonitor((data.x, data.y), orderings=2, levels=6, samples=150, seed=3)
    again.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert again.history.equals(hist) and again.best_epoch == monitor.best_epoch
    other = AUCMonitor((data.x, data.y), orderings=5, levels=6, samples=150, seed=3)
    with pytest.raises(InputError, match="other orderings"):
        other.load_state_dict(monitor.state_dict())


def test_monitor_on_a_sequence_model():
    torch.manual_seed(0)
    model = SeqNet()
    x, y = torch.randn(80, 5, 4), torch.arange(80) % 3
    monitor = AUCMonitor((x, y), orderings=2, levels=5, seed=1)
    curves = ablation_curves(model, (x, y), orderings=2, levels=5, seed=1, progress=False)
    assert monitor(model, 1) == ablation_auc(curves)
    assert curves["n_ablated"].max() == 12 + 6  # the features of both sites, not T
    forced = AUCMonitor((x, y), orderings=2, levels=5, seed=1, unit_dim=-1).measure(model)
    assert forced == monitor.history["auc"][0]


def test_monitor_relative_and_bad_input():
    data = _digits(100)
    model = MLP(64, [8])
    rel = AUCMonitor(data, orderings=2, levels=5, relative=True).measure(model)
    curves = ablation_curves(model, data, orderings=2, levels=5, progress=False)
    assert rel == ablation_auc(curves, relative=True)
    with pytest.raises(InputError, match="orderings"):
        AUCMonitor(data, orderings=0)
    with pytest.raises(InputError, match="in-memory"):
        AUCMonitor(object(), samples=10)


# ---------------------------------------------------------------------------- regularizer


def _numpy_si(acts: np.ndarray, labels: np.ndarray, eps: float) -> np.ndarray:
    """Class selectivity by a plain loop over units and classes present."""
    a = acts.reshape(acts.shape[0], acts.shape[1], -1).mean(2)
    out = np.zeros(a.shape[1])
    classes = sorted(set(labels.tolist()))
    for u in range(a.shape[1]):
        means = [a[labels == c, u].mean() for c in classes]
        mx = max(means)
        rest = (sum(means) - mx) / (len(means) - 1)
        out[u] = (mx - rest) / (mx + rest + eps)
    return out


def test_batch_selectivity_matches_numpy_and_the_rust_index():
    g = torch.Generator().manual_seed(0)
    acts = torch.rand(50, 7, 3, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (50,), generator=g)
    labels[:4] = torch.arange(4)
    si = batch_class_selectivity(acts, labels, 6, eps=1e-6)  # classes 4, 5 absent
    np.testing.assert_allclose(si.numpy(), _numpy_si(acts.numpy(), labels.numpy(), 1e-6))
    pooled = acts.mean((2, 3))
    rust = class_selectivity(pooled.numpy(), labels.numpy(), num_classes=4)
    np.testing.assert_allclose(batch_class_selectivity(pooled, labels, 4, eps=0.0), rust, 1e-5)
    one_class = batch_class_selectivity(acts, torch.zeros(50, dtype=torch.long), 4)
    assert torch.equal(one_class, torch.zeros(7, dtype=torch.float64))


def test_regularizer_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = UserNet().double()
    x = torch.randn(40, 1, 8, 8, dtype=torch.float64)
    y = torch.arange(40) % 5
    reg = SelectivityRegularizer(model, alpha=0.7, num_classes=10, sample_x=x[:2])
    assert reg.sites == ["b1.act", "b2.act"]
    model.eval()  # no dropout: the penalty is a deterministic function of the weights

    def penalty() -> torch.Tensor:
        with reg:
            model(x)
            return reg.penalty(y)

    value = penalty()
    value.backward()
    w = model.b1.fc.weight
    grad = w.grad.clone()
    h = 1e-6
    g = torch.Generator().manual_seed(1)
    for _ in range(12):
        i, j = (int(torch.randint(0, s, (1,), generator=g)) for s in w.shape)
        w.data[i, j] += h
        up = penalty().item()
        w.data[i, j] -= 2 * h
        down = penalty().item()
        w.data[i, j] += h
        assert (up - down) / (2 * h) == pytest.approx(float(grad[i, j]), rel=1e-4, abs=1e-8)
    # The value is -alpha times the mean index over both sites' pooled units.
    with reg:
        model(x)
        outs = {k: v.detach() for k, v in reg._outputs.items()}
    pooled = np.concatenate([_numpy_si(outs[s].numpy(), y.numpy(), reg.eps) for s in reg.sites])
    assert value.item() == pytest.approx(-0.7 * pooled.mean(), rel=1e-12)


def test_regularizer_refuses_a_model_without_sites():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(SiteError, match="no sites") as exc:
        SelectivityRegularizer(model, 1.0, 10)
    assert "\n" not in str(exc.value) and "selectivity_layers" in str(exc.value)
    reg = SelectivityRegularizer(UserNet(), 1.0, 10)
    with pytest.raises(SiteError, match="inside the regularizer"):
        reg.penalty(torch.zeros(3, dtype=torch.long))


class SeqNet(nn.Module):
    """A sequence model over (N, T, C) features: the units are the last dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 12)
        self.act1 = nn.ReLU()
        self.mix = nn.Linear(12, 6)
        self.act2 = nn.ReLU()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.mix(self.act1(self.embed(x))))
        return self.head(h.mean(1))


def test_regularizer_on_a_sequence_model_uses_the_feature_axis():
    torch.manual_seed(0)
    model = SeqNet().double()
    x = torch.randn(30, 5, 4, dtype=torch.float64)
    y = torch.arange(30) % 3
    reg = SelectivityRegularizer(model, alpha=2.0, num_classes=3, sample_x=x[:2])
    assert reg.sites == ["act1", "act2"] and reg.unit_dims == {"act1": 2, "act2": 2}
    with reg:
        model(x)
        outs = {k: v.detach() for k, v in reg._outputs.items()}
        value = reg.penalty(y)
    # Each feature's activity is its mean over the T positions.
    per_site = [_numpy_si(outs[s].mean(1).numpy(), y.numpy(), reg.eps) for s in reg.sites]
    assert value.item() == pytest.approx(-2.0 * np.concatenate(per_site).mean(), rel=1e-12)
    assert batch_class_selectivity(outs["act1"], y, 3, unit_dim=-1).shape == (12,)


class FunctionalNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(x.flatten(1))))


def test_regularizer_refuses_function_call_sites_with_the_fix():
    with pytest.raises(SiteError, match="function call in forward") as exc:
        SelectivityRegularizer(FunctionalNet(), 1.0, 10, sample_x=torch.randn(2, 1, 8, 8))
    assert "\n" not in str(exc.value) and "nn.ReLU" in str(exc.value)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(4, 40),
    units=st.integers(1, 6),
    classes=st.integers(2, 5),
    positions=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_batch_selectivity_property(n, units, classes, positions, seed):
    g = torch.Generator().manual_seed(seed)
    acts = torch.rand(n, units, positions, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=g)
    labels[:2] = torch.tensor([0, 1])  # at least two classes present
    si = batch_class_selectivity(acts, labels, classes)
    np.testing.assert_allclose(si.numpy(), _numpy_si(acts.numpy(), labels.numpy(), 1e-6))
    assert bool(((si >= 0) & (si <= 1)).all())
