"""The engine on models as users write them: the plan comes from the fx graph, so the same
weights written four ways take the same path and give identical numbers; sequence models
ablate features (the last axis), not tokens; conv nets of any dimension; untraceable models
fall back to hooks. Every number is checked against the naive float64 hook-per-mask
reference (tests/reference.py), extended to graph-node sites and any unit axis."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import reference as ref
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from singledir import list_sites, noise_curves, record_activation_arrays, unit_importance
from singledir.ablation import (
    ablation_curves,
    ablation_curves_with_plan,
    ablation_levels,
    ablation_plan,
    unit_orderings,
)
from singledir.engine.mlp_chain import chain_logits, mlp_chain, native_walk_module
from singledir.engine.plan import setup
from singledir.engine.scoring import seed_for
from singledir.errors import InputError, SiteError
from singledir.sites import resolve_sites, site_specs
from test_ablation_engine import _centered, _data, _random_bn, _random_sequential
from torch import nn

torch.set_num_threads(1)


# ----------------------------------------------------------------- one MLP, four writings
class _Modules(nn.Module):
    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        self.fc1, self.act1, self.fc2, self.act2, self.head = (seq[i] for i in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act2(self.fc2(self.act1(self.fc1(x)))))


class _Functional(nn.Module):
    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = seq[0], seq[2], seq[4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        h = F.relu(self.fc2(h))
        return self.head(h)


class _Block(nn.Module):
    def __init__(self, fc: nn.Linear) -> None:
        super().__init__()
        self.fc = fc
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class _Nested(nn.Module):
    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        self.body = nn.ModuleDict({"one": _Block(seq[0]), "two": _Block(seq[2])})
        self.head = nn.Sequential(nn.Dropout(0.3), seq[4])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body["two"](self.body["one"](x)))


def _four_mlps() -> list[tuple[nn.Module, list[str]]]:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4))
    seq = _centered(_random_bn(seq), (12,))
    return [
        (seq, ["1", "3"]),
        (_Modules(seq).eval(), ["act1", "act2"]),
        (_Functional(seq).eval(), ["relu", "relu_1"]),
        (_Nested(seq).eval(), ["body.one.act", "body.two.act"]),
    ]


@pytest.mark.parametrize("layers", ["all", "last1"])
@pytest.mark.parametrize("value", ["zero", "mean"])
def test_four_writings_same_plan_same_numbers(layers: str, value: str) -> None:
    x, _ = _data((12,), n=48, classes=4)
    models = _four_mlps()
    with torch.no_grad():
        y = models[0][0](x).argmax(1)
    plans, curves, importance, records = [], [], [], []
    for model, names in models:
        assert resolve_sites(model, "all", sample_x=x[:2]) == names
        plans.append(ablation_plan(model, (x, y), layers))
        curves.append(
            ablation_curves(model, (x, y), layers, orderings=2, value=value, progress=False)
        )
        importance.append(unit_importance(model, (x, y), layers, value=value, progress=False))
        records.append(
            list(record_activation_arrays(model, (x, y), layers, progress=False)[0].values())
        )
    want_path = "walk-linear" if layers == "all" else "cumsum"
    if native_walk_module() is not None:
        want_path = "native-walk"  # CPU float32 MLP chains go to the Rust walk
    for plan in plans:
        assert (plan.runner, plan.path) == ("chain", want_path), plan
        assert plan.unit_dims == plans[0].unit_dims and plan.n_units == plans[0].n_units
    for other in curves[1:]:
        assert other.equals(curves[0])
    for other in importance[1:]:
        assert other.drop("layer").equals(importance[0].drop("layer"))
    for other in records[1:]:
        for a, b in zip(other, records[0], strict=True):
            np.testing.assert_array_equal(a, b)
    # and the shared numbers are right: the functional writing (node sites) vs the reference
    model, names = models[2]
    sites = names if layers == "all" else names[-1:]
    n = sum(site_specs(model, sites, x[:2])[k].n_units for k in range(len(sites)))
    orders = unit_orderings(n, orderings=2).numpy()
    fills = ref.naive_moments(model, x, sites)[0] if value == "mean" else None
    rows = ref.naive_curves(model, x, y, sites, orders, list(range(n + 1)), fills)
    _assert_rows(curves[2], rows, len(y))


def _assert_rows(df: pl.DataFrame, rows: list, n: int) -> None:
    got = np.rint(df["accuracy"].to_numpy() * n).astype(int)
    want = np.array([r[2] for r in rows])
    border = np.array([r[4] for r in rows])
    assert np.all(np.abs(got - want) <= border), (got - want, border)
    assert np.mean(border == 0) >= 0.8
    np.testing.assert_allclose(df["loss"].to_numpy(), [r[3] for r in rows], rtol=1e-5, atol=1e-5)
    assert len(set(want.tolist())) > 1  # the curve moves: a meaningful comparison


def _check_curves(
    model: nn.Module,
    x: torch.Tensor,
    layers,
    *,
    levels="all",
    orderings: int = 2,
    value: str = "zero",
    directions="units",
    method: str = "auto",
    unit_dim=None,
) -> tuple[pl.DataFrame, object]:
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    kw = dict(directions=directions, unit_dim=unit_dim, method=method)
    df, followed = ablation_curves_with_plan(
        model, (x, y), layers, orderings=orderings, levels=levels, value=value, progress=False, **kw
    )
    plan = ablation_plan(model, (x, y), layers, levels=levels, **kw)
    assert followed == plan  # the plan a run reports is the one ablation_plan predicts
    engine = setup(
        model,
        (x, y),
        layers,
        None,
        torch.device("cpu"),
        next(model.parameters()).dtype,
        unit_dim=unit_dim,
        directions=directions,
    )
    sites = engine.sites
    dims = [s.unit_dim for s in engine.specs]
    bases = [s.basis for s in engine.specs]
    lv = ablation_levels(levels, engine.n_units)
    orders = unit_orderings(engine.n_units, orderings=orderings).numpy()
    fills = ref.naive_moments(model, x, sites, dims, bases)[0] if value == "mean" else None
    rows = ref.naive_curves(model, x, y, sites, orders, list(lv), fills, dims, bases)
    _assert_rows(df, rows, len(y))
    return df, plan


# ---------------------------------------------------------------- sequence (N, T, C) model
class _Tiny(nn.Module):
    """Transformer-style: residual blocks x + W2 gelu(W1 LN(x)) over (N, T, C), a token
    mixing step (mean over tokens added back), a final LayerNorm, mean pooling, a head."""

    def __init__(self, d_in: int = 5, width: int = 6, hidden: int = 7, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList()
        for _ in range(2):
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "ln": nn.LayerNorm(width),
                        "fc1": nn.Linear(width, hidden),
                        "fc2": nn.Linear(hidden, width),
                    }
                )
            )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = h + h.mean(dim=1, keepdim=True)
            h = h + block["fc2"](F.gelu(block["fc1"](block["ln"](h))))
        return self.head(self.norm(h).mean(dim=1))


def _tiny() -> nn.Module:
    torch.manual_seed(2)
    model = _Tiny()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.weight.data.mul_(2.0)
    return _centered(model.eval(), (9, 5))


def test_sequence_model_ablates_features_not_tokens() -> None:
    model = _tiny()
    x, _ = _data((9, 5), n=30, classes=4)
    specs = site_specs(model, resolve_sites(model, "all", sample_x=x[:2]), x[:2])
    assert [(s.name, s.kind, s.unit_dim, s.n_units, s.shape) for s in specs] == [
        ("gelu", "function", 2, 7, (9, 7)),
        ("gelu_1", "function", 2, 7, (9, 7)),
    ]
    for layers in ("all", "gelu_1"):
        df, plan = _check_curves(model, x, layers)
        assert plan.unit_dims == ((2, 2) if layers == "all" else (2,))
        assert plan.path == "stacked"
    _check_curves(model, x, "gelu", value="mean", orderings=1)
    # the recorded activity of a feature is its mean over tokens
    arrays, _ = record_activation_arrays(
        model, (x, torch.zeros(30, dtype=torch.long)), "gelu", progress=False
    )
    with torch.no_grad():
        h = model.embed(x)
        h = h + h.mean(dim=1, keepdim=True)
        b = model.blocks[0]
        want = F.gelu(b["fc1"](b["ln"](h))).mean(dim=1)
    np.testing.assert_allclose(arrays["gelu"], want.numpy(), rtol=1e-5, atol=1e-6)


def test_sequence_model_importance_and_noise_use_the_feature_axis() -> None:
    model = _tiny()
    x, _ = _data((9, 5), n=30, classes=4)
    with torch.no_grad():
        y = model(x).argmax(1)
    df = unit_importance(model, (x, y), "gelu_1", progress=False)
    rows = ref.naive_importance(model, x, y, "gelu_1", unit_dim=2)
    got = np.rint(df["accuracy"].to_numpy() * len(y)).astype(int)
    assert np.all(np.abs(got - [r[0] for r in rows]) <= [r[2] for r in rows])
    np.testing.assert_allclose(df["loss"], [r[1] for r in rows], rtol=1e-5, atol=1e-5)
    scales = (0.0, 1.0, 3.0)
    noise = noise_curves(model, (x, y), "gelu", scales=scales, repeats=1, seed=4, progress=False)
    sigmas = [torch.as_tensor(ref.naive_moments(model, x, ["gelu"], [2])[1][0])]
    z = [torch.randn((30, 9, 7), generator=torch.Generator().manual_seed(seed_for(4, 0)))]
    for s in scales:
        c, loss, border = ref.naive_noise(model, x, y, ["gelu"], s, sigmas, z, [2])
        row = noise.filter(pl.col("scale") == s)
        assert abs(round(row["accuracy"][0] * 30) - c) <= border
        assert row["loss"][0] == pytest.approx(loss, rel=1e-4, abs=1e-5)


def test_unit_dim_override_and_errors() -> None:
    model = _tiny()
    x, _ = _data((9, 5), n=30, classes=4)
    # tokens as units (an explicit choice): the reference masks dim 1
    df, plan = _check_curves(model, x, "gelu", unit_dim=1, orderings=1)
    assert plan.unit_dims == (1,) and plan.n_units == (9,)
    with torch.no_grad():
        y = model(x).argmax(1)
    with pytest.raises(InputError, match="unit_dim 3 is out of range"):
        ablation_curves(model, (x, y), "gelu", unit_dim=3, progress=False)
    with pytest.raises(SiteError, match="not chosen sites"):
        ablation_curves(model, (x, y), "gelu", unit_dim={"nope": 1}, progress=False)
    with pytest.raises(SiteError, match=r"unknown site 'nope': choose from gelu, gelu_1"):
        ablation_curves(model, (x, y), "nope", progress=False)

    class Opaque(nn.Module):  # a (N, 3, 4) site between ops that do not say its layout
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x.view(-1, 3, 4)).flatten(1)[:, :4]

    with pytest.raises(SiteError, match="--unit-dim relu=D"):
        ablation_curves(
            Opaque(), (torch.randn(6, 12), torch.zeros(6, dtype=torch.long)), progress=False
        )


def test_list_sites() -> None:
    model = _tiny()
    x, y = _data((9, 5), n=4, classes=4)
    table = list_sites(model, (x, y))
    assert table.columns == ["name", "kind", "n_units", "unit_dim", "shape"]
    assert table.rows() == [
        ("gelu", "function", 7, 2, [9, 7]),
        ("gelu_1", "function", 7, 2, [9, 7]),
    ]
    conv = _conv1d()
    table = list_sites(conv, _data((2, 11), n=3, classes=3))
    assert table["name"].to_list() == ["1", "4"]
    assert table["unit_dim"].to_list() == [1, 1]
    assert table["n_units"].to_list() == [4, 5]


# ------------------------------------------------------------------------------ 1-D conv
def _conv1d() -> nn.Module:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv1d(4, 5, 3, padding=1, stride=2),
        nn.BatchNorm1d(5),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )
    return _centered(_random_bn(model), (2, 11))


@pytest.mark.parametrize(("layers", "path"), [("all", "walk"), ("4", "cumsum"), ("1", "stacked")])
def test_conv1d_net(layers: str, path: str) -> None:
    model = _conv1d()
    x, _ = _data((2, 11), n=30, classes=3)
    _, plan = _check_curves(model, x, layers)
    assert (plan.runner, plan.path) == ("chain", path)
    _check_curves(model, x, layers, value="mean", orderings=1)


# --------------------------------------------------------------------------- untraceable
class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))
        if float(h.sum()) > -1e9:  # data-dependent control flow: fx cannot trace it
            h = h * 1.0
        return self.fc2(h)


def test_untraceable_model_uses_hooks_with_a_note() -> None:
    torch.manual_seed(1)
    model = _centered(_Untraceable(), (6,))
    x, _ = _data((6,), n=30, classes=3)
    _, plan = _check_curves(model, x, "act")
    assert plan.runner == "hooks" and "torch.fx cannot trace" in plan.runner_reason
    with pytest.raises(SiteError, match="cannot be traced"):
        ablation_curves(model, (x, x[:, 0].long().clamp(0, 2)), "relu", progress=False)


def test_untraceable_model_warns_once_per_call_at_the_callers_line() -> None:
    import warnings

    from singledir.errors import SlowPathWarning

    torch.manual_seed(1)
    model = _centered(_Untraceable(), (6,))
    x, _ = _data((6,), n=30, classes=3)
    data = (x, x[:, 0].long().clamp(0, 2))
    for run in (ablation_curves, ablation_curves_with_plan, unit_importance, noise_curves):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run(model, data, "act", progress=False)  # type: ignore[operator]
            run(model, data, "act", progress=False, method="hooks")  # type: ignore[operator]
        slow = [w for w in caught if issubclass(w.category, SlowPathWarning)]
        assert len(slow) == 1, run.__name__
        assert "torch.fx cannot trace" in str(slow[0].message)
        assert slow[0].filename == __file__  # stacklevel points at the user's call
    traceable = _mlp()
    xt, yt = _data((12,), n=20, classes=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPathWarning)
        ablation_curves(traceable, (xt, yt), orderings=1, progress=False)


# ---------------------------------------------------------------------------- directions
def _mlp() -> nn.Module:
    return _four_mlps()[2][0]


@pytest.mark.parametrize("layers", ["all", "relu_1", "relu"])
def test_explicit_directions_match_projection_reference(layers: str) -> None:
    model = _mlp()
    x, _ = _data((12,), n=40, classes=4)
    g = torch.Generator().manual_seed(5)
    raw = {"relu": torch.randn(10, 10, generator=g), "relu_1": torch.randn(5, 8, generator=g)}
    chosen = {k: v for k, v in raw.items() if layers == "all" or k == layers}
    df, plan = _check_curves(model, x, layers, directions=chosen)
    # a partial basis at the second site rules out the walk (segments instead); one site: cumsum
    assert plan.path == {"all": "segments", "relu_1": "cumsum", "relu": "stacked"}[layers]
    _check_curves(model, x, layers, directions=chosen, value="mean", orderings=1)
    full = {"relu": raw["relu"], "relu_1": torch.randn(8, 8, generator=g)}
    df, plan = _check_curves(model, x, "all", directions=full)
    assert plan.path == "walk"  # a full basis keeps the walk: rank-1 updates W d


def test_directions_importance_matches_reference() -> None:
    model = _mlp()
    x, _ = _data((12,), n=40, classes=4)
    with torch.no_grad():
        y = model(x).argmax(1)
    basis = torch.linalg.qr(torch.randn(10, 10, generator=torch.Generator().manual_seed(6)))[0].t()
    df = unit_importance(model, (x, y), "relu", directions={"relu": basis[:6]}, progress=False)
    assert df.height == 6
    rows = ref.naive_importance(model, x, y, "relu", basis=basis[:6])
    got = np.rint(df["accuracy"].to_numpy() * len(y)).astype(int)
    assert np.all(np.abs(got - [r[0] for r in rows]) <= [r[2] for r in rows])
    np.testing.assert_allclose(df["loss"], [r[1] for r in rows], rtol=1e-5, atol=1e-5)


def test_identity_basis_equals_units_and_random_is_seeded() -> None:
    model = _mlp()
    x, _ = _data((12,), n=40, classes=4)
    with torch.no_grad():
        y = model(x).argmax(1)
    kw = dict(orderings=2, progress=False)
    units = ablation_curves(model, (x, y), **kw)
    eye = ablation_curves(
        model, (x, y), directions={"relu": torch.eye(10), "relu_1": torch.eye(8)}, **kw
    )
    np.testing.assert_array_equal(units["accuracy"], eye["accuracy"])
    np.testing.assert_allclose(units["loss"], eye["loss"], rtol=1e-6, atol=1e-7)
    a = ablation_curves(model, (x, y), directions="random", seed=3, **kw)
    b = ablation_curves(model, (x, y), directions="random", seed=3, **kw)
    c = ablation_curves(model, (x, y), directions="random", seed=4, **kw)
    assert a.equals(b) and not a.equals(c)
    assert not a["accuracy"].equals(units["accuracy"])
    _check_curves(model, x, "all", directions="random")
    imp_units = unit_importance(model, (x, y), "relu", progress=False)
    imp_eye = unit_importance(
        model, (x, y), "relu", directions={"relu": np.eye(10)}, progress=False
    )
    np.testing.assert_array_equal(imp_units["accuracy"], imp_eye["accuracy"])


def test_bad_directions() -> None:
    model = _mlp()
    x, _ = _data((12,), n=10, classes=4)
    y = torch.zeros(10, dtype=torch.long)
    bad = [
        ({"relu": torch.ones(2, 10)}, "linearly dependent"),
        ({"relu": torch.randn(2, 9)}, "width 9 but the site has 10 units"),
        ({"relu": torch.full((1, 10), float("nan"))}, "NaN or infinity"),
        ({"nope": torch.randn(1, 10)}, "not chosen sites"),
        ("pca", "unknown directions"),
    ]
    for directions, match in bad:
        with pytest.raises(InputError, match=match):
            ablation_curves(model, (x, y), directions=directions, progress=False)


# ------------------------------------------------------------- random non-Sequential graphs
class _RandomGraph(nn.Module):
    """A conv or dense trunk with optional batch norm, a two-branch block (summed), pooling
    and activation modules or calls, drawn by hypothesis."""

    def __init__(
        self, conv: bool, widths: list[int], functional: list[bool], branch: bool, bn: bool
    ):
        super().__init__()
        self.conv, self.functional, self.branch = conv, functional, branch
        layer = (lambda i, o: nn.Conv2d(i, o, 3, padding=1)) if conv else nn.Linear
        norm = nn.BatchNorm2d if conv else nn.BatchNorm1d
        prev = 2 if conv else 5
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.acts = nn.ModuleList()
        for w in widths:
            self.layers.append(layer(prev, w))
            self.norms.append(norm(w) if bn else nn.Identity())
            self.acts.append(nn.ReLU())
            prev = w
        self.side = layer(prev, prev) if branch else None
        self.head = nn.Linear(prev, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for k, (lin, norm, act) in enumerate(zip(self.layers, self.norms, self.acts, strict=True)):
            h = norm(lin(h))
            h = torch.relu(h) if self.functional[k] else act(h)
        if self.side is not None:
            h = h + F.gelu(self.side(h))
        if self.conv:
            h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.head(h)


@st.composite
def _graphs(draw: st.DrawFn) -> tuple[nn.Module, tuple[int, ...], list[str]]:
    conv = draw(st.booleans())
    n = draw(st.integers(1, 3))
    widths = [draw(st.integers(1, 5)) for _ in range(n)]
    functional = [draw(st.booleans()) for _ in range(n)]
    model = _RandomGraph(conv, widths, functional, draw(st.booleans()), draw(st.booleans()))
    torch.manual_seed(draw(st.integers(0, 1000)))
    shape = (2, 4, 4) if conv else (5,)
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            m.reset_parameters()
    model = _centered(_random_bn(model), shape)
    names = resolve_sites(model, "all")
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    return model, shape, chosen


@settings(max_examples=10, deadline=None)
@given(arch=_graphs(), value=st.sampled_from(["zero", "mean"]))
def test_property_random_graphs_match_reference(arch, value: str) -> None:
    model, shape, sites = arch
    x, _ = _data(shape, n=24, classes=3)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    df = ablation_curves(model, (x, y), sites, orderings=1, value=value, progress=False)
    ordered = resolve_sites(model, sites, sample_x=x[:2])
    n = sum(s.n_units for s in site_specs(model, ordered, x[:2]))
    orders = unit_orderings(n, orderings=1).numpy()
    fills = ref.naive_moments(model, x, ordered)[0] if value == "mean" else None
    rows = ref.naive_curves(model, x, y, ordered, orders, list(range(n + 1)), fills)
    got = np.rint(df["accuracy"].to_numpy() * 24).astype(int)
    assert np.all(np.abs(got - [r[2] for r in rows]) <= [r[4] for r in rows])
    np.testing.assert_allclose(df["loss"], [r[3] for r in rows], rtol=1e-5, atol=1e-5)
    imp = unit_importance(model, (x, y), ordered[-1:], value=value, progress=False)
    fills1 = None if fills is None else fills[-1:]
    rows_i = ref.naive_importance(model, x, y, ordered[-1], fills=fills1)
    got_i = np.rint(imp["accuracy"].to_numpy() * 24).astype(int)
    assert np.all(np.abs(got_i - [r[0] for r in rows_i]) <= [r[2] for r in rows_i])


# ------------------------------------------------------- torch walk and the native handoff
@pytest.mark.parametrize("layers", ["all", "last1"])
def test_float64_models_take_the_torch_walk(layers: str) -> None:
    """The native walk is float32-only: the same writings in float64 take the torch walk
    (one path for all four) and match the reference."""
    x, _ = _data((12,), n=48, classes=4)
    x = x.double()
    paths = set()
    for model, _names in _four_mlps():
        model = model.double()
        _, plan = _check_curves(model, x, layers)
        paths.add((plan.runner, plan.path))
    assert paths == {("chain", "walk-linear" if layers == "all" else "cumsum")}


def test_mlp_chain_description_reproduces_the_model() -> None:
    """The folded (W, b) maps handed to the native walk give the model's logits (batch
    norm folded, dropout dropped), and site_layers index the sites' activations."""
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Linear(6, 9),
        nn.BatchNorm1d(9),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(9, 7),
        nn.ReLU(),
        nn.Linear(7, 5),
        nn.BatchNorm1d(5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )
    model = _random_bn(model)
    x, y = _data((6,), n=20, classes=3)
    for layers, site_layers in (("2,8", [0, 2]), ("3,5,8", [0, 1, 2]), ("5", [0])):
        engine = setup(model, (x, y), layers, None, torch.device("cpu"), torch.float32)
        chain = mlp_chain(engine.runner, engine.specs)
        assert not isinstance(chain, str), chain
        assert chain.site_layers == site_layers
        with torch.no_grad():
            h0 = engine.runner.prefix(x)
            torch.testing.assert_close(chain_logits(chain, h0), model(x), rtol=1e-5, atol=1e-5)
    engine = setup(model, (x, y), "1", None, torch.device("cpu"), torch.float32)
    assert isinstance(mlp_chain(engine.runner, engine.specs), str)  # site 1 is a pre-activation


