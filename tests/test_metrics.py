"""hierclf.evaluation.metrics against independent references: scikit-learn, brute-force pair counts and
threshold loops,
set-based hierarchical definitions over networkx ancestors, and explicit resampling for the bootstrap."""

from __future__ import annotations

import itertools
import logging
import math
import zlib

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from hierclf.errors import HierclfError
from hierclf.evaluation import metrics as hm
from hierclf.evaluation.metrics import bootstrap, resampling
from hierclf.taxonomy.synthetic import random_taxonomy


def _case(name: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    n = 60
    if name == "continuous":
        y = rng.random(n) < 0.4
        return y.astype(int), y + rng.normal(size=n)
    if name == "ties":
        y = rng.random(n) < 0.5
        return y.astype(int), np.round(y * 0.5 + rng.normal(size=n), 1)
    if name == "integer_scores":
        y = rng.random(n) < 0.3
        return y.astype(int), (y + rng.integers(0, 4, n)).astype(float)
    if name == "all_equal":
        return (rng.random(n) < 0.5).astype(int), np.full(n, 0.3)
    if name == "single_positive":
        y = np.zeros(n, dtype=int)
        y[7] = 1
        return y, rng.random(n)
    if name == "single_negative":
        y = np.ones(n, dtype=int)
        y[3] = 0
        return y, rng.random(n)
    if name == "perfect":
        y = np.r_[np.zeros(30), np.ones(30)].astype(int)
        return y, np.r_[rng.random(30), 1 + rng.random(30)]
    if name == "inverted":
        y = np.r_[np.zeros(30), np.ones(30)].astype(int)
        return y, np.r_[1 + rng.random(30), rng.random(30)]
    if name == "bool_labels":
        y = rng.random(n) < 0.5
        return y, np.round(rng.random(n), 2)
    raise KeyError(name)


CASES = [
    "continuous",
    "ties",
    "integer_scores",
    "all_equal",
    "single_positive",
    "single_negative",
    "perfect",
    "inverted",
    "bool_labels",
]


def _brute_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray | None = None) -> float:
    """O(n^2) pair count, ties 1/2 (as scikit-learn's own ranking tests do)."""
    w = np.ones(len(y)) if w is None else w
    num = den = 0.0
    for i, j in itertools.product(np.flatnonzero(y == 1), np.flatnonzero(y == 0)):
        pair = w[i] * w[j]
        den += pair
        num += pair * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    return num / den


def _brute_spec_at_sens(y: np.ndarray, s: np.ndarray, target: float) -> tuple[float, float]:
    """Loop over every distinct score as a threshold, largest first; return the first reaching the target."""
    y = np.asarray(y).astype(bool)
    for t in sorted(set(s.tolist()), reverse=True):
        called = s >= t
        sens = (called & y).sum() / y.sum()
        if sens >= target:
            return float((~called & ~y).sum() / (~y).sum()), float(t)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------- ROC / AUC


