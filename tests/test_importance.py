"""Single-unit importance against the naive reference: each unit ablated alone by a hook
in a float64 full forward pass (tests/reference.py)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import reference as ref
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from singledir import unit_importance
from singledir.errors import DataError, InputError, SiteError
from test_ablation_engine import _conv, _data, _mlp, _random_sequential, _resnet

torch.set_num_threads(1)


def check_importance(
    model, x, layers: str, method: str = "auto", value: str = "zero", subset: int | None = None
):
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)  # own predictions: ablations visibly cost accuracy
    y[::5] = (y[::5] + 1) % 5  # and some wrong labels, so accuracy can also rise
    df = unit_importance(model, (x, y), layers, method=method, value=value, progress=False)
    n = len(y)
    base = float((model(x).argmax(1) == y).double().mean())
    assert df["base_accuracy"].unique().to_list() == [pytest.approx(base)]
    for site in df["layer"].unique(maintain_order=True).to_list():
        part = df.filter(pl.col("layer") == site).sort("unit")
        units = list(range(part.height))
        assert part["unit"].to_list() == units
        if subset is not None:  # reference on a spread of units (a full one is too slow)
            units = sorted(np.random.default_rng(0).choice(part.height, subset, replace=False))
            part = part[units]
        fills = ref.naive_moments(model, x, [site])[0] if value == "mean" else None
        rows = ref.naive_importance(model, x, y, site, fills=fills, units=units)
        got = np.rint(part["accuracy"].to_numpy() * n).astype(int)
        want = np.array([r[0] for r in rows])
        border = np.array([r[2] for r in rows])
        assert np.all(np.abs(got - want) <= border)
        assert np.mean(border == 0) >= 0.8
        # float32 logits of these scaled random nets reach ~1e2 when a unit is ablated, so
        # the float32 cross-entropy carries absolute errors of ~1e-5 (a float32 hook pass
        # shows the same): compare relative to the loss
        np.testing.assert_allclose(part["loss"], [r[1] for r in rows], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            part["accuracy_drop"], base - part["accuracy"].to_numpy(), atol=1e-12
        )
        np.testing.assert_allclose(
            part["loss_rise"], part["loss"].to_numpy() - part["base_loss"].to_numpy()
        )
        counts = np.bincount(y.numpy(), minlength=5)
        base_k = np.bincount(
            y.numpy(), weights=(model(x).argmax(1) == y).double().numpy(), minlength=5
        )
        for k in range(5):
            col = part[f"accuracy_drop_class_{k}"].to_numpy()
            want_k = np.array([r[3][k] for r in rows])
            if counts[k] == 0:
                assert np.all(np.isnan(col))
            elif border.max() == 0:
                np.testing.assert_allclose(col, (base_k[k] - want_k) / counts[k], atol=1e-12)
    assert df["accuracy_drop"].abs().max() > 0  # some unit matters: a meaningful comparison
    return df


@pytest.mark.parametrize("method", ["auto", "stacked", "hooks"])
def test_mlp_importance_matches_reference(method: str) -> None:
    x, _ = _data((20,), n=40)
    df = check_importance(_mlp(), x, "all", method)
    assert df.height == 28
    assert df.columns[:8] == [
        "layer",
        "unit",
        "base_accuracy",
        "accuracy",
        "accuracy_drop",
        "base_loss",
        "loss",
        "loss_rise",
    ]
    assert [c for c in df.columns if c.startswith("accuracy_drop_class_")] == [
        f"accuracy_drop_class_{k}" for k in range(5)
    ]


def test_mlp_importance_mean_value() -> None:
    x, _ = _data((20,), n=40)
    check_importance(_mlp(bn=True, dropout=0.3), x, "all", value="mean")


@pytest.mark.parametrize("bn", [False, True])
def test_convnet11_importance_matches_reference(bn: bool) -> None:
    x, _ = _data((3, 8, 8), n=20)
    check_importance(_conv(bn), x, "last3")


def test_resnet_importance_matches_reference() -> None:
    x, _ = _data((3, 8, 8), n=12)
    check_importance(_resnet(), x, "layer4.1", subset=24)


def test_importance_without_per_class_and_errors() -> None:
    x, y = _data((20,), n=20)
    df = unit_importance(_mlp(), (x, y), "last1", per_class=False, progress=False)
    assert not any(c.startswith("accuracy_drop_class_") for c in df.columns)
    assert df.height == 12
    with pytest.raises(SiteError):
        unit_importance(_mlp(), (x, y), "fc9", progress=False)
    with pytest.raises(InputError):
        unit_importance(_mlp(), (x, y), value="max", progress=False)
    with pytest.raises(DataError, match="empty"):
        unit_importance(_mlp(), (x[:0], y[:0]), progress=False)


@settings(max_examples=10, deadline=None)
@given(arch=_random_sequential(), value=st.sampled_from(["zero", "mean"]))
def test_property_random_sequentials_importance(arch, value: str) -> None:
    model, shape, sites = arch
    x, _ = _data(shape, n=24, classes=3)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    df = unit_importance(model, (x, y), sites, value=value, progress=False)
    for site in sites:
        part = df.filter(pl.col("layer") == site).sort("unit")
        fills = ref.naive_moments(model, x, [site])[0] if value == "mean" else None
        rows = ref.naive_importance(model, x, y, site, fills=fills)
        got = np.rint(part["accuracy"].to_numpy() * 24).astype(int)
        assert np.all(np.abs(got - [r[0] for r in rows]) <= [r[2] for r in rows])
        # float32 logits of these scaled random nets reach ~1e2 when a unit is ablated, so
        # the float32 cross-entropy carries absolute errors of ~1e-5 (a float32 hook pass
        # shows the same): compare relative to the loss
        np.testing.assert_allclose(part["loss"], [r[1] for r in rows], rtol=1e-4, atol=1e-5)
