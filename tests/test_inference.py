"""Inference (singledir.inference) against independent references: bootstrap coverage on
simulated data, permutation p-values against SciPy, Holm by hand, verdict logic on
constructed data, power helpers against simulation, same seed same numbers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from singledir.errors import ConfigError, InputError
from singledir.inference import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Interval,
    as_units,
    bootstrap_interval,
    claim_seed,
    holm,
    min_detectable_correlation,
    min_detectable_difference,
    permutation_test_correlation,
    permutation_test_difference,
    permutation_test_mean_correlation,
    sign_flip_test,
    spearman,
    verdict_from_interval,
)


def _mean(v: np.ndarray) -> float:
    return float(np.mean(v))


def _binomial_band(reps: int, level: float = 0.95) -> tuple[float, float]:
    """Coverage counts a correct 95% interval produces with probability 99.9%."""
    lo, hi = sps.binom.ppf([0.0005, 0.9995], reps, level)
    return lo / reps, hi / reps


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_covers_a_normal_mean_about_95_percent(method: str) -> None:
    rng = np.random.default_rng(7)
    reps, n = 400, 40
    hits = 0
    for r in range(reps):
        x = rng.normal(1.5, 2.0, n)
        ci = bootstrap_interval(_mean, [as_units(x)], n_resamples=999, method=method, seed=r)
        hits += ci.low <= 1.5 <= ci.high
    lo, hi = _binomial_band(reps)
    assert lo <= hits / reps <= hi, hits / reps  # measured: 93.5% for both methods


def test_bootstrap_two_groups_and_nested_units_cover() -> None:
    rng = np.random.default_rng(3)
    reps, hits_diff, hits_nested = 300, 0, 0
    for r in range(reps):
        a, b = rng.exponential(1.0, 30), rng.exponential(1.0, 25) + 0.5
        ci = bootstrap_interval(
            lambda x, y: float(x.mean() - y.mean()),
            [as_units(a), as_units(b)],
            n_resamples=999,
            seed=r,
        )
        hits_diff += ci.low <= -0.5 <= ci.high
        # nets with a random effect each and 5 noisy orderings: the mean over nets
        nets = [rng.normal(rng.normal(0.7, 0.05), 0.02, 5) for _ in range(20)]
        ci = bootstrap_interval(_mean, [nets], n_resamples=999, seed=r)
        hits_nested += ci.low <= 0.7 <= ci.high
    lo, hi = _binomial_band(reps)
    # measured 92.3% and 91.7%: the bootstrap runs a little narrow at 20-30 units
    assert lo <= hits_diff / reps <= hi
    assert lo <= hits_nested / reps <= hi


def test_bootstrap_matches_scipy_bca_roughly_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, 60)
    mine = bootstrap_interval(_mean, [as_units(x)], n_resamples=5000, seed=1)
    ref = sps.bootstrap((x,), np.mean, n_resamples=5000, method="BCa", rng=2).confidence_interval
    assert mine.method == "bca"
    assert mine.low == pytest.approx(ref.low, abs=0.05)
    assert mine.high == pytest.approx(ref.high, abs=0.05)
    again = bootstrap_interval(_mean, [as_units(x)], n_resamples=5000, seed=1)
    assert again == mine
    other = bootstrap_interval(_mean, [as_units(x)], n_resamples=5000, seed=2)
    assert other != mine


def test_bootstrap_within_unit_resampling_widens_single_unit_interval() -> None:
    one_net = [np.array([0.6, 0.7, 0.8, 0.65, 0.75])]
    ci = bootstrap_interval(_mean, [one_net], seed=0)
    assert ci.method == "percentile"  # no jackknife over one unit
    assert ci.low < 0.7 < ci.high
    # one value resampled gives no spread: no interval (it used to read [0.7, 0.7])
    fixed = bootstrap_interval(_mean, [one_net], within=False, seed=0)
    assert fixed.method == "none" and math.isnan(fixed.low) and math.isnan(fixed.high)
    assert "no spread" in fixed.note and verdict_from_interval(fixed, 0.0, "greater", 0.0) == (
        INCONCLUSIVE
    )
    few = bootstrap_interval(_mean, [one_net], seed=0, min_units=3, bounds=(0.0, 1.0))
    assert (few.low, few.high, few.method) == (0.0, 1.0, "none") and "fewer than the 3" in (
        few.note
    )
    with pytest.raises(ConfigError, match="method"):
        bootstrap_interval(_mean, [one_net], method="abc")
    with pytest.raises(InputError, match="no units"):
        bootstrap_interval(_mean, [[]])


def test_a_bootstrap_of_three_monotone_nets_has_no_interval() -> None:
    """Spearman's rho over 3 monotone points: every resample with two or more distinct
    points gives -1 (checked by enumerating all 27 resamples), so the bootstrap has no
    spread, and 3 of the 27 resamples (11%) repeat one net: no interval. The claim reports
    the full range [-1, 1] and reads inconclusive from it, not [-1, -1]."""
    from singledir.claims import correlation_claim, difference_claim

    x = np.array([0.0, 0.5, 1.0])
    y = np.array([0.9, 0.7, 0.4])
    seen, single = set(), 0
    for pick in itertools.product(range(3), repeat=3):
        single += len(set(pick)) == 1
        rho = spearman(x[list(pick)], y[list(pick)])
        if math.isfinite(rho):
            seen.add(round(rho, 12))
    assert seen == {-1.0} and single / 27 > 0.025  # the reference: degenerate, thin tails
    rows = [as_units(np.column_stack([x, y]))]
    flat = bootstrap_interval(lambda a: spearman(a[:, 0], a[:, 1]), rows, bounds=(-1.0, 1.0))
    assert (flat.low, flat.high, flat.method) == (-1.0, 1.0, "none")
    assert "every bootstrap resample of the 3 units gives -1" in flat.note
    c = correlation_claim("Fig. 2", "AUC falls", x, y, expect="negative", what="nets", seed=0)
    assert c.ci == [-1.0, 1.0] and c.verdict == INCONCLUSIVE and c.estimate == -1.0
    assert "no 95% CI (3 unit(s) in a group, fewer than the 4" in c.statistic
    assert "shown as the full range [-1.000, 1.000]" in c.statistic
    assert c.detectable_text() == "none at this n" and "nan" not in c.statistic
    # orderings per net make the rows vary (a [-1, -0.87] bootstrap): still no interval
    nested = [np.array([v, v + 0.01, v - 0.01]) for v in y]
    c = correlation_claim("Fig. 2", "AUC falls", x, nested, expect="negative", what="nets")
    assert c.ci == [-1.0, 1.0] and c.verdict == INCONCLUSIVE
    # four nets: an interval again, from the bootstrap
    c4 = correlation_claim(
        "Fig. 2", "AUC falls", [0, 1, 2, 3], [0.9, 0.8, 0.85, 0.3], expect="negative", what="nets"
    )
    assert (
        c4.ci is not None
        and -1.0 <= c4.ci[0] < c4.ci[1] <= 1.0
        and "no 95% CI" not in (c4.statistic)
    )
    # two nets per group: too few for a difference interval (NaN, "no interval")
    d = difference_claim(
        "t", "a > b", [0.9, 0.8], [0.5, 0.4], larger_name="a", smaller_name="b", what="AUC"
    )
    assert d.verdict == INCONCLUSIVE and d.ci is not None and all(math.isnan(v) for v in d.ci)
    assert d.interval_text().endswith("[no interval]") and "fewer than the 4" in d.statistic


@settings(max_examples=12, deadline=None)
@given(st.integers(3, 6), st.integers(0, 10_000), st.sampled_from(["greater", "less", "two-sided"]))
def test_exact_correlation_test_matches_scipy(n: int, seed: int, alternative: str) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = x * rng.uniform(-1, 1) + rng.normal(size=n)
    mine = permutation_test_correlation(x, y, method="spearman", alternative=alternative)
    # one sample permuted against fixed x: n! pairings, enumerated by SciPy too
    ref = sps.permutation_test(
        (y,),
        lambda b: sps.spearmanr(x, b).statistic,
        permutation_type="pairings",
        alternative=alternative,
        n_resamples=9999,
    )
    assert mine.exact
    assert mine.statistic == pytest.approx(sps.spearmanr(x, y).statistic)
    assert mine.p_value == pytest.approx(ref.pvalue, abs=1e-12)
    pear = permutation_test_correlation(x, y, method="pearson", alternative=alternative)
    ref = sps.permutation_test(
        (y,),
        lambda b: sps.pearsonr(x, b).statistic,
        permutation_type="pairings",
        alternative=alternative,
    )
    assert pear.p_value == pytest.approx(ref.pvalue, abs=1e-12)


def test_random_correlation_test_close_to_scipy() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=30)
    y = 0.3 * x + rng.normal(size=30)
    mine = permutation_test_correlation(x, y, alternative="greater", seed=1)
    assert not mine.exact and mine.n_resamples == 9999
    ref = sps.spearmanr(x, y, alternative="greater").pvalue
    # Monte Carlo error of p over 9999 permutations: sd sqrt(p(1-p)/9999) < 0.005
    assert mine.p_value == pytest.approx(ref, abs=0.02)
    assert permutation_test_correlation(x, y, alternative="greater", seed=1) == mine


@settings(max_examples=12, deadline=None)
@given(st.integers(2, 5), st.integers(2, 5), st.integers(0, 10_000))
def test_exact_difference_test_matches_scipy(na: int, nb: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.5, 1, na), rng.normal(0, 1, nb)
    for alternative in ("greater", "less", "two-sided"):
        mine = permutation_test_difference(a, b, alternative=alternative)
        ref = sps.permutation_test(
            (a, b),
            lambda u, v: np.mean(u) - np.mean(v),
            permutation_type="independent",
            alternative=alternative,
            n_resamples=9999,
        )
        assert mine.exact
        assert mine.p_value == pytest.approx(ref.pvalue, abs=1e-12)


@settings(max_examples=12, deadline=None)
@given(st.integers(2, 9), st.integers(0, 10_000))
def test_exact_sign_flip_matches_scipy(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = rng.normal(0.3, 1, n)
    for alternative in ("greater", "less", "two-sided"):
        mine = sign_flip_test(d, alternative=alternative)
        ref = sps.permutation_test(
            (d,),
            np.mean,
            permutation_type="samples",
            alternative=alternative,
            n_resamples=9999,
        )
        assert mine.exact
        assert mine.p_value == pytest.approx(ref.pvalue, abs=1e-12)


def test_random_difference_and_sign_flip_close_to_t_tests() -> None:
    rng = np.random.default_rng(11)
    a, b = rng.normal(0.4, 1, 40), rng.normal(0, 1, 40)
    mine = permutation_test_difference(a, b, alternative="greater", seed=0)
    assert not mine.exact
    ref = sps.ttest_ind(a, b, alternative="greater").pvalue
    assert mine.p_value == pytest.approx(ref, abs=0.02)
    d = rng.normal(0.3, 1, 40)
    mine = sign_flip_test(d, alternative="greater", seed=0)
    ref = sps.ttest_1samp(d, 0, alternative="greater").pvalue
    assert mine.p_value == pytest.approx(ref, abs=0.02)


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.02, 0.03, 0.5 -> 4*0.01, 3*0.02, max(2*0.03, .06), max(0.5, .06)
    adjusted = holm([0.03, 0.5, 0.01, 0.02])
    np.testing.assert_allclose(adjusted, [0.06, 0.5, 0.04, 0.06])
    np.testing.assert_allclose(holm([0.04, 0.6]), [0.08, 0.6])
    np.testing.assert_allclose(holm([0.9, 0.8]), [1.0, 1.0])  # capped at 1, monotone
    out = holm([float("nan"), 0.01])
    assert math.isnan(out[0]) and out[1] == pytest.approx(0.01)
    assert holm([]).size == 0


def test_verdicts_on_constructed_data() -> None:
    rng = np.random.default_rng(2)
    x = np.arange(20, dtype=float)
    cases = {
        "clear": (x + rng.normal(0, 2, 20), HOLDS),
        "opposite": (-x + rng.normal(0, 2, 20), FAILS),
        "noise": (rng.normal(0, 1, 20), INCONCLUSIVE),
    }
    for name, (y, want) in cases.items():
        test = permutation_test_correlation(x, y, alternative="greater", seed=0)
        ci = bootstrap_interval(
            lambda xy: spearman(xy[:, 0], xy[:, 1]),
            [as_units(np.column_stack([x, y]))],
            seed=claim_seed(0, name),
        )
        assert verdict_from_interval(ci, 0.0, "greater", test.p_value) == want, name
    # the rule itself, on intervals
    assert verdict_from_interval(Interval(0.1, 0.5, 0.95, "bca"), 0, "greater", 0.01) == HOLDS
    assert verdict_from_interval([0.1, 0.5], 0, "greater", 0.2) == INCONCLUSIVE  # p too big
    assert verdict_from_interval([-0.5, -0.1], 0, "greater", 0.99) == FAILS
    assert verdict_from_interval([-0.5, -0.1], 0, "less", 0.01) == HOLDS
    assert verdict_from_interval([-0.5, 0.1], 0, "less", 0.01) == INCONCLUSIVE
    assert verdict_from_interval(None, 0, "less", 0.01) == INCONCLUSIVE
    assert verdict_from_interval([float("nan")] * 2, 0, "less", 0.01) == INCONCLUSIVE
    with pytest.raises(ConfigError, match="expected"):
        verdict_from_interval([0, 1], 0, "positive", 0.01)


def test_min_detectable_correlation_against_simulation() -> None:
    n = 16
    crit = min_detectable_correlation(n, power=None, method="pearson")
    # exactly at the critical r the one-sided t-test p equals alpha
    t = crit * math.sqrt((n - 2) / (1 - crit**2))
    assert sps.t.sf(t, n - 2) == pytest.approx(0.05)
    r80 = min_detectable_correlation(n, power=0.8, method="pearson")
    rng = np.random.default_rng(0)
    cov = [[1, r80], [r80, 1]]
    hits = 0
    for _ in range(2000):
        xy = rng.multivariate_normal([0, 0], cov, n)
        hits += sps.pearsonr(xy[:, 0], xy[:, 1], alternative="greater").pvalue < 0.05
    assert 0.76 <= hits / 2000 <= 0.84
    assert math.isnan(min_detectable_correlation(3))
    assert min_detectable_correlation(50) < min_detectable_correlation(10)


def test_min_detectable_difference_against_simulation() -> None:
    delta = min_detectable_difference(1.0, 20, 20)
    rng = np.random.default_rng(1)
    hits = sum(
        sps.ttest_ind(rng.normal(delta, 1, 20), rng.normal(0, 1, 20), alternative="greater").pvalue
        < 0.05
        for _ in range(2000)
    )
    assert 0.75 <= hits / 2000 <= 0.84
    # 3 vs 3 nets: at best p = 1/20 = 0.05, never below 0.05
    assert math.isnan(min_detectable_difference(1.0, 3, 3))
    assert math.isfinite(min_detectable_difference(1.0, 4, 4))
    assert math.isnan(min_detectable_difference(1.0, 4))  # 2^4 sign flips: p >= 1/16
    assert math.isfinite(min_detectable_difference(1.0, 5))


def test_stratified_correlation_test_by_brute_force() -> None:
    rng = np.random.default_rng(4)
    groups = [(rng.normal(size=4), rng.normal(size=4)), (rng.normal(size=3), rng.normal(size=3))]
    groups[0] = (groups[0][0], groups[0][0] + rng.normal(0, 0.5, 4))
    mine = permutation_test_mean_correlation(groups, alternative="greater")
    assert mine.exact and mine.n_resamples == 24 * 6
    observed = np.mean([sps.spearmanr(x, y).statistic for x, y in groups])
    null = [
        np.mean(
            [
                sps.spearmanr(groups[0][0], groups[0][1][list(p0)]).statistic,
                sps.spearmanr(groups[1][0], groups[1][1][list(p1)]).statistic,
            ]
        )
        for p0 in itertools.permutations(range(4))
        for p1 in itertools.permutations(range(3))
    ]
    assert mine.statistic == pytest.approx(observed)
    assert mine.p_value == pytest.approx(np.mean(np.array(null) >= observed - 1e-12))
    one = permutation_test_mean_correlation(groups[:1], alternative="less")
    assert one.p_value == pytest.approx(
        permutation_test_correlation(*groups[0], alternative="less").p_value
    )
