"""`singledir ablate`, `noise`, `importance` and `record`: the ablation engine on a checkpoint.

Each command loads a checkpoint and the dataset split recorded in its metadata (the training
split with the checkpoint's own corrupted labels), runs the library function, writes its table
atomically (plus a PNG plot and a small JSON summary beside it where that makes sense) and
prints a rich summary. No logic lives here beyond parsing and rendering.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from singledir.cli.app import app
from singledir.errors import ConfigError, DataError, InputError
from singledir.io import atomic_write, check_output_path, read_table, write_table

_out = Console()

# Score names computed on the fly (values) and the column names they may have in a units table.
_SCORE_ALIASES = {
    "selectivity": "selectivity",
    "class_selectivity": "selectivity",
    "mutual_info": "mutual_information",
    "mutual_information": "mutual_information",
    "mi": "mutual_information",
    "importance": "accuracy_drop",
    "accuracy_drop": "accuracy_drop",
}


class Split(StrEnum):
    train = "train"
    test = "test"


class Order(StrEnum):
    random = "random"
    ascending = "ascending"
    descending = "descending"


class Value(StrEnum):
    zero = "zero"
    mean = "mean"


# --------------------------------------------------------------------------------------------
# Shared loading


@dataclass
class Loaded:
    """A checkpoint's model with the data split it is evaluated on."""

    model: Any
    data: Any
    checkpoint: Any
    info: dict[str, Any]


def _load(
    checkpoint: Path,
    *,
    split: str,
    arch: str | None,
    num_classes: int | None,
    dataset: str | None,
    data_dir: Path | None,
    train_size: int | None,
    test_size: int | None,
    device: str | None,
) -> Loaded:
    """Load the checkpoint and the split of the dataset it was trained on."""
    from singledir.checkpoint import load_checkpoint
    from singledir.devices import resolve_device

    resolve_device(device)  # a bad --device fails before any loading
    from singledir.data import dataset_info, load_dataset

    in_shape = None
    if dataset is not None and arch is not None:
        in_shape = tuple(dataset_info(dataset)["in_shape"])
    ckpt = load_checkpoint(
        checkpoint,
        arch=arch,
        num_classes=num_classes,
        in_shape=in_shape,  # type: ignore[arg-type]
        map_location="cpu",
    )
    meta = dict(ckpt.meta or {})
    name = dataset or meta.get("dataset")
    if not name:
        raise ConfigError(
            f"{str(checkpoint)!r} does not record its dataset: name it with --dataset "
            "(digits, mnist, fashion-mnist, cifar10, imagenet)"
        )
    # Reload the split exactly as training did (singledir.train): same subset seed, size,
    # corrupted labels and folder; the options given here override.
    train_cfg = meta.get("train_config")
    if not isinstance(train_cfg, dict):
        train_cfg = {}
    corrupt = float(meta.get("corrupt", 0.0) or 0.0)
    if dataset is not None and meta.get("dataset") not in (None, dataset):
        corrupt = 0.0  # another data set: the checkpoint's corrupted labels do not apply
    data_seed = meta.get("data_seed", meta.get("seed", 0))
    recorded_dir = meta.get("data_dir", train_cfg.get("data_dir"))
    kwargs: dict[str, Any] = {
        "data_dir": data_dir if data_dir is not None else recorded_dir,
        "seed": int(data_seed or 0),
        "corrupt": corrupt if split == "train" else 0.0,
        "corrupt_seed": int(meta.get("corrupt_seed", 0) or 0),
    }
    if split == "train":
        size = train_size if train_size is not None else meta.get("train_size")
        kwargs["train_size"] = int(size) if size is not None else None
    else:
        size = test_size if test_size is not None else meta.get("test_size")
        kwargs["test_size"] = int(size) if size is not None else None
    if kwargs["data_dir"] is not None and not Path(str(kwargs["data_dir"])).is_dir():
        if data_dir is not None:
            raise DataError(f"data folder {str(data_dir)!r} does not exist: check --data-dir")
        kwargs["data_dir"] = None  # recorded folder from another machine: use $SINGLEDIR_DATA
    data = load_dataset(str(name), split, **kwargs)
    if len(data) == 0:
        raise DataError(f"the {split} split of {name} holds no samples: choose another split")
    model = ckpt.model
    _check_fits(model, data)
    info = {
        "checkpoint": str(checkpoint),
        "arch": ckpt.config.get("arch") if isinstance(ckpt.config, dict) else None,
        "dataset": str(name),
        "split": split,
        "n_samples": len(data),
        "corrupt": kwargs["corrupt"],
        "corrupt_seed": kwargs["corrupt_seed"],
        "data_seed": kwargs["seed"],
        "train_size": kwargs.get("train_size"),
        "test_size": kwargs.get("test_size"),
        "device": device,
    }
    return Loaded(model=model, data=data, checkpoint=ckpt, info=info)


