"""`singledir ablate`: cumulative ablation curves of a checkpoint (parse, call, render)."""

from __future__ import annotations

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
    Order,
    PlotOpt,
    QuietOpt,
    SeedOpt,
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

__all__ = ["ablate"]


def ablate(
    checkpoint: CheckpointArg,
    layers: LayersOpt = "all",
    orderings: Annotated[
        int,
        typer.Option(
            "--orderings",
            parser=bounded_int(1, MAX_REPEATS),
            metavar="INT",
            help="Random orderings.",
        ),
    ] = 10,
    split: SplitOpt = Split.train,
    levels: Annotated[
        str, typer.Option("--levels", help="'all' or a number of evenly spaced levels.")
    ] = "all",
    order: Annotated[Order, typer.Option("--order", help="Unit order.")] = Order.random,
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="Score for --order ascending/descending: selectivity, mutual_info, importance "
            "(computed on the same data) or a column of --scores.",
        ),
    ] = None,
    scores: Annotated[
        Path | None,
        typer.Option("--scores", help="units.parquet holding the --by column per (layer, unit)."),
    ] = None,
    value: ValueOpt = Value.zero,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Curves table.")] = Path(
        "curves.parquet"
    ),
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
    """Cumulative ablation curves: accuracy and loss as more and more units are zeroed.

    Units of all chosen sites are pooled into one ordering; each level ablates the first k
    units of it. Writes OUT (one row per ordering and level), OUT.png and OUT.json (the
    normalized AUC: area under accuracy against fraction ablated, from 0 to 1).

    Example: singledir ablate ckpt.pt --layers last3 --orderings 10 --split train --out
    curves.parquet --plot curves.png
    """
    import numpy as np
    from rich.text import Text

    from singledir.ablation import ablation_curves_with_plan, ablation_levels
    from singledir.cli import render
    from singledir.curves import ablation_auc, summarize_curves
    from singledir.errors import DataError
    from singledir.evaluation import choose_sites, load_for_evaluation
    from singledir.io import write_table
    from singledir.unit_scores import ordering_scores

    level_arg: str | int = levels.strip().lower()
    plot_path = render.plot_path(plot, out, no_plot)
    summary_path = out.with_suffix(".json")
    check_output_paths(out, plot_path, summary_path)
    if scores is not None and not scores.is_file():
        raise DataError(f"--scores file {str(scores)!r} does not exist: check the path")
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
    total = sum(units.values())
    ablation_levels(level_arg, total)  # a bad --levels fails before any scoring work
    if level_arg != "all":
        level_arg = int(level_arg)
    unit_scores = ordering_scores(
        model,
        data,
        sites,
        units,
        order=order.value,
        by=by,
        table=scores,
        batch_size=batch_size,
        device=device,
        progress=not quiet,
    )
    curves, plan = ablation_curves_with_plan(
        model,
        data,
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
        unit_dim=unit_axes,
        directions=chosen_directions,
        progress=not quiet,
    )
    auc_rows = ablation_auc(curves, per_ordering=True)
    assert not isinstance(auc_rows, float)  # per_ordering=True: one row per ordering
    auc_values = np.asarray(auc_rows["auc"].to_numpy(), dtype=np.float64)
    auc_mean = float(auc_values.mean())  # = ablation_auc(curves), the mean over orderings
    # score orders are one deterministic ordering whatever --orderings says
    n_orderings = int(auc_values.size)
    summary = summarize_curves(curves)
    payload = {
        "command": "ablate",
        **info.to_dict(),
        "layers": layers,
        "sites": sites,
        "units": units,
        "total_units": total,
        "orderings": n_orderings,
        "levels": level_arg,
        "order": order.value,
        "by": by,
        "scores": str(scores) if scores is not None else None,
        "value": value.value,
        "seed": seed,
        "directions": directions,
        "unit_dim": unit_dim,
        "engine": {"path": plan.path, "runner": plan.runner, "why": plan.runner_reason},
        "base_accuracy": render.finite(summary["accuracy_mean"][0]),
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
    if plan.runner == "hooks":
        say(f"note: {plan.runner_reason}")
    if plot_path is not None:
        from singledir.plots import plot_ablation_curves

        ordering_text = order.value if by is None else f"{order.value} by {by}"
        plot_ablation_curves(
            curves,
            plot_path,
            subtitle=f"{info.dataset}/{split.value}, {', '.join(sites)}, "
            f"{ordering_text}, value={value.value}, AUC={auc_mean:.3f}",
        )
    render.write_summary(summary_path, payload)

    say(render.header("singledir ablate", info.to_dict(), sites, units))
    table = render.result_table(
        "accuracy and loss against units ablated",
        "ablated",
        "fraction",
        "accuracy",
        "± std",
        "loss",
        "± std",
    )
    for i in render.pick_rows(summary.height):
        row = summary.row(i, named=True)
        table.add_row(
            str(row["n_ablated"]),
            render.fmt(row["fraction_ablated"], 3),
            render.fmt(row["accuracy_mean"]),
            render.fmt(row["accuracy_std"]),
            render.fmt(row["loss_mean"]),
            render.fmt(row["loss_std"]),
        )
    say(table)
    std_text = f" ± {payload['auc_std']:.4f}" if payload["auc_std"] is not None else ""
    outputs = ", ".join(str(p) for p in (out, plot_path, summary_path) if p is not None)
    say(
        Text("AUC", style="bold"),
        plain(
            f"{auc_mean:.4f}{std_text} over {n_orderings} ordering(s), seed {seed}  -> {outputs}"
        ),
    )
