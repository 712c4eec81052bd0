"""`singledir sites`: every ablatable site of a checkpoint's model, with its unit axis."""

from __future__ import annotations

from singledir.cli.options import (
    ArchOpt,
    CheckpointArg,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    NumClassesOpt,
    Split,
    TestSplitOpt,
    UnitDimOpt,
    plain,
    say,
)

__all__ = ["sites"]


def sites(
    checkpoint: CheckpointArg,
    split: TestSplitOpt = Split.test,
    unit_dim: UnitDimOpt = None,
    device: DeviceOpt = None,
    arch: ArchOpt = None,
    num_classes: NumClassesOpt = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List the sites `--layers all` would choose: name (module or fx node name), kind
    (module, function or method), units, unit axis and per-sample output shape. A site
    whose unit axis cannot be inferred shows '-': pass --unit-dim SITE=D to the commands.

    Example: singledir sites ckpt.pt
    """
    from singledir.cli import render
    from singledir.evaluation import load_for_evaluation
    from singledir.sites import list_sites, parse_unit_dim

    axes = parse_unit_dim(unit_dim)
    model, data, _info = load_for_evaluation(
        checkpoint,
        split.value,
        arch=arch,
        num_classes=num_classes,
        dataset=dataset,
        data_dir=data_dir,
        test_size=2,
        train_size=2,
        device=device,
    )
    table = list_sites(model, data, unit_dim=axes)
    shown = render.result_table(
        f"{table.height} site(s) of {checkpoint}",
        "site",
        "kind",
        "units",
        "unit axis",
        "shape",
    )
    for name, kind, n_units, axis, shape in table.iter_rows():
        shown.add_row(
            plain(name),
            kind,
            "-" if n_units is None else str(n_units),
            "-" if axis is None else str(axis),
            "(N, " + ", ".join(str(s) for s in shape) + ")",
        )
    say(shown)