def _check_fits(model: Any, data: Any) -> None:
    """Run two samples through the model so that a shape mismatch fails early, in one line."""
    import torch

    x = getattr(data, "x", None)
    if x is None:
        return
    try:
        with torch.inference_mode():
            out = model(x[:2])
    except (RuntimeError, ValueError, IndexError) as exc:
        raise InputError(
            f"inputs of shape {tuple(x.shape[1:])} do not fit the model "
            f"({str(exc).splitlines()[0][:100]}): check --dataset, --arch and --num-classes"
        ) from None
    n_classes = getattr(data, "num_classes", None)
    if isinstance(out, torch.Tensor) and out.ndim == 2 and n_classes:
        if out.shape[1] < int(n_classes):
            raise InputError(
                f"the model predicts {out.shape[1]} classes but the data have {n_classes}: "
                "check --dataset and --num-classes"
            )


def _check_outputs(*paths: Path | None) -> None:
    for p in paths:
        if p is not None:
            check_output_path(p)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return str(v)


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _parse_levels(levels: str) -> str | int:
    text = levels.strip().lower()
    if text == "all":
        return "all"
    try:
        n = int(text)
    except ValueError:
        raise ConfigError(
            f"--levels {levels!r} is neither 'all' nor a number: give 'all' or e.g. 21"
        ) from None
    if n < 2:
        raise ConfigError(f"--levels {n} is too small: give at least 2 levels (0 and all units)")
    return n


def _parse_scales(scales: str) -> list[float]:
    out = []
    for part in scales.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise ConfigError(
                f"--scales has {part!r}, not a number: give comma-separated numbers like 0,0.5,1"
            ) from None
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"--scales has {part!r}: noise scales must be finite and >= 0")
        out.append(v)
    if not out:
        raise ConfigError("--scales is empty: give comma-separated numbers like 0,0.5,1,2")
    return out


def _sites_and_units(model: Any, layers: str, data: Any) -> tuple[list[str], dict[str, int]]:
    import torch

    from singledir.sites import resolve_sites, site_units

    x = getattr(data, "x", None)
    sample = x[:2] if x is not None else next(iter(data.loader(2)))[0]
    with torch.inference_mode():
        sites = resolve_sites(model, layers, sample_x=sample)
        return list(sites), dict(site_units(model, sites, sample))


def _plot_path(plot: Path | None, out: Path, no_plot: bool) -> Path | None:
    if no_plot:
        return None
    return plot if plot is not None else out.with_suffix(".png")


# --------------------------------------------------------------------------------------------
# Per-unit scores for --by


