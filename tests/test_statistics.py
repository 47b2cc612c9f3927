"""The statistics a reviewer asks for, each against an independent reference: binomial intervals and
McNemar against scipy.stats, DeLong against an O(n^2) placement-value implementation and a hand example,
the bootstrap's new replicates (partial AUC, ECE, Brier, re-chosen operating points, ROC heights, paired
draws, grouped sums) against explicitly resampled data sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats
from sklearn import metrics as skm

from hierclf.evaluation import metrics as hm

# --- binomial intervals -----------------------------------------------------------------------------------

COUNTS = [(0, 5), (5, 5), (6, 6), (0, 1), (1, 1), (1, 2), (3, 7), (1, 37), (12, 100), (99, 100), (1, 1000)]
COUNTS += [(500, 1000), (0, 100_000), (3, 100_000), (50_000, 100_000), (99_999, 100_000)]


@pytest.mark.parametrize(("k", "n"), COUNTS)
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_clopper_pearson_equals_scipy(k: int, n: int, level: float) -> None:
    low, high = hm.clopper_pearson(k, n, level)
    ref = stats.binomtest(k, n).proportion_ci(level, method="exact")
    # scipy's beta quantile is accurate to about 1e-6 in the far tail (k = 1, n = 1e5); our bound solves the
    # defining equation with scipy's own incomplete beta function to scipy's accuracy there (about 1e-9)
    assert float(low) == pytest.approx(ref.low, rel=2e-6, abs=1e-15)
    assert float(high) == pytest.approx(ref.high, rel=2e-6, abs=1e-15)
    alpha = 1 - level
    if k > 0:
        assert special.betainc(k, n - k + 1, float(low)) == pytest.approx(alpha / 2, rel=1e-8)
    if k < n:
        assert special.betainc(k + 1, n - k, float(high)) == pytest.approx(1 - alpha / 2, rel=1e-8)


@pytest.mark.parametrize(("k", "n"), COUNTS)
@pytest.mark.parametrize("level", [0.9, 0.95])
def test_wilson_equals_scipy(k: int, n: int, level: float) -> None:
    low, high = hm.wilson(k, n, level)
    ref = stats.binomtest(k, n).proportion_ci(level, method="wilson")
    assert float(low) == pytest.approx(ref.low, abs=1e-12)
    assert float(high) == pytest.approx(ref.high, abs=1e-12)


def test_small_n_intervals_do_not_collapse() -> None:
    """6 of 6 melanomas caught: the percentile bootstrap says [1, 1]; the exact interval does not."""
    low, high = hm.clopper_pearson(6, 6)
    assert float(low) == pytest.approx(0.025 ** (1 / 6)) and float(high) == 1.0  # (alpha/2)^(1/n)
    low, high = hm.clopper_pearson(0, 5)
    assert float(low) == 0.0 and float(high) == pytest.approx(1 - 0.025 ** (1 / 5))
    boot = hm.bootstrap_binary(np.r_[np.ones(6), np.zeros(6)], np.r_[np.ones(6), np.zeros(6)], threshold=0.5)
    assert boot["sensitivity"].low == boot["sensitivity"].high == 1.0  # the collapse this fixes


def test_real_valued_counts_follow_the_beta_quantiles() -> None:
    k, n = np.array([2.4, 0.0, 7.5]), np.array([5.2, 3.3, 7.5])
    low, high = hm.clopper_pearson(k, n, 0.95)
    assert low[0] == pytest.approx(stats.beta.ppf(0.025, 2.4, 5.2 - 2.4 + 1), rel=1e-9)
    assert high[0] == pytest.approx(stats.beta.ppf(0.975, 3.4, 5.2 - 2.4), rel=1e-9)
    assert low[1] == 0.0 and high[2] == 1.0
    assert high[1] == pytest.approx(stats.beta.ppf(0.975, 1.0, 3.3), rel=1e-9)


def test_incomplete_beta_equals_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b, x = rng.uniform(0.05, 3e4, 200), rng.uniform(0.05, 3e4, 200), rng.random(200)
    np.testing.assert_allclose(hm.regularized_incomplete_beta(a, b, x), special.betainc(a, b, x), atol=1e-12)
    assert hm.regularized_incomplete_beta(2.0, 3.0, [0.0, 1.0]).tolist() == [0.0, 1.0]
    # the beta function itself stays exact at large arguments: B(1, b) = 1 / b, B(2, b) = 1 / (b (b + 1))
    from hierclf.evaluation.metrics.intervals import _log_beta

    b = np.array([150.0, 1e5, 1e7])
    np.testing.assert_allclose(_log_beta(np.ones(3), b), -np.log(b), rtol=1e-15)
    np.testing.assert_allclose(_log_beta(2 * np.ones(3), b), -np.log(b * (b + 1)), rtol=1e-15)


def test_interval_errors() -> None:
    with pytest.raises(hm.MetricError, match="0 <= k <= n"):
        hm.clopper_pearson(4, 3)
    with pytest.raises(hm.MetricError, match="level"):
        hm.wilson(1, 3, 1.5)
    assert all(math.isnan(float(v)) for v in hm.clopper_pearson(0, 0))


# --- clustered (effective) counts -------------------------------------------------------------------------


def test_effective_counts_without_clusters_are_the_counts() -> None:
    y = np.array([1, 0, 1, 1, 0, 1, 1])
    for groups in (None, np.arange(7)):
        c = hm.effective_counts(y, groups)
        assert (c.k, c.n, c.k_eff, c.n_eff, c.design_effect) == (5.0, 7.0, 5.0, 7.0, 1.0)


def test_effective_counts_equal_the_design_effect_by_hand() -> None:
    """Two lesions with all images caught, one with none: the ratio estimator's cluster variance by hand."""
    y = np.array([1, 1, 1, 0, 0, 0, 1, 1, 0, 1])
    g = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    c = hm.effective_counts(y, g)
    p = 6 / 10
    k_g, n_g = np.array([3, 0, 2, 1]), np.array([3, 3, 2, 2])
    v = 4 / 3 * np.sum((k_g - p * n_g) ** 2) / 100
    deff = v / (p * (1 - p) / 9)
    assert c.design_effect == pytest.approx(max(1.0, deff))
    assert c.n_eff == pytest.approx(10 / c.design_effect) and c.k_eff == pytest.approx(p * c.n_eff)
    assert c.n_clusters == 4
    # all caught: the variance says nothing; every lesion counts once
    six = hm.effective_counts(np.ones(6), [0, 0, 1, 1, 2, 2])
    assert (six.k_eff, six.n_eff) == (3.0, 3.0)


