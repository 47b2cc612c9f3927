"""evaluate() as a reviewer tries to break it: a CI on every number (each against explicitly resampled
data), intervals that hold at small n (6 of 6, 0 of 5, subgroups of 3), blank group ids, the header saying
what was resampled, seeds that do not match, the roll-up tolerance and validation-size defects, readers
against the model, subgroup differences and bands, and --save-replicates."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from hierclf import Taxonomy
from hierclf.errors import UnknownNameError
from hierclf.evaluation import metrics as M
from hierclf.evaluation.pipeline import EvaluationError, evaluate
from hierclf.evaluation.prediction_files import Predictions, write_predictions
from hierclf.evaluation.protocol_format import ProtocolError, protocol_from_dict, protocol_from_text
from hierclf.evaluation.records import iter_estimates
from hierclf.evaluation.report import render_markdown, write_report
from hierclf.evaluation.splits import Split
from hierclf.evaluation.tasks import task_data

REPO = Path(__file__).resolve().parents[1]
REPS = 30


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return Taxonomy.from_yaml(REPO / "taxonomy" / "dermamnist.yaml")


def _protocol(tax: Taxonomy, **over: Any) -> Any:
    data: dict[str, Any] = {
        "name": "stats",
        "target_sensitivity": 0.9,
        "group_column": "lesion_id",
        "min_seeds": 1,
        "bootstrap": {"replicates": REPS, "ci_level": 0.9, "seed": 5},
        "primary_metric": {"metric": "auc", "task": "mel_vs_nv"},
        "tasks": [
            {"name": "mel_vs_nv", "positive": ["melanoma"], "negative": ["melanocytic_nevus"]},
            {"name": "malignant_vs_benign", "positive": ["malignant"], "negative": ["benign"]},
        ],
        "partitions": [{"name": "three_way", "nodes": ["benign", "melanoma", "keratinocyte_carcinoma"]}],
        "calibration_nodes": ["malignant"],
        "cancer_node": "malignant",
        "min_group_size": 30,
    }
    data.update(over)
    return protocol_from_dict(data, tax)


def _preds(tax: Taxonomy, n: int, seed: int, prefix: str, *, labels: np.ndarray | None = None) -> Predictions:
    """Leaf probabilities (multiples of 1/1024) with a signal towards the true leaf, two images a lesion."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n) if labels is None else np.array([tax.leaves.index(v) for v in labels])
    logits = rng.normal(size=(n, 7))
    logits[np.arange(n), y] += 1.5
    p = np.exp(logits)
    k = np.floor(1024 * p / p.sum(1, keepdims=True))
    k[np.arange(n), k.argmax(1)] += 1024 - k.sum(1)
    ids = np.array([f"{prefix}{i}" for i in range(n)])
    groups = np.array([f"{prefix}L{i // 2}" for i in range(n)])
    return Predictions(k / 1024, tax.leaves, ids, np.asarray(tax.leaves)[y], groups)


def _reseeded(tax: Taxonomy, p: Predictions, seed: int) -> Predictions:
    """Another seed's probabilities on the same test samples."""
    q = _preds(tax, len(p), seed, "x", labels=p.labels)
    return Predictions(q.probs, p.columns, p.ids, p.labels, p.groups)


@pytest.fixture(scope="module")
def pair(tax: Taxonomy) -> tuple[Predictions, Predictions]:
    return _preds(tax, 300, 1, "v"), _preds(tax, 400, 2, "t")


@pytest.fixture(scope="module")
def report(tax: Taxonomy, pair: tuple[Predictions, Predictions]) -> Any:
    val, test = pair
    readers = [
        {"reader": "r1", "sensitivity": 0.8, "specificity": 0.7},
        {"reader": "r2", "sensitivity": 0.6, "specificity": 0.9},
    ]
    return evaluate(tax, _protocol(tax), [val], [test], readers=readers)


