"""How the evaluation commands show and record their results: the header table, evenly
picked rows of a curve, number formatting and the JSON summary written beside each table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from singledir.cli.options import plain

__all__ = ["header", "pick_rows", "fmt", "finite", "write_summary", "plot_path", "result_table"]


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, NaN or infinite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` decimals, ``-`` when it is missing or not finite."""
    number = finite(value)
    return "-" if number is None else f"{number:.{digits}f}"


def pick_rows(n: int, k: int = 11) -> list[int]:
    """At most ``k`` row indices spread evenly over ``0..n-1``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def header(title: str, info: dict[str, Any], sites: list[str], units: dict[str, int]) -> Table:
    """What was evaluated: checkpoint, data (split, samples, corruption), sites and units."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("checkpoint", plain(info.get("checkpoint")))
    data = f"{info.get('dataset')} / {info.get('split')} ({info.get('n_samples')} samples"
    if info.get("corrupt"):
        data += f", {info['corrupt']:g} labels corrupted, seed {info.get('corrupt_seed')}"
    table.add_row("data", plain(data + ")"))
    table.add_row("sites", plain(", ".join(f"{s} ({units[s]})" for s in sites)))
    table.add_row("units", str(sum(units.values())))
    return table


def result_table(title: str, *columns: str) -> Table:
    """An empty table with right-aligned ``columns``."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right")
    return table


def plot_path(plot: Path | None, out: Path, no_plot: bool) -> Path | None:
    """Where the PNG goes: ``--plot``, else OUT with ``.png``; None with ``--no-plot``."""
    if no_plot:
        return None
    return plot if plot is not None else out.with_suffix(".png")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_summary(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    from singledir.io import atomic_write

    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
