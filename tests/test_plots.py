"""PNG plots: band statistics against a NumPy loop, files written atomically, bad tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from singledir.errors import DataError, InputError
from singledir.plots import (
    curve_bands,
    plot_ablation_curves,
    plot_importance_vs_selectivity,
    plot_noise_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _curves(orderings: int, units: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for o in range(orderings):
        acc = np.sort(rng.uniform(0, 1, units + 1))[::-1]
        for k in range(units + 1):
            rows.append((o, k, k / units, float(acc[k]), float(rng.uniform(0, 3)), seed))
    return pl.DataFrame(
        rows,
        schema=["ordering", "n_ablated", "fraction_ablated", "accuracy", "loss", "seed"],
        orient="row",
    )


@settings(max_examples=20, deadline=None)
@given(orderings=st.integers(1, 5), units=st.integers(1, 6), seed=st.integers(0, 1000))
def test_curve_bands_match_numpy_loop(orderings: int, units: int, seed: int) -> None:
    df = _curves(orderings, units, seed)
    band = curve_bands(df, "n_ablated", "accuracy")
    assert band["n_ablated"].to_list() == list(range(units + 1))
    for k in range(units + 1):
        vals = [r[3] for r in df.rows() if r[1] == k]
        row = band.row(k, named=True)
        assert row["accuracy_mean"] == pytest.approx(float(np.mean(vals)), abs=1e-12)
        assert row["accuracy_std"] == pytest.approx(float(np.std(vals)), abs=1e-12)
        assert row["n"] == orderings


def test_plots_write_png_files(tmp_path: Path) -> None:
    curves = _curves(3, 8)
    p = plot_ablation_curves(curves, tmp_path / "c.png", subtitle="toy")
    assert p.read_bytes().startswith(PNG_MAGIC)
    p = plot_ablation_curves(
        {"clean": curves, "corrupt": _curves(2, 8, seed=1)}, tmp_path / "c2.png", x="n_ablated"
    )
    assert p.read_bytes().startswith(PNG_MAGIC)
    noise = pl.DataFrame(
        {
            "repeat": [0, 0, 1, 1],
            "scale": [0.0, 1.0, 0.0, 1.0],
            "accuracy": [0.9, 0.5, 0.9, 0.4],
            "loss": [0.1, 1.0, 0.1, 1.2],
            "seed": [3, 3, 3, 3],
        }
    )
    assert plot_noise_curves(noise, tmp_path / "n.png").read_bytes().startswith(PNG_MAGIC)
    units = pl.DataFrame(
        {
            "layer": ["a", "a", "b", "b"],
            "unit": [0, 1, 0, 1],
            "selectivity": [0.1, 0.5, 0.3, float("nan")],
            "accuracy_drop": [0.01, 0.0, 0.2, 0.1],
        }
    )
    out = plot_importance_vs_selectivity(units, tmp_path / "s.png")
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["c.png", "c2.png", "n.png", "s.png"]


def test_plot_bad_inputs_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        plot_ablation_curves(_curves(1, 2), tmp_path / "missing" / "c.png")
    with pytest.raises(InputError, match="accuracy"):
        plot_ablation_curves(_curves(1, 2).drop("accuracy"), tmp_path / "c.png")
    with pytest.raises(InputError, match="no curves"):
        plot_noise_curves({}, tmp_path / "n.png")
    with pytest.raises(InputError, match="selectivity"):
        plot_importance_vs_selectivity(pl.DataFrame({"accuracy_drop": [0.1]}), tmp_path / "s.png")
    assert list(tmp_path.iterdir()) == []
