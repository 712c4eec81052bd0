"""Curve summaries (singledir.curves) against plain NumPy / Python loops: the ablation AUC
(absolute, relative, per ordering, ragged levels), per-level mean and std, bands pooled and
across nets, and the normalized area of a mean curve."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from singledir.curves import (
    ablation_auc,
    level_bands,
    mean_curve_area,
    net_bands,
    normalized_area,
    summarize_curves,
)
from singledir.errors import InputError


def _trapezoid(x: list[float], y: list[float]) -> float:
    return sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2.0 for i in range(len(x) - 1))


def _reference_auc(df: pl.DataFrame, relative: bool) -> dict[int, float]:
    out = {}
    for o in sorted(set(df["ordering"].to_list())):
        pts = sorted(
            (r["fraction_ablated"], r["accuracy"])
            for r in df.filter(pl.col("ordering") == o).iter_rows(named=True)
        )
        x = [p[0] for p in pts]
        y = [p[1] for p in pts]
        area = _trapezoid(x, y) / (x[-1] - x[0]) if x[-1] > x[0] else y[0]
        if relative:
            area = area / y[0] if y[0] > 0 else float("nan")
        out[int(o)] = area
    return out


@st.composite
def curve_tables(draw: st.DrawFn) -> pl.DataFrame:
    orderings = draw(st.integers(1, 5))
    units = draw(st.integers(1, 12))
    ragged = draw(st.booleans())
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    all_levels = np.arange(units + 1)
    rows = []
    for o in range(orderings):
        levels = all_levels
        if ragged:
            keep = rng.random(units + 1) < 0.7
            keep[rng.integers(0, units + 1)] = True
            levels = all_levels[keep]
        acc = rng.choice([0.0, 0.1, 0.5, 1.0]) if rng.random() < 0.2 else None
        for k in levels:
            a = float(acc) if acc is not None else float(rng.uniform(0, 1))
            rows.append((o * 3 + 1, int(k), k / units, a, float(rng.uniform(0, 4))))
    df = pl.DataFrame(
        rows,
        schema=["ordering", "n_ablated", "fraction_ablated", "accuracy", "loss"],
        orient="row",
    )
    return df.sample(fraction=1.0, shuffle=True, seed=seed)


@settings(max_examples=80, deadline=None)
@given(curve_tables(), st.booleans())
def test_ablation_auc_matches_trapezoid_loop(df: pl.DataFrame, relative: bool) -> None:
    ref = _reference_auc(df, relative)
    per = ablation_auc(df, per_ordering=True, relative=relative)
    assert isinstance(per, pl.DataFrame)
    assert per["ordering"].to_list() == list(ref)
    np.testing.assert_allclose(per["auc"].to_numpy(), list(ref.values()), atol=1e-12)
    mean = ablation_auc(df, relative=relative)
    assert isinstance(mean, float)
    expected = float(np.mean(list(ref.values())))
    if np.isnan(expected):
        assert np.isnan(mean)
    else:
        assert mean == pytest.approx(expected, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(curve_tables())
def test_summarize_curves_matches_numpy_per_level(df: pl.DataFrame) -> None:
    s = summarize_curves(df)
    levels = sorted(set(df["n_ablated"].to_list()))
    assert s["n_ablated"].to_list() == levels
    assert s.columns == [
        "n_ablated",
        "fraction_ablated",
        "accuracy_mean",
        "accuracy_std",
        "loss_mean",
        "loss_std",
    ]
    for row in s.iter_rows(named=True):
        part = df.filter(pl.col("n_ablated") == row["n_ablated"])
        for m in ("accuracy", "loss"):
            vals = part[m].to_numpy()
            assert row[f"{m}_mean"] == pytest.approx(float(np.mean(vals)), abs=1e-12)
            assert row[f"{m}_std"] == pytest.approx(float(np.std(vals)), abs=1e-12)
        assert row["fraction_ablated"] == part["fraction_ablated"][0]


def test_summarize_curves_without_loss_and_bad_tables() -> None:
    df = pl.DataFrame(
        {"ordering": [0, 0], "n_ablated": [0, 1], "fraction_ablated": [0.0, 1.0]}
    ).with_columns(pl.Series("accuracy", [0.9, 0.1]))
    s = summarize_curves(df)
    assert s.columns == ["n_ablated", "fraction_ablated", "accuracy_mean", "accuracy_std"]
    assert s["accuracy_std"].to_list() == [0.0, 0.0]
    assert ablation_auc(df) == pytest.approx(0.5)
    with pytest.raises(InputError, match="lacks columns"):
        ablation_auc(df.drop("accuracy"))
    with pytest.raises(InputError, match="empty"):
        summarize_curves(df.head(0))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]), st.floats(0, 1)),
        min_size=1,
        max_size=20,
    )
)
def test_mean_curve_area_matches_loop(points: list[tuple[float, float]]) -> None:
    df = pl.DataFrame(points, schema=["scale", "accuracy"], orient="row")
    xs = sorted({p[0] for p in points})
    ys = [float(np.mean([p[1] for p in points if p[0] == x])) for x in xs]
    ref = _trapezoid(xs, ys) / (xs[-1] - xs[0]) if len(xs) > 1 else ys[0]
    assert mean_curve_area(df, "scale", "accuracy") == pytest.approx(ref, abs=1e-12)
    assert normalized_area(xs[::-1], ys[::-1]) == pytest.approx(ref, abs=1e-12)


def test_normalized_area_bad_input() -> None:
    with pytest.raises(InputError, match="same non-zero length"):
        normalized_area([0.0, 1.0], [1.0])
    assert normalized_area([0.0, 0.0], [0.3, 0.9]) == 0.3  # no span: its first value


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 4), st.integers(0, 999))
def test_level_and_net_bands_match_loops(nets: int, groups: int, orderings: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for net in range(nets):
        for g in range(groups):
            for o in range(orderings):
                for x in (0.0, 0.5, 1.0):
                    rows.append((f"n{net}-g{g}", g, o, x, float(rng.uniform())))
    df = pl.DataFrame(rows, schema=["run_id", "group", "ordering", "x", "y"], orient="row")
    pooled = level_bands(df, "x", "y", by="group")
    across = net_bands(df, "x", "y", by="group")
    for g in range(groups):
        for x in (0.0, 0.5, 1.0):
            vals = [r[4] for r in rows if r[1] == g and r[3] == x]
            row = pooled.filter((pl.col("group") == g) & (pl.col("x") == x)).row(0, named=True)
            assert row["mean"] == pytest.approx(np.mean(vals), abs=1e-12)
            assert row["std"] == pytest.approx(np.std(vals), abs=1e-12)
            assert row["n"] == len(vals)
            per_net = [
                np.mean([r[4] for r in rows if r[0] == f"n{n}-g{g}" and r[3] == x])
                for n in range(nets)
            ]
            row = across.filter((pl.col("group") == g) & (pl.col("x") == x)).row(0, named=True)
            assert row["mean"] == pytest.approx(np.mean(per_net), abs=1e-12)
            assert row["std"] == pytest.approx(np.std(per_net), abs=1e-12)
            assert row["n"] == nets
    assert pooled.columns == ["group", "x", "mean", "std", "n"]
    with pytest.raises(InputError, match="lacks column"):
        level_bands(df, "x", "missing")
