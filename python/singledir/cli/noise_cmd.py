"""`singledir noise`: Gaussian noise perturbation curves of a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from singledir.cli.options import (
    MAX_REPEATS,
    ArchOpt,
    BatchSizeOpt,
    CheckpointArg,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    DirectionsOpt,
    LayersOpt,
    MemoryBudgetOpt,
    NoPlotOpt,
    NumClassesOpt,
    PlotOpt,
    QuietOpt,
    SeedOpt,
    Split,
    SplitOpt,
    TestSizeOpt,
    TrainSizeOpt,
    UnitDimOpt,
    bounded_int,
    check_output_paths,
    plain,
    say,
)
from singledir.errors import ConfigError

__all__ = ["noise", "parse_scales"]


def parse_scales(text: str) -> list[float]:
    """``--scales``: comma-separated finite numbers >= 0."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            number = float(part)
        except ValueError:
            raise ConfigError(
                f"--scales has {part!r}, not a number: give comma-separated numbers like 0,0.5,1"
            ) from None
        if not math.isfinite(number) or number < 0:
            raise ConfigError(f"--scales has {part!r}: noise scales must be finite and >= 0")
        out.append(number)
    if not out:
        raise ConfigError("--scales is empty: give comma-separated numbers like 0,0.5,1,2")
    return out


def noise(
    checkpoint: CheckpointArg,
    layers: LayersOpt = "all",
    scales: Annotated[
        str, typer.Option("--scales", help="Noise scales (x each unit's activity std).")
    ] = "0,0.25,0.5,1,2,4",
    repeats: Annotated[
        int,
        typer.Option(
            "--repeats", parser=bounded_int(1, MAX_REPEATS), metavar="INT", help="Draws per scale."
        ),
    ] = 5,
    split: SplitOpt = Split.train,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Curves table.")] = Path("noise.parquet"),
    plot: PlotOpt = None,
    no_plot: NoPlotOpt = False,
    batch_size: BatchSizeOpt = None,
    memory_budget_mb: MemoryBudgetOpt = None,
    device: DeviceOpt = None,
    arch: ArchOpt = None,
    num_classes: NumClassesOpt = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    train_size: TrainSizeOpt = None,
    test_size: TestSizeOpt = None,
    unit_dim: UnitDimOpt = None,
    directions: DirectionsOpt = "units",
    quiet: QuietOpt = False,
) -> None:
    """Noise perturbation curves: accuracy as Gaussian noise is added to every unit.

    Each unit's noise has standard deviation SCALE times the std of that unit's activity over
    the evaluated data. Writes OUT (one row per repeat and scale), OUT.png and OUT.json (AUC).

    Example: singledir noise ckpt.pt --layers all --scales 0,0.5,1,2 --repeats 5 --out
    noise.parquet --plot noise.png
    """
    from rich.text import Text

    from singledir.cli import render
    from singledir.evaluation import choose_sites, load_for_evaluation
    from singledir.io import write_table
    from singledir.noise import noise_auc, noise_curves
    from singledir.plots import curve_bands

    scale_list = parse_scales(scales)
    plot_path = render.plot_path(plot, out, no_plot)
    summary_path = out.with_suffix(".json")
    check_output_paths(out, plot_path, summary_path)
    model, data, info = load_for_evaluation(
        checkpoint,
        split.value,
        arch=arch,
        num_classes=num_classes,
        dataset=dataset,
        data_dir=data_dir,
        train_size=train_size,
        test_size=test_size,
        device=device,
    )
    sites, units, unit_axes, chosen_directions = choose_sites(
        model, data, layers, unit_dim, directions
    )
    curves = noise_curves(
        model,
        data,
        sites,
        scales=scale_list,
        repeats=repeats,
        seed=seed,
        batch_size=batch_size,
        device=device,
        memory_budget_mb=memory_budget_mb,
        unit_dim=unit_axes,
        directions=chosen_directions,
        progress=not quiet,
    )
    auc = float(noise_auc(curves))
    band = curve_bands(curves, "scale", "accuracy")
    loss_band = curve_bands(curves, "scale", "loss")
    payload = {
        "command": "noise",
        **info.to_dict(),
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
        from singledir.plots import plot_noise_curves

        plot_noise_curves(
            curves,
            plot_path,
            subtitle=f"{info.dataset}/{split.value}, {', '.join(sites)}, AUC={auc:.3f}",
        )
    render.write_summary(summary_path, payload)

    say(render.header("singledir noise", info.to_dict(), sites, units))
    table = render.result_table(
        "accuracy and loss against noise scale", "scale", "accuracy", "± std", "loss", "± std"
    )
    for acc, loss in zip(band.iter_rows(named=True), loss_band.iter_rows(named=True), strict=True):
        table.add_row(
            f"{acc['scale']:g}",
            render.fmt(acc["accuracy_mean"]),
            render.fmt(acc["accuracy_std"]),
            render.fmt(loss["loss_mean"]),
            render.fmt(loss["loss_std"]),
        )
    say(table)
    outputs = ", ".join(str(p) for p in (out, plot_path, summary_path) if p is not None)
    say(
        Text("noise AUC", style="bold"),
        plain(f"{auc:.4f} ({repeats} repeat(s), seed {seed})  -> {outputs}"),
    )
