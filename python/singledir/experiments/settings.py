"""Experiment settings: one dataclass of every size an experiment uses, and the presets.

A preset (``tiny``, ``quick``, ``paper``) fills every field; each experiment then overrides the
fields it needs (e.g. ``corruption`` trains longer so that nets memorise random labels), and
the user's flags override both. The resolved settings are what the manifest records.

- ``tiny``: seconds, for tests (digits, a few epochs, small nets, few orderings).
- ``quick``: minutes on two CPU cores (digits or an MNIST subset, MLP 128-128).
- ``paper``: the paper's sizes (MNIST MLP, ConvNet11 on CIFAR-10, ResNet-50 on ImageNet), for
  a GPU or a cluster.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from singledir.errors import ConfigError

__all__ = [
    "Settings",
    "PRESET_NAMES",
    "PRESET_DATASETS",
    "resolve_settings",
    "parse_list",
    "paper_cost",
    "paper_help",
]

PRESET_NAMES = ("tiny", "quick", "paper")

# Which datasets each preset can run on, and the model it picks for each.
PRESET_DATASETS: dict[str, tuple[str, ...]] = {
    "tiny": ("digits", "mnist", "fashion-mnist"),
    "quick": ("digits", "mnist", "fashion-mnist", "cifar10"),
    "paper": ("mnist", "fashion-mnist", "cifar10", "imagenet"),
}
_MODEL_FOR = {
    "digits": "mlp",
    "mnist": "mlp",
    "fashion-mnist": "mlp",
    "cifar10": "convnet11",
    "imagenet": "resnet50",
}


@dataclass
class Settings:
    """Every size and choice of an experiment (each one is also a ``singledir reproduce`` flag).

    Attributes are grouped: data and model; training; ablation and noise analysis; and the
    per-experiment grids (corruption fractions, ensemble size, snapshot spacing, dropout
    rates, the hyper-parameter sweep).
    """

    preset: str = "quick"
    dataset: str = "digits"
    data_dir: str | None = None
    train_size: int | None = None
    model: str = "mlp"
    widths: tuple[int, ...] = (128, 128)
    width: float = 1.0
    small_input: bool = False
    # training
    epochs: int = 30
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    device: str = "auto"
    seed: int = 0
    seeds: int = 1
    # analysis
    orderings: int = 10
    levels: int = 21
    ablation_samples: int | None = None
    eval_samples: int | None = None
    noise_scales: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
    noise_repeats: int = 3
    # per experiment
    corrupt: float = 0.0
    fractions: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    ensemble_size: int = 12
    snapshot_every: int = 5
    dropouts: tuple[float, ...] = (0.1, 0.2, 0.3)
    dropout_corrupt: float = 1.0
    sweep_lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    sweep_batch_sizes: tuple[int, ...] = (16, 64)
    sweep_widths: tuple[float, ...] = (64, 128)
    val_fraction: float = 0.1
    selectivity_alphas: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Settings:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}: check the spelling")
        kwargs: dict[str, Any] = {}
        for k, v in d.items():
            kwargs[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)


# Base of each preset, before the experiment's own overrides.
_PRESET_BASE: dict[str, dict[str, Any]] = {
    "tiny": {
        "widths": (32, 32),
        "lr": 1e-2,
        "epochs": 4,
        "batch_size": 64,
        "orderings": 3,
        "levels": 6,
        "ablation_samples": 300,
        "eval_samples": 200,
        "noise_scales": (0.0, 1.0, 2.0),
        "noise_repeats": 1,
        "train_size": 300,
        "fractions": (0.0, 0.5, 1.0),
        "ensemble_size": 3,
        "snapshot_every": 2,
        "dropouts": (0.2,),
        "sweep_lrs": (1e-3, 3e-3),
        "sweep_batch_sizes": (64,),
        "sweep_widths": (16, 32),
    },
    "quick": {},
    "paper": {
        "widths": (512, 512),
        "epochs": 100,
        "batch_size": 128,
        "orderings": 10,
        "levels": 51,
        "ablation_samples": 10_000,
        "noise_scales": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0),
        "noise_repeats": 5,
        "fractions": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        "ensemble_size": 50,
        "seeds": 3,
        "dropouts": (0.1, 0.2, 0.3),
        "sweep_lrs": (1e-4, 3e-4, 1e-3, 3e-3),
        "sweep_batch_sizes": (32, 64, 128, 256),
        "sweep_widths": (128, 256, 512),
    },
}

# Per experiment and preset: what differs from the preset's base.
_EXPERIMENT_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "corruption": {
        "tiny": {"epochs": 6},
        # Nets must (nearly) memorise random labels: long enough training on the full set.
        "quick": {"epochs": 50, "batch_size": 32, "lr": 3e-3},
        "paper": {"epochs": 200, "seeds": 1},
    },
    "ensemble": {
        "tiny": {},
        # A small training set makes generalization vary from seed to seed.
        # 40 nets: a one-sided test at 0.05 then detects |rho| = 0.4 with 80% power (16 nets
        # detect only 0.61); about 2.5 minutes on two cores.
        "quick": {"train_size": 400, "epochs": 40, "ensemble_size": 40, "noise_repeats": 1},
        "paper": {"ensemble_size": 50},
    },
    "training": {
        "tiny": {"epochs": 6, "seeds": 1, "corrupt": 0.2},
        # Few samples, no regularisation and 20% noisy labels: within minutes the net
        # starts memorising and its test loss rises (the paper's nets overfit on their own).
        "quick": {
            "train_size": 600,
            "epochs": 60,
            "snapshot_every": 4,
            "seeds": 2,
            "corrupt": 0.2,
        },
        "paper": {"epochs": 100, "snapshot_every": 5, "seeds": 2},
    },
    "selection": {
        "tiny": {"seeds": 2, "sweep_lrs": (3e-3, 1e-2), "sweep_widths": (16,)},
        # 5 repeats: the exact sign-flip test of the paired gap can reach p = 1/32 (3
        # repeats never go below 1/8, so the claim could never hold).
        "quick": {"epochs": 20, "seeds": 5, "train_size": 600},
        "paper": {"seeds": 5},
    },
    "dropout": {
        "tiny": {"epochs": 6},
        # Wide enough nets on a small set memorise random labels with units to spare, the
        # regime where dropout's protection shows.
        "quick": {"train_size": 500, "widths": (256, 256), "epochs": 100, "lr": 3e-3},
        "paper": {"epochs": 300},
    },
    "batchnorm": {
        "tiny": {"seeds": 1},
        # 5 nets per arm: the exact two-group test reaches p = 1/252 (3 per arm: 1/20, so
        # never below 0.05).
        "quick": {"epochs": 30, "seeds": 5},
        "paper": {"seeds": 5},
    },
    "selectivity": {
        "tiny": {},
        "quick": {"epochs": 30, "seeds": 2},
        "paper": {"seeds": 1},
    },
    # The training experiment's overfitting regime (few samples, 20% noisy labels), monitored
    # every epoch; seeds are the units of the paired comparison.
    "earlystop": {
        "tiny": {"epochs": 6, "seeds": 2, "corrupt": 0.2, "train_size": 600, "batch_size": 32},
        "quick": {"train_size": 600, "epochs": 50, "seeds": 6, "corrupt": 0.2},
        "paper": {"epochs": 100, "seeds": 6, "corrupt": 0.2, "ablation_samples": 2000},
    },
    "selectivity-reg": {
        "tiny": {"epochs": 6, "seeds": 2, "selectivity_alphas": (-1.0, 0.0, 1.0)},
        "quick": {"epochs": 20, "seeds": 5},
        "paper": {"epochs": 30, "seeds": 5, "selectivity_alphas": (-2.0, -1.0, 0.0, 1.0, 2.0)},
    },
}

# Paper-sized models and training for each dataset of the paper preset.
_PAPER_DATASET: dict[str, dict[str, Any]] = {
    "mnist": {"model": "mlp", "widths": (512, 512), "optimizer": "sgd", "lr": 0.01},
    "fashion-mnist": {"model": "mlp", "widths": (512, 512), "optimizer": "sgd", "lr": 0.01},
    "cifar10": {
        "model": "convnet11",
        "optimizer": "sgd",
        "lr": 0.01,
        "batch_size": 128,
        "schedule": "cosine",
        "weight_decay": 0.0,
        "sweep_widths": (0.5, 1.0),
    },
    "imagenet": {
        "model": "resnet50",
        "optimizer": "sgd",
        "lr": 0.1,
        "batch_size": 256,
        "epochs": 90,
        "schedule": "step",
        "weight_decay": 1e-4,
        "ablation_samples": 10_000,
        "sweep_widths": (1.0,),
    },
}

_DEFAULT_DATASET = {"tiny": "digits", "quick": "digits", "paper": "cifar10"}


def parse_list(text: str, kind: type, what: str) -> tuple[Any, ...]:
    """Parse a comma-separated flag value such as ``"0,0.2,0.4"`` into a tuple of ``kind``."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConfigError(f"{what} is empty: give comma-separated values, e.g. 1,2,3")
    try:
        return tuple(kind(t) for t in items)
    except ValueError as exc:
        raise ConfigError(
            f"{what} {text!r} is not a comma-separated list of {kind.__name__} values"
        ) from exc