# --- bootstrap p-values -----------------------------------------------------------------------------------


def test_bootstrap_p_value_matches_its_definition() -> None:
    rng = np.random.default_rng(1)
    t = rng.normal(0.3, 0.2, 999)
    below, above = (t <= 0).sum(), (t >= 0).sum()
    want = min(1.0, 2 * min(1 + below, 1 + above) / 1000)
    assert hm.bootstrap_p_value(t, 0.0) == pytest.approx(want)
    assert hm.bootstrap_p_value(np.r_[t, np.nan], 0.0) == pytest.approx(want)  # NaN replicates ignored
    assert hm.bootstrap_p_value(t, 0.3) > 0.5
    assert math.isnan(hm.bootstrap_p_value([np.nan]))


# --- McNemar ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_mcnemar_exact_equals_scipy_binomtest(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    truth = rng.random(n) < 0.5
    first = np.where(rng.random(n) < 0.8, truth, ~truth)
    second = np.where(rng.random(n) < 0.7, truth, ~truth)
    r = hm.mcnemar_exact(truth, first, second)
    b = int(((first == truth) & (second != truth)).sum())
    c = int(((first != truth) & (second == truth)).sum())
    assert (r.first_only, r.second_only) == (b, c)
    want = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    assert r.p_value == pytest.approx(want, rel=1e-10)


