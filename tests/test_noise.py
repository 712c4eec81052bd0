"""Noise perturbation curves against the naive reference: the same documented noise draws
added by a hook in a float64 full forward pass (tests/reference.py)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import reference as ref
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from singledir import noise_auc, noise_curves, resolve_sites
from singledir.engine.plan import setup
from singledir.engine.scoring import seed_for
from singledir.engine.stacked import unit_moments
from singledir.errors import InputError
from singledir.sites import site_specs
from test_ablation_engine import _conv, _data, _mlp, _resnet

torch.set_num_threads(1)

SCALES = (0.0, 0.5, 1.0, 2.0, 4.0)


def _own_labels(model, x):
    model.eval()
    with torch.no_grad():
        return model(x).argmax(1)


def check_noise(model, x, layers: str, method: str = "auto", repeats: int = 2) -> pl.DataFrame:
    y = _own_labels(model, x)
    df = noise_curves(
        model,
        (x, y),
        layers,
        scales=SCALES,
        repeats=repeats,
        seed=3,
        method=method,
        progress=False,
        batch_size=len(y),
    )
    sites = resolve_sites(model, layers, sample_x=x[:2])
    specs = site_specs(model, sites, x[:2])
    sigmas = [torch.as_tensor(s) for s in ref.naive_moments(model, x, sites)[1]]
    n = len(y)
    for r in range(repeats):
        # the documented protocol: generator seed_for(seed, r), one draw per site in order
        g = torch.Generator().manual_seed(seed_for(3, r))
        z = [torch.randn((n, *s.shape), generator=g) for s in specs]
        for s in SCALES:
            c, loss, border = ref.naive_noise(model, x, y, sites, s, sigmas, z)
            row = df.filter((pl.col("repeat") == r) & (pl.col("scale") == s))
            assert row.height == 1
            assert abs(round(row["accuracy"][0] * n) - c) <= border
            assert row["loss"][0] == pytest.approx(loss, rel=1e-4, abs=1e-5)
    assert df["accuracy"].n_unique() > 1  # noise visibly matters: a meaningful comparison
    return df


@pytest.mark.parametrize("method", ["auto", "hooks"])
@pytest.mark.parametrize("layers", ["all", "last1"])
def test_mlp_noise_matches_reference(method: str, layers: str) -> None:
    x, _ = _data((20,), n=60)
    check_noise(_mlp(bn=True), x, layers, method)


@pytest.mark.parametrize("bn", [False, True])
def test_convnet11_noise_matches_reference(bn: bool) -> None:
    x, _ = _data((3, 8, 8), n=24)
    check_noise(_conv(bn), x, "last3")


def test_resnet_noise_matches_reference() -> None:
    x, _ = _data((3, 8, 8), n=12)
    check_noise(_resnet(), x, "layer3.1,layer4.1", repeats=1)


def test_scale_zero_changes_nothing() -> None:
    x, _ = _data((3, 8, 8), n=24)
    model = _conv(True)
    y = _own_labels(model, x)
    y[::3] = (y[::3] + 1) % 5
    df = noise_curves(model, (x, y), "all", scales=(0.0, 1.0), repeats=3, progress=False)
    with torch.no_grad():
        logits = model(x)
    acc = float((logits.argmax(1) == y).double().mean())
    loss = float(torch.nn.functional.cross_entropy(logits.double(), y))
    zero = df.filter(pl.col("scale") == 0.0)
    assert zero["accuracy"].to_list() == [acc] * 3
    np.testing.assert_allclose(zero["loss"], loss, rtol=1e-6)


def test_sigmas_match_reference() -> None:
    x, y = _data((3, 8, 8), n=24)
    model = _conv(True)
    with torch.no_grad():
        s = setup(model, (x, y), "last3", None, torch.device("cpu"), torch.float32)
        means, stds = unit_moments(s)
    want_m, want_s = ref.naive_moments(model, x, s.sites)
    for k in range(3):
        np.testing.assert_allclose(means[k].numpy(), want_m[k], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stds[k].numpy(), want_s[k], rtol=1e-4, atol=1e-5)


def test_seeded_reproducible() -> None:
    x, y = _data((20,), n=40)
    kw = dict(scales=(0.0, 2.0, 4.0), repeats=2, progress=False)
    a = noise_curves(_mlp(), (x, y), seed=1, **kw)
    b = noise_curves(_mlp(), (x, y), seed=1, **kw)
    assert a.equals(b)
    assert a["seed"].unique().to_list() == [1]
    assert a.columns == ["repeat", "scale", "accuracy", "loss", "seed"]
    c = noise_curves(_mlp(), (x, y), seed=2, **kw)
    assert not a["loss"].equals(c["loss"])


@settings(max_examples=30, deadline=None)
@given(
    scales=st.lists(st.floats(0, 8, allow_nan=False), min_size=2, max_size=6, unique=True),
    repeats=st.integers(1, 3),
    seed=st.integers(0, 100),
)
def test_noise_auc_definition(scales: list[float], repeats: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = [(r, s, float(rng.uniform()), 0.0, 0) for r in range(repeats) for s in scales]
    df = pl.DataFrame(rows, schema=["repeat", "scale", "accuracy", "loss", "seed"], orient="row")
    order = np.argsort(scales)
    s = np.asarray(scales)[order]
    mean = np.array([df.filter(pl.col("scale") == v)["accuracy"].mean() for v in s])
    want = np.trapezoid(mean, s) / (s[-1] - s[0]) if s[-1] > s[0] else mean.mean()
    assert noise_auc(df) == pytest.approx(want)


def test_bad_inputs() -> None:
    x, y = _data((20,), n=10)
    with pytest.raises(InputError, match="scales"):
        noise_curves(_mlp(), (x, y), scales=(-1.0,), progress=False)
    with pytest.raises(InputError, match="repeats"):
        noise_curves(_mlp(), (x, y), repeats=0, progress=False)
    with pytest.raises(InputError):
        noise_auc(pl.DataFrame({"scale": [], "accuracy": []}))
