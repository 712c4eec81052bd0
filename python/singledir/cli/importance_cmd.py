"""`singledir importance`: single-unit importance of every unit of a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from singledir.cli.options import (
    INT_MAX,
    ArchOpt,
    BatchSizeOpt,
    CheckpointArg,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    DirectionsOpt,
    LayersOpt,
    MemoryBudgetOpt,
    NumClassesOpt,
    QuietOpt,
    Split,
    SplitOpt,
    TestSizeOpt,
    TrainSizeOpt,
    UnitDimOpt,
    Value,
    ValueOpt,
    bounded_int,
    check_output_paths,
    plain,
    say,
)

__all__ = ["importance"]


def importance(
    checkpoint: CheckpointArg,
    layers: LayersOpt = "all",
    split: SplitOpt = Split.train,
    value: ValueOpt = Value.zero,
    out: Annotated[Path, typer.Option("--out", "-o", help="Per-unit table.")] = Path(
        "units.parquet"
    ),
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Also draw importance against class selectivity (computed on the same data).",
        ),
    ] = None,
    top: Annotated[
        int,
        typer.Option(
            "--top", parser=bounded_int(0, INT_MAX), metavar="INT", help="Units to print."
        ),
    ] = 10,
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
    """Single-unit importance: the drop in accuracy and rise in loss when one unit alone is
    ablated, overall and per class. Writes OUT with one row per (layer, unit).

    Example: singledir importance ckpt.pt --layers last3 --split test --out units.parquet
    """
    from singledir.ablation import unit_importance
    from singledir.cli import render
    from singledir.evaluation import choose_sites, load_for_evaluation
    from singledir.io import write_table
    from singledir.unit_scores import compute_unit_scores, join_unit_scores, scores_frame

    check_output_paths(out, plot)
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
    table = unit_importance(
        model,
        data,
        sites,
        value=value.value,
        batch_size=batch_size,
        device=device,
        memory_budget_mb=memory_budget_mb,
        unit_dim=unit_axes,
        directions=chosen_directions,
        progress=not quiet,
    )
    scatter = None
    if plot is not None:
        selectivity = compute_unit_scores(
            "selectivity",
            model,
            data,
            sites,
            batch_size=batch_size,
            device=device,
            progress=not quiet,
        )
        scatter = join_unit_scores(
            table, scores_frame(selectivity, "selectivity", sites), how="left"
        )
    write_table(table, out)
    if plot is not None and scatter is not None:
        from singledir.plots import plot_importance_vs_selectivity

        plot_importance_vs_selectivity(scatter, plot, subtitle=f"{info.dataset}/{split.value}")

    say(render.header("singledir importance", info.to_dict(), sites, units))
    base = render.finite(table["base_accuracy"][0]) if table.height else None
    shown = render.result_table(
        f"most important units (base accuracy {render.fmt(base)})",
        "layer",
        "unit",
        "accuracy drop",
        "loss rise",
    )
    for row in table.sort("accuracy_drop", descending=True).head(top).iter_rows(named=True):
        shown.add_row(
            plain(row["layer"]),
            str(row["unit"]),
            render.fmt(row["accuracy_drop"]),
            render.fmt(row["loss_rise"]),
        )
    say(shown)
    say(
        f"mean accuracy drop {render.fmt(table['accuracy_drop'].mean())} over {table.height} "
        f"units  -> {out}" + (f", {plot}" if plot else "")
    )
