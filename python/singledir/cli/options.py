"""What every command shares: option aliases (``Annotated`` types defined once), bounded
numeric parsing, output-path checks and message printing with rich markup escaped.

Commands declare ``out: OutOpt = Path("curves.parquet")`` instead of repeating a
``typer.Option(...)``; numbers come through :func:`bounded_int` / :func:`bounded_float`, so a
value such as ``1e23`` or ``99999999999999999999`` is refused with one line before it reaches
NumPy or the Rust core. This module imports neither torch nor the library's heavy modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from singledir.io import check_output_path

__all__ = [
    "INT_MAX",
    "MAX_REPEATS",
    "Split",
    "Order",
    "Value",
    "bounded_int",
    "bounded_float",
    "any_int",
    "seed_int",
    "check_output_path",
    "check_output_paths",
    "say",
    "fail",
    "plain",
    "stdout",
    "stderr",
    "CheckpointArg",
    "LayersOpt",
    "SplitOpt",
    "TestSplitOpt",
    "ValueOpt",
    "BatchSizeOpt",
    "MemoryBudgetOpt",
    "DeviceOpt",
    "SeedOpt",
    "OutOpt",
    "PlotOpt",
    "NoPlotOpt",
    "QuietOpt",
    "ArchOpt",
    "NumClassesOpt",
    "DatasetOpt",
    "DataDirOpt",
    "TrainSizeOpt",
    "TestSizeOpt",
    "UnitDimOpt",
    "DirectionsOpt",
]

# The largest count any option takes: it fits every integer type the engine and the Rust core
# use (int32 included), so a bigger value is a typo, not a request.
INT_MAX = 2**31 - 1
# Orderings, repeats and seeds each cost a full pass or a run: beyond this a value is a typo
# that would make the library plan (and allocate for) billions of them.
MAX_REPEATS = 100_000

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------
# Messages


def plain(text: object) -> Text:
    """``text`` as a rich Text that is printed verbatim (brackets are not markup)."""
    return Text(str(text))


def say(*parts: object, style: str | None = None, err: bool = False) -> None:
    """Print ``parts`` on one line, strings verbatim (``singledir[ray]`` stays intact).

    Rich renderables (``Text``, ``Table``) are printed as they are, so a caller can add
    emphasis with ``Text("AUC", style="bold")``.
    """
    console = stderr if err else stdout
    pieces = [escape(p) if isinstance(p, str) else p for p in parts]
    if all(isinstance(p, str) for p in pieces):
        console.print(" ".join(str(p) for p in pieces), style=style, soft_wrap=True)
    else:
        console.print(*pieces, style=style, soft_wrap=True)


def fail(message: object, *, label: str = "error:") -> None:
    """Print the one-line ``error: message`` on stderr, the message verbatim (not markup)."""
    stderr.print(f"[bold red]{escape(label)}[/] {escape(str(message))}")


# --------------------------------------------------------------------------------------------
# Numbers


def _describe(low: float | None, high: float | None, kind: str) -> str:
    def show(v: float) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    if low is not None and high is not None:
        return f"{kind} from {show(low)} to {show(high)}"
    if low is not None:
        return f"{kind} >= {show(low)}"
    if high is not None:
        return f"{kind} <= {show(high)}"
    return kind


def bounded_int(low: int | None = 0, high: int | None = INT_MAX) -> Callable[[Any], int]:
    """A Typer ``parser`` for an integer in ``[low, high]`` (None: unbounded on that side).

    Accepts ``12``, ``+12`` and ``1_000``; refuses ``1e23``, ``1.5`` and values out of range
    with a usage error naming the range.
    """

    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise typer.BadParameter(f"{value!r} is not an integer")
        if isinstance(value, int):
            number = value
        else:
            text = str(value).strip()
            try:
                number = int(text)
            except ValueError:
                try:
                    as_float = float(text)
                except ValueError:
                    raise typer.BadParameter(
                        f"{text!r} is not an integer: give {_describe(low, high, 'an integer')}"
                    ) from None
                if not as_float.is_integer():
                    raise typer.BadParameter(
                        f"{text!r} is not a whole number: give {_describe(low, high, 'an integer')}"
                    ) from None
                number = int(as_float) if math.isfinite(as_float) else INT_MAX * 2
        if (low is not None and number < low) or (high is not None and number > high):
            shown = str(value).strip()
            raise typer.BadParameter(
                f"{shown} is out of range: give {_describe(low, high, 'an integer')}"
            )
        return number

    return parse


def bounded_float(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[Any], float]:
    """A Typer ``parser`` for a finite float in ``[low, high]`` (``*_open``: bound excluded)."""

    def parse(value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{str(value).strip()!r} is not a number") from None
        below = low is not None and (number <= low if low_open else number < low)
        above = high is not None and (number >= high if high_open else number > high)
        if not math.isfinite(number) or below or above:
            lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
            hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
            where = f" in {lo}, {hi}" if low is not None and high is not None else ""
            if not where and low is not None:
                where = f" {'>' if low_open else '>='} {low:g}"
            if not where and high is not None:
                where = f" {'<' if high_open else '<='} {high:g}"
            raise typer.BadParameter(
                f"{str(value).strip()} is out of range: give a finite number{where}"
            )
        return number

    return parse


# --------------------------------------------------------------------------------------------
# Output paths


def check_output_paths(*paths: Path | None) -> None:
    """:func:`check_output_path` on each file path given (None skipped), before any work."""
    for path in paths:
        if path is not None:
            check_output_path(path)


# --------------------------------------------------------------------------------------------
# Choices


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
# Option aliases (the default value stays in each command's signature)

_COUNT = bounded_int(1)
_SEED = bounded_int(0, 2**63 - 1)
# For an integer option whose meaning the library checks (its message stays the library's):
# only values no integer type of the engine can hold are refused here.
any_int = bounded_int(-INT_MAX, INT_MAX)
seed_int = _SEED

CheckpointArg = Annotated[
    Path, typer.Argument(help="Checkpoint (.pt) or a plain state dict.", show_default=False)
]
LayersOpt = Annotated[
    str,
    typer.Option(
        "--layers", "-l", help="Sites: 'all', 'lastN' (e.g. last3) or comma-separated modules."
    ),
]
SplitOpt = Annotated[Split, typer.Option("--split", help="Evaluate on train or test.")]
TestSplitOpt = Annotated[Split, typer.Option("--split", help="Record on train or test.")]
ValueOpt = Annotated[Value, typer.Option("--value", help="Ablate to zero or to each unit's mean.")]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option("--batch-size", parser=_COUNT, metavar="INT", help="Samples per forward pass."),
]
MemoryBudgetOpt = Annotated[
    int | None,
    typer.Option(
        "--memory-budget-mb", parser=_COUNT, metavar="INT", help="Memory for stacked masks."
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="auto, cpu, cuda or cuda:N (default: CUDA if available)."),
]
SeedOpt = Annotated[
    int, typer.Option("--seed", parser=_SEED, metavar="INT", help="Seed (recorded in outputs).")
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output table (.parquet, or .csv).")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="PNG plot (default: OUT with .png).")]
NoPlotOpt = Annotated[bool, typer.Option("--no-plot", help="Do not draw the PNG.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
UnitDimOpt = Annotated[
    str | None,
    typer.Option(
        "--unit-dim",
        metavar="D|SITE=D,...",
        help="Unit axis of the sites (a dim of the (N, ...) output): D for every site or "
        "site=D pairs (default: inferred; `singledir sites` shows it).",
    ),
]
DirectionsOpt = Annotated[
    str,
    typer.Option(
        "--directions",
        metavar="units|random|FILE",
        help="Ablate units, a seeded random orthonormal basis per site, or directions from "
        "FILE: .npy (k, C) for one site, .npz / .pt with one (k, C) array per site name.",
    ),
]
ArchOpt = Annotated[
    str | None,
    typer.Option(
        "--arch", help="Architecture of a plain state dict (mlp, convnet11, resnet18, resnet50)."
    ),
]
NumClassesOpt = Annotated[
    int | None,
    typer.Option("--num-classes", parser=_COUNT, metavar="INT", help="Classes of a state dict."),
]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="Override the data set the checkpoint records.")
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder with the data files (else $SINGLEDIR_DATA)."),
]
TrainSizeOpt = Annotated[
    int | None,
    typer.Option("--train-size", parser=_COUNT, metavar="INT", help="Training subset size."),
]
TestSizeOpt = Annotated[
    int | None,
    typer.Option("--test-size", parser=_COUNT, metavar="INT", help="Test subset size."),
]
