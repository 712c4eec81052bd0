"""The paper's networks, each exposing named *sites*: the outputs that can be ablated.

- :class:`MLP`: ReLU MLP (the paper's MNIST net has two hidden layers), optional dropout and
  batch norm. Sites ``relu1 .. reluN``; units are neurons.
- :class:`ConvNet11`: the paper's 11-layer CIFAR-10 conv net, optional batch norm. Sites
  ``relu1 .. relu11``; units are feature maps (channels).
- torchvision ResNet-18/50 (:func:`resnet`), optionally with a small-image stem. Sites are
  the residual blocks' outputs (``layer1.0`` .. ``layer4.2``); units are channels.

MLP and ConvNet11 are flat :class:`torch.nn.Sequential` models with named children, so the
part after any site can be run alone (the ablation engine relies on this). Every model is
built from a plain config dict (:func:`build_model`), the same dict a checkpoint stores.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import nn

from singledir.errors import ConfigError

__all__ = [
    "MLP",
    "ConvNet11",
    "CONVNET11_CHANNELS",
    "CONVNET11_STRIDES",
    "resnet",
    "build_model",
    "model_sites",
    "model_config",
    "parse_widths",
    "MODEL_NAMES",
]

CONVNET11_CHANNELS = (64, 64, 128, 128, 128, 256, 256, 256, 512, 512, 512)
CONVNET11_STRIDES = (1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 1)
MODEL_NAMES = ("mlp", "convnet11", "resnet18", "resnet50")


class MLP(nn.Sequential):
    """Fully connected ReLU network: ``flatten, (fc_i, [bn_i], relu_i, [drop_i])*, fc_out``.

    Parameters
    ----------
    in_features:
        Input size after flattening (784 for MNIST).
    widths:
        Hidden layer widths, e.g. ``(512, 512)``.
    num_classes:
        Output size.
    dropout:
        Dropout probability applied after every hidden ReLU (0 disables it).
    batchnorm:
        Insert ``BatchNorm1d`` between each hidden Linear and its ReLU.
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int] = (512, 512),
        num_classes: int = 10,
        dropout: float = 0.0,
        batchnorm: bool = False,
    ) -> None:
        widths = _check_widths(widths)
        dropout = _check_dropout(dropout)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["flatten"] = nn.Flatten()
        prev = int(in_features)
        for i, w in enumerate(widths, start=1):
            layers[f"fc{i}"] = nn.Linear(prev, int(w), bias=not batchnorm)
            if batchnorm:
                layers[f"bn{i}"] = nn.BatchNorm1d(int(w))
            layers[f"relu{i}"] = nn.ReLU()
            if dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            prev = int(w)
        layers["fc_out"] = nn.Linear(prev, int(num_classes))
        super().__init__(layers)
        self.site_names: list[str] = [f"relu{i}" for i in range(1, len(widths) + 1)]