def resolve_settings(
    experiment: str, preset: str = "quick", overrides: dict[str, Any] | None = None
) -> Settings:
    """The settings of ``experiment`` under ``preset``, with the user's ``overrides`` applied.

    Raises
    ------
    ConfigError
        Unknown preset, a dataset the preset cannot use, or a value out of range.
    """
    preset = str(preset).lower()
    if preset not in PRESET_NAMES:
        raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESET_NAMES)}")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    dataset = str(overrides.get("dataset", _DEFAULT_DATASET[preset])).lower()
    allowed = PRESET_DATASETS[preset]
    if dataset not in allowed:
        hint = (
            "use --preset paper"
            if preset != "paper"
            else "use --preset quick (digits is for quick runs)"
        )
        raise ConfigError(
            f"the {preset} preset cannot use dataset {dataset!r} (it takes "
            f"{', '.join(allowed)}): {hint}"
        )
    values: dict[str, Any] = {"preset": preset, "dataset": dataset}
    values.update(_PRESET_BASE[preset])
    if preset == "paper":
        values.update(_PAPER_DATASET.get(dataset, {}))
    else:
        values["model"] = _MODEL_FOR[dataset]
        if dataset == "cifar10":
            values.update({"width": 0.25, "small_input": True, "sweep_widths": (0.125, 0.25)})
        if dataset != "digits" and preset == "quick":
            # An MNIST subset keeps the quick preset within minutes on two cores.
            values.setdefault("train_size", 2000)
            values["ablation_samples"] = values.get("ablation_samples") or 2000
            values["eval_samples"] = values.get("eval_samples") or 2000
    exp_over = _EXPERIMENT_OVERRIDES.get(experiment, {}).get(preset, {})
    for k, v in exp_over.items():
        if preset == "quick" and dataset != "digits" and k == "train_size":
            continue  # the MNIST subset size above wins over digits-specific sizes
        values[k] = v
    if "dataset" in overrides and "model" not in overrides and preset != "paper":
        values["model"] = _MODEL_FOR[dataset]
    values.update(overrides)
    try:
        s = Settings.from_dict(values)
    except TypeError as exc:
        raise ConfigError(f"bad settings for {experiment}: {exc}") from exc
    _validate(s)
    return s