def _scores_from_table(
    path: Path, column: str, sites: list[str], units: dict[str, int]
) -> dict[str, np.ndarray]:
    table = read_table(path)
    col = column
    if col not in table.columns:
        alias = _SCORE_ALIASES.get(column.lower())
        if alias is not None and alias in table.columns:
            col = alias
        else:
            numeric = [
                c for c in table.columns if table[c].dtype.is_numeric() and c not in ("unit",)
            ]
            raise ConfigError(
                f"{str(path)!r} has no column {column!r}: choose --by from "
                f"{', '.join(numeric) or '(no numeric columns)'}"
            )
    for need in ("layer", "unit"):
        if need not in table.columns:
            raise DataError(
                f"{str(path)!r} has no {need!r} column: pass a units table written by "
                "`singledir stats` or `singledir importance`"
            )
    if not table[col].dtype.is_numeric():
        raise ConfigError(f"column {col!r} of {str(path)!r} is not numeric: choose another --by")
    out: dict[str, np.ndarray] = {}
    for site in sites:
        rows = table.filter(pl.col("layer") == site).select("unit", col)
        n = units[site]
        values = np.full(n, np.nan)
        idx = rows["unit"].to_numpy()
        ok = (idx >= 0) & (idx < n)
        values[idx[ok]] = rows[col].cast(pl.Float64).to_numpy()[ok]
        missing = int(np.isnan(values).sum())
        if missing:
            raise DataError(
                f"{str(path)!r} lacks {col!r} for {missing} of {n} units of site {site!r}: "
                "compute it on the same checkpoint and layers"
            )
        out[site] = values
    return out