@pytest.mark.parametrize("name", CASES)
def test_roc_curve_matches_sklearn(name: str) -> None:
    y, s = _case(name)
    fpr, tpr, thr = hm.roc_curve(y, s)
    ref = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(tpr, ref[1], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(thr[1:], ref[2][1:])
    assert thr[0] == np.inf


@pytest.mark.parametrize("name", CASES)
def test_roc_auc_matches_sklearn_and_pair_count(name: str) -> None:
    y, s = _case(name)
    auc = hm.roc_auc(y, s)
    assert auc == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert auc == pytest.approx(_brute_auc(np.asarray(y).astype(int), s), abs=1e-12)


@pytest.mark.parametrize("name", ["continuous", "ties", "integer_scores", "single_positive"])
def test_weighted_auc_and_roc_match_sklearn(name: str) -> None:
    y, s = _case(name)
    w = np.random.default_rng(5).integers(0, 4, len(y)).astype(float)
    w[np.flatnonzero(y)[0]] = 1.0  # keep at least one positive
    w[np.flatnonzero(np.asarray(y) == 0)[0]] = 2.0
    assert hm.roc_auc(y, s, w) == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert hm.roc_auc(y, s, w) == pytest.approx(_brute_auc(np.asarray(y), s, w), abs=1e-12)
    ref_curve = skm.roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    for mine, ref in zip(hm.roc_curve(y, s, w), ref_curve):
        np.testing.assert_allclose(mine[1:], ref[1:], atol=1e-12)
    # an integer weight counts a sample that many times
    idx = np.repeat(np.arange(len(y)), w.astype(int))
    assert hm.roc_auc(y, s, w) == pytest.approx(skm.roc_auc_score(np.asarray(y)[idx], s[idx]), abs=1e-12)


@pytest.mark.parametrize("y", [np.zeros(5, int), np.ones(5, int), np.zeros(0, int)])
def test_roc_needs_both_classes(y: np.ndarray) -> None:
    s = np.linspace(0, 1, len(y))
    with pytest.raises(hm.MetricError, match="no (positive|negative) samples"):
        hm.roc_auc(y, s)
    with pytest.raises(HierclfError):
        hm.roc_curve(y, s)
    with pytest.raises(hm.MetricError):
        hm.specificity_at_sensitivity(y, s, 0.9)


@pytest.mark.parametrize(
    "bad, match",
    [
        (([0, 1, 2], [0.1, 0.2, 0.3]), "only 0/1"),
        (([0, 1], [0.1, np.nan]), "NaN"),
        (([0, 1], [0.1]), "samples"),
        (([[0, 1]], [[0.1, 0.2]]), "1-D"),
    ],
)
def test_bad_binary_input(bad: tuple, match: str) -> None:
    with pytest.raises(hm.MetricError, match=match):
        hm.roc_auc(*bad)


@pytest.mark.parametrize("name", ["continuous", "ties", "integer_scores", "perfect", "inverted", "all_equal"])
@pytest.mark.parametrize("m", [0.0, 0.5, 0.8, 0.95])
def test_partial_auc_matches_sklearn_max_fpr(name: str, m: float) -> None:
    y, s = _case(name)
    pauc = hm.partial_auc_above_sensitivity(y, s, m)
    if m == 0.0:
        assert pauc == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
        return
    # ISIC 2024 recipe: flip labels and scores, sklearn's McClish-standardised pAUC, undo the standardisation
    max_fpr = 1.0 - m
    r = skm.roc_auc_score(1 - np.asarray(y).astype(int), -s, max_fpr=max_fpr)
    min_area, max_area = 0.5 * max_fpr**2, max_fpr
    raw = min_area + (2 * r - 1) * (max_area - min_area)
    assert pauc == pytest.approx(raw / max_fpr, abs=1e-9)


# ---------------------------------------------------------------------------------------- operating points


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("target", [0.05, 0.5, 0.8, 0.95, 1.0])
def test_specificity_at_sensitivity_matches_brute_force(name: str, target: float) -> None:
    y, s = _case(name)
    if np.all(np.asarray(y) == 1):
        pytest.skip("no negatives")
    spec, thr = hm.specificity_at_sensitivity(y, s, target)
    ref_spec, ref_thr = _brute_spec_at_sens(np.asarray(y), s, target)
    assert (spec, thr) == (pytest.approx(ref_spec, abs=1e-12), ref_thr)
    assert hm.threshold_at_sensitivity(y, s, target) == ref_thr
    # torchmetrics semantics: the largest specificity among ROC points whose sensitivity reaches the target
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert spec == pytest.approx(np.max(1 - fpr[tpr >= target]), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    scores=st.lists(st.integers(0, 8), min_size=2, max_size=40), data=st.data(), target=st.floats(0.01, 1.0)
)
def test_threshold_at_sensitivity_property(scores: list[int], data: st.DataObject, target: float) -> None:
    s = np.asarray(scores, dtype=float) / 4
    y = np.asarray(data.draw(st.lists(st.booleans(), min_size=len(s), max_size=len(s))))
    if not y.any():
        with pytest.raises(hm.MetricError):
            hm.threshold_at_sensitivity(y, s, target)
        return
    t = hm.threshold_at_sensitivity(y, s, target)
    assert t in set(s.tolist())
    assert (y & (s >= t)).sum() / y.sum() >= target
    larger = s[s > t]
    if larger.size:
        nxt = larger.min()
        assert (y & (s >= nxt)).sum() / y.sum() < target


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 0.9, 1.01])
def test_binary_metrics_at_threshold_match_sklearn(name: str, q: float) -> None:
    y, s = _case(name)
    y = np.asarray(y).astype(int)
    thr = float(np.quantile(s, min(q, 1.0))) + (1.0 if q > 1 else 0.0)
    m = hm.binary_metrics_at_threshold(y, s, thr)
    pred = (s >= thr).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred, zero_division=np.nan), nan_ok=True)
    assert m["ppv"] == pytest.approx(skm.precision_score(y, pred, zero_division=np.nan), nan_ok=True)
    assert m["specificity"] == pytest.approx(
        skm.recall_score(1 - y, 1 - pred, zero_division=np.nan), nan_ok=True
    )
    assert m["npv"] == pytest.approx(skm.precision_score(1 - y, 1 - pred, zero_division=np.nan), nan_ok=True)