# ------------------------------------------------------------------------------- segments
def _conv11() -> nn.Module:
    from singledir.models import ConvNet11

    torch.manual_seed(0)
    return _centered(_random_bn(ConvNet11(3, 5, batchnorm=True, width=1 / 16)), (3, 8, 8))


@pytest.mark.parametrize("value", ["zero", "mean"])
def test_kwalk_on_convnet_last_three_sites(value: str) -> None:
    """Paper Fig. 2b/c: ConvNet11's last three sites, every level: the K-site walk (each
    event a per-channel update of the next conv's output, rank-1 logit terms for the
    third site), also along random directions."""
    x, _ = _data((3, 8, 8), n=24)
    _, plan = _check_curves(
        _conv11(), x, "last3", value=value, orderings=2 if value == "zero" else 1
    )
    assert (plan.runner, plan.path) == ("chain", "kwalk")
    if value == "zero":
        _, plan = _check_curves(_conv11(), x, "last3", directions="random", orderings=1)
        assert plan.path == "kwalk"
    _, plan = _check_curves(_conv11(), x, "last3", levels=9, orderings=1)
    assert plan.path == "level-walk"  # few levels: walk the levels (test_engine_levelwalk)


class _Residual(nn.Module):
    """A small residual conv net: the first site feeds two branches (an fx cut, not a
    chain), the last reaches the logits through pooling and a Linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = (
            nn.Conv2d(2, 4, 3, padding=1),
            nn.Conv2d(4, 3, 3, padding=1),
            nn.Conv2d(3, 4, 1),
        )
        self.a1, self.a2, self.a3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a1(self.conv1(x))
        z = self.a2(self.conv2(h))
        h = self.a3(h + self.conv3(z))
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


def test_segments_through_an_fx_cut_and_with_directions() -> None:
    torch.manual_seed(2)
    net = _centered(_random_bn(_Residual()), (2, 5, 5))
    x, _ = _data((2, 5, 5), n=24, classes=3)
    for value in ("zero", "mean"):
        _, plan = _check_curves(net, x, "all", value=value, orderings=1)
        assert (plan.runner, plan.path) == ("fx", "segments")
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Linear(6, 7),
        nn.ReLU(),
        nn.Linear(7, 6),
        nn.ReLU(),
        nn.Linear(6, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )
    model = _centered(_random_bn(model), (6,)).double()
    xd = _data((6,), n=30, classes=3)[0].double()
    _, plan = _check_curves(model, xd, "all", directions="random")
    assert plan.path == "kwalk"  # three sites, float64: no native walk
    _check_curves(model, xd, "all", value="mean", orderings=1)


def test_a_shared_module_call_is_a_site_by_its_node_name() -> None:
    """torchvision blocks call one ReLU module twice: the module name alone is refused (with
    the call names), each call is a graph node (``layer4_1_relu_1`` = the block's output)."""
    from singledir.models import resnet

    torch.manual_seed(0)
    net = _centered(_random_bn(resnet(18, num_classes=5, small_input=True)), (3, 8, 8))
    x, _ = _data((3, 8, 8), n=12)
    with pytest.raises(SiteError, match=r"runs 2 times .*\(layer4_1_relu, layer4_1_relu_1\)"):
        ablation_curves(
            net, (x, torch.zeros(12, dtype=torch.long)), "layer4.1.relu", progress=False
        )
    spec = site_specs(net, ["layer4_1_relu_1"], x[:2])[0]
    assert (spec.kind, spec.n_units, spec.unit_dim) == ("call", 512, 1)
    _, plan = _check_curves(net, x, "layer4_1_relu_1", levels=5, orderings=1)
    assert plan.runner == "chain"
    assert resolve_sites(net, "all") == net.site_names  # a model's declared sites stay


class _SharedRelu(nn.Module):
    """The hand-written idiom: one ``self.r = nn.ReLU()`` called twice in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 9), nn.Linear(9, 8), nn.Linear(8, 4)
        self.r = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.r(self.b(self.r(self.a(x)))))


@pytest.mark.parametrize("value", ["zero", "mean"])
def test_each_call_of_a_shared_module_is_a_site(value: str) -> None:
    torch.manual_seed(4)
    model = _centered(_SharedRelu(), (6,))
    x, _ = _data((6,), n=40, classes=4)
    with torch.no_grad():
        y = model(x).argmax(1)
    assert list_sites(model, (x, y)).rows() == [
        ("r", "call", 9, 1, [9]),
        ("r_1", "call", 8, 1, [8]),
    ]
    assert resolve_sites(model, "last1") == ["r_1"]
    # "r" is the module and the first call's node: it means the node (the reference hooks
    # that one call), alone, together with the second call, and for importance
    _check_curves(model, x, "all", value=value)
    _, plan = _check_curves(model, x, "r", value=value)
    assert (plan.sites, plan.n_units) == (("r",), (9,))
    _check_curves(model, x, "r_1", value=value, orderings=1)
    fills = ref.naive_moments(model, x, ["r"])[0] if value == "mean" else None
    imp = unit_importance(model, (x, y), "r", value=value, progress=False)
    rows = ref.naive_importance(model, x, y, "r", fills=fills)
    got = np.rint(imp["accuracy"].to_numpy() * len(y)).astype(int)
    assert np.all(np.abs(got - [r[0] for r in rows]) <= [r[2] for r in rows])
    np.testing.assert_allclose(imp["loss"], [r[1] for r in rows], rtol=1e-5, atol=1e-5)
    arrays, _ = record_activation_arrays(model, (x, y), "all", progress=False)
    with torch.no_grad():
        first = torch.relu(model.a(x))
        np.testing.assert_allclose(arrays["r"], first.numpy(), atol=1e-6)
        np.testing.assert_allclose(arrays["r_1"], torch.relu(model.b(first)).numpy(), atol=1e-6)


class _UntraceableShared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.r, self.c = nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.r(self.a(self.r(x)))
        if float(h.sum()) > -1e9:  # data-dependent control flow: no fx graph, no node names
            h = h * 1.0
        return self.c(h)


def test_a_shared_module_without_a_graph_is_refused_with_the_fix() -> None:
    model = _UntraceableShared().eval()
    data = (torch.randn(5, 6), torch.zeros(5, dtype=torch.long))
    with pytest.raises(SiteError, match=r"no default sites .* name the sites"):
        ablation_plan(model, data, "all")
    with pytest.raises(SiteError, match=r"no default sites"):
        ablation_plan(model, data, "last1")
    with pytest.raises(SiteError, match=r"runs 2 times .* only where torch.fx can trace"):
        ablation_plan(model, data, "r")
    assert ablation_plan(model, data, "a").sites == ("a",)  # a module that runs once works


def test_torchvision_resnet18_last_three_calls_match_reference() -> None:
    """The paper's setting on a torchvision ResNet: the last three ReLU calls (two of them
    calls of one shared module) against the naive hook-per-call reference."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5)
    net = _centered(_random_bn(net), (3, 16, 16))
    x, _ = _data((3, 16, 16), n=16)
    names = resolve_sites(net, "all")
    assert (
        len(names) == 17
        and names[0] == "relu"
        and names[1:3]
        == [
            "layer1_0_relu",
            "layer1_0_relu_1",
        ]
    )
    assert resolve_sites(net, "last3") == ["layer4_0_relu_1", "layer4_1_relu", "layer4_1_relu_1"]
    _, plan = _check_curves(net, x, "last3", levels=9, orderings=1)
    assert plan.n_units == (512, 512, 512)