def test_clustered_mcnemar_without_clusters_is_the_chi_square_mcnemar() -> None:
    rng = np.random.default_rng(4)
    truth = np.ones(300, bool)
    first, second = rng.random(300) < 0.8, rng.random(300) < 0.7
    r = hm.clustered_mcnemar(truth, first, second, np.arange(300))
    b, c = r.first_only, r.second_only
    assert r.p_value == pytest.approx(stats.chi2.sf((b - c) ** 2 / (b + c), 1), rel=1e-10)
    # the same decisions in clusters of 5 images that agree: the evidence is 5 times thinner
    grouped = hm.clustered_mcnemar(
        np.repeat(truth[:60], 5), np.repeat(first[:60], 5), np.repeat(second[:60], 5), np.arange(300) // 5
    )
    single = hm.mcnemar_exact(truth[:60], first[:60], second[:60])
    assert grouped.p_value == pytest.approx(
        stats.chi2.sf(
            (single.first_only - single.second_only) ** 2 / (single.first_only + single.second_only), 1
        )
    )
    assert hm.clustered_mcnemar(truth, first, first, np.arange(300)).p_value == 1.0


# --- DeLong -------------------------------------------------------------------------------------------------


def _placements_brute(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """O(n^2): psi over every (positive, negative) pair, for each score vector."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    v10, v01 = [], []
    for row in s:
        psi = (row[pos][:, None] > row[neg][None, :]) + 0.5 * (row[pos][:, None] == row[neg][None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    return np.array(v10).mean(axis=1), np.array(v10), np.array(v01)


def _delong_brute(y: np.ndarray, s: np.ndarray, groups: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    auc, v10, v01 = _placements_brute(y, s)
    pos, neg = y == 1, y == 0
    m, n = pos.sum(), neg.sum()
    if groups is None:
        return auc, np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    k = s.shape[0]
    s10, s01, s11 = np.zeros((k, k)), np.zeros((k, k)), np.zeros((k, k))
    clusters = np.unique(groups)
    i10 = sum(bool((groups[pos] == g).any()) for g in clusters)
    i01 = sum(bool((groups[neg] == g).any()) for g in clusters)
    for g in clusters:  # Obuchowski (1997), cluster by cluster
        a = v10[:, groups[pos] == g].sum(axis=1) - (groups[pos] == g).sum() * auc
        b = v01[:, groups[neg] == g].sum(axis=1) - (groups[neg] == g).sum() * auc
        s10, s01, s11 = s10 + np.outer(a, a), s01 + np.outer(b, b), s11 + np.outer(a, b)
    i = len(clusters)
    s10, s01, s11 = s10 * i10 / ((i10 - 1) * m), s01 * i01 / ((i01 - 1) * n), s11 * i / (i - 1)
    return auc, s10 / m + s01 / n + (s11 + s11.T) / (m * n)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [None, 1])
def test_delong_covariance_equals_quadratic_placements(seed: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    n = 150
    y = (rng.random(n) < 0.35).astype(int)
    y[:2] = [0, 1]
    s = np.stack([y + rng.normal(size=n), 0.5 * y + rng.normal(size=n), rng.normal(size=n)])
    if decimals is not None:
        s = np.round(s, decimals)  # ties within and across classes
    auc, cov = hm.delong_covariance(y, s)
    ref_auc, ref_cov = _delong_brute(y, s)
    np.testing.assert_allclose(auc, ref_auc, atol=1e-14)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-15)
    np.testing.assert_allclose(auc, [skm.roc_auc_score(y, row) for row in s], atol=1e-14)
    groups = rng.integers(0, 50, n)
    auc_c, cov_c = hm.delong_covariance(y, s, groups)
    _, ref_c = _delong_brute(y, s, groups)
    np.testing.assert_allclose(cov_c, ref_c, atol=1e-15)
    # one case per cluster is DeLong's estimator
    np.testing.assert_allclose(hm.delong_covariance(y, s, np.arange(n))[1], cov, atol=1e-15)


def test_delong_hand_example() -> None:
    """Three positives, three negatives, two models.

    Model A: positives 0.9, 0.8, 0.3; negatives 0.4, 0.2, 0.1. Positive placements (fraction of negatives
    below): 1, 1, 2/3; negative placements (fraction of positives above): 2/3, 1, 1; AUC_A = 8/9.
    Model B: positives 0.6, 0.5, 0.4; negatives 0.7, 0.3, 0.2: placements 2/3, 2/3, 2/3 and 0, 1, 1;
    AUC_B = 2/3. Covariances over positives: var(A) = 1/27, var(B) = 0, cov = 0; over negatives:
    var(A) = 1/27, var(B) = 1/3, cov(A, B) = 1/9. With m = n = 3:
    var(AUC_A - AUC_B) = (1/27 + 0 - 0) / 3 + (1/27 + 1/3 - 2/9) / 3 = 1/81 + 4/81 = 5/81.
    """
    y = np.array([1, 1, 1, 0, 0, 0])
    s = np.array([[0.9, 0.8, 0.3, 0.4, 0.2, 0.1], [0.6, 0.5, 0.4, 0.7, 0.3, 0.2]])
    r = hm.delong_test(y, s)
    assert r.auc.tolist() == pytest.approx([8 / 9, 2 / 3])
    assert r.difference == pytest.approx(2 / 9)
    assert r.std_error == pytest.approx(math.sqrt(5 / 81))
    assert r.z == pytest.approx((2 / 9) / math.sqrt(5 / 81))
    assert r.p_value == pytest.approx(2 * stats.norm.sf(r.z))
    assert r.ci[0] == pytest.approx(2 / 9 - stats.norm.ppf(0.975) * math.sqrt(5 / 81))


def test_delong_contrasts_and_errors() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(200) < 0.4).astype(int)
    s = np.stack([y + rng.normal(size=200) for _ in range(4)])
    auc, cov = hm.delong_covariance(y, s)
    mean_diff = np.array([0.5, 0.5, -0.5, -0.5])  # two seeds of A against two seeds of B
    r = hm.delong_test(y, s, mean_diff)
    assert r.difference == pytest.approx(mean_diff @ auc)
    assert r.std_error == pytest.approx(math.sqrt(mean_diff @ cov @ mean_diff))
    assert hm.delong_test(y, s[[0, 0]]).p_value == 1.0  # a model against itself
    with pytest.raises(hm.MetricError, match="2\\+ positives"):
        hm.delong_test([1, 0, 0], [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    with pytest.raises(hm.MetricError, match="contrast"):
        hm.delong_test(y, s, [1, -1])


def test_midranks_equal_scipy_rankdata() -> None:
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=(3, 500)), 1)
    np.testing.assert_array_equal(hm.midranks(x), stats.rankdata(x, axis=1))


# --- new bootstrap replicates against explicitly resampled data ------------------------------------------


def _resampled(y: np.ndarray, s: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.repeat(np.arange(len(y)), counts)
    return y[idx], s[idx]


QUERIES = hm.CurveQueries(
    partial_auc_above=0.8,
    calibration_bins=6,
    sensitivities=(0.3, 0.9, 1.0),
    specificities=(0.5, 0.95, 1.0),
    false_positive_rates=(0.0, 0.1, 0.5, 1.0),
)


def _check_replicate(
    res: hm.BootstrapResult, k: int, yk: np.ndarray, sk: np.ndarray, q: hm.CurveQueries
) -> None:
    assert q.partial_auc_above is not None and q.calibration_bins is not None
    pauc = hm.partial_auc_above_sensitivity(yk, sk, q.partial_auc_above)
    assert res["partial_auc"].replicates[k] == pytest.approx(pauc, abs=1e-12)
    assert res["ece"].replicates[k] == pytest.approx(
        hm.expected_calibration_error(yk, sk, q.calibration_bins), abs=1e-12
    )
    assert res["brier"].replicates[k] == pytest.approx(skm.brier_score_loss(yk, sk), abs=1e-12)
    for i, t in enumerate(q.sensitivities):
        spec = hm.specificity_at_sensitivity(yk, sk, t)[0]
        assert res.per_target["specificity_at_sensitivities"][i].replicates[k] == pytest.approx(
            spec, abs=1e-12
        )
    for i, p in enumerate(q.specificities):
        sens = hm.sensitivity_at_specificity(yk, sk, p)[0]
        assert res.per_target["sensitivity_at_specificities"][i].replicates[k] == pytest.approx(
            sens, abs=1e-12
        )
    fpr, tpr, _ = hm.roc_curve(yk, sk)
    heights = hm.roc_polyline_height(fpr, tpr, np.asarray(q.false_positive_rates))
    for i in range(len(q.false_positive_rates)):
        assert res.per_target["roc_height"][i].replicates[k] == pytest.approx(heights[i], abs=1e-12)


@pytest.mark.parametrize("decimals", [None, 1])
def test_curve_queries_equal_explicit_resampling(decimals: int | None) -> None:
    rng = np.random.default_rng(8)
    n = 400
    y = rng.random(n) < 0.3
    s = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    if decimals is not None:
        s = np.round(s, decimals)
    groups = rng.integers(0, 120, n)
    res = hm.bootstrap_binary(y, s, groups, n_replicates=30, seed=5, queries=QUERIES, chunk_size=7)
    counts = np.concatenate(list(hm.grouped_bootstrap_counts(groups, 30, seed=5)))
    for k in range(30):
        _check_replicate(res, k, *_resampled(y, s, counts[k]), QUERIES)
    # the points are the unweighted functions on the full data
    assert res["partial_auc"].point == hm.partial_auc_above_sensitivity(y, s, 0.8)
    assert res["ece"].point == hm.expected_calibration_error(y, s, 6)
    # the queries add numbers; they change none of the others
    plain = hm.bootstrap_binary(y, s, groups, n_replicates=30, seed=5)
    for key, est in plain.estimates.items():
        np.testing.assert_array_equal(res[key].replicates, est.replicates)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(2, 30),
    n_groups=st.integers(1, 8),
    m=st.sampled_from([0.0, 0.2, 0.5, 0.9]),
    spec=st.floats(0.05, 1.0),
    fpr=st.floats(0.0, 1.0),
)
def test_curve_queries_property(
    data: st.DataObject, n: int, n_groups: int, m: float, spec: float, fpr: float
) -> None:
    """Small data with heavy ties: every query of every replicate equals its resampled data set's."""
    y = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if y.all() or not y.any():
        y[0] = not y[0]
    s = np.asarray(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=float) / 4
    groups = np.asarray(data.draw(st.lists(st.integers(0, n_groups - 1), min_size=n, max_size=n)))
    q = hm.CurveQueries(m, 3, (spec,), (spec,), (fpr,))
    res = hm.bootstrap_binary(
        y, s, groups, n_replicates=6, seed=2, queries=q, chunk_size=4, warn_missing=False
    )
    counts = np.concatenate(list(hm.grouped_bootstrap_counts(groups, 6, seed=2)))
    for k in range(6):
        yk, sk = _resampled(y, s, counts[k])
        if yk.all() or not yk.any():
            assert math.isnan(res["partial_auc"].replicates[k])
            continue
        _check_replicate(res, k, yk, sk, q)


def test_paired_bootstrap_uses_the_same_draws_for_every_model() -> None:
    """Replicate r of model A and of model B resample the same groups: their difference equals the
    difference of scikit-learn's AUCs on the one resampled data set."""
    rng = np.random.default_rng(9)
    n = 300
    y = rng.random(n) < 0.4
    a, b = y + rng.normal(size=n), 0.6 * y + rng.normal(size=n)
    groups = rng.integers(0, 90, n)
    res_a, res_b = hm.paired_bootstrap_binary(
        y, np.stack([a, b]), groups, n_replicates=25, seed=3, thresholds=[0.2, 0.1], chunk_size=6
    )
    alone = hm.bootstrap_binary(y, b, groups, n_replicates=25, seed=3, threshold=0.1)
    for key, est in alone.estimates.items():
        np.testing.assert_array_equal(res_b[key].replicates, est.replicates)
    counts = np.concatenate(list(hm.grouped_bootstrap_counts(groups, 25, seed=3)))
    diff = res_a["auc"].replicates - res_b["auc"].replicates
    for k in range(25):
        idx = np.repeat(np.arange(n), counts[k])
        want = skm.roc_auc_score(y[idx], a[idx]) - skm.roc_auc_score(y[idx], b[idx])
        assert diff[k] == pytest.approx(want, abs=1e-12)
        sens_a = skm.recall_score(y[idx], a[idx] >= 0.2)
        assert res_a["sensitivity"].replicates[k] == pytest.approx(sens_a, abs=1e-12)


def test_bootstrap_sums_equal_explicit_resampling() -> None:
    rng = np.random.default_rng(10)
    n = 200
    cols = rng.random((n, 3))
    groups = rng.integers(0, 60, n)
    sums = hm.bootstrap_sums(cols, groups, 20, seed=4, chunk_size=3)
    counts = np.concatenate(list(hm.grouped_bootstrap_counts(groups, 20, seed=4)))
    np.testing.assert_allclose(sums, counts @ cols, rtol=1e-12)


def test_sensitivity_at_specificity_equals_a_threshold_loop() -> None:
    rng = np.random.default_rng(11)
    y = rng.random(80) < 0.5
    s = np.round(rng.random(80), 1)
    for p in (0.1, 0.5, 0.8, 1.0):
        best = 0.0
        for t in np.r_[np.unique(s), np.inf]:  # every threshold of the rule score >= t
            called = s >= t
            if 1 - (called & ~y).sum() / (~y).sum() >= p:
                best = max(best, (called & y).sum() / y.sum())
        assert hm.sensitivity_at_specificity(y, s, p)[0] == pytest.approx(best)


def test_curve_query_errors() -> None:
    y, s = np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.4, 1.4])
    with pytest.raises(hm.MetricError, match="probabilities"):
        hm.bootstrap_binary(y, s, n_replicates=3, queries=hm.CurveQueries(calibration_bins=5))
    with pytest.raises(hm.MetricError, match="partial_auc_above"):
        hm.bootstrap_binary(y, s, n_replicates=3, queries=hm.CurveQueries(partial_auc_above=1.0))
    with pytest.raises(hm.MetricError, match="thresholds"):
        hm.paired_bootstrap_binary(y, np.stack([s, s]), n_replicates=3, thresholds=[0.5])


