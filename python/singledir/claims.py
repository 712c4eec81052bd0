"""Claims of the paper with their uncertainty: the :class:`Claim` record and the builders
that fill it from measurements, the same way in every experiment (on
:mod:`singledir.inference`).

- :func:`correlation_claim`: a Spearman (or Pearson) correlation against 0 across units.
- :func:`difference_claim` (alias ``compare_claim``): one group's mean above another's.
- :func:`mean_claim`: a mean (e.g. of paired differences) against a null value.
- :func:`combine_claims`: several comparisons that must all hold, Holm's correction.

Each fills the estimate, a 95% BCa bootstrap interval over the independent units (nets,
seeds, settings; replicates such as orderings resampled within a unit), a one-sided
permutation p-value, n, the null value, the expected side, the smallest effect the design
detects with 80% power, and the resampling seed; the verdict follows from the interval
(:func:`singledir.inference.verdict_from_interval`). Example::

    from singledir.claims import correlation_claim
    c = correlation_claim("Fig. 2", "AUC falls with corruption", fractions, auc_per_net,
                          expect="negative", what="nets", seed=0)
    c.verdict, c.estimate, c.ci, c.p_value
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from singledir.inference import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MIN_UNITS,
    N_BOOTSTRAP,
    N_PERMUTATIONS,
    Interval,
    bootstrap_interval,
    holm,
    min_detectable_correlation,
    min_detectable_difference,
    pearson,
    permutation_test_correlation,
    permutation_test_difference,
    sign_flip_test,
    spearman,
    verdict_from_interval,
)

__all__ = [
    "HOLDS",
    "FAILS",
    "INCONCLUSIVE",
    "ALPHA",
    "POWER",
    "Claim",
    "fmt",
    "verdict_of",
    "correlations",
    "correlation_claim",
    "difference_claim",
    "compare_claim",
    "mean_claim",
    "combine_claims",
]

ALPHA = 0.05
POWER = 0.8
NO_POWER = "none at this n"
NO_INTERVAL_RULE = (
    f"; with fewer than {MIN_UNITS} units in a group there is no interval (the full range or "
    "n/a is shown) and the claim is inconclusive; with more, a bootstrap whose resamples all "
    "give one value has that point as its interval (said in the statistic)"
)


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
        What was measured, in words, e.g. ``"Spearman rho = -0.94 [95% CI -1.00, -0.60],
        p = 0.001 over 6 nets"``.
    verdict:
        :data:`HOLDS`, :data:`FAILS` or :data:`INCONCLUSIVE`, computed from the data.
    value:
        The statistic's number (for tests and machine-readable summaries; = ``estimate``
        for the claims built here).
    rule:
        The rule that turned the measurements into the verdict.
    estimate, ci, ci_level:
        The estimate and its interval ``[low, high]`` at ``ci_level`` (0.95).
    p_value, test:
        The p-value (one-sided, on the expected side; Holm-adjusted where several
        comparisons are combined) and the test that gave it.
    n:
        Independent units (nets, seeds, settings) behind the estimate.
    null, expected:
        The value of no effect and the side the paper expects (``"greater"``/``"less"``).
    detectable:
        The smallest effect (same scale as ``estimate``, distance from ``null``) this design
        detects with 80% power at alpha 0.05; NaN/None when it cannot detect any.
    seed, n_resamples:
        Seed and size of the bootstrap (the permutations use the same seed).
    """

    figure: str
    claim: str
    statistic: str
    verdict: str
    value: float | None = None
    rule: str = ""
    estimate: float | None = None
    ci: list[float] | None = None
    ci_level: float | None = None
    p_value: float | None = None
    n: int | None = None
    null: float | None = None
    expected: str | None = None
    test: str = ""
    detectable: float | None = None
    seed: int | None = None
    n_resamples: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (NaN becomes None)."""
        return {
            "figure": self.figure,
            "claim": self.claim,
            "statistic": self.statistic,
            "verdict": self.verdict,
            "value": _finite_or_none(self.value),
            "rule": self.rule,
            "estimate": _finite_or_none(self.estimate),
            "ci": None if self.ci is None else [_finite_or_none(v) for v in self.ci],
            "ci_level": self.ci_level,
            "p_value": _finite_or_none(self.p_value),
            "n": self.n,
            "null": self.null,
            "expected": self.expected,
            "test": self.test,
            "detectable": _finite_or_none(self.detectable),
            "seed": self.seed,
            "n_resamples": self.n_resamples,
        }

    def brief(self) -> str:
        """``estimate [low, high], p = ...`` for figure annotations."""
        if self.estimate is None or self.ci is None:
            return self.statistic.split(";")[0]
        low, high = fmt(self.ci[0], 2), fmt(self.ci[1], 2)
        return f"{fmt(self.estimate, 2)} [{low}, {high}], p = {fmt(self.p_value, 3)}"

    def interval_text(self) -> str:
        """``estimate [low, high]`` for tables (empty without an estimate; ``[no interval]``
        where the bootstrap could not give one)."""
        if self.estimate is None or self.ci is None:
            return ""
        if not all(v is not None and math.isfinite(float(v)) for v in self.ci):
            return f"{fmt(self.estimate)} [no interval]"
        return f"{fmt(self.estimate)} [{fmt(self.ci[0])}, {fmt(self.ci[1])}]"

    def detectable_text(self) -> str:
        """The detectable effect for tables: ``none at this n`` when no effect can reach
        significance with this many units."""
        return NO_POWER if _finite_or_none(self.detectable) is None else fmt(self.detectable)


def _finite_or_none(v: Any) -> Any:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


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


def _units(values: Any) -> list[np.ndarray]:
    """Per-unit replicate arrays from scalars (one replicate each) or sequences of arrays."""
    out = []
    for v in values:
        a = np.asarray(v, dtype=np.float64).ravel()
        out.append(a[np.isfinite(a)])
    return out


def _expected_side(expect: str) -> str:
    sides = {"negative": "less", "less": "less", "positive": "greater", "greater": "greater"}
    if expect not in sides:
        raise ValueError(
            f"expect must be 'negative'/'less' or 'positive'/'greater', got {expect!r}"
        )
    return sides[expect]


def _p_text(p: float, test: str, exact: bool) -> str:
    kind = "exact" if exact else "random permutations"
    return f"one-sided p = {fmt(p, 3)} ({test}, {kind})"


def _ci_text(ci: Interval) -> str:
    level = f"{fmt(ci.level * 100, 0)}%"
    if not ci.informative:
        shown = (
            f", shown as the full range [{fmt(ci.low, 3)}, {fmt(ci.high, 3)}]"
            if math.isfinite(ci.low) and math.isfinite(ci.high)
            else ""
        )
        return f"no {level} CI ({ci.note}){shown}"
    note = f"; {ci.note}" if ci.note else ""
    return f"{level} CI [{fmt(ci.low, 3)}, {fmt(ci.high, 3)}]{note}"


def _power_text(detectable: float, what: str) -> str:
    if not math.isfinite(detectable):
        return f"this design cannot detect any {what} at p < {ALPHA}"
    return f"smallest {what} detected with {fmt(POWER * 100, 0)}% power: {fmt(detectable, 3)}"


def correlation_claim(
    figure: str,
    claim: str,
    x: Sequence[float] | np.ndarray,
    y: Sequence[Any] | np.ndarray,
    *,
    expect: str,
    what: str,
    method: str = "spearman",
    min_points: int = 3,
    seed: int = 0,
    n_resamples: int = N_BOOTSTRAP,
    replicates: str = "orderings",
) -> Claim:
    """A claim that ``y`` rises (``expect="positive"``/``"greater"``) or falls
    (``"negative"``/``"less"``) with ``x`` across independent units (nets, settings).

    ``y`` holds one value per unit, or one array per unit (its ``replicates``, e.g. the AUC
    of each ordering: the unit's value is their mean, and the bootstrap resamples them
    within the unit). Estimate: Spearman's rho (or Pearson's r) of ``x`` with the unit
    values; interval: BCa bootstrap over units; p: one-sided permutation test (exact for up
    to 7 units). Inconclusive with fewer than ``min_points`` units or a constant series.
    """
    side = _expected_side(expect)
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    corr = spearman if method == "spearman" else pearson
    name = "Spearman rho" if method == "spearman" else "Pearson r"
    xa = np.asarray(x, dtype=np.float64)
    units = _units(y)
    means = np.array([u.mean() if u.size else np.nan for u in units])
    ok = np.isfinite(xa) & np.isfinite(means)
    xa, means = xa[ok], means[ok]
    units = [u for u, keep in zip(units, ok, strict=True) if keep]
    n = int(xa.size)
    nested = any(u.size > 1 for u in units)
    within = f", {replicates} resampled within each" if nested else ""
    rule = (
        f"holds when the 95% bootstrap interval (BCa; units: {what}{within}) of {name} lies "
        f"{'below' if side == 'less' else 'above'} 0 and the one-sided permutation p < "
        f"{ALPHA}; does not hold when it lies on the other side of 0; otherwise (or with "
        f"fewer than {min_points} {what}) inconclusive" + NO_INTERVAL_RULE
    )
    detectable = min_detectable_correlation(n, alpha=ALPHA, power=POWER, method=method)
    base = Claim(
        figure,
        claim,
        "",
        INCONCLUSIVE,
        rule=rule,
        n=n,
        null=0.0,
        expected=side,
        test=f"{method} permutation test",
        detectable=detectable,
        seed=seed,
        n_resamples=n_resamples,
        ci_level=0.95,
    )
    if n < min_points or np.ptp(xa) == 0 or np.ptp(means) == 0:
        base.statistic = f"{name} undefined over {n} {what} (too few or constant)"
        return base
    rho = corr(xa, means)
    other = pearson(xa, means) if method == "spearman" else spearman(xa, means)
    test = permutation_test_correlation(
        xa, means, method=method, alternative=side, n_resamples=N_PERMUTATIONS, seed=seed
    )
    rows = [np.column_stack([np.full(u.size, xi), u]) for xi, u in zip(xa, units, strict=True)]
    ci = bootstrap_interval(
        lambda a: corr(a[:, 0], a[:, 1]),
        [rows],
        n_resamples=n_resamples,
        seed=seed,
        bounds=(-1.0, 1.0),
        min_units=MIN_UNITS,
    )
    other_name = "Pearson r" if method == "spearman" else "Spearman rho"
    base.statistic = (
        f"{name} = {fmt(rho, 2)} ({_ci_text(ci)}; "
        f"{_p_text(test.p_value, 'permutation', test.exact)}), "
        f"{other_name} = {fmt(other, 2)} over {n} {what}; "
        + _power_text(detectable, f"|{name.split()[-1]}|")
    )
    base.value = base.estimate = rho
    base.ci = ci.as_list()
    base.p_value = test.p_value
    base.verdict = verdict_from_interval(ci, 0.0, side, test.p_value, alpha=ALPHA)
    return base


def difference_claim(
    figure: str,
    claim: str,
    larger: Sequence[Any] | np.ndarray,
    smaller: Sequence[Any] | np.ndarray,
    *,
    larger_name: str,
    smaller_name: str,
    what: str,
    units: str = "nets",
    replicates: str = "orderings",
    seed: int = 0,
    n_resamples: int = N_BOOTSTRAP,
) -> Claim:
    """A claim that units of group ``larger`` have a higher mean than those of ``smaller``.

    Each group is a sequence of units (nets): one value each, or one array of replicates
    each (its mean is the unit's value; the bootstrap resamples them within the unit).
    Estimate: difference of the groups' means of unit values; interval: BCa bootstrap over
    units of each group; p: one-sided two-group permutation test over units (exact when
    there are at most 9,999 splits). Also reports P(a unit of ``larger`` > one of
    ``smaller``), ties counting half.
    """
    ua, ub = _units(larger), _units(smaller)
    ua, ub = [u for u in ua if u.size], [u for u in ub if u.size]
    rule = (
        f"holds when the 95% bootstrap interval (BCa; units: {units}"
        f"{f', {replicates} resampled within each' if any(u.size > 1 for u in ua + ub) else ''}) "
        f"of mean({larger_name}) - mean({smaller_name}) lies above 0 and the one-sided "
        f"permutation p < {ALPHA}; does not hold when it lies below 0; otherwise inconclusive"
        + NO_INTERVAL_RULE
    )
    base = Claim(
        figure,
        claim,
        f"no {what} measured",
        INCONCLUSIVE,
        rule=rule,
        n=len(ua) + len(ub),
        null=0.0,
        expected="greater",
        test="two-group permutation test",
        seed=seed,
        n_resamples=n_resamples,
        ci_level=0.95,
    )
    if not ua or not ub:
        return base
    a = np.array([u.mean() for u in ua])
    b = np.array([u.mean() for u in ub])
    wins = float(((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])).mean())
    estimate = float(a.mean() - b.mean())
    test = permutation_test_difference(
        a, b, alternative="greater", n_resamples=N_PERMUTATIONS, seed=seed
    )
    ci = bootstrap_interval(
        lambda x, y: float(x.mean() - y.mean()),
        [ua, ub],
        n_resamples=n_resamples,
        seed=seed,
        min_units=MIN_UNITS,
    )
    if a.size + b.size > 2:
        sd = float(
            np.sqrt(
                (np.sum((a - a.mean()) ** 2) + np.sum((b - b.mean()) ** 2))
                / max(1, a.size + b.size - 2)
            )
        )
    else:
        sd = float("nan")
    detectable = min_detectable_difference(sd, a.size, b.size, alpha=ALPHA, power=POWER)
    base.statistic = (
        f"mean {what} {fmt(a.mean())} ({larger_name}, n={a.size}) vs {fmt(b.mean())} "
        f"({smaller_name}, n={b.size}): difference {fmt(estimate)} ({_ci_text(ci)}; "
        f"{_p_text(test.p_value, 'permutation', test.exact)}); "
        f"P({larger_name} > {smaller_name}) = {fmt(wins, 2)}; "
        + _power_text(detectable, "difference")
    )
    base.value = base.estimate = estimate
    base.ci = ci.as_list()
    base.p_value = test.p_value
    base.detectable = detectable
    base.verdict = verdict_from_interval(ci, 0.0, "greater", test.p_value, alpha=ALPHA)
    return base


compare_claim = difference_claim


def mean_claim(
    figure: str,
    claim: str,
    values: Sequence[Any] | np.ndarray,
    *,
    expect: str,
    what: str,
    null: float = 0.0,
    units: str = "nets",
    replicates: str = "orderings",
    seed: int = 0,
    n_resamples: int = N_BOOTSTRAP,
) -> Claim:
    """A claim that the mean of ``values`` (one per unit, or one array of replicates per
    unit, e.g. paired differences) lies above (``expect="greater"``) or below (``"less"``)
    ``null``. Estimate: mean of unit values; interval: BCa bootstrap over units; p:
    one-sided sign-flip permutation test of ``value - null`` over units (exact up to 13
    units)."""
    side = _expected_side(expect)
    us = [u for u in _units(values) if u.size]
    nested = any(u.size > 1 for u in us)
    rule = (
        f"holds when the 95% bootstrap interval (BCa; units: {units}"
        f"{f', {replicates} resampled within each' if nested else ''}) of the mean {what} "
        f"lies {'above' if side == 'greater' else 'below'} {fmt(null)} and the one-sided "
        f"sign-flip p < {ALPHA}; does not hold when it lies on the other side; otherwise "
        "inconclusive" + NO_INTERVAL_RULE
    )
    base = Claim(
        figure,
        claim,
        f"no {what} measured",
        INCONCLUSIVE,
        rule=rule,
        n=len(us),
        null=float(null),
        expected=side,
        test="paired sign-flip permutation test",
        seed=seed,
        n_resamples=n_resamples,
        ci_level=0.95,
    )
    if not us:
        return base
    m = np.array([u.mean() for u in us])
    estimate = float(m.mean())
    test = sign_flip_test(m - null, alternative=side, n_resamples=N_PERMUTATIONS, seed=seed)
    ci = bootstrap_interval(
        lambda v: float(v.mean()), [us], n_resamples=n_resamples, seed=seed, min_units=MIN_UNITS
    )
    sd = float(m.std(ddof=1)) if m.size > 1 else float("nan")
    detectable = min_detectable_difference(sd, m.size, alpha=ALPHA, power=POWER)
    base.statistic = (
        f"mean {what} {fmt(estimate)} ({_ci_text(ci)}; "
        f"{_p_text(test.p_value, 'sign-flip', test.exact)}) over {m.size} {units}; "
        + _power_text(detectable, f"shift from {fmt(null)}")
    )
    base.value = base.estimate = estimate
    base.ci = ci.as_list()
    base.p_value = test.p_value
    base.detectable = detectable
    base.verdict = verdict_from_interval(ci, float(null), side, test.p_value, alpha=ALPHA)
    return base


def combine_claims(
    figure: str, claim: str, parts: Sequence[tuple[str, Claim]], *, what: str
) -> Claim:
    """One claim from several comparisons (``(label, claim)`` pairs, e.g. one per dropout
    rate or layer) that must all hold: p-values Holm-adjusted over the parts, each part's
    verdict redone with its adjusted p; holds when every part holds, does not hold when any
    part's interval lies on the wrong side, otherwise inconclusive. Estimate, interval and
    n are those of the part with the weakest evidence (largest adjusted p)."""
    rule = (
        f"Holm's correction over the {len(parts)} {what}: each holds when its 95% interval "
        f"lies on the expected side of its null and its Holm-adjusted p < {ALPHA}; the claim "
        "holds when every one holds, does not hold when any interval lies on the other side, "
        "otherwise inconclusive"
    )
    if not parts:
        return Claim(figure, claim, f"no {what} measured", INCONCLUSIVE, rule=rule)
    raw = [np.nan if c.p_value is None else c.p_value for _, c in parts]
    adjusted = holm(raw)
    verdicts = []
    texts = []
    for (label, c), p_adj in zip(parts, adjusted, strict=True):
        v = INCONCLUSIVE
        if c.ci is not None and c.null is not None and c.expected is not None:
            v = verdict_from_interval(c.ci, c.null, c.expected, float(p_adj), alpha=ALPHA)
        verdicts.append(v)
        texts.append(f"{label}: {c.interval_text() or 'n/a'}, Holm p = {fmt(p_adj, 3)} ({v})")
    if FAILS in verdicts:
        verdict = FAILS
    elif all(v == HOLDS for v in verdicts):
        verdict = HOLDS
    else:
        verdict = INCONCLUSIVE
    order = np.where(np.isfinite(adjusted), adjusted, np.inf)
    weakest = int(np.argmax(order))
    w = parts[weakest][1]
    return Claim(
        figure,
        claim,
        "; ".join(texts) + f" (estimate [95% CI] per {what.rstrip('s')})",
        verdict,
        value=w.estimate,
        rule=rule,
        estimate=w.estimate,
        ci=w.ci,
        ci_level=w.ci_level,
        p_value=None if not np.isfinite(order[weakest]) else float(adjusted[weakest]),
        n=w.n,
        null=w.null,
        expected=w.expected,
        test=f"{w.test}, Holm over {len(parts)} {what}",
        detectable=w.detectable,
        seed=w.seed,
        n_resamples=w.n_resamples,
    )