def test_selector_errors_say_the_fix() -> None:
    model = _SharedRelu().eval()
    data = (torch.randn(5, 6), torch.zeros(5, dtype=torch.long))
    with pytest.raises(SiteError, match=r"asks for 3 sites but the model has 2 \(r, r_1\)"):
        ablation_plan(model, data, "last3")
    single = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).eval()
    with pytest.raises(SiteError, match=r"has 1 \(1\): use last1 or all$"):
        ablation_plan(single, data, "last2")
    with pytest.raises(SiteError, match="layers is empty"):
        ablation_plan(single, data, "  ")
    for bad in ("x", 1.5, True, "2"):
        with pytest.raises(InputError, match=r"unit_dim .* is not an integer: pass an integer"):
            ablation_plan(single, data, "1", unit_dim=bad)
    with pytest.raises(InputError, match="is not site -> integer"):
        ablation_plan(single, data, "1", unit_dim={"1": 1.5})
    assert ablation_plan(single, data, "1", unit_dim=np.int64(1)).unit_dims == (1,)


class _RandomSequence(nn.Module):
    """Residual blocks over (N, T, C) with optional LayerNorm, GELU / ReLU / ``.relu()``
    activations and a mean- or last-token head, drawn by hypothesis."""

    def __init__(self, width: int, hidden: list[int], acts: list[str], norm: bool, last: bool):
        super().__init__()
        self.inp = nn.Linear(3, width)
        self.norms = nn.ModuleList(nn.LayerNorm(width) if norm else nn.Identity() for _ in hidden)
        self.ups = nn.ModuleList(nn.Linear(width, h) for h in hidden)
        self.downs = nn.ModuleList(nn.Linear(h, width) for h in hidden)
        self.acts, self.last = acts, last
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for norm, up, down, act in zip(self.norms, self.ups, self.downs, self.acts, strict=True):
            z = up(norm(h))
            z = F.gelu(z) if act == "gelu" else torch.relu(z) if act == "relu" else z.relu()
            h = h + down(z)
        return self.head(h[:, -1] if self.last else h.mean(dim=1))


