"""Calibration intercept and slope, temperature scaling and the reliability band against independent
references: scikit-learn's unpenalised logistic regression, a one-dimensional likelihood maximised by
scipy, and explicit resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression

from hierclf.evaluation.metrics import recalibration as rc
from hierclf.evaluation.metrics.calibration import reliability_curve
from hierclf.evaluation.metrics.resampling import grouped_bootstrap_counts


def _data(seed: int, n: int = 300, slope: float = 0.6, shift: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Events drawn from ``sigmoid(shift + slope * logit(p))``: a model too extreme by 1 / slope."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=2.0, size=n)
    p = 1 / (1 + np.exp(-x))
    y = (rng.random(n) < 1 / (1 + np.exp(-(shift + slope * x)))).astype(int)
    return y, p


def _nll(y: np.ndarray, eta: np.ndarray) -> float:
    return float(np.sum(np.logaddexp(0, eta) - y * eta))


@pytest.mark.parametrize("seed", range(4))
def test_slope_is_unpenalised_logistic_regression(seed: int) -> None:
    y, p = _data(seed)
    x = np.log(p / (1 - p))[:, None]
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, y)
    _, slope = rc.logistic_calibration(y, p)
    assert slope == pytest.approx(float(ref.coef_[0, 0]), rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_intercept_is_the_offset_fit_by_hand(seed: int) -> None:
    y, p = _data(seed)
    x = np.log(p / (1 - p))
    ref = minimize_scalar(
        lambda a: _nll(y, a + x), bounds=(-10, 10), method="bounded", options={"xatol": 1e-10}
    )
    intercept, _ = rc.logistic_calibration(y, p)
    assert intercept == pytest.approx(ref.x, abs=1e-6)
    # calibration in the large: the fitted mean risk equals the event rate (the score equation)
    assert np.mean(1 / (1 + np.exp(-(intercept + x)))) == pytest.approx(y.mean(), abs=1e-9)


def test_a_calibrated_model_has_intercept_0_and_slope_1() -> None:
    y, p = _data(9, n=20_000, slope=1.0, shift=0.0)
    intercept, slope = rc.logistic_calibration(y, p)
    assert abs(intercept) < 0.06 and abs(slope - 1) < 0.05


def test_temperature_is_the_likelihood_fit_by_hand() -> None:
    y, p = _data(2)
    x = np.log(p / (1 - p))
    ref = minimize_scalar(
        lambda t: _nll(y, x / t), bounds=(0.05, 20), method="bounded", options={"xatol": 1e-10}
    )
    t = rc.fit_temperature(y, p)
    assert t == pytest.approx(ref.x, rel=1e-6)
    assert t > 1  # the model is too extreme (slope 0.6): the fitted temperature softens it
    scaled = rc.temperature_scale(p, t)
    assert _nll(y, np.log(scaled / (1 - scaled))) <= _nll(y, x)
    with pytest.raises(ValueError, match="temperature"):
        rc.temperature_scale(p, 0.0)


def test_separated_data_is_nan_not_a_wrong_number() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    _, slope = rc.logistic_calibration(y, p)
    assert math.isnan(slope)
    assert math.isnan(rc.fit_temperature(y, p))  # the classes on the two sides of p = 0.5
    a, b = rc.logistic_calibration([0, 0, 0], [0.2, 0.5, 0.7])  # one class: no intercept either
    assert math.isnan(a) and math.isnan(b)


def test_bootstrap_fits_equal_the_fit_on_each_explicit_resample() -> None:
    y, p = _data(3, n=80)
    groups = np.arange(80) // 2
    a_r, b_r = rc.bootstrap_logistic_calibration(y, p, groups, n_replicates=12, seed=5)
    counts = np.concatenate(list(grouped_bootstrap_counts(groups, 12, seed=5)))
    for r in range(12):
        idx = np.repeat(np.arange(80), counts[r])
        a, b = rc.logistic_calibration(y[idx], p[idx])
        assert a_r[r] == pytest.approx(a, abs=1e-8) and b_r[r] == pytest.approx(b, abs=1e-8)


def test_reliability_band_replicates_are_the_curve_of_each_resample() -> None:
    y, p = _data(4, n=90)
    groups = np.arange(90) // 3
    reps = rc.bootstrap_reliability(y, p, groups, n_bins=5, n_replicates=10, seed=1)
    counts = np.concatenate(list(grouped_bootstrap_counts(groups, 10, seed=1)))
    for r in range(10):
        idx = np.repeat(np.arange(90), counts[r])
        _, acc, _ = reliability_curve(y[idx], p[idx], n_bins=5)
        np.testing.assert_allclose(reps[r], acc, atol=1e-12, equal_nan=True)