def _validate(s: Settings) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    need(s.epochs >= 1, f"--epochs must be at least 1, got {s.epochs}")
    need(s.batch_size >= 1, f"--batch-size must be at least 1, got {s.batch_size}")
    need(s.lr > 0, f"--lr must be positive, got {s.lr}")
    need(s.seeds >= 1, f"--seeds must be at least 1, got {s.seeds}")
    need(s.orderings >= 1, f"--orderings must be at least 1, got {s.orderings}")
    need(s.levels >= 2, f"--levels must be at least 2, got {s.levels}")
    need(s.noise_repeats >= 1, f"--noise-repeats must be at least 1, got {s.noise_repeats}")
    need(s.ensemble_size >= 2, f"--ensemble-size must be at least 2, got {s.ensemble_size}")
    need(s.snapshot_every >= 1, f"--snapshot-every must be at least 1, got {s.snapshot_every}")
    need(
        all(0.0 <= f <= 1.0 for f in s.fractions),
        f"--fractions must lie in [0, 1], got {list(s.fractions)}",
    )
    need(
        all(0.0 < p < 1.0 for p in s.dropouts),
        f"--dropouts must lie in (0, 1), got {list(s.dropouts)}",
    )
    need(0.0 <= s.dropout_corrupt <= 1.0, "--dropout-corrupt must lie in [0, 1]")
    need(0.0 <= s.corrupt <= 1.0, "--corrupt must lie in [0, 1]")
    need(all(w >= 1 for w in s.widths), f"--widths must be positive, got {list(s.widths)}")
    need(s.train_size is None or s.train_size >= 10, "--train-size must be at least 10")
    need(
        s.ablation_samples is None or s.ablation_samples >= 10,
        "--ablation-samples must be at least 10",
    )
    need(s.eval_samples is None or s.eval_samples >= 10, "--eval-samples must be at least 10")
    need(all(v >= 0 for v in s.noise_scales), "--noise-scales must be non-negative")
    need(0.0 < s.val_fraction < 1.0, f"--val-fraction must lie in (0, 1), got {s.val_fraction}")
    need(
        len(s.selectivity_alphas) >= 1 and all(math.isfinite(a) for a in s.selectivity_alphas),
        f"--selectivity-alphas must be finite numbers, got {list(s.selectivity_alphas)}",
    )
    need(s.optimizer in ("sgd", "adam"), f"--optimizer must be sgd or adam, got {s.optimizer!r}")