def test_binary_metrics_nan_cases() -> None:
    m = hm.binary_metrics_at_threshold([0, 0, 0], [0.1, 0.2, 0.3], 0.5)
    assert math.isnan(m["sensitivity"]) and math.isnan(m["ppv"])
    assert m["specificity"] == 1.0 and m["npv"] == 1.0


def test_target_out_of_range() -> None:
    with pytest.raises(hm.MetricError, match=r"\(0, 1\]"):
        hm.threshold_at_sensitivity([0, 1], [0.1, 0.2], 0.0)
    with pytest.raises(hm.MetricError):
        hm.specificity_at_sensitivity([0, 1], [0.1, 0.2], 1.5)


# -------------------------------------------------------------------------------------- multi-class


def _multiclass(
    seed: int,
    n: int = 120,
    k: int = 5,
    absent: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    if absent is not None:
        y[y == absent] = (absent + 1) % k
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("absent", [None, 3])
def test_confusion_recall_balanced_accuracy_match_sklearn(seed: int, absent: int | None) -> None:
    y, p = _multiclass(seed, absent=absent)
    pred = p.argmax(axis=1)
    k = p.shape[1]
    np.testing.assert_array_equal(
        hm.confusion_matrix(y, pred, k), skm.confusion_matrix(y, pred, labels=range(k))
    )
    recall = hm.per_class_recall(y, pred, k)
    ref = skm.recall_score(y, pred, labels=range(k), average=None, zero_division=np.nan)
    np.testing.assert_allclose(recall, ref, equal_nan=True)
    if absent is not None:
        assert math.isnan(recall[absent])
    ref_bacc = skm.balanced_accuracy_score(y, pred)
    assert hm.balanced_accuracy(y, pred, k) == pytest.approx(ref_bacc, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_ovr_auc_matches_sklearn(seed: int) -> None:
    y, p = _multiclass(seed)
    ref = skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert hm.macro_ovr_auc(y, p) == pytest.approx(ref, abs=1e-12)
    # ties inside columns
    q = np.round(p, 1)
    ref = np.mean([skm.roc_auc_score(y == c, q[:, c]) for c in range(p.shape[1])])
    assert hm.macro_ovr_auc(y, q) == pytest.approx(ref, abs=1e-12)


def test_macro_ovr_auc_absent_class_and_errors() -> None:
    y, p = _multiclass(4, absent=2)
    present = np.unique(y)
    ref = np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in present])
    assert hm.macro_ovr_auc(y, p) == pytest.approx(ref, abs=1e-12)
    with pytest.raises(hm.MetricError, match="two classes"):
        hm.macro_ovr_auc(np.zeros(4, int), p[:4])
    with pytest.raises(hm.MetricError, match=r"\[0, 5\)"):
        hm.confusion_matrix([0, 7], [0, 1], 5)