def test_macro_auc_replicates_equal_explicit_resampling() -> None:
    rng = np.random.default_rng(12)
    n, c = 300, 4
    y = rng.integers(0, c, n)
    y[y == 3] = 0  # class 3 is rare: two samples
    y[:2] = 3
    probs = rng.dirichlet(np.ones(c), size=n)
    probs[np.arange(n), y] += 0.3
    groups = rng.integers(0, 100, n)
    reps = hm.bootstrap_macro_auc(y, probs, groups, n_replicates=30, seed=6, chunk_size=7)
    counts = np.concatenate(list(hm.grouped_bootstrap_counts(groups, 30, seed=6)))
    for k in range(30):
        idx = np.repeat(np.arange(n), counts[k])
        if len(np.unique(y[idx])) < 2:
            assert math.isnan(reps[k])
            continue
        assert reps[k] == pytest.approx(hm.macro_ovr_auc(y[idx], probs[idx]), abs=1e-12)


def test_subset_bootstrap_replicates_equal_explicit_resampling() -> None:
    """Two subsets of one data set from one draw of the whole set's groups."""
    rng = np.random.default_rng(13)
    n = 300
    y = rng.random(n) < 0.4
    s = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    groups = rng.integers(0, 100, n)
    inside = rng.random(n) < 0.3
    a, b = hm.subset_bootstrap_binary(
        y, s, groups, np.stack([inside, ~inside]), n_replicates=20, seed=4, threshold=0.5
    )
    counts = np.concatenate(list(hm.grouped_bootstrap_counts(groups, 20, seed=4)))
    for k in range(20):
        idx = np.repeat(np.arange(n), counts[k])
        i, o = idx[inside[idx]], idx[~inside[idx]]
        if y[i].all() or not y[i].any():
            assert math.isnan(a["auc"].replicates[k])
            continue
        assert a["auc"].replicates[k] - b["auc"].replicates[k] == pytest.approx(
            skm.roc_auc_score(y[i], s[i]) - skm.roc_auc_score(y[o], s[o]), abs=1e-12
        )
    none = hm.subset_bootstrap_binary(y, s, groups, np.stack([y, inside]), n_replicates=5)
    assert none[0] is None and none[1] is not None  # a subset without negatives