# --------------------------------------------------------------------------- paper budget
# Training images per second (forward + backward, batch 128). CPU: measured on two cores of
# the development machine (bench/RESULTS.md, Experiments); GPU: assumed for one current
# data-centre GPU in float32 (no measurement here), so the GPU hours are rough.
_TRAIN_RATE = {
    "mlp": {"cpu": 2300.0, "gpu": 100_000.0},
    "convnet11": {"cpu": 24.0, "gpu": 10_000.0},
    "resnet50": {"cpu": 3.0, "gpu": 1_000.0},
}
_TRAIN_SET = {"mnist": 60_000, "fashion-mnist": 60_000, "cifar10": 50_000, "imagenet": 1_281_167}


def _runs_and_analyses(experiment: str, s: Settings) -> tuple[int, int]:
    """(nets trained, ablation analyses) of an experiment's plan, counted from its sizes."""
    grid = len(s.sweep_lrs) * len(s.sweep_batch_sizes) * len(s.sweep_widths)
    runs = {
        "corruption": len(s.fractions) * s.seeds,
        "ensemble": s.ensemble_size,
        "training": s.seeds,
        "selection": grid * s.seeds,
        "dropout": len(s.dropouts) * 2 * s.seeds,
        "batchnorm": 2 * s.seeds,
        "selectivity": s.seeds,
        "earlystop": s.seeds,
        "selectivity-reg": len(s.selectivity_alphas) * s.seeds,
    }.get(experiment, s.seeds)
    analyses = runs * (s.epochs // s.snapshot_every if experiment == "training" else 1)
    return runs, analyses


def paper_cost(experiment: str, dataset: str = "cifar10") -> dict[str, Any]:
    """Sizes and expected cost of ``experiment`` under the paper preset: nets, epochs,
    images trained on and evaluated, and hours on one GPU (assumed rate) or on two CPU
    cores (measured rate). Ablation and noise passes count a third of a training step."""
    s = resolve_settings(experiment, "paper", {"dataset": dataset})
    runs, analyses = _runs_and_analyses(experiment, s)
    n_train = s.train_size or _TRAIN_SET.get(s.dataset, 50_000)
    samples = s.ablation_samples or n_train
    train_images = runs * s.epochs * n_train
    per_analysis = s.orderings * s.levels * samples + (
        len(s.noise_scales) * s.noise_repeats * samples if experiment == "corruption" else 0
    )
    analysis_images = analyses * per_analysis / 3.0
    rate = _TRAIN_RATE.get(s.model, _TRAIN_RATE["convnet11"])
    work = train_images + analysis_images
    return {
        "experiment": experiment,
        "dataset": s.dataset,
        "model": s.model,
        "nets": runs,
        "epochs": s.epochs,
        "train_images": int(train_images),
        "analysis_images": int(analysis_images),
        "gpu_hours": work / rate["gpu"] / 3600.0,
        "cpu_hours": work / rate["cpu"] / 3600.0,
    }


def paper_help(experiments: tuple[str, ...], dataset: str = "cifar10") -> str:
    """One line per experiment: the paper preset's nets, epochs and expected hours."""
    lines = []
    for name in experiments:
        c = paper_cost(name, dataset)
        lines.append(
            f"{name}: {c['nets']} {c['model']} nets x {c['epochs']} epochs on {c['dataset']}, "
            f"~{c['gpu_hours']:.3g} GPU h (~{c['cpu_hours']:.3g} CPU h on 2 cores)"
        )
    return "\n".join(lines)