class ConvNet11(nn.Sequential):
    """The paper's CIFAR-10 network: eleven 3x3 convolutions, ReLU, optional batch norm,
    global average pooling and a linear classifier.

    Channels and strides default to the paper's (:data:`CONVNET11_CHANNELS`,
    :data:`CONVNET11_STRIDES`); ``width`` scales every channel count (for quick runs).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        batchnorm: bool = False,
        dropout: float = 0.0,
        channels: Sequence[int] = CONVNET11_CHANNELS,
        strides: Sequence[int] = CONVNET11_STRIDES,
        width: float = 1.0,
    ) -> None:
        if len(channels) != len(strides):
            raise ConfigError("ConvNet11 needs as many strides as channel counts")
        dropout = _check_dropout(dropout)
        if not float(width) > 0:
            raise ConfigError(f"ConvNet11 width {width} must be positive: give e.g. 0.25 or 1")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        prev = int(in_channels)
        for i, (c, s) in enumerate(zip(channels, strides, strict=True), start=1):
            c = max(1, round(c * width))
            layers[f"conv{i}"] = nn.Conv2d(prev, c, 3, stride=s, padding=1, bias=not batchnorm)
            if batchnorm:
                layers[f"bn{i}"] = nn.BatchNorm2d(c)
            layers[f"relu{i}"] = nn.ReLU()
            if dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            prev = c
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        layers["fc_out"] = nn.Linear(prev, int(num_classes))
        super().__init__(layers)
        self.site_names = [f"relu{i}" for i in range(1, len(channels) + 1)]


def resnet(
    depth: int = 50, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False
) -> nn.Module:
    """torchvision ResNet-18 or ResNet-50, randomly initialised (no weights are downloaded).

    ``small_input`` swaps the ImageNet stem (7x7 stride-2 conv and max-pool) for a 3x3
    stride-1 conv without pooling, the usual choice for 32x32 images. The model gets a
    ``site_names`` attribute listing its residual blocks in forward order.
    """
    from torchvision.models import resnet18, resnet50

    if depth not in (18, 50):
        raise ConfigError(f"ResNet depth must be 18 or 50, got {depth}")
    net = (resnet18 if depth == 18 else resnet50)(weights=None, num_classes=num_classes)
    if small_input or in_channels != 3:
        k, s, p = (3, 1, 1) if small_input else (7, 2, 3)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=k, stride=s, padding=p, bias=False)
    if small_input:
        net.maxpool = nn.Identity()  # type: ignore[assignment]
    net.site_names = [  # type: ignore[assignment]
        f"{stage}.{i}"
        for stage in ("layer1", "layer2", "layer3", "layer4")
        for i in range(len(getattr(net, stage)))
    ]
    return net


def parse_widths(text: str | Sequence[int]) -> tuple[int, ...]:
    """Hidden widths from ``"512,512"`` (or a sequence of ints); ConfigError if unparsable."""
    if isinstance(text, str):
        parts = [t.strip() for t in text.replace(" ", ",").split(",") if t.strip()]
        try:
            values = tuple(int(t) for t in parts)
        except ValueError:
            raise ConfigError(
                f"widths {text!r} do not parse: give positive integers separated by commas, "
                "e.g. 512,512"
            ) from None
        return _check_widths(values)
    return _check_widths(text)


def _check_widths(widths: Any) -> tuple[int, ...]:
    try:
        values = tuple(int(w) for w in widths)
        ok = bool(values) and all(v > 0 and v == w for v, w in zip(values, widths, strict=True))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(
            f"MLP widths must be positive integers, got {widths!r}: give e.g. 512,512"
        )
    return values


def _check_dropout(p: Any) -> float:
    try:
        value = float(p)
    except (TypeError, ValueError):
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"dropout {p!r} must be in [0, 1): give e.g. 0.2")
    return value


def model_config(config: dict[str, Any]) -> dict[str, Any]:
    """The full, plain (JSON-ready) config for ``config``, defaults filled in and checked.

    This is what checkpoints store; ``build_model(model_config(c))`` equals ``build_model(c)``.
    """
    arch = str(config.get("arch", "")).lower()
    if arch not in MODEL_NAMES:
        raise ConfigError(f"unknown model {arch!r}: choose one of {', '.join(MODEL_NAMES)}")
    try:
        in_shape = [int(v) for v in config.get("in_shape", (1, 28, 28))]
        num_classes = int(config.get("num_classes", 10))
    except (TypeError, ValueError):
        in_shape, num_classes = [], 0
    if len(in_shape) != 3 or min(in_shape) <= 0 or num_classes <= 0:
        raise ConfigError(
            f"model input shape {config.get('in_shape')!r} / classes "
            f"{config.get('num_classes')!r} are invalid: give in_shape (C, H, W) and "
            "num_classes as positive integers"
        )
    out: dict[str, Any] = {"arch": arch, "in_shape": in_shape, "num_classes": num_classes}
    if arch == "mlp":
        out["widths"] = list(_check_widths(config.get("widths", (512, 512))))
        out["dropout"] = _check_dropout(config.get("dropout", 0.0))
        out["batchnorm"] = bool(config.get("batchnorm", False))
    elif arch == "convnet11":
        out["dropout"] = _check_dropout(config.get("dropout", 0.0))
        out["batchnorm"] = bool(config.get("batchnorm", False))
        out["width"] = float(config.get("width", 1.0))
    else:
        out["small_input"] = bool(config.get("small_input", False))
    return out


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a model from a plain config dict (the one checkpoints store).

    Keys: ``arch`` (one of :data:`MODEL_NAMES`), ``in_shape`` (C, H, W), ``num_classes`` and
    per-architecture options: ``widths``, ``dropout``, ``batchnorm`` (mlp); ``batchnorm``,
    ``dropout``, ``width`` (convnet11); ``small_input`` (resnet18/resnet50). Unknown keys are
    ignored. The model's ``config`` attribute holds :func:`model_config` of ``config``.
    """
    cfg = model_config(config)
    arch, in_shape, num_classes = cfg["arch"], cfg["in_shape"], cfg["num_classes"]
    model: nn.Module
    if arch == "mlp":
        model = MLP(
            in_shape[0] * in_shape[1] * in_shape[2],
            widths=cfg["widths"],
            num_classes=num_classes,
            dropout=cfg["dropout"],
            batchnorm=cfg["batchnorm"],
        )
    elif arch == "convnet11":
        model = ConvNet11(
            in_channels=in_shape[0],
            num_classes=num_classes,
            batchnorm=cfg["batchnorm"],
            dropout=cfg["dropout"],
            width=cfg["width"],
        )
    else:
        model = resnet(
            depth=int(arch[6:]),
            num_classes=num_classes,
            in_channels=in_shape[0],
            small_input=cfg["small_input"],
        )
    model.config = cfg  # type: ignore[assignment]
    return model


def model_sites(model: nn.Module) -> list[str]:
    """The site names a singledir model declares, in forward order ([] for other models)."""
    names = getattr(model, "site_names", None)
    return list(names) if names else []