@settings(max_examples=8, deadline=None)
@given(
    width=st.integers(2, 5),
    hidden=st.lists(st.integers(1, 5), min_size=1, max_size=2),
    acts=st.lists(st.sampled_from(["gelu", "relu", "method"]), min_size=2, max_size=2),
    norm=st.booleans(),
    last=st.booleans(),
    seed=st.integers(0, 1000),
    value=st.sampled_from(["zero", "mean"]),
)
def test_property_random_sequence_models_match_reference(
    width: int, hidden: list[int], acts: list[str], norm: bool, last: bool, seed: int, value: str
) -> None:
    torch.manual_seed(seed)
    model = _RandomSequence(width, hidden, acts[: len(hidden)], norm, last)
    model = _centered(model.eval(), (4, 3))
    x, _ = _data((4, 3), n=24, classes=3, seed=seed)
    with torch.no_grad():
        y = model(x).argmax(1)
    names = resolve_sites(model, "all")
    specs = site_specs(model, names, x[:2])
    assert all(s.unit_dim == 2 for s in specs)  # features, not tokens
    df = ablation_curves(model, (x, y), "all", orderings=1, value=value, progress=False)
    n = sum(s.n_units for s in specs)
    dims = [s.unit_dim for s in specs]
    fills = ref.naive_moments(model, x, names, dims)[0] if value == "mean" else None
    orders = unit_orderings(n, orderings=1).numpy()
    rows = ref.naive_curves(model, x, y, names, orders, list(range(n + 1)), fills, dims)
    got = np.rint(df["accuracy"].to_numpy() * 24).astype(int)
    assert np.all(np.abs(got - [r[2] for r in rows]) <= [r[4] for r in rows])
    np.testing.assert_allclose(df["loss"], [r[3] for r in rows], rtol=1e-5, atol=1e-5)
    imp = unit_importance(model, (x, y), names[-1:], value=value, progress=False)
    rows_i = ref.naive_importance(
        model, x, y, names[-1], fills=None if fills is None else fills[-1:], unit_dim=2
    )
    got_i = np.rint(imp["accuracy"].to_numpy() * 24).astype(int)
    assert np.all(np.abs(got_i - [r[0] for r in rows_i]) <= [r[2] for r in rows_i])
    np.testing.assert_allclose(imp["loss"], [r[1] for r in rows_i], rtol=1e-5, atol=1e-5)


