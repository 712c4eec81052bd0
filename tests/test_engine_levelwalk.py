"""The level walk (engine/levelwalk.py): a few levels over two or more sites linked by
affine layers, each level recomputed over the kept units only. Checked against the naive
float64 hook-per-mask reference on models written as users write them (custom forward,
ModuleLists, nested blocks, torch.relu calls, batch norm), zero and mean fills, evenly
spaced and listed levels, and hypothesis-drawn nets."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from singledir.ablation import ablation_levels, ablation_plan, unit_orderings
from singledir.engine.levelwalk import level_walk_curves, level_walk_links
from singledir.engine.plan import prepared, setup
from singledir.engine.stacked import unit_fill, unit_moments
from test_ablation_engine import _centered, _data, _random_bn
from test_engine_graph import _check_curves, _conv11
from torch import nn

torch.set_num_threads(1)


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class _UserConvNet(nn.Module):
    """A conv net as a user writes it: nested blocks in a ModuleList, a functional ReLU in
    each block, a strided conv, a mean pool and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 6, 3, padding=1)
        self.blocks = nn.ModuleList([_Block(6, 7), _Block(7, 6, stride=2), _Block(6, 8)])
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        for block in self.blocks:
            h = block(h)
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


def _user_conv() -> nn.Module:
    torch.manual_seed(5)
    return _centered(_random_bn(_UserConvNet()), (2, 6, 6))


def _sites(model: nn.Module) -> list[str]:
    from singledir import list_sites

    x, y = _data((2, 6, 6), n=4)
    return list_sites(model, (x, y))["name"].to_list()


@pytest.mark.parametrize("value", ["zero", "mean"])
def test_convnet11_last_three_sites_at_few_levels(value: str) -> None:
    """Paper Fig. 2b/c at a few levels: the level walk, not one stacked pass per level."""
    x, _ = _data((3, 8, 8), n=24)
    _, plan = _check_curves(_conv11(), x, "last3", levels=9, value=value, orderings=2)
    assert (plan.runner, plan.path) == ("chain", "level-walk"), plan


@pytest.mark.parametrize("value", ["zero", "mean"])
def test_user_written_conv_net_four_sites(value: str) -> None:
    model = _user_conv()
    sites = _sites(model)
    assert len(sites) == 4  # the stem's F.relu and each block's torch.relu
    x, _ = _data((2, 6, 6), n=30, classes=4)
    _, plan = _check_curves(model, x, sites, levels=6, value=value)
    assert plan.path == "level-walk", plan
    _, plan = _check_curves(model, x, sites, levels=[0, 1, 5, 6, 20, 26, 27], value=value)
    assert plan.path == "level-walk", plan
    _, plan = _check_curves(model, x, sites, levels=[3, 9, 15], value=value)  # no level 0
    assert plan.path == "level-walk", plan


def test_two_conv_sites_at_three_levels() -> None:
    model = _user_conv()
    sites = _sites(model)[-2:]
    x, _ = _data((2, 6, 6), n=30, classes=4)
    _, plan = _check_curves(model, x, sites, levels=3, orderings=3)
    assert plan.path == "level-walk", plan


def test_dense_float64_chain_with_batch_norm() -> None:
    """Linear layers (float64: no native walk), batch norm between them, three sites."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Linear(6, 9),
        nn.ReLU(),
        nn.Linear(9, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(8, 7),
        nn.ReLU(),
        nn.Linear(7, 3),
    )
    model = _centered(_random_bn(model), (6,)).double()
    x = _data((6,), n=40, classes=3)[0].double()
    for value in ("zero", "mean"):
        _, plan = _check_curves(model, x, "all", levels=5, value=value)
        assert plan.path == "level-walk", plan


def test_levels_every_unit_prefers_the_event_walk() -> None:
    """With every level the event-by-event K-site walk is less work: the plan says so."""
    x, _ = _data((3, 8, 8), n=8)
    with torch.no_grad():
        y = _conv11()(x).argmax(1)
    assert ablation_plan(_conv11(), (x, y), "last3", levels="all").path == "kwalk"
    assert ablation_plan(_conv11(), (x, y), "last3", directions="random", levels=9).path in (
        "stacked",
        "kwalk",
        "segments",
    )  # directions: no level walk (a direction is not one channel of the next layer)


@settings(max_examples=8, deadline=None)
@given(
    widths=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    n_levels=st.integers(2, 6),
    value=st.sampled_from(["zero", "mean"]),
    conv=st.booleans(),
    seed=st.integers(0, 100),
)
def test_property_random_chains_at_few_levels(
    widths: list[int], n_levels: int, value: str, conv: bool, seed: int
) -> None:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    prev = 2 if conv else 5
    for w in widths:
        layers += [nn.Conv2d(prev, w, 3, padding=1) if conv else nn.Linear(prev, w), nn.ReLU()]
        prev = w
    if conv:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    layers.append(nn.Linear(prev, 3))
    shape = (2, 4, 4) if conv else (5,)
    model = _centered(_random_bn(nn.Sequential(*layers)), shape).double()
    x = _data(shape, n=24, classes=3, seed=seed)[0].double()
    with torch.no_grad():
        y = model(x).argmax(1)
    sites = [str(i) for i, m in enumerate(model) if isinstance(m, nn.ReLU)]
    n = sum(widths)
    lv = ablation_levels(min(n_levels, n + 1), n)
    orders = unit_orderings(n, orderings=2, seed=seed)
    # the path itself, whatever the plan would choose for these (tiny) widths
    with prepared(model, torch.device("cpu")) as dtype, torch.no_grad():
        engine = setup(model, (x, y), sites, None, torch.device("cpu"), dtype)
        links = level_walk_links(engine)
        assert not isinstance(links, str), links
        means = unit_moments(engine)[0] if value == "mean" else None
        fills = unit_fill(means, len(engine.specs), value)
        correct, loss = level_walk_curves(engine, links, orders, lv, fills, 1 << 26, False)
    fills_ref = ref.naive_moments(model, x, sites)[0] if value == "mean" else None
    rows = ref.naive_curves(model, x, y, sites, orders.numpy(), list(lv), fills_ref)
    got = correct.reshape(-1).numpy()
    assert np.all(np.abs(got - [r[2] for r in rows]) <= [r[4] for r in rows])
    np.testing.assert_allclose(
        loss.reshape(-1).numpy() / len(y), [r[3] for r in rows], rtol=1e-5, atol=1e-5
    )
