"""Operating-point rules, predictive values at a prevalence and decision curves against independent
references: a brute-force search over every threshold, Bayes' rule by hand, net benefit counted by hand and
the ``dcurves`` package (a test-only dependency; skipped where absent), explicit resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hierclf.evaluation.metrics import operating_points as op
from hierclf.evaluation.metrics.checks import MetricError
from hierclf.evaluation.metrics.resampling import grouped_bootstrap_counts


def _candidates(s: np.ndarray) -> list[float]:
    """Every threshold of the rule ``score >= t``: each distinct score, and 'nobody' above the largest."""
    return [*np.unique(s).tolist(), float(np.nextafter(s.max(), math.inf))]


def _rates(y: np.ndarray, s: np.ndarray, t: float, w: np.ndarray) -> tuple[float, float]:
    called = s >= t
    pos = y == 1
    return float(w[called & pos].sum() / w[pos].sum()), float(w[~called & ~pos].sum() / w[~pos].sum())


def _brute_specificity(y: np.ndarray, s: np.ndarray, target: float, w: np.ndarray | None = None) -> float:
    w = np.ones_like(s) if w is None else w
    keep = w > 0
    ok = [t for t in _candidates(s[keep]) if _rates(y, s, t, w)[1] >= target]
    return min(ok)


def _brute_cost(
    y: np.ndarray, s: np.ndarray, c_fn: float, c_fp: float, prev: float, w: np.ndarray | None = None
) -> float:
    w = np.ones_like(s) if w is None else w
    keep = w > 0
    best, best_t = math.inf, math.nan
    for t in sorted(_candidates(s[keep]), reverse=True):  # ties: the later, lower threshold wins
        sens, spec = _rates(y, s, t, w)
        cost = prev * c_fn * (1 - sens) + (1 - prev) * c_fp * (1 - spec)
        if cost <= best:
            best, best_t = cost, t
    return best_t


def _data(seed: int, n: int = 80, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    y[:2] = [0, 1]
    s = 1 / (1 + np.exp(-(1.2 * y + rng.normal(size=n))))
    return y, (np.round(s, 1) if ties else s)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_threshold_at_specificity_is_the_brute_force_search(ties: bool, target: float) -> None:
    for seed in range(5):
        y, s = _data(seed, ties=ties)
        assert op.threshold_at_specificity(y, s, target) == _brute_specificity(y, s, target)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(
    ("c_fn", "c_fp", "prev"), [(1, 1, 0.5), (10, 1, 0.05), (20, 1, 0.02), (1, 5, 0.3), (1, 100, 0.01)]
)
def test_threshold_at_minimum_cost_is_the_brute_force_search(
    ties: bool, c_fn: float, c_fp: float, prev: float
) -> None:
    for seed in range(5):
        y, s = _data(seed, ties=ties)
        got = op.threshold_at_minimum_cost(
            y, s, cost_false_negative=c_fn, cost_false_positive=c_fp, prevalence=prev
        )
        assert got == _brute_cost(y, s, c_fn, c_fp, prev)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=3, max_size=30),
    st.floats(0.05, 1.0),
    st.floats(0.01, 0.99),
    st.floats(0.1, 50.0),
)
def test_rules_match_brute_force_on_any_data(rows: list, target: float, prev: float, c_fn: float) -> None:
    y = np.array([int(a) for a, _ in rows] + [0, 1])
    s = np.array([b / 6 for _, b in rows] + [0.5, 0.5])
    assert op.threshold_at_specificity(y, s, target) == _brute_specificity(y, s, target)
    got = op.threshold_at_minimum_cost(
        y, s, cost_false_negative=c_fn, cost_false_positive=1.0, prevalence=prev
    )
    assert got == _brute_cost(y, s, c_fn, 1.0, prev)


@pytest.mark.parametrize(
    ("rule", "options"),
    [
        ("target_specificity", {"target": 0.9}),
        ("minimum_cost", {"cost_false_negative": 10.0, "cost_false_positive": 1.0, "prevalence": 0.1}),
    ],
)
def test_bootstrap_thresholds_equal_the_rule_on_each_explicit_resample(rule: str, options: dict) -> None:
    y, s = _data(3, n=60, ties=True)
    groups = np.arange(60) // 3
    reps = op.bootstrap_thresholds(y, s, groups, rule, n_replicates=40, seed=7, **options)
    counts = np.concatenate(list(grouped_bootstrap_counts(groups, 40, seed=7)))
    for r in range(40):  # the reference: each replicate by itself, weighted by its draws
        w = counts[r].astype(float)
        if w[y == 1].sum() == 0 or w[y == 0].sum() == 0:
            assert math.isnan(reps[r])
        elif rule == "target_specificity":
            assert reps[r] == _brute_specificity(y, s, options["target"], w)
            assert reps[r] == op.threshold_at_specificity(y, s, options["target"], sample_weight=w)
        else:
            assert reps[r] == _brute_cost(y, s, 10.0, 1.0, 0.1, w)


def test_predictive_values_by_bayes_rule_by_hand() -> None:
    # sensitivity 0.9, specificity 0.8 at 2 %: of 10,000 people 200 sick (180 found), 9,800 well (1,960 false
    # alarms): PPV = 180 / 2140, NPV = 7840 / 7860
    ppv, npv = op.predictive_values_at_prevalence(0.9, 0.8, 0.02)
    assert float(ppv) == pytest.approx(180 / 2140)
    assert float(npv) == pytest.approx(7840 / 7860)
    # at the test mix Bayes' rule gives the PPV counted on the test set
    y, s = _data(1)
    called = s >= 0.5
    sens, spec = called[y == 1].mean(), (~called[y == 0]).mean()
    ppv, npv = op.predictive_values_at_prevalence(sens, spec, y.mean())
    assert float(ppv) == pytest.approx(y[called].mean())
    assert float(npv) == pytest.approx(1 - y[~called].mean())
    ppv, _ = op.predictive_values_at_prevalence(np.array([0.0]), np.array([1.0]), 0.1)
    assert math.isnan(float(ppv[0]))
    with pytest.raises(MetricError, match="prevalence"):
        op.predictive_values_at_prevalence(0.9, 0.8, 0.0)


def test_net_benefit_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.4, 0.35, 0.2, 0.1, 0.05, 0.6, 0.3, 0.15, 0.25])
    model, treat_all = op.net_benefit(y, s, [0.1, 0.3, 0.5])
    # t = 0.3: treated 0.9, 0.4, 0.35, 0.6, 0.3 -> tp 2, fp 3; odds 3/7
    assert model[1] == pytest.approx(2 / 10 - 3 / 10 * 0.3 / 0.7)
    # t = 0.1: treated all but 0.05 -> tp 2, fp 7; odds 1/9
    assert model[0] == pytest.approx(2 / 10 - 7 / 10 / 9)
    assert model[2] == pytest.approx(1 / 10 - 1 / 10)
    assert treat_all == pytest.approx(0.3 - 0.7 * np.array([1 / 9, 3 / 7, 1.0]))


def test_net_benefit_against_dcurves() -> None:
    dcurves = pytest.importorskip("dcurves", reason="dcurves (a test-only dependency) is not installed")
    pd = pytest.importorskip("pandas")
    y, s = _data(4, n=200)
    s = np.round(s, 3)
    t = np.round(np.arange(0.01, 1.0, 0.01), 2)
    model, treat_all = op.net_benefit(y, s, t)
    ref = dcurves.dca(data=pd.DataFrame({"y": y, "p": s}), outcome="y", modelnames=["p"], thresholds=t)
    np.testing.assert_allclose(model, ref[ref.model == "p"].net_benefit.to_numpy(), atol=1e-12)
    np.testing.assert_allclose(treat_all, ref[ref.model == "all"].net_benefit.to_numpy(), atol=1e-12)


def test_bootstrap_net_benefit_equals_explicit_resamples() -> None:
    y, s = _data(5, n=50)
    groups = np.arange(50) // 2
    t = [0.1, 0.3, 0.5]
    model, treat_all = op.bootstrap_net_benefit(y, s, groups, t, n_replicates=25, seed=3)
    counts = np.concatenate(list(grouped_bootstrap_counts(groups, 25, seed=3)))
    for r in range(25):
        idx = np.repeat(np.arange(50), counts[r])
        m, a = op.net_benefit(y[idx], s[idx], t)
        np.testing.assert_allclose(model[r], m, atol=1e-12)
        np.testing.assert_allclose(treat_all[r], a, atol=1e-12)


def test_bad_rule_options_are_one_line_errors() -> None:
    y, s = _data(0)
    with pytest.raises(MetricError, match="unknown operating-point rule"):
        op.bootstrap_thresholds(y, s, None, "youden")
    with pytest.raises(MetricError, match="costs must be > 0"):
        op.threshold_at_minimum_cost(y, s, cost_false_negative=0, cost_false_positive=1, prevalence=0.1)
    with pytest.raises(MetricError, match="thresholds"):
        op.net_benefit(y, s, [0.0, 0.5])


def test_bootstrap_thresholds_at_sensitivity_equal_the_existing_rule() -> None:
    from hierclf.evaluation import metrics as hm

    y, s = _data(6, n=60, ties=True)
    groups = np.arange(60) // 2
    reps = op.bootstrap_thresholds(y, s, groups, "target_sensitivity", n_replicates=30, seed=2, target=0.9)
    counts = np.concatenate(list(grouped_bootstrap_counts(groups, 30, seed=2)))
    for r in range(30):
        w = counts[r].astype(float)
        if w[y == 1].sum() and w[y == 0].sum():
            assert reps[r] == hm.threshold_at_sensitivity(y, s, 0.9, sample_weight=w)
