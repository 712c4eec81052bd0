"""Exactness of the cumulative ablation engine against the naive reference (one full float64
forward pass per mask with a hook, tests/reference.py), plus its contracts.

Accuracy comparison: the engine runs in float32 and reassociates sums (cached prefix,
rank-1 updates, cumulative sums), so a sample whose top-2 logit gap in the float64
reference is below ``reference.MARGIN`` may legitimately flip. At every level the correct
counts must agree up to the number of such borderline samples (almost always 0; the test
also checks that most levels have none, so the bound is not vacuous).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import reference as ref
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from singledir import ablation_auc, ablation_curves, resolve_sites, summarize_curves
from singledir.ablation import ablation_levels, ablation_plan, unit_orderings
from singledir.engine.mlp_chain import native_walk_module
from singledir.errors import DataError, InputError, SiteError
from singledir.models import MLP, ConvNet11, resnet
from singledir.sites import ablation_hooks, site_units
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.set_num_threads(1)


def _random_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give batch norms non-trivial running statistics and affine parameters, and scale up
    the weights so that predictions depend on the input (a fresh net predicts one class)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            m.weight.data.mul_(2.5)
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


def _data(shape: tuple[int, ...], n: int = 40, classes: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def _centered(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Shift the output layer's bias by minus the mean logit on random inputs, so that a
    random network predicts several classes (deep random nets collapse onto one)."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    x = torch.randn(64, *shape, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        logits = model.eval()(x)
        head.bias.sub_(logits.mean(0))
        head.weight.mul_(1.0 / float(logits.std(0).mean().clamp_min(1e-3)))
        head.bias.mul_(1.0 / float(logits.std(0).mean().clamp_min(1e-3)))
    return model


def _mlp(bn: bool = False, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    model = MLP(20, widths=(16, 12), num_classes=5, batchnorm=bn, dropout=dropout)
    return _centered(_random_bn(model), (20,))


def _conv(bn: bool) -> nn.Module:
    torch.manual_seed(0)
    return _centered(_random_bn(ConvNet11(3, 5, batchnorm=bn, width=1 / 16)), (3, 8, 8))


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return _centered(_random_bn(resnet(18, num_classes=5, small_input=True)), (3, 8, 8))


def check_exact(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    layers: str,
    *,
    orderings: int = 2,
    levels: int | str = "all",
    value: str = "zero",
    method: str = "auto",
    order: str = "random",
    scores=None,
    own_labels: bool = True,
    memory_budget_mb: float | None = None,
) -> pl.DataFrame:
    if own_labels:  # labels = the model's own predictions, so ablation visibly costs accuracy
        model.eval()
        with torch.no_grad():
            y = model(x).argmax(1)
    df = ablation_curves(
        model,
        (x, y),
        layers,
        orderings=orderings,
        levels=levels,
        value=value,
        method=method,
        order=order,
        scores=scores,
        progress=False,
        memory_budget_mb=memory_budget_mb,
    )
    sites = resolve_sites(model, layers, sample_x=x[:2])
    n = sum(site_units(model, sites, x[:2]).values())
    lv = ablation_levels(levels, n)
    if order == "random":
        orders = unit_orderings(n, orderings=orderings, seed=0).numpy()
    else:
        key = np.asarray(scores, dtype=np.float64)
        orders = np.argsort(key if order == "ascending" else -key, kind="stable")[None]
    fills = ref.naive_moments(model, x, sites)[0] if value == "mean" else None
    rows = ref.naive_curves(model, x, y, sites, orders, list(lv), fills)
    assert df.height == len(rows)
    got_correct = np.rint(df["accuracy"].to_numpy() * len(y)).astype(int)
    want = np.array([r[2] for r in rows])
    border = np.array([r[4] for r in rows])
    assert np.all(np.abs(got_correct - want) <= border), (got_correct - want, border)
    assert np.mean(border == 0) >= 0.8  # the bound above is almost everywhere equality
    np.testing.assert_allclose(df["loss"].to_numpy(), [r[3] for r in rows], rtol=1e-5, atol=1e-5)
    assert df["n_ablated"].to_list() == [r[1] for r in rows]
    assert len(set(want.tolist())) > 1  # the curve actually moves: a meaningful comparison
    return df


# ------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("method", ["auto", "stacked", "hooks"])
@pytest.mark.parametrize("layers", ["all", "last1", "relu1"])
@pytest.mark.parametrize("value", ["zero", "mean"])
def test_mlp_matches_reference(method: str, layers: str, value: str) -> None:
    x, y = _data((20,))
    check_exact(_mlp(), x, y, layers, method=method, value=value)


@pytest.mark.parametrize("layers", ["all", "last1"])
def test_mlp_batchnorm_dropout_matches_reference(layers: str) -> None:
    x, y = _data((20,))
    model = _mlp(bn=True, dropout=0.5)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()  # the engine must evaluate in eval mode (dropout off, running stats)
    a = ablation_curves(model, (x, y), layers, orderings=2, progress=False)
    assert model.training  # mode restored
    b = check_exact(model, x, y, layers, own_labels=False)
    assert a.equals(b)
    check_exact(model, x, y, layers, value="mean")


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("layers", ["last1", "last2", "last3"])
def test_convnet11_matches_reference(bn: bool, layers: str) -> None:
    x, y = _data((3, 8, 8), n=24)
    model = _conv(bn)
    levels = "all" if layers != "last3" else 9
    check_exact(model, x, y, layers, levels=levels)
    if layers == "last2":
        check_exact(model, x, y, layers, value="mean", method="stacked", orderings=1)


@pytest.mark.parametrize(
    ("layers", "method", "runner"),
    [
        ("layer4.1", "auto", "chain"),  # avgpool, flatten, fc after the last block
        ("layer3.1,layer4.1", "auto", "fx"),  # layer4.0 branches (downsample)
        ("layer4.1", "hooks", "hooks"),
    ],
)
def test_resnet18_matches_reference(layers: str, method: str, runner: str) -> None:
    x, y = _data((3, 8, 8), n=16)
    model = _resnet()
    assert ablation_plan(model, (x, y), layers, method=method).runner == runner
    check_exact(model, x, y, layers, orderings=1, levels=5, method=method)


class _UserNet(nn.Module):
    """A model singledir did not build: nested modules, no site_names."""

    def __init__(self, branchy: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 14), nn.ReLU())
        self.fc = nn.Linear(14, 9)
        self.act = nn.ReLU()
        self.head = nn.Linear(9, 4)
        self.branchy = branchy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc(self.body(x)))
        if self.branchy and bool(x.sum() > -1e9):  # data-dependent: fx cannot trace it
            h = h * 1.0
        return self.head(h)


@pytest.mark.parametrize("branchy", [False, True])
def test_user_model_default_sites_and_fallback(branchy: bool) -> None:
    torch.manual_seed(3)
    model = _UserNet(branchy).eval()
    x, y = _data((10,), classes=4)
    assert resolve_sites(model, "all", sample_x=x[:2]) == ["body.1", "act"]
    plan = ablation_plan(model, (x, y), "all")
    assert plan.runner == ("hooks" if branchy else "chain")
    mlp_walk = "native-walk" if native_walk_module() is not None else "walk-linear"
    assert plan.path == ("stacked" if branchy else mlp_walk)
    check_exact(model, x, y, "all")


@settings(max_examples=8, deadline=None)
@given(
    w1=st.integers(1, 9),
    w2=st.integers(1, 9),
    seed=st.integers(0, 10_000),
    value=st.sampled_from(["zero", "mean"]),
)
def test_property_random_mlps_match_reference(w1: int, w2: int, seed: int, value: str) -> None:
    torch.manual_seed(seed)
    model = MLP(6, widths=(w1, w2), num_classes=3).eval()
    x, y = _data((6,), n=30, classes=3, seed=seed)
    df = ablation_curves(model, (x, y), orderings=2, value=value, progress=False)
    sites = ["relu1", "relu2"]
    orders = unit_orderings(w1 + w2, orderings=2).numpy()
    fills = ref.naive_moments(model, x, sites)[0] if value == "mean" else None
    rows = ref.naive_curves(model, x, y, sites, orders, list(range(w1 + w2 + 1)), fills)
    got = np.rint(df["accuracy"].to_numpy() * 30).astype(int)
    assert np.all(np.abs(got - [r[2] for r in rows]) <= [r[4] for r in rows])


# ---------------------------------------------------------------------------- semantics
def test_nothing_ablated_gives_model_accuracy() -> None:
    x, y = _data((3, 8, 8), n=24)
    model = _conv(True)
    df = ablation_curves(model, (x, y), "last2", orderings=3, levels=3, progress=False)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).double().mean())
    assert df.filter(pl.col("n_ablated") == 0)["accuracy"].to_list() == [acc] * 3


@pytest.mark.parametrize("value", ["zero", "mean"])
def test_all_of_last_hidden_layer_gives_constant_prediction(value: str) -> None:
    model = _mlp()
    x, y = _data((20,), n=60)
    df = ablation_curves(model, (x, y), "last1", orderings=2, value=value, progress=False)
    full = df.filter(pl.col("n_ablated") == 12)
    with torch.no_grad():
        h = nn.Sequential(*list(model.children())[:-1])(x)
        fill = torch.zeros(12) if value == "zero" else h.mean(0)
        logits = model.fc_out(fill.unsqueeze(0))[0]
    expected = float((y == int(logits.argmax())).double().mean())
    assert full["accuracy"].to_list() == pytest.approx([expected, expected], abs=1e-12)
    assert full["fraction_ablated"].to_list() == [1.0, 1.0]


def test_orderings_reproduce_from_seed() -> None:
    a = unit_orderings(30, orderings=3, seed=7)
    b = unit_orderings(30, orderings=5, seed=7)
    assert torch.equal(a, b[:3])  # each ordering depends on (seed, o) only
    assert not torch.equal(a, unit_orderings(30, orderings=3, seed=8))
    assert all(sorted(row.tolist()) == list(range(30)) for row in a)
    x, y = _data((20,))
    d1 = ablation_curves(_mlp(), (x, y), orderings=2, seed=5, progress=False)
    d2 = ablation_curves(_mlp(), (x, y), orderings=2, seed=5, progress=False)
    assert d1.equals(d2)
    assert d1["seed"].unique().to_list() == [5]


def test_score_orders_match_reference_and_are_stable() -> None:
    x, y = _data((20,))
    scores = np.round(np.random.default_rng(0).normal(size=28), 1)  # with ties
    scores[3] = scores[20] = scores[5]
    for order in ("ascending", "descending"):
        df = check_exact(_mlp(), x, y, "all", order=order, scores=scores, orderings=1)
        assert df["ordering"].unique().to_list() == [0]
    key = unit_orderings(28, order="descending", scores=scores)[0].tolist()
    assert key.index(3) < key.index(5) < key.index(20)  # ties keep unit order
    by_site = {"relu1": scores[:16], "relu2": scores[16:]}
    d1 = ablation_curves(
        _mlp(), (x, y), order="ascending", scores=by_site, levels=5, progress=False
    )
    d2 = ablation_curves(_mlp(), (x, y), order="ascending", scores=scores, levels=5, progress=False)
    assert d1.equals(d2)


def test_data_forms_agree() -> None:
    x, y = _data((20,), n=50)

    class Holder:
        def __init__(self) -> None:
            self.x, self.y = x, y

    kw = dict(orderings=2, levels=6, progress=False)
    base = ablation_curves(_mlp(), (x, y), batch_size=16, **kw)
    for data in (Holder(), TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=7)):
        other = ablation_curves(_mlp(), data, batch_size=16, **kw)
        np.testing.assert_array_equal(base["accuracy"], other["accuracy"])
        np.testing.assert_allclose(base["loss"], other["loss"], rtol=1e-6)


def test_small_memory_budget_same_numbers() -> None:
    x, y = _data((3, 8, 8), n=24)
    model = _conv(False)
    a = ablation_curves(model, (x, y), "last3", levels=7, progress=False, method="stacked")
    b = ablation_curves(
        model, (x, y), "last3", levels=7, progress=False, method="stacked", memory_budget_mb=0.05
    )
    np.testing.assert_array_equal(a["accuracy"], b["accuracy"])
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)


def test_levels_and_columns() -> None:
    assert ablation_levels("all", 4).tolist() == [0, 1, 2, 3, 4]
    assert ablation_levels(3, 10).tolist() == [0, 5, 10]
    assert ablation_levels(11, 10).tolist() == list(range(11))
    x, y = _data((20,))
    df = ablation_curves(_mlp(), (x, y), orderings=2, levels=4, progress=False)
    assert df.schema == {
        "ordering": pl.Int64,
        "n_ablated": pl.Int64,
        "fraction_ablated": pl.Float64,
        "accuracy": pl.Float64,
        "loss": pl.Float64,
        "seed": pl.Int64,
    }
    assert df["fraction_ablated"].to_list() == [0.0, 9 / 28, 19 / 28, 1.0] * 2


def test_no_hooks_left_and_device_restored() -> None:
    model = _resnet()
    x, y = _data((3, 8, 8), n=8)
    ablation_curves(model, (x, y), "layer4.1", orderings=1, levels=3, progress=False)
    assert all(not m._forward_hooks for m in model.modules())
    assert next(model.parameters()).device.type == "cpu"
    with (
        pytest.raises(RuntimeError),
        ablation_hooks(model, {"layer4.1": torch.ones(64 * 8, dtype=torch.bool)}),
    ):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in model.modules())


def test_ablation_hooks_per_row_masks() -> None:
    model = _mlp()
    x, _ = _data((20,), n=4)
    masks = torch.zeros(4, 12, dtype=torch.bool)
    masks[1, :5] = True
    with torch.no_grad(), ablation_hooks(model, {"relu2": masks}):
        got = model(x)
        h = nn.Sequential(*list(model.children())[:-1])(x)
    h[1, :5] = 0
    with torch.no_grad():
        torch.testing.assert_close(got, model.fc_out(h))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x, y = _data((3, 8, 8), n=24)
    model = _conv(True)
    for layers in ("last1", "last2", "last3"):
        a = ablation_curves(model, (x, y), layers, levels=6, progress=False, device="cpu")
        b = ablation_curves(model, (x, y), layers, levels=6, progress=False, device="cuda")
        assert np.max(np.abs(a["accuracy"].to_numpy() - b["accuracy"].to_numpy())) <= 1 / 24
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-3)


# -------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("budget", [float("nan"), float("inf"), -1.0, 0.0, "lots"])
def test_memory_budget_must_be_positive_and_finite(budget: object) -> None:
    from singledir import noise_curves, unit_importance

    model = _mlp()
    x, y = _data((20,))
    for run in (ablation_curves, unit_importance, noise_curves):
        with pytest.raises(InputError, match="positive finite number of MB") as refused:
            run(model, (x, y), memory_budget_mb=budget, progress=False)  # type: ignore[operator]
        assert "\n" not in str(refused.value)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_zero_is_refused_like_negative(batch_size: int) -> None:
    from singledir import noise_curves, unit_importance

    model = _mlp()
    x, y = _data((20,))
    for run in (ablation_curves, unit_importance, noise_curves):
        with pytest.raises(InputError, match=f"batch size must be >= 1, got {batch_size}"):
            run(model, (x, y), batch_size=batch_size, progress=False)  # type: ignore[operator]


def test_library_messages_do_not_name_cli_flags() -> None:
    from singledir import noise_curves

    model = _mlp()
    x, y = _data((20,))
    with pytest.raises(InputError, match="^orderings must be >= 1"):
        ablation_curves(model, (x, y), orderings=0, progress=False)
    with pytest.raises(InputError, match="^repeats must be >= 1"):
        noise_curves(model, (x, y), repeats=0, progress=False)


def test_bad_inputs() -> None:
    model = _mlp()
    x, y = _data((20,))
    with pytest.raises(SiteError, match="relu1, relu2"):
        ablation_curves(model, (x, y), "nope", progress=False)
    with pytest.raises(SiteError, match="last1 .. last2"):
        ablation_curves(model, (x, y), "last3", progress=False)
    with pytest.raises(InputError, match="exceeds"):
        ablation_curves(model, (x, y), levels=30, progress=False)
    with pytest.raises(DataError, match="empty"):
        ablation_curves(model, (x[:0], y[:0]), progress=False)
    with pytest.raises(InputError, match="does not fit"):
        ablation_curves(model, (torch.randn(5, 7), y[:5]), progress=False)
    with pytest.raises(InputError, match="zero or mean"):
        ablation_curves(model, (x, y), value="median", progress=False)
    with pytest.raises(InputError, match="one score per unit"):
        ablation_curves(model, (x, y), order="ascending", scores=np.ones(3), progress=False)
    with pytest.raises(InputError, match="scores"):
        ablation_curves(model, (x, y), order="ascending", progress=False)
    with pytest.raises(InputError, match="random, ascending or descending"):
        ablation_curves(model, (x, y), order="sideways", progress=False)
    with pytest.raises(DataError, match="labels"):
        ablation_curves(model, (x, y[:3]), progress=False)
    with pytest.raises(InputError, match=r"labels must lie in 0\.\.4"):
        ablation_curves(model, (x, y + 5), progress=False)
    with pytest.raises(InputError, match="integer class indices"):
        ablation_curves(model, (x, y.float()), progress=False)
    with pytest.raises(SiteError, match="runs 2 times"):
        shared = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
        shared.add_module("again", shared[1])
        resolve_sites(shared, "1", sample_x=torch.randn(2, 4))


# --------------------------------------------------------------------------- summaries
def _manual_auc(df: pl.DataFrame, relative: bool = False) -> float:
    areas = []
    for o in sorted(set(df["ordering"].to_list())):
        part = df.filter(pl.col("ordering") == o).sort("fraction_ablated")
        xs, ys = part["fraction_ablated"].to_numpy(), part["accuracy"].to_numpy()
        a = float(np.trapezoid(ys, xs)) / (xs[-1] - xs[0])
        areas.append(a / ys[0] if relative else a)
    return float(np.mean(areas))


@settings(max_examples=30, deadline=None)
@given(
    n_levels=st.integers(2, 12),
    n_ord=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_auc_and_summary_properties(n_levels: int, n_ord: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lv = np.unique(np.round(np.linspace(0, 20, n_levels))).astype(np.int64)
    rows = []
    for o in range(n_ord):
        acc = np.sort(rng.uniform(0.05, 1, lv.size))[::-1]
        for k, n in enumerate(lv):
            rows.append((o, int(n), n / 20, float(acc[k]), float(rng.uniform(0, 3)), 0))
    df = pl.DataFrame(
        rows,
        schema=["ordering", "n_ablated", "fraction_ablated", "accuracy", "loss", "seed"],
        orient="row",
    )
    assert ablation_auc(df) == pytest.approx(_manual_auc(df))
    assert ablation_auc(df, relative=True) == pytest.approx(_manual_auc(df, relative=True))
    per = ablation_auc(df, per_ordering=True)
    assert isinstance(per, pl.DataFrame) and per.height == n_ord
    assert float(per["auc"].mean()) == pytest.approx(ablation_auc(df))
    summary = summarize_curves(df)
    assert summary["n_ablated"].to_list() == lv.tolist()
    for row in summary.iter_rows(named=True):
        accs = df.filter(pl.col("n_ablated") == row["n_ablated"])["accuracy"].to_numpy()
        assert row["accuracy_mean"] == pytest.approx(accs.mean())
        assert row["accuracy_std"] == pytest.approx(accs.std())


def test_auc_of_flat_curve_is_its_accuracy() -> None:
    df = pl.DataFrame(
        {
            "ordering": [0, 0, 0],
            "n_ablated": [0, 1, 2],
            "fraction_ablated": [0.0, 0.5, 1.0],
            "accuracy": [0.8, 0.8, 0.8],
        }
    )
    assert ablation_auc(df) == pytest.approx(0.8)
    assert ablation_auc(df, relative=True) == pytest.approx(1.0)
    with pytest.raises(InputError):
        ablation_auc(df.drop("accuracy"))


def test_default_sites_without_sample() -> None:
    assert resolve_sites(_UserNet(), "all") == ["body.1", "act"]
    assert resolve_sites(_UserNet(), "last1") == ["act"]
    assert resolve_sites(_UserNet(), "act,body.1") == ["body.1", "act"]  # forward order
    net = _resnet()
    del net.site_names
    # torchvision blocks reuse one ReLU module: the stem's runs once (a module site), each
    # block's runs twice (each call a site, by its fx node name)
    names = resolve_sites(net, "all")
    assert names[:3] == ["relu", "layer1_0_relu", "layer1_0_relu_1"]
    assert names[-2:] == ["layer4_1_relu", "layer4_1_relu_1"]
    assert len(names) == 1 + 2 * sum(len(getattr(net, f"layer{i}")) for i in range(1, 5))
    assert resolve_sites(net, "layer4.1,layer1.0") == ["layer1.0", "layer4.1"]
    assert resolve_sites(_mlp(), "relu2,relu1") == ["relu1", "relu2"]


def test_inplace_layers_do_not_corrupt_cached_prefix() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Linear(10, 12),
        nn.Identity(),
        nn.LeakyReLU(0.1, inplace=True),  # not idempotent: a second pass would show
        nn.Linear(12, 8),
        nn.ReLU(inplace=True),
        nn.Linear(8, 4),
    ).eval()
    x, _ = _data((10,), classes=4)
    # site "1" is followed by an in-place layer; masks run one per pass (tiny budget)
    for method in ("auto", "stacked", "hooks"):
        check_exact(model, x, None, "1,4", method=method, orderings=1, memory_budget_mb=1e-6)


def test_two_site_walk_with_inplace_mid_layers() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Linear(10, 12),
        nn.ReLU(),
        nn.Linear(12, 8),
        nn.ReLU(inplace=True),
        nn.Dropout(0.2, inplace=True),
        nn.Linear(8, 4),
    ).eval()
    x, _ = _data((10,), classes=4)
    # site "4" is the dropout after an in-place ReLU: the walk runs both modules itself
    check_exact(model, x, None, "1,4")


def test_conv_site_feeding_pooled_linear_then_dense_site() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),  # site "1": channels, pooled into fc1
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 9),
        nn.BatchNorm1d(9),
        nn.ReLU(),  # site "6"
        nn.Linear(9, 4),
    )
    model = _centered(_random_bn(model), (3, 5, 5))
    x, _ = _data((3, 5, 5), classes=4)
    for value in ("zero", "mean"):
        check_exact(model, x, None, "1,6", value=value)
        check_exact(model, x, None, "1", value=value, method="stacked")


@st.composite
def _random_sequential(draw: st.DrawFn) -> tuple[nn.Module, tuple[int, ...], list[str]]:
    """A random flat Sequential (conv and/or dense ReLU layers, optional batch norm and
    dropout) and a random non-empty set of its ReLUs as sites."""
    # Seed torch before any layer is built: layer initialisation draws from the global RNG,
    # and an unseeded model would differ between hypothesis' first call and its replay.
    torch.manual_seed(draw(st.integers(0, 1000)))
    layers: list[nn.Module] = []
    conv = draw(st.booleans())
    shape: tuple[int, ...]
    if conv:
        shape, prev = (2, 4, 4), 2
        for _ in range(draw(st.integers(1, 2))):
            c = draw(st.integers(1, 4))
            layers.append(nn.Conv2d(prev, c, 3, padding=1, stride=draw(st.sampled_from([1, 2]))))
            if draw(st.booleans()):
                layers.append(nn.BatchNorm2d(c))
            layers += [nn.ReLU()]
            prev = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    else:
        shape, prev = (5,), 5
    for _ in range(draw(st.integers(0 if conv else 1, 2))):
        w = draw(st.integers(1, 6))
        layers.append(nn.Linear(prev, w))
        if draw(st.booleans()):
            layers.append(nn.BatchNorm1d(w))
        layers.append(nn.ReLU())
        if draw(st.booleans()):
            layers.append(nn.Dropout(0.3))
        prev = w
    layers.append(nn.Linear(prev, 3))
    model = _centered(_random_bn(nn.Sequential(*layers)), shape)
    relus = [str(i) for i, m in enumerate(layers) if isinstance(m, nn.ReLU)]
    sites = draw(st.lists(st.sampled_from(relus), min_size=1, max_size=3, unique=True))
    return model, shape, sites


@settings(max_examples=12, deadline=None)
@given(arch=_random_sequential(), value=st.sampled_from(["zero", "mean"]))
def test_property_random_sequentials_match_reference(arch, value: str) -> None:
    model, shape, sites = arch
    x, _ = _data(shape, n=24, classes=3)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    df = ablation_curves(model, (x, y), sites, orderings=1, value=value, progress=False)
    ordered = resolve_sites(model, sites, sample_x=x[:2])
    n = sum(site_units(model, ordered, x[:2]).values())
    orders = unit_orderings(n, orderings=1).numpy()
    fills = ref.naive_moments(model, x, ordered)[0] if value == "mean" else None
    rows = ref.naive_curves(model, x, y, ordered, orders, list(range(n + 1)), fills)
    got = np.rint(df["accuracy"].to_numpy() * 24).astype(int)
    assert np.all(np.abs(got - [r[2] for r in rows]) <= [r[4] for r in rows])
    np.testing.assert_allclose(df["loss"], [r[3] for r in rows], rtol=1e-5, atol=1e-5)
