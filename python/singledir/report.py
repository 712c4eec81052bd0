"""Reports that put each claim of the paper beside what was measured.

A report is a list of :class:`Section` (one per experiment), each with its figures (PNG
files), small tables, and :class:`Claim` rows: the paper's claim, the statistic measured
here, and a verdict computed from the data by the experiment (``holds``, ``does not hold``
or ``inconclusive`` when there are too few points). :func:`write_report` renders them as a
self-contained HTML file (figures inline as base64 PNG) and as Markdown (figures linked).

Helpers here turn measurements into verdicts the same way everywhere:
:func:`correlation_claim` (sign of a Spearman correlation), :func:`compare_claim` (one mean
larger than another).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

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
    "compare_claim",
    "verdict_of",
    "fmt",
]

HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive"


@dataclass
class Claim:
    """One claim of the paper and what was measured about it.

    Attributes
    ----------
    figure:
        Where the paper makes it (``"Fig. 2"``).
    claim:
        The claim, in words.
    statistic:
        The measured statistic in words, e.g. ``"Spearman rho = -0.94 over 6 fractions"``.
    verdict:
        :data:`HOLDS`, :data:`FAILS` or :data:`INCONCLUSIVE`, computed from the data.
    value:
        The statistic's number (for tests and machine-readable summaries).
    rule:
        The rule that turned the statistic into the verdict.
    """

    figure: str
    claim: str
    statistic: str
    verdict: str
    value: float | None = None
    rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "claim": self.claim,
            "statistic": self.statistic,
            "verdict": self.verdict,
            "value": self.value,
            "rule": self.rule,
        }


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


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a report: fixed digits, ``nan`` spelled out, ints as ints."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int | np.integer):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "nan"
    if f != 0 and (abs(f) < 10 ** (-digits) or abs(f) >= 1e5):
        return f"{f:.{digits}g}"
    return f"{f:.{digits}f}"


def verdict_of(ok: bool | None) -> str:
    """:data:`HOLDS` for True, :data:`FAILS` for False, :data:`INCONCLUSIVE` for None."""
    if ok is None:
        return INCONCLUSIVE
    return HOLDS if ok else FAILS


def correlations(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict:
    """Pearson r and Spearman rho of ``x`` and ``y`` (NaN when undefined) and the count,
    computed by :func:`singledir.stats.score_correlations`."""
    from singledir.stats import score_correlations

    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    n = int(xa.size)
    if n < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return {"pearson": float("nan"), "spearman": float("nan"), "n": n}
    df = score_correlations(xa, ya)
    row = df.row(0, named=True)
    return {"pearson": float(row["pearson"]), "spearman": float(row["spearman"]), "n": n}


def correlation_claim(
    figure: str,
    claim: str,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    expect: str,
    what: str,
    min_points: int = 3,
) -> Claim:
    """A claim that ``y`` rises (``expect="positive"``) or falls (``"negative"``) with ``x``.

    The verdict holds when Spearman's rho has the expected sign and ``|rho| >= 0.3`` over at
    least ``min_points`` points; it is inconclusive with fewer points or a constant series.
    """
    c = correlations(x, y)
    rho, r, n = c["spearman"], c["pearson"], c["n"]
    stat = f"Spearman rho = {fmt(rho, 2)}, Pearson r = {fmt(r, 2)} over {n} {what}"
    if n < min_points or math.isnan(rho):
        ok: bool | None = None
    elif expect == "negative":
        ok = rho <= -0.3
    elif expect == "positive":
        ok = rho >= 0.3
    else:
        raise ValueError(f"expect must be 'positive' or 'negative', got {expect!r}")
    sign = "<= -0.3" if expect == "negative" else ">= 0.3"
    return Claim(
        figure=figure,
        claim=claim,
        statistic=stat,
        verdict=verdict_of(ok),
        value=None if math.isnan(rho) else rho,
        rule=f"holds when Spearman rho {sign} with at least {min_points} points",
    )


def compare_claim(
    figure: str,
    claim: str,
    larger: Sequence[float] | np.ndarray,
    smaller: Sequence[float] | np.ndarray,
    *,
    larger_name: str,
    smaller_name: str,
    what: str,
) -> Claim:
    """A claim that the values in ``larger`` exceed those in ``smaller`` on average.

    Reports both means and the probability that a random value of ``larger`` exceeds one of
    ``smaller`` (ties count half: the common-language effect size, P). Holds when the mean of
    ``larger`` is higher and P > 0.5.
    """
    a = np.asarray(larger, dtype=np.float64)
    b = np.asarray(smaller, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return Claim(figure, claim, f"no {what} measured", INCONCLUSIVE, None, "")
    p = float(((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])).mean())
    ma, mb = float(a.mean()), float(b.mean())
    stat = (
        f"mean {what} {fmt(ma)} ({larger_name}, n={a.size}) vs {fmt(mb)} "
        f"({smaller_name}, n={b.size}); P({larger_name} > {smaller_name}) = {fmt(p, 2)}"
    )
    return Claim(
        figure=figure,
        claim=claim,
        statistic=stat,
        verdict=verdict_of(ma > mb and p > 0.5),
        value=ma - mb,
        rule=f"holds when the mean is higher for {larger_name} and P > 0.5",
    )


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
            f"<td class='{_verdict_class(c.verdict)}' title='{html.escape(c.rule)}'>"
            f"{html.escape(c.verdict)}</td></tr>"
        )
    return (
        "<table><tr><th>paper</th><th>claim</th><th>measured here</th><th>verdict</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _claims_md(claims: Sequence[Claim]) -> str:
    lines = ["| paper | claim | measured here | verdict |", "|---|---|---|---|"]
    for c in claims:
        lines.append(
            f"| {c.figure} | {c.claim} | {c.statistic} | **{c.verdict}** |".replace("\n", " ")
        )
    return "\n".join(lines)


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
        for note in s.notes:
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
        for note in s.notes:
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
