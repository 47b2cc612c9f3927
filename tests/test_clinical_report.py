"""The clinical report end to end: operating-point rules chosen on validation (against a brute-force search
over every threshold of the task's validation scores), targets missed on test flagged with their interval,
PPV / NPV / number needed to biopsy at declared prevalences (Bayes' rule by hand), decision curves (net
benefit counted by hand), and the figures' labelled elements."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hierclf import Taxonomy
from hierclf.errors import HierclfError
from hierclf.evaluation.pipeline import evaluate, task_scores
from hierclf.evaluation.prediction_files import Predictions
from hierclf.evaluation.protocol_format import Protocol, protocol_from_dict
from hierclf.evaluation.report import render_markdown, write_report

REPO = Path(__file__).resolve().parents[1]
REPLICATES = 30
MEL = {"positive": ["malignant_melanocytic"], "negative": ["benign_melanocytic"]}


def _protocol(tax: Taxonomy, tasks: list[dict[str, Any]], **over: Any) -> Protocol:
    data: dict[str, Any] = {
        "name": "clinical",
        "target_sensitivity": 0.9,
        "group_column": None,
        "min_seeds": 1,
        "bootstrap": {"replicates": REPLICATES, "ci_level": 0.9, "seed": 1},
        "primary_metric": {"metric": "auc", "task": tasks[0]["name"]},
        "tasks": tasks,
        "decision_thresholds": [0.05, 0.1, 0.2, 0.5],
    }
    data.update(over)
    return protocol_from_dict(data, tax)


def _preds(tax: Taxonomy, n: int, seed: int, *, signal: float = 1.5, prefix: str = "s") -> Predictions:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(tax.leaves), n)
    logits = rng.normal(size=(n, len(tax.leaves)))
    logits[np.arange(n), y] += signal
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    ids = np.array([f"{prefix}{seed}_{i}" for i in range(n)])
    return Predictions(p, tax.leaves, ids, np.asarray(tax.leaves)[y])


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return Taxonomy.from_yaml(REPO / "taxonomy" / "dermamnist.yaml")


def _brute(y: np.ndarray, s: np.ndarray, rule: dict[str, Any]) -> float:
    """The rule by exhaustive search over every threshold of the validation scores."""
    cands = sorted({*s.tolist(), float(np.nextafter(s.max(), math.inf))}, reverse=True)
    pos = y == 1

    def rates(t: float) -> tuple[float, float]:
        return float((s[pos] >= t).mean()), float((s[~pos] < t).mean())

    if rule["rule"] == "target_specificity":
        return min(t for t in cands if rates(t)[1] >= rule["target"])
    if rule["rule"] == "target_sensitivity":
        return max(t for t in cands if rates(t)[0] >= rule.get("target", 0.9))
    p, cfn, cfp = rule["prevalence"], rule["cost_false_negative"], rule["cost_false_positive"]
    costs = [p * cfn * (1 - rates(t)[0]) + (1 - p) * cfp * (1 - rates(t)[1]) for t in cands]
    best = min(costs)
    return min(t for t, c in zip(cands, costs) if c == best)  # ties: the lower threshold


RULES = [
    {"rule": "target_sensitivity"},
    {"rule": "target_sensitivity", "target": 0.8},
    {"rule": "target_specificity", "target": 0.9},
    {"rule": "minimum_cost", "cost_false_negative": 20, "cost_false_positive": 1, "prevalence": 0.05},
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: "-".join(f"{v}" for v in r.values()))
def test_each_rule_is_chosen_on_validation_by_brute_force(tax: Taxonomy, rule: dict[str, Any]) -> None:
    proto = _protocol(tax, [{"name": "mel", **MEL, "operating_point": rule, "prevalences": [0.02]}])
    val, test = _preds(tax, 400, 1, prefix="v"), _preds(tax, 400, 2, prefix="t")
    report = evaluate(tax, proto, [val], [test])
    _, yv, sv = task_scores(tax, proto.tasks[0], val)
    task = report.tasks["mel"]
    assert task.thresholds.per_seed == [_brute(yv, sv, rule)]
    _, yt, st = task_scores(tax, proto.tasks[0], test)
    t = task.thresholds.value
    assert task.metrics["sensitivity"].value == pytest.approx((st[yt == 1] >= t).mean())
    assert task.metrics["specificity"].value == pytest.approx((st[yt == 0] < t).mean())
    lo, hi = task.thresholds.ci
    assert lo <= hi and math.isfinite(lo)  # the rule re-chosen in every validation replicate
    assert task.operating_rule["rule"] == rule["rule"]
    assert "Operating point (pre-registered)" in render_markdown(report)


def test_predictive_values_at_a_prevalence_follow_bayes_rule(tax: Taxonomy) -> None:
    proto = _protocol(tax, [{"name": "mel", **MEL, "prevalences": [0.02, 0.3]}])
    report = evaluate(tax, proto, [_preds(tax, 400, 3, prefix="v")], [_preds(tax, 400, 4, prefix="t")])
    task = report.tasks["mel"]
    sens, spec = task.metrics["sensitivity"].value, task.metrics["specificity"].value
    for row, p in zip(task.utility["prevalences"], (0.02, 0.3)):
        ppv = sens * p / (sens * p + (1 - spec) * (1 - p))
        npv = spec * (1 - p) / (spec * (1 - p) + (1 - sens) * p)
        assert row["prevalence"] == p
        assert row["ppv"].value == pytest.approx(ppv)
        assert row["npv"].value == pytest.approx(npv)
        assert row["nnb"].value == pytest.approx(1 / ppv)
        assert row["ppv"].ci[0] <= ppv <= row["ppv"].ci[1]
    # a rarer disease: the same test has a lower PPV
    assert task.utility["prevalences"][0]["ppv"].value < task.utility["prevalences"][1]["ppv"].value
    md = render_markdown(report)
    assert "number needed to biopsy" in md and "| 0.02 |" in md


def test_decision_curve_is_net_benefit_counted_by_hand(tax: Taxonomy) -> None:
    proto = _protocol(tax, [{"name": "mel", **MEL}])
    test = _preds(tax, 400, 6, prefix="t")
    report = evaluate(tax, proto, [_preds(tax, 400, 5, prefix="v")], [test])
    _, y, s = task_scores(tax, proto.tasks[0], test)
    curve = report.tasks["mel"].utility["decision_curve"]
    assert curve["thresholds"] == [0.05, 0.1, 0.2, 0.5]
    for i, t in enumerate(curve["thresholds"]):
        tp = int(((s >= t) & (y == 1)).sum())
        fp = int(((s >= t) & (y == 0)).sum())
        assert curve["model"][i] == pytest.approx(tp / len(y) - fp / len(y) * t / (1 - t))
        prev = y.mean()
        assert curve["treat_all"][i] == pytest.approx(prev - (1 - prev) * t / (1 - t))
        assert curve["model_ci"][0][i] <= curve["model_ci"][1][i]
    assert curve["treat_none"] == 0.0


def test_a_missed_target_is_flagged_with_its_interval(tax: Taxonomy) -> None:
    # validation separates well, test poorly: the validation-chosen threshold misses 0.9 on test
    proto = _protocol(tax, [{"name": "mel", **MEL}])
    val, test = _preds(tax, 400, 7, signal=4.0, prefix="v"), _preds(tax, 400, 8, signal=0.3, prefix="t")
    report = evaluate(tax, proto, [val], [test])
    sens = report.tasks["mel"].metrics["sensitivity"]
    assert sens.value < 0.9
    assert "BELOW-TARGET" in sens.flags
    (warning,) = [w for w in report.warnings if w.startswith("TARGET MISSED")]
    assert "'mel'" in warning and f"{sens.ci[0]:.3f}" in warning and "0.9" in warning
    # a rule reached on test raises nothing
    fine = evaluate(tax, proto, [_preds(tax, 400, 9, prefix="v")], [_preds(tax, 4000, 10, prefix="t")])
    missed = [w for w in fine.warnings if w.startswith("TARGET MISSED")]
    below = fine.tasks["mel"].metrics["sensitivity"].value < 0.9
    assert bool(missed) == below
    assert ("BELOW-TARGET" in fine.tasks["mel"].metrics["sensitivity"].flags) == below


def test_the_decision_figure_has_its_labelled_elements(tax: Taxonomy, tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from hierclf.evaluation import report as R

    proto = _protocol(tax, [{"name": "mel", **MEL}])
    report = evaluate(tax, proto, [_preds(tax, 300, 11, prefix="v")], [_preds(tax, 300, 12, prefix="t")])
    fig = R._decision_figure(Figure, report.tasks["mel"])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "threshold probability"
    assert "net benefit" in ax.get_ylabel()
    assert "n = " in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"model (test)", "treat all", "treat none"} <= set(labels)
    written = write_report(report, tmp_path)
    assert "decision_mel" in written and written["decision_mel"].stat().st_size > 0


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"rule": "target_specificity"}, "needs a target"),
        ({"rule": "minimum_cost", "cost_false_negative": 5}, "needs cost_false_negative"),
        ({"rule": "target_sensitivity", "prevalence": 0.1}, "belong to rule minimum_cost"),
        ({"rule": "youden"}, "target_sensitivity"),
    ],
)
def test_bad_operating_points_are_refused_with_their_line(tax: Taxonomy, rule: dict, message: str) -> None:
    with pytest.raises(HierclfError, match=message):
        _protocol(tax, [{"name": "mel", **MEL, "operating_point": rule}])


def test_calibration_intercept_slope_and_temperature_beside_the_raw_model(tax: Taxonomy) -> None:
    from sklearn.linear_model import LogisticRegression

    from hierclf.evaluation.metrics import recalibration as rc

    proto = _protocol(tax, [{"name": "mel", **MEL}], temperature_scaling=True)
    val, test = _preds(tax, 400, 13, prefix="v"), _preds(tax, 400, 14, prefix="t")
    report = evaluate(tax, proto, [val], [test])
    cal = report.tasks["mel"].calibration
    _, y, s = task_scores(tax, proto.tasks[0], test)
    x = np.log(np.clip(s, 1e-15, 1 - 1e-15) / (1 - np.clip(s, 1e-15, 1 - 1e-15)))[:, None]
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, y)
    assert cal["calibration_slope"].value == pytest.approx(float(ref.coef_[0, 0]), rel=1e-5)
    lo, hi = cal["calibration_slope"].ci
    assert lo < cal["calibration_slope"].value < hi
    _, yv, sv = task_scores(tax, proto.tasks[0], val)
    temperature = rc.fit_temperature(yv, sv)
    assert cal["temperature"].value == pytest.approx(temperature)
    scaled = rc.temperature_scale(s, temperature)
    assert cal["brier_temperature_scaled"].value == pytest.approx(np.mean((scaled - y) ** 2))
    assert cal["brier"].value == pytest.approx(np.mean((s - y) ** 2))  # the raw model stays
    md = render_markdown(report)
    assert "calibration slope" in md and "Brier score after temperature scaling" in md
    lo_band, hi_band = cal["reliability_band"]
    assert len(lo_band) == proto.calibration_bins
    assert all(a <= b for a, b in zip(lo_band, hi_band) if a is not None and not math.isnan(a))
    without = evaluate(tax, _protocol(tax, [{"name": "mel", **MEL}]), [val], [test]).tasks["mel"].calibration
    assert "temperature" not in without and "calibration_slope" in without


def test_the_reliability_figure_has_its_band_and_labels(tax: Taxonomy) -> None:
    from matplotlib.figure import Figure

    from hierclf.evaluation import report as R

    proto = _protocol(tax, [{"name": "mel", **MEL}])
    report = evaluate(tax, proto, [_preds(tax, 300, 15, prefix="v")], [_preds(tax, 300, 16, prefix="t")])
    cal = report.tasks["mel"].calibration
    fig = R._reliability(Figure, cal["reliability"], "mel", band=cal["reliability_band"])
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted probability", "observed frequency")
    assert "n = " in ax.get_title()
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"model (test)", "bootstrap band", "perfect calibration"} <= labels


def test_the_roc_figure_has_its_band_target_seeds_inset_and_readers(tax: Taxonomy, tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from hierclf.evaluation import report as R

    proto = _protocol(tax, [{"name": "mel", **MEL}], min_seeds=2, allow_seed_mismatch=True)
    vals = [_preds(tax, 300, 20 + k, prefix="v") for k in range(2)]
    tests = [_preds(tax, 300, 30 + k, prefix="t") for k in range(2)]
    readers = [{"reader": "derm1", "sensitivity": 0.8, "specificity": 0.7}]
    report = evaluate(tax, proto, vals, tests, readers=readers)
    task = report.tasks["mel"]
    lo, hi = (np.asarray(x, dtype=float) for x in task.roc_band["tpr_ci"])
    assert len(lo) == len(task.roc_band["fpr"]) == 51 and (lo <= hi + 1e-12).all()
    fig = R._roc_figure(Figure, task)
    ax = fig.axes[0]
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"model (test)", "90 % bootstrap band", "target sensitivity 0.9", "readers"} <= labels
    assert any(label.startswith("operating point per seed") for label in labels)
    assert {t.get_text() for t in ax.texts} >= {"seed 0", "seed 1"}
    assert "n = " in ax.get_title() and "sensitivity" in ax.get_ylabel() and "specificity" in ax.get_xlabel()
    assert len(ax.child_axes) == 1 and ax.child_axes[0].get_title() == "high-sensitivity corner"
    written = write_report(report, tmp_path)
    png = written["roc_mel"].read_bytes()
    # 200 dpi = 7874 pixels per metre in the PNG's pHYs chunk
    at = png.index(b"pHYs")
    assert int.from_bytes(png[at + 4 : at + 8], "big") == 7874
    assert (
        written["roc_mel.svg"].read_text().lstrip().startswith("<?xml")
        and "<svg" in written["roc_mel.svg"].read_text()
    )


def test_the_confusion_figure_is_row_normalised_and_averaged_over_seeds(tax: Taxonomy) -> None:
    from matplotlib.figure import Figure

    from hierclf.evaluation import report as R

    part = {"name": "three_way", "nodes": ["benign", "melanoma", "keratinocyte_carcinoma"]}
    proto = _protocol(tax, [{"name": "mel", **MEL}], partitions=[part], allow_seed_mismatch=True)
    vals = [_preds(tax, 300, 40 + k, prefix="v") for k in range(2)]
    tests = [_preds(tax, 200 + 100 * k, 50 + k, prefix="t") for k in range(2)]  # seeds of unequal size
    result = evaluate(tax, proto, vals, tests).partitions["three_way"]
    expected = np.mean([c / c.sum(axis=1, keepdims=True) for c in map(np.asarray, result.confusion)], axis=0)
    fig = R._confusion_figure(Figure, result)
    ax = fig.axes[0]
    cells = np.array([float(t.get_text()) for t in ax.texts]).reshape(3, 3)
    np.testing.assert_allclose(cells, expected, atol=0.005)
    assert "row-normalised, mean of 2 seed(s)" in ax.get_title()
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