def _task(tax: Taxonomy, name: str, p: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return task_data(tax, _protocol(tax).task(name), Split("t", p, p.groups, None), "test")


def _counts(groups: np.ndarray) -> np.ndarray:
    return np.concatenate(list(M.grouped_bootstrap_counts(groups, REPS, seed=5)))


# --- a CI on every number --------------------------------------------------------------------------------


def test_every_number_has_an_interval_and_says_which(report: Any) -> None:
    seen = 0
    for path, est in iter_estimates(report):
        assert math.isfinite(est.ci[0]) and math.isfinite(est.ci[1]), path
        assert est.ci[0] <= est.value + 1e-12 or est.interval is not None, path
        assert est.interval is not None, path
        assert est.replicates is not None and est.replicates.shape[0] == 1, path
        seen += 1
    assert seen >= 35
    js = json.loads(json.dumps(report.to_dict()))
    assert js["tasks"]["mel_vs_nv"]["metrics"]["partial_auc"]["interval"] == "percentile_bootstrap"
    assert "replicates" not in js["tasks"]["mel_vs_nv"]["metrics"]["auc"]  # not in report.json


def test_task_replicates_equal_explicit_resampling(tax: Taxonomy, pair: Any, report: Any) -> None:
    """Partial AUC, ECE, Brier, the optimistic threshold: replicate k is the number of replicate k's data."""
    val, test = pair
    task = _protocol(tax).task("mel_vs_nv")
    rows, y, s = task_data(tax, task, Split("t", test, test.groups, None), "test")
    groups = test.groups[rows]
    counts = _counts(groups)
    res = report.tasks["mel_vs_nv"]
    for k in (0, 7, 29):
        idx = np.repeat(np.arange(len(y)), counts[k])
        yk, sk = y[idx], s[idx]
        assert res.metrics["partial_auc"].replicates[0, k] == pytest.approx(
            M.partial_auc_above_sensitivity(yk, sk, 0.9), abs=1e-12
        )
        assert res.calibration["ece"].replicates[0, k] == pytest.approx(
            M.expected_calibration_error(yk, sk, 15), abs=1e-12
        )
        assert res.calibration["brier"].replicates[0, k] == pytest.approx(
            skm.brier_score_loss(yk, sk), abs=1e-12
        )
        assert res.metrics["threshold_chosen_on_test"].replicates[0, k] == M.threshold_at_sensitivity(
            yk, sk, 0.9
        )
    # the chosen threshold's interval: the threshold re-chosen on each replicate of validation
    vrows, yv, sv = task_data(tax, task, Split("v", val, val.groups, None), "validation")
    vcounts = _counts(val.groups[vrows])
    for k in (0, 11):
        idx = np.repeat(np.arange(len(yv)), vcounts[k])
        assert res.thresholds.replicates[0, k] == M.threshold_at_sensitivity(yv[idx], sv[idx], 0.9)
        thr = res.thresholds.per_seed[0]
        want = ((sv[idx] >= thr) & (yv[idx] == 1)).sum() / (yv[idx] == 1).sum()
        assert res.metrics["validation_sensitivity"].replicates[0, k] == pytest.approx(want)


def test_partition_hierarchy_and_node_replicates_equal_explicit_resampling(
    tax: Taxonomy, pair: Any, report: Any
) -> None:
    _, test = pair
    groups = test.groups
    counts = _counts(groups)
    leaf = np.array([tax.leaves.index(v) for v in test.labels])
    three = {"benign": 0, "melanoma": 1, "keratinocyte_carcinoma": 2}
    cut_of = {leaf_: three[c] for c in three for leaf_ in tax.leaves_under(c)}
    y3 = np.array([cut_of[v] for v in test.labels])
    p3 = np.stack(
        [test.probs[:, [tax.leaves.index(x) for x in tax.leaves_under(c)]].sum(1) for c in three], 1
    )
    pos = tax.index.position
    pred_node = np.array([pos[tax.leaves[i]] for i in test.probs.argmax(1)])
    true_node = np.array([pos[v] for v in test.labels])
    mal = np.isin(test.labels, tax.leaves_under("malignant"))
    p_mal = test.probs[:, [tax.leaves.index(x) for x in tax.leaves_under("malignant")]].sum(1)
    for k in (0, 13, 29):
        w = counts[k]
        idx = np.repeat(np.arange(len(test)), w)
        part = report.partitions["three_way"].metrics
        assert part["accuracy"].replicates[0, k] == pytest.approx(
            skm.accuracy_score(y3[idx], p3[idx].argmax(1)), abs=1e-12
        )
        assert part["macro_auc"].replicates[0, k] == pytest.approx(
            skm.roc_auc_score(y3[idx], p3[idx], multi_class="ovr"), abs=1e-12
        )
        hp, hr, hf = M.hierarchical_prf(true_node[idx], pred_node[idx], tax)
        h = report.hierarchical
        assert h["hierarchical_precision"].replicates[0, k] == pytest.approx(hp, abs=1e-12)
        assert h["hierarchical_f1"].replicates[0, k] == pytest.approx(hf, abs=1e-12)
        wrong = leaf[idx] != test.probs[idx].argmax(1)
        assert h["error_rate"].replicates[0, k] == pytest.approx(wrong.mean(), abs=1e-12)
        dist, _ = M.mistake_severity(leaf[idx], test.probs[idx].argmax(1), tax)
        assert h["mistake_distance"].replicates[0, k] == pytest.approx(dist[wrong].mean(), abs=1e-12)
        node = report.calibration_nodes["malignant"]
        assert node["ece"].replicates[0, k] == pytest.approx(
            M.expected_calibration_error(mal[idx], p_mal[idx], 15), abs=1e-12
        )
        assert node["brier"].replicates[0, k] == pytest.approx(
            skm.brier_score_loss(mal[idx], p_mal[idx]), abs=1e-12
        )


def test_readers_against_the_model(tax: Taxonomy, pair: Any, report: Any) -> None:
    """The model's specificity at each reader's sensitivity (threshold chosen on test), its interval from
    the task's replicates, the p-value against the reader's own value, the mean reader, and the replicates
    of the fraction dominated."""
    _, test = pair
    task = _protocol(tax).task("mel_vs_nv")
    rows, y, s = task_data(tax, task, Split("t", test, test.groups, None), "test")
    counts = _counts(test.groups[rows])
    res = report.tasks["mel_vs_nv"]
    r1 = res.readers[0]
    assert r1.model_specificity.value == M.specificity_at_sensitivity(y, s, 0.8)[0]
    assert r1.model_sensitivity.value == M.sensitivity_at_specificity(y, s, 0.7)[0]
    assert r1.p_specificity == pytest.approx(M.bootstrap_p_value(r1.model_specificity.replicates, 0.7))
    mean = res.mean_reader
    assert mean.mean_reader and (mean.sensitivity, mean.specificity) == pytest.approx((0.7, 0.8))
    assert mean.model_specificity.value == M.specificity_at_sensitivity(y, s, 0.7)[0]
    for k in (0, 9):
        idx = np.repeat(np.arange(len(y)), counts[k])
        assert r1.model_specificity.replicates[0, k] == M.specificity_at_sensitivity(y[idx], s[idx], 0.8)[0]
        fpr, tpr, _ = M.roc_curve(y[idx], s[idx])
        from hierclf.evaluation.readers import reader_dominance

        dom = reader_dominance(fpr, tpr, np.array([0.8, 0.6]), np.array([0.7, 0.9]))
        assert res.reader_fraction_dominated.replicates[0, k] == dom.mean()
    md = render_markdown(report)
    assert (
        "| **mean reader** | 0.700 | 0.800 |" in md and "model specificity at the reader's sensitivity" in md
    )


# --- intervals that hold at small n ----------------------------------------------------------------------


def _small_case(tax: Taxonomy, n_mel: int, caught: int, lesion_size: int = 1) -> tuple[Predictions, ...]:
    """A test set with ``n_mel`` melanomas of which ``caught`` score above every nevus (the rest below
    every one), in lesions of ``lesion_size`` images; validation makes the threshold."""
    n_nv = 60
    labels = np.array(["melanoma"] * n_mel + ["melanocytic_nevus"] * n_nv)
    mel_p = np.r_[np.full(caught, 0.9), np.full(n_mel - caught, 0.05)]
    nv_p = np.linspace(0.1, 0.5, n_nv)
    probs = np.zeros((len(labels), 7))
    mel, nv = tax.leaves.index("melanoma"), tax.leaves.index("melanocytic_nevus")
    probs[:, mel] = np.r_[mel_p, nv_p]
    probs[:, nv] = 1 - probs[:, mel]
    ids = np.array([f"s{i}" for i in range(len(labels))])
    groups = np.array([f"L{i // lesion_size}" for i in range(len(labels))])
    test = Predictions(probs, tax.leaves, ids, labels, groups)
    val_labels = np.array(["melanoma"] * 40 + ["melanocytic_nevus"] * 40)
    vp = np.zeros((80, 7))
    vp[:, mel] = np.r_[np.linspace(0.6, 0.95, 40), np.linspace(0.05, 0.7, 40)]
    vp[:, nv] = 1 - vp[:, mel]
    val = Predictions(
        vp,
        tax.leaves,
        np.array([f"v{i}" for i in range(80)]),
        val_labels,
        np.array([f"V{i}" for i in range(80)]),
    )
    return val, test


def _mel_protocol(tax: Taxonomy, **over: Any) -> Any:
    tasks = [{"name": "mel_vs_nv", "positive": ["melanoma"], "negative": ["melanocytic_nevus"]}]
    return _protocol(tax, tasks=tasks, partitions=[], calibration_nodes=[], **over)


def test_six_of_six_melanomas_get_an_exact_interval(tax: Taxonomy, tmp_path: Path) -> None:
    val, test = _small_case(tax, 6, 6)
    rep = evaluate(tax, _mel_protocol(tax), [val], [test])
    sens = rep.tasks["mel_vs_nv"].metrics["sensitivity"]
    assert sens.value == 1.0
    low, high = stats.binomtest(6, 6).proportion_ci(0.9, "exact")
    assert sens.ci == pytest.approx((low, high))  # 6 lesions of one image each: no clustering
    assert sens.interval == "clopper_pearson" and sens.events == 6 and "SMALL" in sens.flags
    # the bootstrap alone would have said [1, 1]
    assert np.nanmin(sens.replicates) == np.nanmax(sens.replicates) == 1.0
    write_report(rep, tmp_path)
    md = (tmp_path / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| sensitivity |"))
    assert f"[{low:.3f}, 1.000] SMALL" in line and "| Clopper-Pearson |" in line
    for text_line in md.splitlines():  # no zero-width interval without its flag
        for lo, hi in __import__("re").findall(r"\[(\d\.\d+), (\d\.\d+)\]", text_line):
            if lo == hi:
                assert "ZERO-WIDTH" in text_line, text_line


def test_six_melanomas_in_three_lesions_count_three_times(tax: Taxonomy) -> None:
    val, test = _small_case(tax, 6, 6, lesion_size=2)
    sens = evaluate(tax, _mel_protocol(tax), [val], [test]).tasks["mel_vs_nv"].metrics["sensitivity"]
    low, _ = stats.binomtest(3, 3).proportion_ci(0.9, "exact")
    assert sens.interval == "clopper_pearson_clustered" and sens.ci[0] == pytest.approx(low)


def test_zero_of_five(tax: Taxonomy) -> None:
    val, test = _small_case(tax, 5, 0)
    sens = evaluate(tax, _mel_protocol(tax), [val], [test]).tasks["mel_vs_nv"].metrics["sensitivity"]
    low, high = stats.binomtest(0, 5).proportion_ci(0.9, "exact")
    assert sens.value == 0.0 and sens.ci == pytest.approx((low, high)) and sens.events == 5


def test_wilson_and_bootstrap_on_request(tax: Taxonomy) -> None:
    val, test = _small_case(tax, 6, 6)
    wilson = _mel_protocol(tax, intervals={"proportions": "wilson"})
    sens = evaluate(tax, wilson, [val], [test]).tasks["mel_vs_nv"].metrics["sensitivity"]
    low, high = stats.binomtest(6, 6).proportion_ci(0.9, "wilson")
    assert sens.interval == "wilson" and sens.ci == pytest.approx((low, high))
    boot = _mel_protocol(tax, intervals={"proportions": "bootstrap"})
    sens = evaluate(tax, boot, [val], [test]).tasks["mel_vs_nv"].metrics["sensitivity"]
    assert sens.ci == (1.0, 1.0) and sens.flags == ["SMALL", "ZERO-WIDTH"]


def test_subgroups_of_three(tax: Taxonomy, pair: Any, tmp_path: Path) -> None:
    """A subgroup with 3 images: binomial intervals, SMALL flags that count positives and negatives."""
    val, test = pair
    rng = np.random.default_rng(0)
    site = np.where(np.arange(len(test)) < 3, "ear", rng.choice(["back", "face"], len(test)))
    with open(tmp_path / "meta.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "lesion_id", "site"])
        for p, sites in ((val, ["back"] * len(val)), (test, site)):
            for i, g, v in zip(p.ids, p.groups, sites):
                w.writerow([i, g, v])
    rep = evaluate(tax, _protocol(tax, subgroups=["site"]), [val], [test], metadata=tmp_path / "meta.csv")
    ear = next(r for r in rep.subgroups["site"] if r["value"] == "ear")
    cell = ear["tasks"]["malignant_vs_benign"]
    assert ear["n"] == [3]
    for key, events in (("sensitivity", cell["n_positive"]), ("specificity", cell["n_negative"])):
        est = cell[key]
        assert est["events"] == events and "SMALL" in est["flags"]
        if events:
            assert est["interval"].startswith(("clopper_pearson", "wilson"))
            assert est["ci"][1] > est["ci"][0]
    md = render_markdown(rep)
    assert "SMALL: sensitivity (" in md and "positives)" in md


# --- blank groups and the header -------------------------------------------------------------------------


def test_blank_group_ids_are_each_their_own_group(tax: Taxonomy, pair: Any, tmp_path: Path) -> None:
    """A metadata file whose lesion_id is empty used to pool every image into one group (zero-width CIs)."""
    val, test = pair
    with open(tmp_path / "meta.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "lesion_id"])
        for p in (val, test):
            for i in p.ids:
                w.writerow([i, ""])
    rep = evaluate(tax, _protocol(tax), [val], [test], metadata=tmp_path / "meta.csv")
    auc = rep.tasks["malignant_vs_benign"].metrics["auc"]
    assert auc.n_groups == auc.n and auc.ci[1] > auc.ci[0]
    blank = [w for w in rep.warnings if w.startswith("BLANK LESION_ID IDS")]
    assert any(f"{len(test)} of {len(test)} test samples" in w for w in blank)
    assert any(f"{len(val)} of {len(val)} validation samples" in w for w in blank)
    assert not any("LEAKAGE" in w for w in rep.warnings)  # blank ids are never "shared"
    # the same as a row-level bootstrap
    rows = evaluate(tax, _protocol(tax, group_column=None), [val], [test])
    assert rows.tasks["malignant_vs_benign"].metrics["auc"].ci == auc.ci
    assert "resampled one by one" in render_markdown(rep)


def test_some_blank_groups_keep_the_others(tax: Taxonomy, pair: Any) -> None:
    val, test = pair
    groups = test.groups.astype(object)  # wide enough for "(missing)"
    groups[:10] = ["", "nan", "(missing)", " ", "NA", "", "", "None", "", ""]
    t = Predictions(test.probs, test.columns, test.ids, test.labels, groups)
    rep = evaluate(tax, _protocol(tax), [val], [t])
    assert rep.resampling["per_seed"][0]["blank_group_ids"] == 10
    assert rep.resampling["per_seed"][0]["n_groups"] == len(set(test.groups[10:])) + 10
    assert any("10 of 400 test samples" in w for w in rep.warnings)


def test_header_says_what_was_resampled(tax: Taxonomy, pair: Any) -> None:
    val, test = pair
    grouped = evaluate(tax, _protocol(tax), [val], [test])
    md = render_markdown(grouped)
    assert "resampling **lesion_id** (200 groups; the prediction file's 'group' field)" in md
    bare = Predictions(test.probs, test.columns, test.ids, test.labels)
    no_groups = evaluate(
        tax, _protocol(tax), [Predictions(val.probs, val.columns, val.ids, val.labels)], [bare]
    )
    md = render_markdown(no_groups)
    assert "resampling **rows** (no lesion_id groups were found)" in md
    assert "resampling **lesion_id**" not in md
    assert no_groups.resampling["unit"] == "rows"
    none = render_markdown(evaluate(tax, _protocol(tax, group_column=None), [val], [test]))
    assert "resampling **rows** (the protocol has no group_column)" in none


# --- seeds -----------------------------------------------------------------------------------------------


def test_seeds_must_share_their_test_set(tax: Taxonomy, pair: Any, tmp_path: Path) -> None:
    val, test = pair
    other = _preds(tax, 400, 9, "u")
    with pytest.raises(
        EvaluationError, match=r"DIFFERENT TEST SETS: .* lacks 400 of the 400 sample ids .* e\.g\. 't0'"
    ):
        evaluate(tax, _protocol(tax), [val, val], [test, other])
    relabelled = Predictions(test.probs, test.columns, test.ids, test.labels[::-1], test.groups)
    with pytest.raises(EvaluationError, match="other true labels"):
        evaluate(tax, _protocol(tax), [val, val], [test, relabelled])
    write_predictions(tmp_path / "t.npz", test)
    with pytest.raises(
        EvaluationError, match="DUPLICATE PREDICTIONS: seed 0 .* and seed 1 .*same file passed twice"
    ):
        evaluate(tax, _protocol(tax), [val, val], [tmp_path / "t.npz", tmp_path / "t.npz"])
    # allowed: loud, and a per-seed table
    rep = evaluate(tax, _protocol(tax), [val, val], [test, other], allow_seed_mismatch=True)
    assert any(w.startswith("DIFFERENT TEST SETS") for w in rep.warnings)
    assert [row["test"] for row in rep.seed_table] == rep.seeds
    assert rep.seed_table[1]["tasks"]["mel_vs_nv"]["auc"] == rep.tasks["mel_vs_nv"].metrics["auc"].per_seed[1]
    assert "Per seed (test):" in render_markdown(rep)
    # the same samples in another order are the same test set
    order = np.random.default_rng(0).permutation(len(test))
    again = _reseeded(tax, test, 4).select(order)
    two = evaluate(tax, _protocol(tax), [val, val], [test, again])
    assert not any("TEST SETS" in w for w in two.warnings) and two.n_seeds == 2


# --- the two defects -------------------------------------------------------------------------------------


def test_rollup_within_tolerance_is_clipped(tax: Taxonomy, pair: Any, tmp_path: Path) -> None:
    """A 4-decimal CSV row summing to 1.0001 rolls up to P(malignant) = 1.0001: clipped, not an error."""
    val, test = pair
    probs = np.round(test.probs, 4)
    malignant = [tax.leaves.index(x) for x in tax.leaves_under("malignant")]
    probs[0] = 0.0
    probs[0, malignant[0]], probs[0, malignant[1]] = 0.5001, 0.5  # sums to 1.0001
    t = Predictions(probs, test.columns, test.ids, test.labels, test.groups)
    write_predictions(tmp_path / "t.csv", t)
    rep = evaluate(tax, _protocol(tax), [val], [tmp_path / "t.csv"])
    assert math.isfinite(rep.calibration_nodes["malignant"]["ece"].value)
    # float32 probabilities (as training writes them) likewise
    t32 = Predictions(
        test.probs.astype(np.float32) * np.float32(1.0000001),
        test.columns,
        test.ids,
        test.labels,
        test.groups,
    )
    assert "ece" in evaluate(tax, _protocol(tax), [val], [t32]).calibration_nodes["malignant"]


def test_rollup_far_outside_names_file_row_and_node(tax: Taxonomy, pair: Any) -> None:
    val, test = pair
    probs = test.probs.copy()
    probs[7] = 0.0
    probs[7, tax.leaves.index("melanoma")] = 1.5
    t = Predictions(probs, test.columns, test.ids, test.labels, test.groups)
    with pytest.raises(
        EvaluationError, match=r"test predictions of seed 0: row 7 \(id 't7'\): P\(\w+\) = 1\.5 is outside"
    ):
        evaluate(tax, _protocol(tax), [val], [t])


def test_validation_sensitivity_has_the_validation_sizes(tax: Taxonomy, pair: Any, report: Any) -> None:
    val, _ = pair
    task = _protocol(tax).task("malignant_vs_benign")
    rows, _, _ = task_data(tax, task, Split("v", val, val.groups, None), "validation")
    est = report.tasks["malignant_vs_benign"].metrics["validation_sensitivity"]
    assert est.n == len(rows) and est.n_groups == len(set(val.groups[rows]))
    assert report.tasks["malignant_vs_benign"].metrics["sensitivity"].n == 400


# --- subgroups: bands, references, differences -----------------------------------------------------------


def _meta_with_age(tmp_path: Path, val: Predictions, test: Predictions) -> Path:
    rng = np.random.default_rng(3)
    with open(tmp_path / "meta.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "lesion_id", "age", "sex"])
        for p in (val, test):
            for i, g in zip(p.ids, p.groups):
                age = "" if rng.random() < 0.05 else f"{rng.integers(5, 90)}.0"
                w.writerow([i, g, age, rng.choice(["female", "male"])])
    return tmp_path / "meta.csv"


def test_age_bands_and_differences(tax: Taxonomy, pair: Any, tmp_path: Path) -> None:
    val, test = pair
    meta = _meta_with_age(tmp_path, val, test)
    proto = _protocol(
        tax,
        subgroups=["age", "sex"],
        subgroup_options={"age": {"bands": [30, 60]}, "sex": {"reference": "female"}},
    )
    rep = evaluate(tax, proto, [val], [test], metadata=meta)
    assert [r["value"] for r in rep.subgroups["age"]] == ["< 30", "[30, 60)", ">= 60", "(missing)"]
    with open(meta, newline="") as fh:
        age = {r["image_id"]: r["age"] for r in csv.DictReader(fh)}
    ages = np.array([float(age[i]) if age[i] else np.nan for i in test.ids])
    assert rep.subgroups["age"][1]["n"] == [int(((ages >= 30) & (ages < 60)).sum())]
    # each band against the rest: the point difference, and the replicates of one resampled task
    task = proto.task("malignant_vs_benign")
    rows, y, s = task_data(tax, task, Split("t", test, test.groups, None), "test")
    inside = (ages[rows] >= 30) & (ages[rows] < 60)
    diff = rep.subgroups["age"][1]["tasks"]["malignant_vs_benign"]["difference"]
    assert diff["against"] == "the rest"
    assert diff["auc"]["value"] == pytest.approx(
        M.roc_auc(y[inside], s[inside]) - M.roc_auc(y[~inside], s[~inside])
    )
    counts = _counts(test.groups[rows])
    path = "subgroups/age/[30, 60)/malignant_vs_benign/difference/auc"
    reps = rep.subgroup_replicates[path][0]
    for k in (0, 5):
        idx = np.repeat(np.arange(len(y)), counts[k])
        a, b = idx[inside[idx]], idx[~inside[idx]]
        assert reps[k] == pytest.approx(
            skm.roc_auc_score(y[a], s[a]) - skm.roc_auc_score(y[b], s[b]), abs=1e-12
        )
    assert 0 < diff["auc"]["p_value"] <= 1
    # sex against its declared reference
    male = next(r for r in rep.subgroups["sex"] if r["value"] == "male")
    assert male["tasks"]["mel_vs_nv"]["difference"]["against"] == "female"
    female = next(r for r in rep.subgroups["sex"] if r["value"] == "female")
    assert "auc" not in female["tasks"]["mel_vs_nv"]["difference"]
    assert "ece" in male["tasks"]["mel_vs_nv"]  # calibration per subgroup
    md = render_markdown(rep)
    assert "Differences against female" in md and "Differences against the rest" in md


def test_subgroup_option_errors(tax: Taxonomy, pair: Any, tmp_path: Path) -> None:
    val, test = pair
    meta = _meta_with_age(tmp_path, val, test)
    proto = _protocol(tax, subgroups=["sex"], subgroup_options={"sex": {"reference": "femal"}})
    with pytest.raises(UnknownNameError, match="did you mean 'female'"):
        evaluate(tax, proto, [val], [test], metadata=meta)
    text = (
        "name: p\ntarget_sensitivity: 0.9\ngroup_column: null\nprimary_metric: {metric: auc, task: t}\n"
        "tasks: [{name: t, positive: [melanoma], negative: [melanocytic_nevus]}]\nsubgroups: [age]\n"
        "subgroup_options:\n  agee: {bands: [30, 60]}\n"
    )
    with pytest.raises(
        ProtocolError, match=r"p.yaml:8:\d+: .*unknown subgroup column 'agee'.*did you mean 'age'"
    ):
        protocol_from_text(text, tax, "p.yaml")
    with pytest.raises(ProtocolError, match="strictly increasing"):
        protocol_from_text(text.replace("agee: {bands: [30, 60]}", "age: {bands: [60, 30]}"), tax, "p.yaml")


# --- --save-replicates -----------------------------------------------------------------------------------


def test_save_replicates(tax: Taxonomy, report: Any, tmp_path: Path) -> None:
    written = write_report(report, tmp_path, save_replicates=True)
    data = np.load(written["replicates.npz"])
    assert set(data.files) == set(report.replicates())
    auc = data["tasks/mel_vs_nv/metrics/auc"]
    assert auc.shape == (1, REPS)
    np.testing.assert_array_equal(auc, report.tasks["mel_vs_nv"].metrics["auc"].replicates)
    assert (
        "hierarchical/hierarchical_f1" in data.files
        and "tasks/mel_vs_nv/readers/r1/model_specificity" in data.files
    )
    assert not (tmp_path / "x" / "replicates.npz").exists()
    assert "replicates.npz" not in write_report(report, tmp_path / "x")


# --- case-level reads ------------------------------------------------------------------------------------


def _reads(tmp_path: Path, tax: Taxonomy, test: Predictions, rows: int = 400) -> tuple[Path, dict[str, Any]]:
    """Three readers: r1 and r2 read every test case (decisions; r1 also a 1-5 score), r3 the first half."""
    rng = np.random.default_rng(7)
    mel = np.isin(test.labels, tax.leaves_under("melanoma")).astype(int)
    lines = ["reader,case_id,decision,score"]
    truth = {}
    for reader, acc, n in (("r1", 0.85, rows), ("r2", 0.75, rows), ("r3", 0.8, rows // 2)):
        right = rng.random(n) < acc
        dec = np.where(right, mel[:n], 1 - mel[:n])
        score = np.clip(dec * 2 + rng.integers(1, 4, n), 1, 5)
        truth[reader] = (dec, score)
        lines += [f"{reader},{test.ids[i]},{dec[i]},{score[i]}" for i in range(n)]
    (tmp_path / "reads.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "reads.csv", truth


def test_case_level_reads(tax: Taxonomy, pair: Any, tmp_path: Path) -> None:
    val, test = pair
    path, truth = _reads(tmp_path, tax, test)
    proto = _protocol(tax)
    rep = evaluate(tax, proto, [val], [test], readers=path)
    res = rep.tasks["mel_vs_nv"]
    rows, y, s = _task(tax, "mel_vs_nv", test)
    dec, score = truth["r1"]
    d = dec[rows]  # every test sample was read: the task's cases in the task's order
    sens, spec = d[y == 1].mean(), 1 - d[y == 0].mean()
    study = {r["reader"]: r for r in res.reader_study["readers"]}
    r1 = study["r1"]
    assert r1["n_cases"] == len(y) and r1["sensitivity"]["value"] == pytest.approx(sens)
    assert r1["specificity"]["value"] == pytest.approx(spec)
    # the operating points that the readers' table uses come from the decisions
    assert [(p.reader, p.sensitivity) for p in res.readers][:1] == [("r1", pytest.approx(sens))]
    ms = r1["matched_specificity"]
    assert ms["model"]["value"] == M.specificity_at_sensitivity(y, s, sens)[0]
    assert ms["difference"]["value"] == pytest.approx(ms["model"]["value"] - spec)
    # replicate k of the paired difference, by explicit resampling of the reader's cases
    reps = M.bootstrap_reader_comparison(y, s[None], d, test.groups[rows], n_replicates=REPS, seed=5)
    counts = _counts(test.groups[rows])
    for k in (0, 17):
        idx = np.repeat(np.arange(len(y)), counts[k])
        se, sp = d[idx][y[idx] == 1].mean(), 1 - d[idx][y[idx] == 0].mean()
        assert reps["model_specificity"][0, k] - reps["reader_specificity"][k] == pytest.approx(
            M.specificity_at_sensitivity(y[idx], s[idx], se)[0] - sp, abs=1e-12
        )
    # McNemar at the model's validation threshold
    thr = res.thresholds.per_seed[0]
    pos = y == 1
    b = int(((s[pos] >= thr) & (d[pos] == 0)).sum())
    c = int(((s[pos] < thr) & (d[pos] == 1)).sum())
    got = r1["at_model_threshold"][0]["sensitivity"]
    assert (got["first_only"], got["second_only"]) == (b, c)
    assert got["p_value"] == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0)
    # scores: the AUC against the model's, DeLong clustered over lesions
    want = M.delong_test(y, np.stack([s, score[rows].astype(float)]), [1.0, -1.0], groups=test.groups[rows])
    assert r1["auc"]["delong"]["p_value"] == pytest.approx(want.p_value)
    assert study["r3"]["n_cases"] < len(y)
    md = render_markdown(rep)
    assert "Case-level reads" in md and "mrmc_long.csv" in md


def test_mrmc_long_table(tax: Taxonomy, pair: Any, tmp_path: Path) -> None:
    val, test = pair
    path, truth = _reads(tmp_path, tax, test)
    rep = evaluate(tax, _protocol(tax), [val], [test], readers=path)
    write_report(rep, tmp_path / "out")
    with open(tmp_path / "out" / "mrmc_long.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["task", "reader", "case", "test", "truth", "rating"]
    rows, y, s = _task(tax, "mel_vs_nv", test)
    human = [r for r in table if r["test"] == "human" and r["reader"] == "r1"]
    model = [r for r in table if r["test"] == "model"]
    assert len(human) == len(rows) and len(model) == len(rows)  # every task case was read by someone
    by_case = {r["case"]: r for r in model}
    for i, k in enumerate(rows[:20]):
        assert int(by_case[str(test.ids[k])]["truth"]) == y[i]
        assert float(by_case[str(test.ids[k])]["rating"]) == pytest.approx(s[i])
    assert {r["rating"] for r in human} <= {"1", "2", "3", "4", "5", "1.0", "2.0", "3.0", "4.0", "5.0"}


def test_reads_errors(tax: Taxonomy, pair: Any, tmp_path: Path) -> None:
    from hierclf import FileFormatError

    val, test = pair
    (tmp_path / "a.csv").write_text("reader,case_id,decision\nr1,t0,1\nr1,nope,0\nr1,nada,1\n")
    with pytest.raises(
        EvaluationError,
        match=r"2 case\(s\) of the reader file .* are not in the test set .* e\.g\. 'nada', 'nope'",
    ):
        evaluate(tax, _protocol(tax), [val], [test], readers=tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("reader,case_id,decision\nr1,t0,1\nr1,t1,2\n")
    with pytest.raises(FileFormatError, match=r"b.csv:3:\d+: .*decision '2' is not 0 or 1"):
        evaluate(tax, _protocol(tax), [val], [test], readers=tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("reader,case_id,decision\nr1,t0,1\nr1,t0,0\n")
    with pytest.raises(FileFormatError, match="reads case 't0' twice"):
        evaluate(tax, _protocol(tax), [val], [test], readers=tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("reader,case_id,decision,task\nr1,t0,1,mel_v_nv\n")
    with pytest.raises(UnknownNameError, match="did you mean 'mel_vs_nv'"):
        evaluate(tax, _protocol(tax), [val], [test], readers=tmp_path / "d.csv")