class _MeanHead(nn.Module):
    def __init__(self, spatial: bool) -> None:
        super().__init__()
        self.conv, self.fc, self.spatial = nn.Conv2d(2, 4, 3, padding=1), nn.Linear(4, 3), spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        if self.spatial:
            return self.fc(h.mean(dim=(-1, -2)))
        return self.fc(h.mean(dim=1).mean(dim=1))  # channels then rows: (N, W) = (N, 4)


@pytest.mark.parametrize("spatial", [True, False])
def test_a_mean_is_a_pooling_only_over_the_spatial_dims(spatial: bool) -> None:
    """A (4, 4, 4) map: the mean over channels has the shape a spatial mean would have, so
    the plan reads the op's dims instead of guessing from shapes."""
    torch.manual_seed(8)
    model = _centered(_MeanHead(spatial), (2, 4, 4))
    x, _ = _data((2, 4, 4), n=30, classes=3)
    _, plan = _check_curves(model, x, "relu")
    assert plan.path == ("cumsum" if spatial else "stacked")


class _ResidualHead(nn.Module):
    """The last site reaches the logits through an addition of a site-independent branch:
    ``head(x + relu(fc(x)))``; affine in the site, but not a chain."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.fc, self.head = nn.Linear(5, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        return self.head(h + F.relu(self.fc(h)))


def test_an_added_site_independent_term_keeps_the_affine_tail() -> None:
    torch.manual_seed(9)
    model = _centered(_ResidualHead(), (5,))
    x, _ = _data((5,), n=30, classes=3)
    for layers, path in (("relu_1", "segments"), ("all", "segments")):
        for value in ("zero", "mean"):
            _, plan = _check_curves(model, x, layers, value=value, orderings=1)
            assert (plan.runner, plan.path) == ("fx", path), plan
    torch.manual_seed(2)
    residual = _centered(_random_bn(_Residual()), (2, 5, 5))
    _, plan = _check_curves(residual, _data((2, 5, 5), n=24, classes=3)[0], "a2", orderings=1)
    assert plan.path == "stacked"  # a2 reaches the logits through a3 (a ReLU)


@pytest.mark.parametrize("value", ["zero", "mean"])
def test_importance_through_an_affine_tail_in_a_graph(value: str) -> None:
    from singledir.engine.importance import importance_path

    torch.manual_seed(9)
    model = _centered(_ResidualHead(), (5,))
    x, _ = _data((5,), n=30, classes=3)
    with torch.no_grad():
        y = model(x).argmax(1)
    engine = setup(model, (x, y), "relu,relu_1", None, torch.device("cpu"), torch.float32)
    assert [importance_path(engine.for_site(k), True)[0] for k in (0, 1)] == ["stacked", "tail"]
    df = unit_importance(model, (x, y), "relu,relu_1", value=value, progress=False)
    for site in ("relu", "relu_1"):
        part = df.filter(pl.col("layer") == site)
        fills = ref.naive_moments(model, x, [site])[0] if value == "mean" else None
        rows = ref.naive_importance(model, x, y, site, fills=fills)
        got = np.rint(part["accuracy"].to_numpy() * len(y)).astype(int)
        assert np.all(np.abs(got - [r[0] for r in rows]) <= [r[2] for r in rows])
        np.testing.assert_allclose(part["loss"], [r[1] for r in rows], rtol=1e-5, atol=1e-5)
        per_class = np.stack([r[3] for r in rows])  # (units, classes) correct counts
        with torch.no_grad():
            hit = (model(x).argmax(1) == y).numpy()
        sizes = np.bincount(y.numpy(), minlength=3)
        for k in range(3):
            if sizes[k]:
                base_k = hit[y.numpy() == k].mean()
                want = base_k - per_class[:, k] / sizes[k]
                np.testing.assert_allclose(
                    part[f"accuracy_drop_class_{k}"],
                    want,
                    atol=1e-12 + max(r[2] for r in rows) / sizes[k],
                )


class _Encoder(nn.Module):
    """A user-written transformer encoder over (N, T, C): pre-LayerNorm blocks with
    multi-head attention and an F.gelu MLP, residual adds, a mean over the tokens and a
    Linear head. After the last GELU the model is affine (fc2, + residual, mean, head)."""

    def __init__(self, width: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(4, width)
        self.ln1 = nn.ModuleList(nn.LayerNorm(width) for _ in range(2))
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(width, 2, batch_first=True) for _ in range(2)
        )
        self.ln2 = nn.ModuleList(nn.LayerNorm(width) for _ in range(2))
        self.fc1 = nn.ModuleList(nn.Linear(width, 2 * width) for _ in range(2))
        self.fc2 = nn.ModuleList(nn.Linear(2 * width, width) for _ in range(2))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for k in range(2):
            y = self.ln1[k](h)
            h = h + self.attn[k](y, y, y, need_weights=False)[0]
            h = h + self.fc2[k](F.gelu(self.fc1[k](self.ln2[k](h))))
        return self.head(h.mean(dim=1))


@pytest.mark.parametrize("value", ["zero", "mean"])
def test_encoder_tail_through_two_linear_layers_is_affine(value: str) -> None:
    """fc2 -> + residual -> mean over tokens -> head composes into one Linear map: the last
    GELU takes the segmented path (cumulative logit terms), curves and importance exact."""
    from singledir.engine.importance import importance_path

    torch.manual_seed(6)
    model = _centered(_Encoder(), (5, 4))
    x, _ = _data((5, 4), n=30, classes=3)
    with torch.no_grad():
        y = model(x).argmax(1)
    for layers in ("last1", "all"):
        _, plan = _check_curves(model, x, layers, value=value, orderings=2)
        assert plan.path == "segments" and set(plan.unit_dims) == {2}, plan
    _check_curves(model, x, "all", value=value, orderings=1, directions="random")
    engine = setup(model, (x, y), "gelu_1", None, torch.device("cpu"), torch.float32)
    assert importance_path(engine, True)[0] == "tail"
    imp = unit_importance(model, (x, y), "gelu_1", value=value, progress=False)
    fills = ref.naive_moments(model, x, ["gelu_1"], [2])[0] if value == "mean" else None
    rows = ref.naive_importance(model, x, y, "gelu_1", fills=fills, unit_dim=2)
    got = np.rint(imp["accuracy"].to_numpy() * len(y)).astype(int)
    assert np.all(np.abs(got - [r[0] for r in rows]) <= [r[2] for r in rows])
    np.testing.assert_allclose(imp["loss"], [r[1] for r in rows], rtol=1e-5, atol=1e-5)


class _TwoLayerHead(nn.Module):
    """An MLP whose head is two Linear layers (with Dropout and an eval BatchNorm1d between
    them) and no nonlinearity: one affine map from the last ReLU to the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 9), nn.Linear(9, 7)
        self.drop, self.bn, self.out = nn.Dropout(0.2), nn.BatchNorm1d(7), nn.Linear(7, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.bn(self.drop(self.fc2(torch.relu(self.fc1(x))))))