# -------------------------------------------------------------------------------------- calibration


def _hand_ece(hit: np.ndarray, conf: np.ndarray, n_bins: int) -> tuple[float, list]:
    total = 0.0
    rows = []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(conf)) if (lo < conf[i] <= hi) or (b == 0 and conf[i] == 0.0)]
        if not members:
            rows.append((math.nan, math.nan, 0))
            continue
        acc = sum(hit[i] for i in members) / len(members)
        cf = sum(conf[i] for i in members) / len(members)
        rows.append((cf, acc, len(members)))
        total += len(members) / len(conf) * abs(acc - cf)
    return total, rows


@pytest.mark.parametrize("n_bins", [1, 5, 15])
@pytest.mark.parametrize("seed", [0, 1])
def test_ece_and_reliability_match_hand_loop(n_bins: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    prob = np.r_[rng.random(200), [0.0, 1.0, 0.2, 0.4]]  # bin edges included
    y = (rng.random(prob.size) < prob).astype(int)
    ref, rows = _hand_ece(y, prob, n_bins)
    assert hm.expected_calibration_error(y, prob, n_bins) == pytest.approx(ref, abs=1e-12)
    conf, acc, count = hm.reliability_curve(y, prob, n_bins)
    np.testing.assert_allclose(conf, [r[0] for r in rows], equal_nan=True, atol=1e-12)
    np.testing.assert_allclose(acc, [r[1] for r in rows], equal_nan=True, atol=1e-12)
    np.testing.assert_array_equal(count, [r[2] for r in rows])
    # top-label calibration of class probabilities
    yk, p = _multiclass(seed)
    hit = (p.argmax(1) == yk).astype(float)
    assert hm.expected_calibration_error(yk, p, n_bins) == pytest.approx(
        _hand_ece(hit, p.max(1), n_bins)[0], abs=1e-12
    )


def test_calibration_rejects_bad_probabilities() -> None:
    with pytest.raises(hm.MetricError, match=r"\[0, 1\]"):
        hm.expected_calibration_error([0, 1], [0.5, 1.5])


# -------------------------------------------------------------------------------------- hierarchy


def _anc(tax, node: str) -> set[str]:
    """Node and its ancestors excluding the root, via networkx."""
    return ({node} | nx.ancestors(tax.graph, node)) - {tax.root}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hierarchical_prf_matches_set_definition(seed: int) -> None:
    tax = random_taxonomy(30, max_depth=5, seed=seed)
    rng = np.random.default_rng(seed)
    nodes = list(tax.nodes)
    t = rng.integers(0, len(nodes), 80)
    p = np.where(rng.random(80) < 0.4, t, rng.integers(0, len(nodes), 80))
    common = sum(len(_anc(tax, nodes[a]) & _anc(tax, nodes[b])) for a, b in zip(t, p))
    hp = common / sum(len(_anc(tax, nodes[b])) for b in p)
    hr = common / sum(len(_anc(tax, nodes[a])) for a in t)
    got = hm.hierarchical_prf(t, p, tax)
    assert got == pytest.approx((hp, hr, 2 * hp * hr / (hp + hr)), abs=1e-12)


def test_hierarchical_prf_on_shipped_tree(dermamnist) -> None:
    nodes = list(dermamnist.nodes)
    t = np.array([nodes.index(x) for x in dermamnist.leaves])
    p = t[::-1].copy()
    common = sum(len(_anc(dermamnist, nodes[a]) & _anc(dermamnist, nodes[b])) for a, b in zip(t, p))
    hp = common / sum(len(_anc(dermamnist, nodes[b])) for b in p)
    assert hm.hierarchical_prf(t, p, dermamnist)[0] == pytest.approx(hp)
    root = nodes.index(dermamnist.root)
    assert all(math.isnan(v) for v in hm.hierarchical_prf([root], [root], dermamnist))


@pytest.mark.parametrize("seed", [0, 3])
def test_mistake_severity_matches_taxonomy(seed: int) -> None:
    tax = random_taxonomy(40, max_depth=6, seed=seed)
    rng = np.random.default_rng(seed)
    leaves = tax.leaves
    t = rng.integers(0, len(leaves), 100)
    p = np.where(rng.random(100) < 0.3, t, rng.integers(0, len(leaves), 100))
    dist, height = hm.mistake_severity(t, p, tax)
    for a, b, d, h in zip(t, p, dist, height):
        lca = tax.lca(leaves[a], leaves[b])
        assert d == tax.distance(leaves[a], leaves[b])
        assert h == max(tax.depth(x) for x in tax.leaves_under(lca)) - tax.depth(lca)
    assert (dist[t == p] == 0).all() and (height[t == p] == 0).all()
    with pytest.raises(hm.MetricError):
        hm.mistake_severity([0], [len(leaves)], tax)


# -------------------------------------------------------------------------------------- bootstrap


def _bootstrap_data(n: int, n_groups: int, seed: int = 0, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, n)
    y = rng.random(n) < 0.3
    s = y + rng.normal(size=n)
    if decimals is not None:
        s = np.round(s, decimals)
    return y, s, np.array([f"p{g}" for g in groups])


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("threshold", [None, 0.4])
def test_bootstrap_replicates_equal_explicit_resampling(
    decimals: int | None, threshold: float | None
) -> None:
    y, s, groups = _bootstrap_data(300, 70, decimals=decimals)
    res = hm.bootstrap_binary(y, s, groups, n_replicates=40, seed=7, threshold=threshold, chunk_size=6)
    counts = np.concatenate(list(hm.grouped_bootstrap_counts(groups, 40, seed=7)))
    for k in (0, 5, 17, 39):
        idx = np.repeat(np.arange(len(y)), counts[k])  # replicate k's data set, rows repeated
        yk, sk = y[idx], s[idx]
        assert res["auc"].replicates[k] == pytest.approx(skm.roc_auc_score(yk, sk), abs=1e-12)
        spec, thr = _brute_spec_at_sens(yk, sk, 0.95)
        assert res["specificity_at_sensitivity"].replicates[k] == pytest.approx(spec, abs=1e-12)
        assert res["threshold_at_sensitivity"].replicates[k] == thr
        if threshold is not None:
            m = hm.binary_metrics_at_threshold(yk, sk, threshold)
            for key in ("sensitivity", "specificity", "ppv", "npv"):
                assert res[key].replicates[k] == pytest.approx(m[key], abs=1e-12, nan_ok=True)
    # point estimates are the unweighted functions on the full data, bit for bit
    assert res["auc"].point == hm.roc_auc(y, s)
    assert (
        res["specificity_at_sensitivity"].point,
        res["threshold_at_sensitivity"].point,
    ) == hm.specificity_at_sensitivity(y, s, 0.95)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(2, 30),
    n_groups=st.integers(1, 8),
    target=st.floats(0.05, 1.0),
    threshold=st.sampled_from([None, 0.5, 1.0, 2.5]),
)
def test_bootstrap_kernel_property(
    data: st.DataObject, n: int, n_groups: int, target: float, threshold: float | None
) -> None:
    """Random small data with heavy ties: every replicate equals the metrics of its resampled data set."""
    y = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if y.all() or not y.any():
        y[0] = not y[0]
    s = np.asarray(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=float)
    groups = np.asarray(data.draw(st.lists(st.integers(0, n_groups - 1), min_size=n, max_size=n)))
    res = hm.bootstrap_binary(
        y, s, groups, n_replicates=6, seed=1, target_sensitivity=target, threshold=threshold, chunk_size=4
    )
    counts = np.concatenate(list(hm.grouped_bootstrap_counts(groups, 6, seed=1)))
    for k in range(6):
        idx = np.repeat(np.arange(n), counts[k])
        yk, sk = y[idx], s[idx]
        if yk.all() or not yk.any():
            assert math.isnan(res["auc"].replicates[k])
            assert math.isnan(res["specificity_at_sensitivity"].replicates[k])
            continue
        assert res["auc"].replicates[k] == pytest.approx(_brute_auc(yk.astype(int), sk), abs=1e-12)
        spec, thr = _brute_spec_at_sens(yk, sk, target)
        assert res["specificity_at_sensitivity"].replicates[k] == pytest.approx(spec, abs=1e-12)
        assert res["threshold_at_sensitivity"].replicates[k] == thr
        if threshold is not None:
            m = hm.binary_metrics_at_threshold(yk, sk, threshold)
            for key in ("sensitivity", "specificity", "ppv", "npv"):
                assert res[key].replicates[k] == pytest.approx(m[key], abs=1e-12, nan_ok=True)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n=st.integers(2, 25))
