"""Reports that put each claim of the paper beside what was measured.

A report is a list of :class:`Section` (one per experiment), each with its figures (PNG
files), small tables, and :class:`Claim` rows: the paper's claim, the statistic measured
here with its interval and p-value, and a verdict that follows from the interval
(``holds``, ``does not hold``, or ``inconclusive`` when the interval includes the null).
:func:`write_report` renders them as a self-contained HTML file (figures inline as base64
PNG) and as Markdown (figures linked).

Claims and their builders live in :mod:`singledir.claims` (re-exported here).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from singledir.claims import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Claim,
    combine_claims,
    compare_claim,
    correlation_claim,
    correlations,
    difference_claim,
    fmt,
    mean_claim,
    verdict_of,
)
from singledir.io import atomic_write

__all__ = [
    "HOLDS",
    "FAILS",
    "INCONCLUSIVE",
    "Claim",
    "Section",
    "write_report",
    "render_html",
    "render_markdown",
    "correlations",
    "correlation_claim",
    "difference_claim",
    "compare_claim",
    "mean_claim",
    "combine_claims",
    "verdict_of",
    "fmt",
]


@dataclass
class Section:
    """One experiment's part of a report."""

    name: str
    title: str
    description: str
    claims: list[Claim] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    tables: list[tuple[str, pl.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# Rendering

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #333}h2{margin-top:2em;border-bottom:1px solid #aaa}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.holds{background:#d8f5d8;font-weight:bold}
.fails{background:#f9d6d5;font-weight:bold}.inconclusive{background:#f5eec8;font-weight:bold}
figure{display:inline-block;margin:.5em;text-align:center;max-width:520px}
figure img{max-width:100%}figcaption{font-size:.85em;color:#555}
.note{color:#555;font-size:.9em}code{background:#f3f3f3;padding:0 .2em}
"""


def _verdict_class(verdict: str) -> str:
    return {HOLDS: "holds", FAILS: "fails"}.get(verdict, "inconclusive")


def _df_html(df: pl.DataFrame, max_rows: int = 40) -> str:
    cols = df.columns
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for row in df.head(max_rows).iter_rows():
        rows.append("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>")
    more = (
        f"<p class='note'>({df.height - max_rows} more rows in the parquet file)</p>"
        if df.height > max_rows
        else ""
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>{more}"


def _df_md(df: pl.DataFrame, max_rows: int = 40) -> str:
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.head(max_rows).iter_rows():
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    if df.height > max_rows:
        lines.append(f"\n({df.height - max_rows} more rows in the parquet file)")
    return "\n".join(lines)


def _claims_html(claims: Sequence[Claim]) -> str:
    rows = []
    for c in claims:
        rows.append(
            "<tr>"
            f"<td>{html.escape(c.figure)}</td><td>{html.escape(c.claim)}</td>"
            f"<td>{html.escape(c.statistic)}</td>"
            f"<td>{html.escape(c.interval_text())}</td><td>{html.escape(fmt(c.p_value))}</td>"
            f"<td>{html.escape(fmt(c.n))}</td><td>{html.escape(c.detectable_text())}</td>"
            f"<td class='{_verdict_class(c.verdict)}' title='{html.escape(c.rule)}'>"
            f"{html.escape(c.verdict)}</td></tr>"
        )
    return (
        "<table><tr><th>paper</th><th>claim</th><th>measured here</th>"
        "<th>estimate [95% CI]</th><th>p</th><th>n</th>"
        "<th title='smallest effect detected with 80% power at p &lt; 0.05'>detectable</th>"
        "<th>verdict</th></tr>" + "".join(rows) + "</table>"
    )


def _claims_md(claims: Sequence[Claim]) -> str:
    lines = [
        "| paper | claim | measured here | estimate [95% CI] | p | n | detectable | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        lines.append(
            f"| {c.figure} | {c.claim} | {c.statistic} | {c.interval_text()} | "
            f"{fmt(c.p_value)} | {fmt(c.n)} | {c.detectable_text()} | **{c.verdict}** |".replace(
                "\n", " "
            )
        )
    return "\n".join(lines)


POWER_NOTE = (
    "detectable: the smallest effect (distance from the null, on the estimate's scale) this "
    "design detects with 80% power by a one-sided test at p < 0.05; none at this n when no "
    "effect could reach p < 0.05 with this many units."
)


def _section_notes(s: Section) -> list[str]:
    """The section's notes, plus what data it ran on when that limits it (digits)."""
    notes = list(s.notes)
    if s.settings.get("dataset") == "digits":
        notes.append(
            "Data: scikit-learn digits (1,797 8x8 images), because no MNIST folder was given "
            "(--data-dir or $SINGLEDIR_DATA). With one, --dataset mnist runs a 2,000-image "
            "MNIST subset."
        )
    if s.claims:
        notes.append(POWER_NOTE)
    return notes


def _img_base64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(title: str, sections: Sequence[Section], meta: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (figures inline)."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p class='note'>Morcos, Barrett, Rabinowitz &amp; Botvinick, <i>On the importance of "
        "single directions for generalization</i>, ICLR 2018. Every verdict below is computed "
        "from the measurements in this folder; hover a verdict for its rule.</p>",
    ]
    meta_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in meta.items()
    )
    parts.append(f"<table>{meta_rows}</table>")
    all_claims = [c for s in sections for c in s.claims]
    if len(sections) > 1 and all_claims:
        parts.append("<h2>All claims</h2>" + _claims_html(all_claims))
    for s in sections:
        parts.append(f"<h2 id='{html.escape(s.name)}'>{html.escape(s.title)}</h2>")
        parts.append(f"<p>{html.escape(s.description)}</p>")
        if s.claims:
            parts.append(_claims_html(s.claims))
        for caption, path in s.figures:
            parts.append(
                f"<figure><img alt='{html.escape(caption)}' "
                f"src='data:image/png;base64,{_img_base64(path)}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        for caption, df in s.tables:
            parts.append(f"<h3>{html.escape(caption)}</h3>{_df_html(df)}")
        for note in _section_notes(s):
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
        if s.settings:
            rows = "".join(
                f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                for k, v in s.settings.items()
            )
            parts.append(f"<details><summary>settings</summary><table>{rows}</table></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(
    title: str, sections: Sequence[Section], meta: dict[str, Any], base: Path
) -> str:
    """The report as Markdown; figures are linked relative to ``base`` (the report's folder)."""
    lines = [f"# {title}", ""]
    lines.append(
        "Morcos et al., *On the importance of single directions for generalization*, ICLR "
        "2018. Every verdict is computed from the measurements in this folder."
    )
    lines.append("")
    for k, v in meta.items():
        lines.append(f"- **{k}**: {v}")
    lines.append("")
    all_claims = [c for s in sections for c in s.claims]
    if len(sections) > 1 and all_claims:
        lines += ["## All claims", "", _claims_md(all_claims), ""]
    for s in sections:
        lines += [f"## {s.title}", "", s.description, ""]
        if s.claims:
            lines += [_claims_md(s.claims), ""]
            lines += [f"- {c.claim}: verdict rule: {c.rule}" for c in s.claims if c.rule]
            lines.append("")
        for caption, path in s.figures:
            rel = Path(path).resolve().relative_to(base.resolve()).as_posix()
            lines += [f"![{caption}]({rel})", ""]
        for caption, df in s.tables:
            lines += [f"### {caption}", "", _df_md(df), ""]
        for note in _section_notes(s):
            lines += [f"*{note}*", ""]
        if s.settings:
            lines.append("<details><summary>settings</summary>\n")
            lines += [f"- {k}: {v}" for k, v in s.settings.items()]
            lines += ["", "</details>", ""]
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: Path, title: str, sections: Sequence[Section], meta: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir`` (atomically); return both."""
    out_dir = Path(out_dir)
    html_text = render_html(title, sections, meta)
    md_text = render_markdown(title, sections, meta, out_dir)
    html_path = atomic_write(out_dir / "report.html", lambda t: t.write_text(html_text))
    md_path = atomic_write(out_dir / "report.md", lambda t: t.write_text(md_text))
    return html_path, md_path