def test_two_linear_layers_to_the_logits_are_one_affine_tail() -> None:
    torch.manual_seed(8)
    model = _centered(_random_bn(_TwoLayerHead()), (6,))
    x, _ = _data((6,), n=40, classes=4)
    for value in ("zero", "mean"):
        _, plan = _check_curves(model, x, "relu", value=value)
        assert (plan.runner, plan.path) == ("chain", "cumsum"), plan


def test_noise_along_directions_matches_a_projection_reference() -> None:
    """Noise along direction d: ``h + s * sigma_d * z_d * d`` with sigma_d the std of the
    coordinate h.d (documented draw: k in place of the unit axis)."""
    model = _mlp()
    x, _ = _data((12,), n=40, classes=4)
    with torch.no_grad():
        y = model(x).argmax(1)
    g = torch.Generator().manual_seed(11)
    raw = {"relu": torch.randn(4, 10, generator=g)}
    scales = (0.0, 1.0, 3.0)
    df = noise_curves(
        model,
        (x, y),
        "relu",
        scales=scales,
        repeats=2,
        seed=5,
        directions=raw,
        batch_size=40,
        progress=False,
    )
    q, r_factor = torch.linalg.qr(raw["relu"].double().t())  # Gram-Schmidt, signs kept
    basis = (q * torch.sign(torch.diagonal(r_factor)).unsqueeze(0)).t()
    sigma = torch.as_tensor(ref.naive_moments(model, x, ["relu"], None, [basis])[1][0])
    for r in range(2):
        z = torch.randn((40, 4), generator=torch.Generator().manual_seed(seed_for(5, r)))
        for s in scales:
            noise = (s * sigma * z.double()) @ basis  # (40, 10) in unit space
            c, loss, border = ref.naive_noise(model, x, y, ["relu"], 1.0, [torch.ones(10)], [noise])
            row = df.filter((pl.col("repeat") == r) & (pl.col("scale") == s))
            assert abs(round(row["accuracy"][0] * 40) - c) <= border
            assert row["loss"][0] == pytest.approx(loss, rel=1e-4, abs=1e-5)
    assert df["accuracy"].n_unique() > 1