def test_weighted_auc_property(data: st.DataObject, n: int) -> None:
    y = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    y[0], y[1] = True, False
    s = np.asarray(data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)), dtype=float)
    w = np.asarray(data.draw(st.lists(st.floats(0.0, 3.0), min_size=n, max_size=n)))
    w[0] = w[1] = 1.0
    assert hm.roc_auc(y, s, w) == pytest.approx(_brute_auc(y.astype(int), s, w), abs=1e-9)
    assert hm.roc_auc(y, s, w) == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w), abs=1e-9)


def test_bootstrap_does_not_depend_on_chunking() -> None:
    y, s, groups = _bootstrap_data(200, 50, seed=1)
    a = hm.bootstrap_binary(y, s, groups, n_replicates=30, seed=3, chunk_size=1)
    b = hm.bootstrap_binary(y, s, groups, n_replicates=30, seed=3, chunk_size=30)
    np.testing.assert_array_equal(a["auc"].replicates, b["auc"].replicates)
    for jobs in (1, 3):  # threads evaluate chunks; the draws stay one ordered stream
        c = hm.bootstrap_binary(y, s, groups, n_replicates=30, seed=3, chunk_size=4, n_jobs=jobs)
        for key in ("auc", "specificity_at_sensitivity", "threshold_at_sensitivity"):
            np.testing.assert_array_equal(c[key].replicates, a[key].replicates)
    c1 = np.concatenate(list(hm.grouped_bootstrap_counts(groups, 30, seed=3, chunk_size=4)))
    c2 = np.concatenate(list(hm.grouped_bootstrap_counts(groups, 30, seed=3, chunk_size=30)))
    np.testing.assert_array_equal(c1, c2)


