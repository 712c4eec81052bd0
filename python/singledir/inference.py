"""Statistical inference for the paper's claims: bootstrap intervals, permutation tests,
Holm's correction, verdicts from intervals, and the smallest effect a design can detect.

Units
-----
Every claim is about *independent units* (nets, seeds, hyper-parameter settings). A sample
here is a sequence of units; each unit is an array of one or more replicate rows (e.g. the
AUC of each random ordering of one net), and the unit's value is the mean of its rows. The
bootstrap resamples units with replacement and, with ``within=True``, the rows of each chosen
unit too (orderings resampled within a net). Two independent groups are two samples; paired
measurements are columns of one sample.

No interval where the bootstrap cannot give one
-----------------------------------------------
A sample with fewer units than ``min_units``, or a bootstrap distribution with no spread
over fewer than :data:`MIN_UNITS` units (as Spearman's rho over 3 monotone points always
gives), claims a certainty it does not have: :func:`bootstrap_interval` then reports the
full range the statistic can take (``bounds``, e.g. ``(-1, 1)`` for a correlation) or,
without bounds, NaN, with the reason in ``Interval.note``; either way the verdict reads
inconclusive. With :data:`MIN_UNITS` or more units and no spread (rho over 6 monotone nets
is -1 in every resample) the interval is that point, with a note saying so: the exact
permutation p then says how strong the evidence is.

Verdicts (:func:`verdict_from_interval`)
---------------------------------------
``holds`` when the interval excludes the null value on the expected side and p < alpha;
``does not hold`` when it excludes the null on the other side; otherwise ``inconclusive``.

Every random draw comes from ``numpy.random.default_rng(seed)``: same seed, same numbers.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from singledir.errors import ConfigError, InputError

__all__ = [
    "HOLDS",
    "FAILS",
    "INCONCLUSIVE",
    "Interval",
    "MIN_UNITS",
    "TestResult",
    "claim_seed",
    "as_units",
    "bootstrap_interval",
    "pearson",
    "spearman",
    "permutation_test_correlation",
    "permutation_test_difference",
    "permutation_test_mean_correlation",
    "sign_flip_test",
    "holm",
    "verdict_from_interval",
    "min_detectable_correlation",
    "min_detectable_difference",
    "smallest_p",
]

HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive"
ALTERNATIVES = ("greater", "less", "two-sided")
N_BOOTSTRAP = 2000
# Fewest units per group behind a claim's 95% bootstrap interval: with n units a share
# n^(1-n) of the resamples repeat one unit (11% for n = 3), more than the 2.5% each tail
# of the interval holds, so below 4 the interval's ends are set by such degenerate draws.
MIN_UNITS = 4
N_PERMUTATIONS = 9999

Units = Sequence[Any]  # one sample: a sequence of units, each an array of replicate rows


@dataclass(frozen=True)
class Interval:
    """A confidence interval: ``[low, high]`` at ``level`` by ``method``; ``note`` says why
    there is no bootstrap interval (``method`` ``"none"``: the full range or NaN)."""

    low: float
    high: float
    level: float
    method: str
    note: str = ""

    def as_list(self) -> list[float]:
        return [self.low, self.high]

    @property
    def informative(self) -> bool:
        """A bootstrap interval (not the full range or NaN standing in for one)."""
        return self.method != "none"


@dataclass(frozen=True)
class TestResult:
    """A test's observed statistic and p-value; ``exact`` when every permutation (or sign
    assignment) was enumerated, else ``n_resamples`` random ones."""

    statistic: float
    p_value: float
    alternative: str
    exact: bool
    n_resamples: int
    test: str


def claim_seed(base: int, key: str) -> int:
    """A resampling seed derived from ``base`` (the experiment's seed) and a stable name of
    the claim, so that each claim has its own stream and the same folder gives the same
    numbers."""
    return (int(base) * 1_000_003 + zlib.crc32(key.encode("utf-8"))) % (2**32)


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ConfigError(
            f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}"
        )


def as_units(values: Any) -> list[np.ndarray]:
    """Units of one replicate row each from a 1-D ``(n,)`` or 2-D ``(n, k)`` array."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise InputError(f"values must be 1-D or 2-D, got shape {a.shape}")
    return [row[None, :] for row in a]


def _unit_rows(sample: Units) -> tuple[np.ndarray, np.ndarray]:
    """Replicate rows padded to ``(n_units, max_rows, k)`` and the row count of each unit."""
    units = [np.asarray(u, dtype=np.float64) for u in sample]
    units = [u.reshape(-1, 1) if u.ndim < 2 else u for u in units]
    if not units:
        raise InputError("a sample has no units: every group needs at least one measurement")
    k = units[0].shape[1]
    if any(u.shape[1] != k or u.shape[0] == 0 for u in units):
        raise InputError("every unit needs at least one row, all with the same columns")
    counts = np.array([u.shape[0] for u in units], dtype=np.int64)
    padded = np.zeros((len(units), int(counts.max()), k), dtype=np.float64)
    for i, u in enumerate(units):
        padded[i, : u.shape[0]] = u
    return padded, counts


def _unit_means(padded: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return padded.sum(axis=1) / counts[:, None]


def _squeeze(values: np.ndarray) -> np.ndarray:
    return values[..., 0] if values.shape[-1] == 1 else values


def bootstrap_interval(
    statistic: Callable[..., float],
    samples: Sequence[Units],
    *,
    within: bool = True,
    n_resamples: int = N_BOOTSTRAP,
    level: float = 0.95,
    method: str = "bca",
    seed: int = 0,
    bounds: tuple[float, float] | None = None,
    min_units: int = 1,
) -> Interval:
    """Bootstrap confidence interval of ``statistic(*unit_values)``.

    Parameters
    ----------
    statistic:
        Called with one array per sample: the unit values, ``(n_units,)`` for one column or
        ``(n_units, k)``; returns a float (NaN resamples are dropped).
    samples:
        One or more independent samples (groups), each a sequence of units; a unit is an
        array of replicate rows (``(m,)`` or ``(m, k)``) whose mean is the unit's value.
        Use :func:`as_units` for plain per-unit values.
    within:
        Also resample the rows within each chosen unit (orderings within a net).
    method:
        ``"bca"`` (bias-corrected and accelerated, jackknife over units; falls back to the
        percentile interval when a sample has a single unit) or ``"percentile"``.
    bounds:
        The range the statistic can take (``(-1, 1)`` for a correlation): the interval
        reported when the bootstrap cannot give one (NaN without bounds).
    min_units:
        Fewest units a sample needs for an interval (claims across nets ask for
        :data:`MIN_UNITS`); with fewer, no bootstrap is run. A bootstrap distribution with
        no spread gives no interval either. Both cases have ``method="none"`` and a note.
    """
    if method not in ("bca", "percentile"):
        raise ConfigError(f"method must be 'bca' or 'percentile', got {method!r}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must lie in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    data = [_unit_rows(s) for s in samples]
    means = [_unit_means(p, c) for p, c in data]

    def no_interval(why: str) -> Interval:
        low, high = (float("nan"), float("nan")) if bounds is None else bounds
        return Interval(float(low), float(high), level, "none", why)

    fewest = min(m.shape[0] for m in means)
    if fewest < min_units:
        return no_interval(
            f"{fewest} unit(s) in a group, fewer than the {min_units} a bootstrap interval "
            f"needs: {100 * fewest ** (1 - fewest):.0f}% of resamples would repeat one unit"
        )
    estimate = float(statistic(*[_squeeze(m) for m in means]))
    draws = []
    for padded, counts in data:
        n_units, max_rows, _ = padded.shape
        pick = rng.integers(0, n_units, size=(n_resamples, n_units))
        if within and max_rows > 1:
            rows = np.floor(rng.random((n_resamples, n_units, max_rows)) * counts[pick][..., None])
            rows = rows.astype(np.int64)
            valid = np.arange(max_rows)[None, None, :] < counts[pick][..., None]
            chosen = padded[pick[..., None], rows]  # (R, n, max_rows, k)
            chosen = np.where(valid[..., None], chosen, 0.0)
            draws.append(chosen.sum(axis=2) / counts[pick][..., None])
        else:
            draws.append(_unit_means(padded, counts)[pick])
    boot = np.array(
        [float(statistic(*[_squeeze(d[r]) for d in draws])) for r in range(n_resamples)]
    )
    boot = boot[np.isfinite(boot)]
    if boot.size == 0 or not math.isfinite(estimate):
        return no_interval("the statistic is undefined on the resamples")
    if np.ptp(boot) == 0:
        units = sum(m.shape[0] for m in means)
        if fewest < MIN_UNITS:
            return no_interval(
                f"every bootstrap resample of the {units} units gives {float(boot[0]):.3g}: "
                "no spread to make an interval from"
            )
        # Enough units, and every resample agrees (e.g. Spearman's rho over 6 monotone
        # nets is -1 in every resample): the bootstrap's own answer is that point. Reporting
        # no interval here would turn the strongest evidence (exact p = 1/720) into
        # "inconclusive"; the note keeps the zero width visible to the reader.
        value = float(boot[0])
        return Interval(
            value,
            value,
            level,
            "percentile",
            f"every bootstrap resample of the {units} units gives {value:.3g}",
        )
    tail = (1.0 - level) / 2.0
    lo_q, hi_q = tail, 1.0 - tail
    used = method
    if method == "bca":
        if any(m.shape[0] < 2 for m in means):
            used = "percentile"
        else:
            below = (np.sum(boot < estimate) + np.sum(boot <= estimate)) / (2.0 * boot.size)
            z0 = float(ndtri(np.clip(below, 1.0 / boot.size, 1.0 - 1.0 / boot.size)))
            num, den = 0.0, 0.0
            for j, m in enumerate(means):
                jack = []
                for i in range(m.shape[0]):
                    args = [_squeeze(x) for x in means]
                    args[j] = _squeeze(np.delete(m, i, axis=0))
                    jack.append(float(statistic(*args)))
                theta = np.asarray(jack)
                theta = theta[np.isfinite(theta)]
                if theta.size < 2:
                    continue
                u = (theta.size - 1) * (theta.mean() - theta)
                num += float(np.sum(u**3)) / theta.size**3
                den += float(np.sum(u**2)) / theta.size**2
            accel = num / (6.0 * den**1.5) if den > 0 else 0.0
            z_lo, z_hi = float(ndtri(tail)), float(ndtri(1.0 - tail))
            lo_bca = float(ndtr(z0 + (z0 + z_lo) / (1.0 - accel * (z0 + z_lo))))
            hi_bca = float(ndtr(z0 + (z0 + z_hi) / (1.0 - accel * (z0 + z_hi))))
            if lo_bca < hi_bca:  # a large acceleration (few units) can fold the interval
                lo_q, hi_q = lo_bca, hi_bca
            else:
                used = "percentile"
    low, high = np.quantile(boot, [lo_q, hi_q])
    return Interval(float(low), float(high), level, used)


# ------------------------------------------------------------------------------ statistics
def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return np.asarray(rankdata(a, axis=-1), dtype=np.float64)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of ``x`` (n,) with every row of ``y`` (R, n)."""
    xc = x - x.mean()
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt(np.sum(xc**2) * np.sum(yc**2, axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (yc @ xc) / np.where(den > 0, den, 1.0), np.nan)


def pearson(x: Any, y: Any) -> float:
    """Pearson's r (NaN when either side is constant or n < 2)."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.size < 2:
        return float("nan")
    return float(_pearson_rows(xa, ya[None, :])[0])


def spearman(x: Any, y: Any) -> float:
    """Spearman's rho (Pearson r of average ranks; NaN when a side is constant)."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.size < 2:
        return float("nan")
    return pearson(_ranks(xa), _ranks(ya))


def _p_value(
    observed: float, null: np.ndarray, alternative: str, exact: bool, scale: float = 0.0
) -> float:
    # SciPy's convention: a relative tolerance for ties with the observed value, and +1 in
    # numerator and denominator for random permutations (the observed one counts). The
    # tolerance also scales with the data (``scale``) so that arrangements tied in exact
    # arithmetic stay tied after rounding.
    gamma = np.finfo(np.float64).eps * 100 * max(abs(observed), scale)
    adjust = 0 if exact else 1
    n = null.size
    less = (np.sum(null <= observed + gamma) + adjust) / (n + adjust)
    greater = (np.sum(null >= observed - gamma) + adjust) / (n + adjust)
    if alternative == "less":
        return float(less)
    if alternative == "greater":
        return float(greater)
    return float(min(1.0, 2.0 * min(less, greater)))


def permutation_test_correlation(
    x: Any,
    y: Any,
    *,
    method: str = "spearman",
    alternative: str = "two-sided",
    n_resamples: int = N_PERMUTATIONS,
    seed: int = 0,
) -> TestResult:
    """Permutation test of no association: ``y`` is permuted against ``x``; exact (all n!
    pairings) when n! <= ``n_resamples`` (SciPy's ``permutation_type="pairings"``)."""
    _check_alternative(alternative)
    if method not in ("spearman", "pearson"):
        raise ConfigError(f"method must be 'spearman' or 'pearson', got {method!r}")
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise InputError(f"x and y must be 1-D of the same length, got {xa.shape}, {ya.shape}")
    n = xa.size
    if method == "spearman":
        xa, ya = _ranks(xa), _ranks(ya)
    observed = float(_pearson_rows(xa, ya[None, :])[0]) if n >= 2 else float("nan")
    name = f"{'Spearman' if method == 'spearman' else 'Pearson'} permutation test"
    if not math.isfinite(observed):
        return TestResult(observed, float("nan"), alternative, True, 0, name)
    exact = math.factorial(n) <= n_resamples
    if exact:
        perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        perms = rng.permuted(np.tile(np.arange(n), (n_resamples, 1)), axis=1)
    null = _pearson_rows(xa, ya[perms])
    p = _p_value(observed, null, alternative, exact, 1.0)
    return TestResult(observed, p, alternative, exact, int(perms.shape[0]), name)


def permutation_test_mean_correlation(
    groups: Sequence[tuple[Any, Any]],
    *,
    method: str = "spearman",
    alternative: str = "two-sided",
    n_resamples: int = N_PERMUTATIONS,
    seed: int = 0,
) -> TestResult:
    """Stratified permutation test of the mean over groups (e.g. seeds) of the correlation
    of ``x`` with ``y`` within each group: ``y`` is permuted within every group. Exact when
    the product of the groups' n! is at most ``n_resamples``. With one group it is
    :func:`permutation_test_correlation`."""
    _check_alternative(alternative)
    prepared = []
    for x, y in groups:
        xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if method == "spearman":
            xa, ya = _ranks(xa), _ranks(ya)
        prepared.append((xa, ya))
    name = f"stratified {method} permutation test"
    if not prepared:
        return TestResult(float("nan"), float("nan"), alternative, True, 0, name)
    observed = float(np.mean([_pearson_rows(x, y[None, :])[0] for x, y in prepared]))
    if not math.isfinite(observed):
        return TestResult(observed, float("nan"), alternative, True, 0, name)
    total = math.prod(math.factorial(x.size) for x, _ in prepared)
    exact = total <= n_resamples
    rng = np.random.default_rng(seed)
    null = np.zeros(total if exact else n_resamples)
    if exact:
        per_group = [np.array(list(itertools.permutations(range(x.size)))) for x, _ in prepared]
        for i, combo in enumerate(itertools.product(*[range(len(p)) for p in per_group])):
            null[i] = np.mean(
                [
                    _pearson_rows(x, y[per_group[g][c]][None, :])[0]
                    for g, ((x, y), c) in enumerate(zip(prepared, combo, strict=True))
                ]
            )
    else:
        parts = []
        for x, y in prepared:
            perms = rng.permuted(np.tile(np.arange(x.size), (n_resamples, 1)), axis=1)
            parts.append(_pearson_rows(x, y[perms]))
        null = np.mean(parts, axis=0)
    p = _p_value(observed, null, alternative, exact, 1.0)
    return TestResult(observed, p, alternative, exact, int(null.size), name)


def permutation_test_difference(
    a: Any,
    b: Any,
    *,
    alternative: str = "two-sided",
    n_resamples: int = N_PERMUTATIONS,
    seed: int = 0,
) -> TestResult:
    """Two independent groups: permutation test of ``mean(a) - mean(b)``; exact (every
    split) when C(n_a + n_b, n_a) <= ``n_resamples`` (SciPy's ``"independent"``)."""
    _check_alternative(alternative)
    aa, bb = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if aa.size == 0 or bb.size == 0:
        raise InputError("both groups need at least one value for a difference test")
    pooled = np.concatenate([aa, bb])
    n, na = pooled.size, aa.size
    total = pooled.sum()
    # the observed split computed like the null ones below, so rounding cannot untie it
    observed = float(aa.sum() / na - (total - aa.sum()) / (n - na))
    exact = math.comb(n, na) <= n_resamples
    if exact:
        masks = np.zeros((math.comb(n, na), n), dtype=bool)
        for i, idx in enumerate(itertools.combinations(range(n), na)):
            masks[i, list(idx)] = True
    else:
        rng = np.random.default_rng(seed)
        order = rng.permuted(np.tile(np.arange(n), (n_resamples, 1)), axis=1)
        masks = np.zeros((n_resamples, n), dtype=bool)
        np.put_along_axis(masks, order[:, :na], True, axis=1)
    sum_a = masks.astype(np.float64) @ pooled
    null = sum_a / na - (total - sum_a) / (n - na)
    p = _p_value(observed, null, alternative, exact, float(np.abs(pooled).max()))
    return TestResult(
        observed, p, alternative, exact, int(masks.shape[0]), "two-group permutation test"
    )


def sign_flip_test(
    d: Any,
    *,
    alternative: str = "two-sided",
    n_resamples: int = N_PERMUTATIONS,
    seed: int = 0,
) -> TestResult:
    """Paired differences ``d``: permutation (sign-flip) test of ``mean(d) = 0``; exact
    (all 2^n sign assignments) when 2^n <= ``n_resamples`` (SciPy's ``"samples"``)."""
    _check_alternative(alternative)
    da = np.asarray(d, dtype=np.float64).ravel()
    if da.size == 0:
        raise InputError("no paired differences to test")
    n = da.size
    observed = float(np.ones(n) @ da / n)  # computed like the null ones below
    exact = 2**n <= n_resamples
    if exact:
        signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1)
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice([-1.0, 1.0], size=(n_resamples, n))
    null = signs @ da / n
    p = _p_value(observed, null, alternative, exact, float(np.abs(da).max()))
    return TestResult(
        observed, p, alternative, exact, int(signs.shape[0]), "paired sign-flip permutation test"
    )


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given; NaN stays NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def verdict_from_interval(
    ci: Interval | Sequence[float] | None,
    null: float,
    expected: str,
    p: float | None,
    *,
    alpha: float = 0.05,
) -> str:
    """``holds`` when ``ci`` excludes ``null`` on the ``expected`` side (``"greater"``:
    low > null; ``"less"``: high < null) and ``p < alpha``; ``does not hold`` when it
    excludes ``null`` on the other side; otherwise (or without an interval)
    ``inconclusive``."""
    if expected not in ("greater", "less"):
        raise ConfigError(f"expected must be 'greater' or 'less', got {expected!r}")
    if ci is None:
        return INCONCLUSIVE
    low, high = (ci.low, ci.high) if isinstance(ci, Interval) else (ci[0], ci[1])
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    above, below = low > null, high < null
    significant = p is not None and math.isfinite(p) and p < alpha
    if expected == "greater":
        return HOLDS if above and significant else FAILS if below else INCONCLUSIVE
    return HOLDS if below and significant else FAILS if above else INCONCLUSIVE


# ----------------------------------------------------------------------------------- power
def smallest_p(n_arrangements: int, one_sided: bool = True) -> float:
    """The smallest p-value an exact permutation test over ``n_arrangements`` equally
    likely arrangements can give (``1 / n_arrangements``, doubled when two-sided)."""
    base = 1.0 / max(1, int(n_arrangements))
    return base if one_sided else min(1.0, 2.0 * base)


def min_detectable_correlation(
    n: int, *, alpha: float = 0.05, power: float | None = 0.8, method: str = "spearman"
) -> float:
    """The smallest |correlation| a one-sided test at ``alpha`` detects over ``n`` units.

    With ``power=None``: the smallest |r| that is significant at all (the critical value of
    the t statistic ``r sqrt((n - 2) / (1 - r^2))``). With a power: the |r| detected with
    that probability (Fisher z; Spearman's variance inflated by 1.06, Fieller et al. 1957).
    NaN when no correlation can be significant (n < 4, or n! arrangements too few).
    """
    from scipy.stats import t as student_t

    if n < 4 or math.factorial(n) * alpha < 1.0:
        return float("nan")
    if power is None:
        tc = float(student_t.ppf(1.0 - alpha, n - 2))
        return tc / math.sqrt(n - 2 + tc**2)
    inflate = 1.06 if method == "spearman" else 1.0
    z = (float(ndtri(1.0 - alpha)) + float(ndtri(power))) * math.sqrt(inflate / (n - 3))
    return math.tanh(z)


def min_detectable_difference(
    sd: float,
    n_a: int,
    n_b: int | None = None,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """The smallest mean difference a one-sided test at ``alpha`` detects with ``power``
    (normal approximation): two independent groups of ``n_a`` and ``n_b`` units with
    standard deviation ``sd``, or, with ``n_b=None``, the mean of ``n_a`` paired
    differences. NaN when the exact permutation test cannot reach ``alpha`` at all
    (too few arrangements) or sd is unknown."""
    if not math.isfinite(sd) or n_a < 1 or (n_b is not None and n_b < 1):
        return float("nan")
    arrangements = 2**n_a if n_b is None else math.comb(n_a + n_b, n_a)
    if smallest_p(arrangements) >= alpha:
        return float("nan")
    spread = math.sqrt(1.0 / n_a) if n_b is None else math.sqrt(1.0 / n_a + 1.0 / n_b)
    return (float(ndtri(1.0 - alpha)) + float(ndtri(power))) * sd * spread
