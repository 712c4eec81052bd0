"""`singledir record`: every unit's activation on every sample, in the long format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from singledir.cli.options import (
    ArchOpt,
    BatchSizeOpt,
    CheckpointArg,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    LayersOpt,
    NumClassesOpt,
    QuietOpt,
    Split,
    TestSizeOpt,
    TestSplitOpt,
    TrainSizeOpt,
    UnitDimOpt,
    check_output_paths,
    plain,
    say,
)

__all__ = ["record"]


def record(
    checkpoint: CheckpointArg,
    layers: LayersOpt = "all",
    split: TestSplitOpt = Split.test,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Activations table (long format).")
    ] = Path("activations.parquet"),
    batch_size: BatchSizeOpt = None,
    device: DeviceOpt = None,
    arch: ArchOpt = None,
    num_classes: NumClassesOpt = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    train_size: TrainSizeOpt = None,
    test_size: TestSizeOpt = None,
    unit_dim: UnitDimOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Record every unit's activation on every sample (conv feature maps averaged over
    space) in the long format: layer, unit, sample, label, activation. Feed it to
    `singledir stats`.

    Example: singledir record ckpt.pt --layers last3 --split test --out activations.parquet
    """
    from singledir.activations import activations_to_long, record_activation_arrays
    from singledir.cli import render
    from singledir.evaluation import load_for_evaluation
    from singledir.io import write_table

    check_output_paths(out)
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
    from singledir.sites import parse_unit_dim

    arrays, labels = record_activation_arrays(
        model,
        data,
        layers,
        unit_dim=parse_unit_dim(unit_dim),
        batch_size=batch_size,
        device=device,
        progress=not quiet,
    )
    sites = list(arrays)
    table = activations_to_long(arrays, labels)
    write_table(table, out)
    units = {s: int(a.shape[1]) for s, a in arrays.items()}
    say(render.header("singledir record", info.to_dict(), sites, units))
    shown = render.result_table("activations", "site", "units", "mean", "std", "fraction > 0")
    for site in sites:
        acts = arrays[site]
        shown.add_row(
            plain(site),
            str(acts.shape[1]),
            render.fmt(acts.mean()),
            render.fmt(acts.std()),
            render.fmt((acts > 0).mean(), 3),
        )
    say(shown)
    say(f"{table.height} rows ({len(labels)} samples)  -> {out}")