@pytest.mark.parametrize(
    "name", ["continuous", "ties", "integer_scores", "all_equal", "single_positive", "perfect", "inverted"]
)
def test_kernel_with_unit_counts_equals_point_functions(name: str) -> None:
    y, s = _case(name)
    y = np.asarray(y).astype(bool)
    groups = np.arange(len(y)) // 3
    group, n_groups = resampling._group_index(groups, len(y))
    plan = bootstrap._BinaryBootstrapPlan(y, s, group, n_groups)
    for target in (0.3, 0.95, 1.0):
        out = plan.evaluate(np.ones((2, n_groups), dtype=np.int64), target, float(np.median(s)))
        assert out["auc"][0] == pytest.approx(hm.roc_auc(y, s), abs=1e-15)
        spec, thr = hm.specificity_at_sensitivity(y, s, target)
        assert (out["specificity_at_sensitivity"][0], out["threshold_at_sensitivity"][0]) == (spec, thr)
        at = hm.binary_metrics_at_threshold(y, s, float(np.median(s)))
        for key in ("sensitivity", "specificity", "ppv", "npv"):
            assert out[key][1] == pytest.approx(at[key], abs=1e-15, nan_ok=True)


def test_int64_kernel_equals_int32_kernel() -> None:
    # the kernel switches to int64 when a replicate could weigh 2**31 or more; same numbers either way
    y, s, groups = _bootstrap_data(300, 40, seed=2, decimals=1)
    group, n_groups = resampling._group_index(groups, len(y))
    plan = bootstrap._BinaryBootstrapPlan(y, s, group, n_groups)
    assert plan.dtype == np.int32
    counts = next(hm.grouped_bootstrap_counts(np.arange(n_groups), 25, seed=0))
    small = plan.evaluate(counts, 0.9, 0.3)
    plan.dtype = np.dtype(np.int64)
    big = plan.evaluate(counts, 0.9, 0.3)
    for key in small:
        np.testing.assert_array_equal(small[key], big[key])


