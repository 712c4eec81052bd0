"""The paper's models: structure, sites, and config handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from singledir.errors import ConfigError
from singledir.models import (
    CONVNET11_CHANNELS,
    CONVNET11_STRIDES,
    MLP,
    ConvNet11,
    build_model,
    model_config,
    model_sites,
    parse_widths,
    resnet,
)
from torch import nn


def test_mlp_structure_and_sites():
    m = MLP(64, widths=(32, 16, 8), num_classes=5, dropout=0.3, batchnorm=True)
    assert m.site_names == ["relu1", "relu2", "relu3"] == model_sites(m)
    names = [n for n, _ in m.named_children()]
    assert names == [
        "flatten",
        *[f"{k}{i}" for i in (1, 2, 3) for k in ("fc", "bn", "relu", "drop")],
        "fc_out",
    ]
    for site in m.site_names:
        assert isinstance(getattr(m, site), nn.ReLU)
    assert m.fc1.bias is None  # batch norm makes the bias redundant
    assert m(torch.randn(4, 1, 8, 8)).shape == (4, 5)


def test_mlp_forward_matches_numpy():
    torch.manual_seed(0)
    m = MLP(12, widths=(7, 5), num_classes=3).eval()
    x = torch.randn(6, 12)
    h = x.numpy().astype(np.float64)
    for layer in (m.fc1, m.fc2):
        w, b = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
        h = np.maximum(h @ w.T + b, 0)
    out = h @ m.fc_out.weight.detach().double().numpy().T + m.fc_out.bias.detach().double().numpy()
    np.testing.assert_allclose(m(x).detach().numpy(), out, rtol=1e-5, atol=1e-6)


def test_convnet11_is_the_papers_net():
    m = ConvNet11(in_channels=3, num_classes=10, batchnorm=True)
    convs = [getattr(m, f"conv{i}") for i in range(1, 12)]
    assert [c.out_channels for c in convs] == list(CONVNET11_CHANNELS)
    assert [c.stride[0] for c in convs] == list(CONVNET11_STRIDES)
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert CONVNET11_CHANNELS == (64, 64, 128, 128, 128, 256, 256, 256, 512, 512, 512)
    assert CONVNET11_STRIDES == (1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 1)
    assert m.site_names == [f"relu{i}" for i in range(1, 12)]
    assert isinstance(m.pool, nn.AdaptiveAvgPool2d)


def test_convnet11_any_channels_and_width():
    m = ConvNet11(in_channels=1, num_classes=7, width=0.125).eval()
    seen: dict[str, torch.Size] = {}

    def record(mod, inputs, output):
        seen["out"] = output.shape  # returns None: the output is left as it is

    hook = m.relu11.register_forward_hook(record)
    try:
        out = m(torch.randn(2, 1, 32, 32))
    finally:
        hook.remove()
    assert out.shape == (2, 7)
    assert seen["out"] == (2, 64, 4, 4)  # three stride-2 layers: 32 -> 4; 512 * 0.125 channels


def test_resnets_and_their_sites():
    r18 = resnet(18, num_classes=10, small_input=True).eval()
    assert r18.site_names == [f"layer{s}.{i}" for s in (1, 2, 3, 4) for i in (0, 1)]
    modules = dict(r18.named_modules())
    assert all(name in modules for name in r18.site_names)
    assert r18.conv1.kernel_size == (3, 3) and isinstance(r18.maxpool, nn.Identity)
    assert r18(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    r50 = resnet(50, num_classes=1000)
    assert len(r50.site_names) == 3 + 4 + 6 + 3 and r50.site_names[-1] == "layer4.2"
    gray = build_model({"arch": "resnet18", "in_shape": [1, 28, 28], "num_classes": 10})
    assert gray.conv1.in_channels == 1
    assert gray.eval()(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_build_model_from_config_round_trip():
    cfg = {"arch": "mlp", "in_shape": (1, 8, 8), "num_classes": 10, "widths": [20, 10]}
    m = build_model(cfg)
    full = model_config(cfg)
    assert full == m.config
    assert full == {
        "arch": "mlp",
        "in_shape": [1, 8, 8],
        "num_classes": 10,
        "widths": [20, 10],
        "dropout": 0.0,
        "batchnorm": False,
    }
    m2 = build_model(full)
    assert [p.shape for p in m.parameters()] == [p.shape for p in m2.parameters()]
    assert m.fc1.in_features == 64
    c = build_model({"arch": "ConvNet11", "in_shape": [3, 32, 32], "width": 0.25})
    assert c.conv1.out_channels == 16 and c.config["arch"] == "convnet11"


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"arch": "vgg16"}, "unknown model"),
        ({"arch": ""}, "unknown model"),
        ({"arch": "mlp", "widths": [0, 4]}, "positive integers"),
        ({"arch": "mlp", "widths": ["a"]}, "positive integers"),
        ({"arch": "mlp", "widths": []}, "positive integers"),
        ({"arch": "mlp", "dropout": 1.0}, "dropout"),
        ({"arch": "convnet11", "dropout": -0.5}, "dropout"),
        ({"arch": "mlp", "in_shape": [28, 28]}, "in_shape"),
        ({"arch": "mlp", "num_classes": 0}, "num_classes"),
    ],
)
def test_build_model_rejects_bad_configs(cfg, match):
    with pytest.raises(ConfigError, match=match) as exc:
        build_model(cfg)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("text", ["a,b", "512,,x", "0,5", "-3", "", "1.5"])
def test_parse_widths_rejects(text):
    with pytest.raises(ConfigError):
        parse_widths(text)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 4096), min_size=1, max_size=6))
def test_parse_widths_round_trip(widths):
    assert parse_widths(",".join(map(str, widths))) == tuple(widths)
    assert parse_widths(" ".join(map(str, widths))) == tuple(widths)
    assert parse_widths(widths) == tuple(widths)
