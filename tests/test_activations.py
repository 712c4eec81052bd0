"""record_activations / record_activation_arrays against independent references: the
network run piece by piece, a NumPy loop for the long format and for class selectivity."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from singledir.activations import (
    activations_to_long,
    record_activation_arrays,
    record_activations,
)
from singledir.errors import DataError, InputError, SiteError
from singledir.models import MLP, ConvNet11
from torch import nn


def _mlp(seed: int = 0, dropout: float = 0.0) -> MLP:
    torch.manual_seed(seed)
    return MLP(12, widths=(6, 5), num_classes=3, dropout=dropout).eval()


def _convnet(batchnorm: bool, seed: int = 0) -> ConvNet11:
    torch.manual_seed(seed)
    net = ConvNet11(in_channels=3, num_classes=4, batchnorm=batchnorm, width=1 / 32)
    if batchnorm:  # non-trivial running statistics, so eval-mode BN is not the identity
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _xy(n: int, shape: tuple[int, ...], classes: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def _prefix_output(model: nn.Sequential, site: str, x: torch.Tensor) -> np.ndarray:
    """Reference: run the Sequential's children up to and including ``site`` by hand, then
    average a feature map over space with NumPy."""
    h = x
    with torch.no_grad():
        for name, child in model.named_children():
            h = child(h)
            if name == site:
                break
    out = h.numpy().astype(np.float64)
    if out.ndim == 4:
        out = out.reshape(out.shape[0], out.shape[1], -1).mean(axis=2)
    return out


def _no_hooks(model: nn.Module) -> bool:
    return all(len(m._forward_hooks) == 0 for m in model.modules())


def test_mlp_arrays_match_prefix_forward() -> None:
    model = _mlp()
    x, y = _xy(37, (1, 3, 4), 3)
    arrays, labels = record_activation_arrays(model, (x, y), "all", batch_size=8, progress=False)
    assert list(arrays) == ["relu1", "relu2"]
    for site in arrays:
        assert arrays[site].dtype == np.float32
        np.testing.assert_allclose(arrays[site], _prefix_output(model, site, x), atol=1e-6)
    np.testing.assert_array_equal(labels, y.numpy())
    assert _no_hooks(model)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_convnet_channels_are_spatial_means(batchnorm: bool) -> None:
    model = _convnet(batchnorm)
    x, y = _xy(9, (3, 8, 8), 4, seed=1)
    arrays, labels = record_activation_arrays(model, (x, y), "last3", progress=False)
    assert list(arrays) == ["relu9", "relu10", "relu11"]
    for site, arr in arrays.items():
        ref = _prefix_output(model, site, x)
        assert arr.shape == ref.shape == (9, 16)
        np.testing.assert_allclose(arr, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, y.numpy())


def test_long_format_rows_match_arrays_by_loop() -> None:
    model = _convnet(False)
    x, y = _xy(5, (3, 8, 8), 4, seed=2)
    df = record_activations(model, (x, y), ["relu2", "relu11"], progress=False)
    arrays, _ = record_activation_arrays(model, (x, y), ["relu2", "relu11"], progress=False)
    assert df.schema == {
        "layer": pl.String,
        "unit": pl.Int64,
        "sample": pl.Int64,
        "label": pl.Int64,
        "activation": pl.Float32,
    }
    assert df.height == 5 * (2 + 16)
    seen = set()
    for layer, unit, sample, label, act in df.iter_rows():
        assert act == arrays[layer][sample, unit]
        assert label == int(y[sample])
        seen.add((layer, unit, sample))
    assert len(seen) == df.height  # every (layer, unit, sample) exactly once


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6),
    units=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_long_format_round_trip(n: int, units: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    arrays = {f"s{i}": rng.normal(size=(n, u)).astype(np.float32) for i, u in enumerate(units)}
    labels = rng.integers(0, 3, size=n)
    df = activations_to_long(arrays, labels)
    assert df.height == n * sum(units)
    for site, arr in arrays.items():
        back = np.full(arr.shape, np.nan, dtype=np.float32)
        part = df.filter(pl.col("layer") == site)
        for unit, sample, label, act in part.select("unit", "sample", "label", "activation").rows():
            back[sample, unit] = act
            assert label == labels[sample]
        np.testing.assert_array_equal(back, arr)


def test_data_forms_agree() -> None:
    from singledir.data import LabeledData

    model = _mlp(seed=3)
    x, y = _xy(23, (1, 3, 4), 3, seed=3)
    ref, ref_labels = record_activation_arrays(model, (x, y), "all", progress=False)
    labeled = LabeledData(
        x=x, y=y, true_y=y, num_classes=3, in_shape=(1, 3, 4), name="toy", split="test"
    )
    dataset = torch.utils.data.TensorDataset(x, y)
    forms = [
        (x.numpy(), y.numpy()),
        labeled,
        dataset,
        torch.utils.data.DataLoader(dataset, batch_size=7),
    ]
    for data in forms:
        got, labels = record_activation_arrays(model, data, "all", batch_size=4, progress=False)
        np.testing.assert_array_equal(labels, ref_labels)
        for site in ref:
            np.testing.assert_allclose(got[site], ref[site], atol=1e-6)


def test_eval_mode_during_recording_and_mode_restored() -> None:
    model = _mlp(dropout=0.5).train()
    x, y = _xy(16, (1, 3, 4), 3)
    a, _ = record_activation_arrays(model, (x, y), "relu1", progress=False)
    b, _ = record_activation_arrays(model, (x, y), "relu1", progress=False)
    np.testing.assert_array_equal(a["relu1"], b["relu1"])  # no dropout while recording
    assert model.training
    assert all(m.training for m in model.modules())


def test_custom_module_sites() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(2, 3, 3, padding=1)
            self.left = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
            self.right = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.stem(x))
            h = self.left(h) + self.right(h)
            return self.head(h.mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = Branchy().eval()
    x, y = _xy(6, (2, 5, 5), 2)
    arrays, _ = record_activation_arrays(model, (x, y), ["left.1", "right.1"], progress=False)
    with torch.no_grad():
        h = torch.relu(model.stem(x))
        left = model.left(h).numpy().mean(axis=(2, 3))
        right = model.right(h).numpy().mean(axis=(2, 3))
    np.testing.assert_allclose(arrays["left.1"], left, atol=1e-6)
    np.testing.assert_allclose(arrays["right.1"], right, atol=1e-6)
    assert _no_hooks(model)


def test_bad_inputs_raise_and_leave_no_hooks() -> None:
    model = _mlp()
    x, y = _xy(4, (1, 3, 4), 3)
    with pytest.raises(SiteError, match="relu1"):
        record_activation_arrays(model, (x, y), "nope", progress=False)
    with pytest.raises(DataError, match="no samples"):
        record_activation_arrays(model, (x[:0], y[:0]), "all", progress=False)
    with pytest.raises(InputError, match="do not fit"):
        record_activation_arrays(model, (torch.randn(4, 1, 5, 5), y), "all", progress=False)
    with pytest.raises(DataError, match="labels"):
        record_activation_arrays(model, (x, y[:3]), "all", progress=False)
    assert _no_hooks(model)
    assert not model.training


@pytest.mark.parametrize(
    "labels",
    [
        torch.tensor([0.0, 1.0, 2.0, 1.0]),  # float labels
        torch.tensor([0, 1, 7, 1]),  # beyond the model's 3 classes
        torch.tensor([0, -1, 2, 1]),
    ],
)
def test_records_refuse_the_labels_every_entry_point_refuses(labels: torch.Tensor) -> None:
    from singledir.ablation import unit_importance

    model = _mlp()
    x, _ = _xy(4, (1, 3, 4), 3)
    with pytest.raises(InputError) as other:
        unit_importance(model, (x, labels), progress=False)
    for record in (record_activation_arrays, record_activations):
        with pytest.raises(InputError) as refused:
            record(model, (x, labels), "all", progress=False)
        assert str(refused.value) == str(other.value)
        assert "\n" not in str(refused.value)
    assert _no_hooks(model)


def test_a_list_of_pairs_is_read_like_tensors() -> None:
    model = _mlp()
    x, y = _xy(9, (1, 3, 4), 3)
    arrays, labels = record_activation_arrays(model, (x, y), "all", batch_size=4, progress=False)
    pairs = [(x[i], y[i]) for i in range(9)]
    got, got_labels = record_activation_arrays(model, pairs, "all", batch_size=4, progress=False)
    np.testing.assert_array_equal(got_labels, labels)
    for site, values in arrays.items():
        np.testing.assert_array_equal(got[site], values)


def test_record_then_stats_gives_direct_selectivity(tmp_path: object) -> None:
    """record -> parquet -> stats_from_activations equals class_selectivity on the arrays
    and a plain NumPy loop over the paper's definition."""
    from pathlib import Path

    from singledir.io import write_table
    from singledir.stats import class_selectivity, stats_from_activations

    model = _mlp(seed=5)
    # Shift the inputs so most units are active for some class (non-zero denominators).
    x, _ = _xy(60, (1, 3, 4), 3, seed=5)
    y = torch.arange(60) % 3
    x = x + y.view(-1, 1, 1, 1).float()
    df = record_activations(model, (x, y), "all", progress=False)
    path = Path(str(tmp_path)) / "acts.parquet"
    write_table(df, path)
    stats = stats_from_activations(path)
    arrays, labels = record_activation_arrays(model, (x, y), "all", progress=False)
    for site, arr in arrays.items():
        direct = np.asarray(class_selectivity(arr, labels), dtype=np.float64)
        got = stats.filter(pl.col("layer") == site).sort("unit")["selectivity"].to_numpy()
        np.testing.assert_allclose(got, direct, rtol=1e-6, atol=1e-7)
        # The paper's definition, by hand: (mu_max - mu_rest) / (mu_max + mu_rest).
        classes = np.unique(labels)
        for u in range(arr.shape[1]):
            means = [float(np.mean(arr[labels == c, u].astype(np.float64))) for c in classes]
            best = int(np.argmax(means))
            rest = float(np.mean([m for i, m in enumerate(means) if i != best]))
            if means[best] + rest > 1e-6:
                ref = (means[best] - rest) / (means[best] + rest)
                assert got[u] == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_each_call_of_a_module_run_twice_is_recorded_apart() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(4, 4)
            self.fc2 = nn.Linear(4, 3)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.act(self.fc1(self.act(x))))

    model = Shared().eval()
    x, y = _xy(5, (4,), 3)
    # "act" is the module and its first call's fx node: it means that one call
    arrays, _ = record_activation_arrays(model, (x, y), "act,act_1,fc1", progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(arrays["act"], torch.relu(x).numpy(), atol=1e-6)
        np.testing.assert_allclose(arrays["fc1"], model.fc1(torch.relu(x)).numpy(), atol=1e-6)
        second = torch.relu(model.fc1(torch.relu(x)))
        np.testing.assert_allclose(arrays["act_1"], second.numpy(), atol=1e-6)
    assert _no_hooks(model)

    class Untraceable(Shared):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.act(self.fc1(self.act(x)))
            if float(h.sum()) > -1e9:  # data-dependent control flow: hooks, no node names
                h = h * 1.0
            return self.fc2(h)

    with pytest.raises(SiteError, match="runs 2 times"):
        record_activation_arrays(Untraceable().eval(), (x, y), "act", progress=False)