def test_group_counts_are_shared_within_groups() -> None:
    groups = np.array(["a", "b", "a", "c", "b", "a"])
    counts = np.concatenate(list(hm.grouped_bootstrap_counts(groups, 200, seed=0)))
    assert counts.shape == (200, 6)
    assert (counts[:, 0] == counts[:, 2]).all() and (counts[:, 0] == counts[:, 5]).all()
    assert (counts[:, 1] == counts[:, 4]).all()
    # three groups drawn per replicate: the group counts sum to 3
    assert (counts[:, [0, 1, 3]].sum(axis=1) == 3).all()


def test_singleton_groups_give_a_row_bootstrap() -> None:
    n, reps = 50, 4000
    counts = np.concatenate(list(hm.grouped_bootstrap_counts(np.arange(n), reps, seed=2)))
    same = np.concatenate(list(hm.grouped_bootstrap_counts(None, reps, seed=2, n_samples=n)))
    np.testing.assert_array_equal(counts, same)
    assert (counts.sum(axis=1) == n).all()
    # each count is Binomial(n, 1/n): mean 1, variance 1 - 1/n; P(count = 0) = (1 - 1/n)^n
    assert counts.mean() == pytest.approx(1.0, abs=0.01)
    assert counts.var() == pytest.approx(1 - 1 / n, abs=0.03)
    assert (counts == 0).mean() == pytest.approx((1 - 1 / n) ** n, abs=0.01)