def _scores_on_the_fly(
    by: str,
    loaded: Loaded,
    sites: list[str],
    batch_size: int | None,
    device: str | None,
    progress: bool,
) -> dict[str, np.ndarray]:
    kind = _SCORE_ALIASES[by]
    if kind == "accuracy_drop":
        from singledir.ablation import unit_importance

        units = unit_importance(
            loaded.model,
            loaded.data,
            sites,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        return {
            s: units.filter(pl.col("layer") == s).sort("unit")["accuracy_drop"].to_numpy()
            for s in sites
        }
    from singledir.activations import record_activation_arrays
    from singledir.stats import class_selectivity, mutual_information

    arrays, labels = record_activation_arrays(
        loaded.model, loaded.data, sites, batch_size=batch_size, device=device, progress=progress
    )
    n_classes = getattr(loaded.data, "num_classes", None)
    fn = class_selectivity if kind == "selectivity" else mutual_information
    return {
        s: np.asarray(fn(arrays[s], labels, num_classes=n_classes), dtype=np.float64) for s in sites
    }


def _order_scores(
    order: Order,
    by: str | None,
    scores: Path | None,
    loaded: Loaded,
    sites: list[str],
    units: dict[str, int],
    batch_size: int | None,
    device: str | None,
    progress: bool,
) -> dict[str, np.ndarray] | None:
    if order == Order.random:
        if by is not None or scores is not None:
            raise ConfigError(
                "--by/--scores order units by a score: add --order ascending or descending"
            )
        return None
    if by is None:
        raise ConfigError(
            f"--order {order.value} needs a score: add --by selectivity, mutual_info, importance "
            "or a column of --scores units.parquet"
        )
    if scores is not None:
        return _scores_from_table(scores, by, sites, units)
    if by.lower() not in _SCORE_ALIASES:
        raise ConfigError(
            f"--by {by!r} is not computed on the fly: choose selectivity, mutual_info or "
            "importance, or pass --scores units.parquet that has that column"
        )
    return _scores_on_the_fly(by.lower(), loaded, sites, batch_size, device, progress)


# --------------------------------------------------------------------------------------------
# Rendering


def _header(title: str, info: dict[str, Any], sites: list[str], units: dict[str, int]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("key", style="bold")
    t.add_column("value")
    t.add_row("checkpoint", str(info.get("checkpoint")))
    data = f"{info.get('dataset')} / {info.get('split')} ({info.get('n_samples')} samples"
    if info.get("corrupt"):
        data += f", {info['corrupt']:g} labels corrupted, seed {info.get('corrupt_seed')}"
    t.add_row("data", data + ")")
    t.add_row("sites", ", ".join(f"{s} ({units[s]})" for s in sites))
    t.add_row("units", str(sum(units.values())))
    return t


def _pick_rows(n: int, k: int = 11) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _fmt(v: Any, digits: int = 4) -> str:
    f = _finite(v)
    return "-" if f is None else f"{f:.{digits}f}"


# --------------------------------------------------------------------------------------------
# Commands

_LAYERS_HELP = "Sites: 'all', 'lastN' (e.g. last3) or comma-separated module names."
_ARCH_HELP = "Architecture of a plain state dict (mlp, convnet11, resnet18, resnet50)."


@app.command()
def ablate(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) or a plain state dict."),
    layers: str = typer.Option("all", "--layers", "-l", help=_LAYERS_HELP),
    orderings: int = typer.Option(10, "--orderings", min=1, help="Random orderings."),
    split: Split = typer.Option(Split.train, "--split", help="Evaluate on train or test."),
    levels: str = typer.Option("all", "--levels", help="'all' or a number of even levels."),
    order: Order = typer.Option(Order.random, "--order", help="Unit order."),
    by: str | None = typer.Option(
        None,
        "--by",
        help="Score for --order ascending/descending: selectivity, mutual_info, importance "
        "(computed on the same data) or a column of --scores.",
    ),
    scores: Path | None = typer.Option(
        None, "--scores", help="units.parquet holding the --by column per (layer, unit)."
    ),
    value: Value = typer.Option(Value.zero, "--value", help="Ablate to zero or unit mean."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random orderings."),
    out: Path = typer.Option(Path("curves.parquet"), "--out", "-o", help="Curves table."),
    plot: Path | None = typer.Option(None, "--plot", help="PNG plot (default: OUT as .png)."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Do not draw the PNG."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    memory_budget_mb: int | None = typer.Option(None, "--memory-budget-mb", min=1),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1..."),
    arch: str | None = typer.Option(None, "--arch", help=_ARCH_HELP),
    num_classes: int | None = typer.Option(None, "--num-classes", min=1),
    dataset: str | None = typer.Option(None, "--dataset", help="Override the data set."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder with the data."),
    train_size: int | None = typer.Option(None, "--train-size", min=1),
    test_size: int | None = typer.Option(None, "--test-size", min=1),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Cumulative ablation curves: accuracy and loss as more and more units are zeroed.

    Units of all chosen sites are pooled into one ordering; each level ablates the first k
    units of it. Writes OUT (one row per ordering and level), OUT.png and OUT.json (the
    normalized AUC: area under accuracy against fraction ablated, from 0 to 1).

    Example: singledir ablate ckpt.pt --layers last3 --orderings 10 --split train --out
    curves.parquet --plot curves.png
    """
    from singledir.ablation import ablation_auc, ablation_curves, summarize_curves
    from singledir.plots import plot_ablation_curves

    level_arg = _parse_levels(levels)
    plot_path = _plot_path(plot, out, no_plot)
    summary_path = out.with_suffix(".json")
    _check_outputs(out, plot_path, summary_path)
    if scores is not None and not scores.is_file():
        raise DataError(f"--scores file {str(scores)!r} does not exist: check the path")
    loaded = _load(
        checkpoint,
        split=split.value,
        arch=arch,
        num_classes=num_classes,
        dataset=dataset,
        data_dir=data_dir,
        train_size=train_size,
        test_size=test_size,
        device=device,
    )
    sites, units = _sites_and_units(loaded.model, layers, loaded.data)
    total = sum(units.values())
    if isinstance(level_arg, int) and level_arg > total + 1:
        raise ConfigError(
            f"--levels {level_arg} exceeds the {total + 1} possible levels (0..{total} units "
            f"of {', '.join(sites)}): give at most {total + 1} or 'all'"
        )
    unit_scores = _order_scores(
        order, by, scores, loaded, sites, units, batch_size, device, not quiet
    )
    curves = ablation_curves(
        loaded.model,
        loaded.data,
        sites,
        orderings=orderings,
        levels=level_arg,
        order=order.value,
        scores=unit_scores,
        value=value.value,
        seed=seed,
        batch_size=batch_size,
        device=device,
        memory_budget_mb=memory_budget_mb,
        progress=not quiet,
    )
    auc_rows = ablation_auc(curves, per_ordering=True)
    assert isinstance(auc_rows, pl.DataFrame)
    auc_values = np.asarray(auc_rows["auc"].to_numpy(), dtype=np.float64)
    auc_mean = float(auc_values.mean())  # = ablation_auc(curves), the mean over orderings
    summary = summarize_curves(curves)
    payload = {
        "command": "ablate",
        **loaded.info,
        "layers": layers,
        "sites": sites,
        "units": units,
        "total_units": total,
        "orderings": orderings,
        "levels": level_arg,
        "order": order.value,
        "by": by,
        "scores": str(scores) if scores is not None else None,
        "value": value.value,
        "seed": seed,
        "base_accuracy": _finite(summary["accuracy_mean"][0]),
        "auc": auc_mean,
        "auc_std": float(auc_values.std()) if auc_values.size else None,
        "auc_per_ordering": [float(v) for v in auc_values],
        "auc_definition": (
            "mean over orderings of the trapezoid-rule area under accuracy against "
            "fraction of units ablated, x from 0 to 1 (singledir.ablation_auc)"
        ),
        "outputs": {
            "curves": str(out),
            "plot": str(plot_path) if plot_path else None,
            "summary": str(summary_path),
        },
    }
    write_table(curves, out)
    if plot_path is not None:
        ordering_text = order.value if by is None else f"{order.value} by {by}"
        plot_ablation_curves(
            curves,
            plot_path,
            subtitle=f"{loaded.info['dataset']}/{split.value}, {', '.join(sites)}, "
            f"{ordering_text}, value={value.value}, AUC={auc_mean:.3f}",
        )
    _write_json(summary_path, payload)

    _out.print(_header("singledir ablate", loaded.info, sites, units))
    t = Table(title="accuracy and loss against units ablated", title_justify="left")
    for col in ("ablated", "fraction", "accuracy", "± std", "loss", "± std"):
        t.add_column(col, justify="right")
    for i in _pick_rows(summary.height):
        r = summary.row(i, named=True)
        t.add_row(
            str(r["n_ablated"]),
            _fmt(r["fraction_ablated"], 3),
            _fmt(r["accuracy_mean"]),
            _fmt(r["accuracy_std"]),
            _fmt(r["loss_mean"]),
            _fmt(r["loss_std"]),
        )
    _out.print(t)
    std_text = f" ± {payload['auc_std']:.4f}" if payload["auc_std"] is not None else ""
    _out.print(
        f"[bold]AUC[/] {auc_mean:.4f}{std_text} over {orderings} ordering(s), seed {seed}  "
        f"-> {out}" + (f", {plot_path}" if plot_path else "") + f", {summary_path}"
    )


@app.command()
def noise(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) or a plain state dict."),
    layers: str = typer.Option("all", "--layers", "-l", help=_LAYERS_HELP),
    scales: str = typer.Option(
        "0,0.25,0.5,1,2,4", "--scales", help="Noise scales (x each unit's activity std)."
    ),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Noise draws per scale."),
    split: Split = typer.Option(Split.train, "--split", help="Evaluate on train or test."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise."),
    out: Path = typer.Option(Path("noise.parquet"), "--out", "-o", help="Curves table."),
    plot: Path | None = typer.Option(None, "--plot", help="PNG plot (default: OUT as .png)."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Do not draw the PNG."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    memory_budget_mb: int | None = typer.Option(None, "--memory-budget-mb", min=1),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1..."),
    arch: str | None = typer.Option(None, "--arch", help=_ARCH_HELP),
    num_classes: int | None = typer.Option(None, "--num-classes", min=1),
    dataset: str | None = typer.Option(None, "--dataset", help="Override the data set."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder with the data."),
    train_size: int | None = typer.Option(None, "--train-size", min=1),
    test_size: int | None = typer.Option(None, "--test-size", min=1),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Noise perturbation curves: accuracy as Gaussian noise is added to every unit.

    Each unit's noise has standard deviation SCALE times the std of that unit's activity over
    the evaluated data. Writes OUT (one row per repeat and scale), OUT.png and OUT.json (AUC).

    Example: singledir noise ckpt.pt --layers all --scales 0,0.5,1,2 --repeats 5 --out
    noise.parquet --plot noise.png
    """
    from singledir.noise import noise_auc, noise_curves
    from singledir.plots import curve_bands, plot_noise_curves

    scale_list = _parse_scales(scales)
    plot_path = _plot_path(plot, out, no_plot)
    summary_path = out.with_suffix(".json")
    _check_outputs(out, plot_path, summary_path)
    loaded = _load(
        checkpoint,
        split=split.value,
        arch=arch,
        num_classes=num_classes,
        dataset=dataset,
        data_dir=data_dir,
        train_size=train_size,
        test_size=test_size,
        device=device,
    )
    sites, units = _sites_and_units(loaded.model, layers, loaded.data)
    curves = noise_curves(
        loaded.model,
        loaded.data,
        sites,
        scales=scale_list,
        repeats=repeats,
        seed=seed,
        batch_size=batch_size,
        device=device,
        memory_budget_mb=memory_budget_mb,
        progress=not quiet,
    )
    auc = float(noise_auc(curves))
    band = curve_bands(curves, "scale", "accuracy")
    loss_band = curve_bands(curves, "scale", "loss")
    payload = {
        "command": "noise",
        **loaded.info,
        "layers": layers,
        "sites": sites,
        "units": units,
        "total_units": sum(units.values()),
        "scales": scale_list,
        "repeats": repeats,
        "seed": seed,
        "auc": auc,
        "outputs": {
            "curves": str(out),
            "plot": str(plot_path) if plot_path else None,
            "summary": str(summary_path),
        },
    }
    write_table(curves, out)
    if plot_path is not None:
        plot_noise_curves(
            curves,
            plot_path,
            subtitle=f"{loaded.info['dataset']}/{split.value}, {', '.join(sites)}, AUC={auc:.3f}",
        )
    _write_json(summary_path, payload)

    _out.print(_header("singledir noise", loaded.info, sites, units))
    t = Table(title="accuracy and loss against noise scale", title_justify="left")
    for col in ("scale", "accuracy", "± std", "loss", "± std"):
        t.add_column(col, justify="right")
    for a, lo in zip(band.iter_rows(named=True), loss_band.iter_rows(named=True), strict=True):
        t.add_row(
            f"{a['scale']:g}",
            _fmt(a["accuracy_mean"]),
            _fmt(a["accuracy_std"]),
            _fmt(lo["loss_mean"]),
            _fmt(lo["loss_std"]),
        )
    _out.print(t)
    _out.print(
        f"[bold]noise AUC[/] {auc:.4f} ({repeats} repeat(s), seed {seed})  -> {out}"
        + (f", {plot_path}" if plot_path else "")
        + f", {summary_path}"
    )


@app.command()
def importance(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) or a plain state dict."),
    layers: str = typer.Option("all", "--layers", "-l", help=_LAYERS_HELP),
    split: Split = typer.Option(Split.train, "--split", help="Evaluate on train or test."),
    value: Value = typer.Option(Value.zero, "--value", help="Ablate to zero or unit mean."),
    out: Path = typer.Option(Path("units.parquet"), "--out", "-o", help="Per-unit table."),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Also draw importance against class selectivity (computed on the same data).",
    ),
    top: int = typer.Option(10, "--top", min=0, help="Most important units to print."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    memory_budget_mb: int | None = typer.Option(None, "--memory-budget-mb", min=1),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1..."),
    arch: str | None = typer.Option(None, "--arch", help=_ARCH_HELP),
    num_classes: int | None = typer.Option(None, "--num-classes", min=1),
    dataset: str | None = typer.Option(None, "--dataset", help="Override the data set."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder with the data."),
    train_size: int | None = typer.Option(None, "--train-size", min=1),
    test_size: int | None = typer.Option(None, "--test-size", min=1),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Single-unit importance: the drop in accuracy and rise in loss when one unit alone is
    ablated, overall and per class. Writes OUT with one row per (layer, unit).

    Example: singledir importance ckpt.pt --layers last3 --split test --out units.parquet
    """
    from singledir.ablation import unit_importance

    _check_outputs(out, plot)
    loaded = _load(
        checkpoint,
        split=split.value,
        arch=arch,
        num_classes=num_classes,
        dataset=dataset,
        data_dir=data_dir,
        train_size=train_size,
        test_size=test_size,
        device=device,
    )
    sites, units = _sites_and_units(loaded.model, layers, loaded.data)
    table = unit_importance(
        loaded.model,
        loaded.data,
        sites,
        value=value.value,
        batch_size=batch_size,
        device=device,
        memory_budget_mb=memory_budget_mb,
        progress=not quiet,
    )
    scatter = None
    if plot is not None:
        sel = _scores_on_the_fly("selectivity", loaded, sites, batch_size, device, not quiet)
        scatter = table.join(
            pl.DataFrame(
                {
                    "layer": [s for s in sites for _ in range(units[s])],
                    "unit": np.concatenate([np.arange(units[s]) for s in sites]).astype(np.int64),
                    "selectivity": np.concatenate([sel[s] for s in sites]),
                }
            ),
            on=["layer", "unit"],
            how="left",
        )
    write_table(table, out)
    if plot is not None and scatter is not None:
        from singledir.plots import plot_importance_vs_selectivity

        plot_importance_vs_selectivity(
            scatter, plot, subtitle=f"{loaded.info['dataset']}/{split.value}"
        )

    _out.print(_header("singledir importance", loaded.info, sites, units))
    base = _finite(table["base_accuracy"][0]) if table.height else None
    t = Table(title=f"most important units (base accuracy {_fmt(base)})", title_justify="left")
    for col in ("layer", "unit", "accuracy drop", "loss rise"):
        t.add_column(col, justify="right")
    for r in table.sort("accuracy_drop", descending=True).head(top).iter_rows(named=True):
        t.add_row(r["layer"], str(r["unit"]), _fmt(r["accuracy_drop"]), _fmt(r["loss_rise"]))
    _out.print(t)
    _out.print(
        f"mean accuracy drop {_fmt(table['accuracy_drop'].mean())} over {table.height} units"
        f"  -> {out}" + (f", {plot}" if plot else "")
    )


@app.command()
def record(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) or a plain state dict."),
    layers: str = typer.Option("all", "--layers", "-l", help=_LAYERS_HELP),
    split: Split = typer.Option(Split.test, "--split", help="Record on train or test."),
    out: Path = typer.Option(
        Path("activations.parquet"), "--out", "-o", help="Activations table (long format)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1..."),
    arch: str | None = typer.Option(None, "--arch", help=_ARCH_HELP),
    num_classes: int | None = typer.Option(None, "--num-classes", min=1),
    dataset: str | None = typer.Option(None, "--dataset", help="Override the data set."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder with the data."),
    train_size: int | None = typer.Option(None, "--train-size", min=1),
    test_size: int | None = typer.Option(None, "--test-size", min=1),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Record every unit's activation on every sample (conv feature maps averaged over
    space) in the long format: layer, unit, sample, label, activation. Feed it to
    `singledir stats`.

    Example: singledir record ckpt.pt --layers last3 --split test --out activations.parquet
    """
    from singledir.activations import activations_to_long, record_activation_arrays

    _check_outputs(out)
    loaded = _load(
        checkpoint,
        split=split.value,
        arch=arch,
        num_classes=num_classes,
        dataset=dataset,
        data_dir=data_dir,
        train_size=train_size,
        test_size=test_size,
        device=device,
    )
    arrays, labels = record_activation_arrays(
        loaded.model, loaded.data, layers, batch_size=batch_size, device=device, progress=not quiet
    )
    sites = list(arrays)
    table = activations_to_long(arrays, labels)
    write_table(table, out)
    units = {s: int(a.shape[1]) for s, a in arrays.items()}
    _out.print(_header("singledir record", loaded.info, sites, units))
    t = Table(title="activations", title_justify="left")
    for col in ("site", "units", "mean", "std", "fraction > 0"):
        t.add_column(col, justify="right")
    for s in sites:
        a = arrays[s]
        t.add_row(s, str(a.shape[1]), _fmt(a.mean()), _fmt(a.std()), _fmt((a > 0).mean(), 3))
    _out.print(t)
    _out.print(f"{table.height} rows ({len(labels)} samples)  -> {out}")
