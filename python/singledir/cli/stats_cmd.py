"""`singledir stats`: per-unit selectivity, mutual information and activity statistics of an
activations parquet file (long format), computed by the Rust core."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from singledir.cli.options import INT_MAX, MAX_REPEATS, bounded_int, plain, say, seed_int
from singledir.errors import ConfigError

_out = Console()


def stats(
    activations: Path = typer.Argument(
        ...,
        help="Long-format parquet: layer, unit, sample, label, activation.",
        show_default=False,
    ),
    out: Path = typer.Option(
        Path("units.parquet"), "--out", "-o", help="Output table (.parquet, or .csv)."
    ),
    bins: int = typer.Option(
        10, "--bins", parser=bounded_int(2, INT_MAX), help="Bins per unit for mutual information."
    ),
    binning: str = typer.Option(
        "equal-width", "--binning", help="equal-width or equal-frequency (quantile) bins."
    ),
    bias_correction: bool = typer.Option(
        False, "--bias-correction", help="Miller-Madow correction of the MI estimate."
    ),
    shuffles: int = typer.Option(
        0,
        "--shuffles",
        # each shuffle is one more MI pass over the whole table: a bigger count is a typo
        parser=bounded_int(0, MAX_REPEATS),
        help=f"Subtract the mean MI over this many label shuffles (0 to {MAX_REPEATS}).",
    ),
    normalize: bool = typer.Option(False, "--normalize", help="Divide MI by H(class)."),
    seed: int = typer.Option(0, "--seed", parser=seed_int, help="Seed of the label shuffles."),
    negative: str = typer.Option(
        "error", "--negative", help="Negative activity: error, shift (by the min) or clip."
    ),
    num_classes: int | None = typer.Option(
        None,
        "--num-classes",
        parser=bounded_int(1, INT_MAX),
        help="Number of classes (default: largest label + 1).",
    ),
) -> None:
    """Class selectivity, mutual information and activity statistics per (layer, unit).

    Example: singledir stats activations.parquet --out units.parquet --bins 10
    """
    from singledir.io import check_output_path, write_table
    from singledir.stats import stats_from_activations

    if out.suffix.lower() not in (".parquet", ".csv"):
        raise ConfigError(f"output {str(out)!r} must end in .parquet or .csv")
    check_output_path(out)  # fail before the work, not after
    table = stats_from_activations(
        activations,
        bins=bins,
        binning=binning.replace("-", "_"),  # type: ignore[arg-type]
        bias_correction=bias_correction,
        shuffle_baseline=shuffles,
        normalize=normalize,
        seed=seed,
        negative=negative,  # type: ignore[arg-type]
        num_classes=num_classes,
    )
    write_table(table, out)

    import polars as pl

    summary = (
        table.group_by("layer", maintain_order=True)
        .agg(
            units=pl.len(),
            mean_si=pl.col("selectivity").mean(),
            median_si=pl.col("selectivity").median(),
            mean_mi=pl.col("mutual_info").mean(),
        )
        .rows()
    )
    mi_unit = "MI / H(class)" if normalize else "MI (bits)"
    grid = Table(title=plain(f"singledir stats: {activations}"), title_justify="left")
    grid.add_column("layer")
    grid.add_column("units", justify="right")
    grid.add_column("mean SI", justify="right")
    grid.add_column("median SI", justify="right")
    grid.add_column(f"mean {mi_unit}", justify="right")
    for layer, units, mean_si, median_si, mean_mi in summary:
        grid.add_row(
            plain(layer), str(units), f"{mean_si:.3f}", f"{median_si:.3f}", f"{mean_mi:.4f}"
        )
    _out.print(grid)
    extra = f", {shuffles} shuffles, seed {seed}" if shuffles else ""
    say(f"wrote {out} ({table.height} rows; {bins} {binning} bins{extra})")