class _TokenPool(nn.Module):
    """A sequence classifier whose last site reaches the logits through a mean over tokens
    and a Linear layer (an affine tail with units on the last axis); integer tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.fc, self.head = nn.Embedding(20, 6), nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(F.gelu(self.fc(self.embed(tokens))).mean(dim=1))


@pytest.mark.parametrize("value", ["zero", "mean"])
def test_mean_over_tokens_is_an_affine_tail(value: str) -> None:
    from singledir.engine.importance import importance_path

    torch.manual_seed(0)
    model = _TokenPool().eval()
    for p in model.parameters():
        p.data.mul_(3.0)
    tokens = torch.randint(0, 20, (30, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(tokens).argmax(1)
    plan = ablation_plan(model, (tokens, y))
    assert (plan.path, plan.unit_dims) == ("segments", (2,))
    df = ablation_curves(model, (tokens, y), orderings=2, value=value, progress=False)
    fills = ref.naive_moments(model, tokens, ["gelu"], [2])[0] if value == "mean" else None
    orders = unit_orderings(8, orderings=2).numpy()
    rows = ref.naive_curves(model, tokens, y, ["gelu"], orders, list(range(9)), fills, [2])
    _assert_rows(df, rows, 30)
    engine = setup(model, (tokens, y), "gelu", None, torch.device("cpu"), torch.float32)
    assert importance_path(engine.for_site(0), True)[0] == "tail"
    imp = unit_importance(model, (tokens, y), value=value, progress=False)
    rows_i = ref.naive_importance(model, tokens, y, "gelu", fills=fills, unit_dim=2)
    got = np.rint(imp["accuracy"].to_numpy() * 30).astype(int)
    assert np.all(np.abs(got - [r[0] for r in rows_i]) <= [r[2] for r in rows_i])
    np.testing.assert_allclose(imp["loss"], [r[1] for r in rows_i], rtol=1e-5, atol=1e-5)


class _UntraceableSequence(nn.Module):
    """(N, T, C) activations in a model fx cannot trace: the unit axis comes from the
    modules that ran before the site (a Linear: the last axis)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act, self.head = nn.Linear(3, 6), nn.GELU(), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc(x))
        if float(h.sum()) > -1e9:  # data-dependent control flow
            h = h.mean(dim=1)
        return self.head(h)