def test_ci_width_shrinks_with_n() -> None:
    widths = []
    for n in (200, 800, 3200):
        y, s, groups = _bootstrap_data(n, n // 4, seed=5)
        res = hm.bootstrap_binary(y, s, groups, n_replicates=300, seed=0)
        assert res["auc"].low <= res["auc"].point <= res["auc"].high
        widths.append(res["auc"].high - res["auc"].low)
    assert widths[0] > widths[1] > widths[2]


def test_grouping_widens_ci_for_correlated_groups() -> None:
    # every patient contributes 10 near-identical lesions: resampling rows understates the uncertainty
    rng = np.random.default_rng(0)
    n_pat = 60
    y_pat = rng.random(n_pat) < 0.4
    s_pat = y_pat + rng.normal(size=n_pat)
    y, s = np.repeat(y_pat, 10), np.repeat(s_pat, 10) + 0.01 * rng.normal(size=10 * n_pat)
    groups = np.repeat(np.arange(n_pat), 10)
    by_group = hm.bootstrap_binary(y, s, groups, n_replicates=400, seed=1)
    by_row = hm.bootstrap_binary(y, s, None, n_replicates=400, seed=1)
    assert (by_group["auc"].high - by_group["auc"].low) > 2 * (by_row["auc"].high - by_row["auc"].low)


def test_bootstrap_nan_replicates_and_errors() -> None:
    y = np.array([1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    res = hm.bootstrap_binary(y, s, None, n_replicates=200, seed=0)
    nan = np.isnan(res["auc"].replicates)
    assert 0 < res["auc"].n_nan == nan.sum() < 200
    assert np.isnan(res["specificity_at_sensitivity"].replicates[nan]).all()
    assert np.isfinite(res["auc"].low)
    with pytest.raises(hm.MetricError, match="both classes"):
        hm.bootstrap_binary(np.zeros(5, int), np.arange(5.0), n_replicates=5)
    with pytest.raises(hm.MetricError, match="groups"):
        hm.bootstrap_binary(y, s, groups=["a"], n_replicates=5)
    with pytest.raises(hm.MetricError, match="n_replicates"):
        hm.bootstrap_binary(y, s, n_replicates=0)
    with pytest.raises(hm.MetricError, match="group labels"):
        hm.bootstrap_binary(y, s, groups=["a", None, "b", "a", "b", "c"], n_replicates=5)
    with pytest.raises(hm.MetricError, match="NaN"):
        hm.bootstrap_binary(y, s, n_replicates=5, threshold=float("nan"))


def test_bootstrap_missing_class_logged_or_only_counted(caplog: pytest.LogCaptureFixture) -> None:
    """warn_missing=False hushes the warning without touching any logger; the count and numbers stay."""
    y = np.array([1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    with caplog.at_level(logging.WARNING, logger="hierclf.evaluation.metrics"):
        loud = hm.bootstrap_binary(y, s, None, n_replicates=200, seed=0)
        assert f"{loud['auc'].n_nan} of 200 bootstrap replicates miss a class" in caplog.text
        caplog.clear()
        quiet = hm.bootstrap_binary(y, s, None, n_replicates=200, seed=0, warn_missing=False)
        assert caplog.records == []
    assert quiet["auc"].n_nan == loud["auc"].n_nan == int(np.isnan(loud["auc"].replicates).sum()) > 0
    for key, est in loud.estimates.items():
        np.testing.assert_array_equal(quiet[key].replicates, est.replicates)


def test_metrics_package_re_exports_every_public_name() -> None:
    """`from hierclf.evaluation import metrics as M; M.roc_auc(...)`: every public function and class of the
    metric modules is a name of the package, and the package lists exactly those."""
    import importlib
    import inspect

    names = set()
    modules = ("checks", "roc", "multiclass", "calibration", "hierarchy", "resampling", "bootstrap")
    for module in modules + ("intervals", "delong", "paired_tests", "operating_points", "recalibration"):
        mod = importlib.import_module(f"hierclf.evaluation.metrics.{module}")
        for name, obj in vars(mod).items():
            defined_here = getattr(obj, "__module__", None) == mod.__name__
            public = not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            if public and defined_here:
                names.add(name)
                assert getattr(hm, name) is obj
    assert names == set(hm.__all__)


def test_percentile_ci() -> None:
    v = np.r_[np.arange(101.0), np.nan]
    assert hm.percentile_ci(v, 0.9) == pytest.approx(tuple(np.percentile(np.arange(101.0), [5, 95])))
    assert all(math.isnan(x) for x in hm.percentile_ci([np.nan, np.nan]))
    with pytest.raises(hm.MetricError):
        hm.percentile_ci([1.0], 1.5)


def test_bootstrap_result_to_dict() -> None:
    y, s, groups = _bootstrap_data(100, 30)
    d = hm.bootstrap_binary(y, s, groups, n_replicates=20, threshold=0.5).to_dict()
    assert d["resampling_unit"] == "group" and d["n_groups"] == len(set(groups))
    assert set(d["metrics"]) == {
        "auc",
        "specificity_at_sensitivity",
        "threshold_at_sensitivity",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
    }