def test_untraceable_sequence_model_infers_the_feature_axis() -> None:
    torch.manual_seed(5)
    model = _centered(_UntraceableSequence(), (4, 3))
    x, _ = _data((4, 3), n=30, classes=3)
    _, plan = _check_curves(model, x, "act")
    assert (plan.runner, plan.unit_dims, plan.n_units) == ("hooks", (2,), (6,))
    assert list_sites(model, (x, x[:, 0, 0].long())).rows() == [("act", "module", 6, 2, [4, 6])]


@settings(max_examples=8, deadline=None)
@given(arch=_random_sequential(), value=st.sampled_from(["zero", "mean"]), seed=st.integers(0, 99))
def test_property_random_directions_on_random_sequentials(arch, value: str, seed: int) -> None:
    """Every path (native walk excepted: it takes units only) along random orthonormal
    directions, against the explicit projection reference."""
    model, shape, sites = arch
    x, _ = _data(shape, n=24, classes=3)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    engine = setup(
        model,
        (x, y),
        sites,
        None,
        torch.device("cpu"),
        torch.float32,
        directions="random",
        seed=seed,
    )
    df = ablation_curves(
        model,
        (x, y),
        sites,
        orderings=1,
        value=value,
        directions="random",
        seed=seed,
        progress=False,
    )
    names = engine.sites
    bases = [s.basis for s in engine.specs]
    orders = unit_orderings(engine.n_units, orderings=1, seed=seed).numpy()
    fills = ref.naive_moments(model, x, names, None, bases)[0] if value == "mean" else None
    rows = ref.naive_curves(
        model, x, y, names, orders, list(range(engine.n_units + 1)), fills, None, bases
    )
    got = np.rint(df["accuracy"].to_numpy() * 24).astype(int)
    assert np.all(np.abs(got - [r[2] for r in rows]) <= [r[4] for r in rows])
    np.testing.assert_allclose(df["loss"], [r[3] for r in rows], rtol=1e-5, atol=1e-5)
