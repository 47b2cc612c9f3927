"""evaluate(): every number checked against an independent reference (scikit-learn, brute-force tree sums)."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from hierclf import FileFormatError, Taxonomy
from hierclf.evaluation.pipeline import (
    EvaluationError,
    evaluate,
    read_metadata,
    reader_dominance,
    task_scores,
)
from hierclf.evaluation.prediction_files import Predictions, write_predictions
from hierclf.evaluation.protocol_format import Protocol, protocol_from_dict
from hierclf.evaluation.report import write_report

REPLICATES = 40
REPO = Path(__file__).resolve().parents[1]


def _protocol(tax: Taxonomy, **over: Any) -> Protocol:
    data: dict[str, Any] = {
        "name": "test_protocol",
        "target_sensitivity": 0.9,
        "group_column": "lesion_id",
        "min_seeds": 3,
        "bootstrap": {"replicates": REPLICATES, "ci_level": 0.9, "seed": 3},
        "primary_metric": {"metric": "specificity_at_target_sensitivity", "task": "mel_vs_nv"},
        "tasks": [
            {"name": "mel_vs_nv", "positive": ["malignant_melanocytic"], "negative": ["benign_melanocytic"]},
            {
                "name": "kc_vs_bk",
                "positive": ["malignant_keratinocytic"],
                "negative": ["benign_keratinocytic"],
            },
            {"name": "malignant_vs_benign", "positive": ["malignant"], "negative": ["benign"]},
        ],
        "partitions": [
            {"name": "three_way", "nodes": ["benign", "melanoma", "keratinocyte_carcinoma"]},
            {"name": "leaves", "nodes": ["nv", "bkl", "df", "vasc", "mel", "bcc", "akiec"]},
        ],
        "calibration_nodes": ["malignant"],
        "cancer_node": "malignant",
        # every seed of the `data` fixture has its own random test set, which evaluate refuses unless allowed
        "allow_seed_mismatch": True,
    }
    data.update(over)
    return protocol_from_dict(data, tax)


def _preds(tax: Taxonomy, n: int, seed: int, *, signal: float = 1.2, prefix: str = "s") -> Predictions:
    """Random leaf probabilities with a signal towards the true leaf, two images per lesion.

    Probabilities are multiples of 1/1024, so every sum over leaves is exact in float64 whatever the order
    of summation: tied scores stay tied in the API and in the brute-force references alike.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(tax.leaves), n)
    logits = rng.normal(size=(n, len(tax.leaves)))
    logits[np.arange(n), y] += signal
    p = np.exp(logits)
    k = np.floor(1024 * p / p.sum(1, keepdims=True))
    k[np.arange(n), k.argmax(1)] += 1024 - k.sum(1)
    ids = np.array([f"{prefix}{seed}_{i}" for i in range(n)])
    groups = np.array([f"lesion{seed}_{i // 2}" for i in range(n)])
    return Predictions(k / 1024, tax.leaves, ids, np.asarray(tax.leaves)[y], groups)


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return Taxonomy.from_yaml(Path(__file__).resolve().parents[1] / "taxonomy" / "dermamnist.yaml")


@pytest.fixture(scope="module")
def data(tax: Taxonomy) -> tuple[list[Predictions], list[Predictions]]:
    val = [_preds(tax, 300, s, prefix="v") for s in range(3)]
    test = [_preds(tax, 400, 50 + s, prefix="t") for s in range(3)]
    return val, test


@pytest.fixture(scope="module")
def report(tax: Taxonomy, data: tuple[list[Predictions], list[Predictions]]) -> Any:
    return evaluate(tax, _protocol(tax), *data)


# --- brute-force references ---------------------------------------------------------------------------


def _node_prob(tax: Taxonomy, p: Predictions, node: str) -> np.ndarray:
    """P(node) = sum of the leaf columns under it (python loop over leaves: the slow reference)."""
    out = np.zeros(len(p))
    for leaf in tax.leaves_under(node):
        out += p.probs[:, p.columns.index(leaf)]
    return out


def _bf_task(tax: Taxonomy, p: Predictions, pos: list[str], neg: list[str]) -> tuple[np.ndarray, ...]:
    pos_leaves = {leaf for n in pos for leaf in tax.leaves_under(n)}
    neg_leaves = {leaf for n in neg for leaf in tax.leaves_under(n)}
    rows = np.array([i for i, lab in enumerate(p.labels) if lab in pos_leaves | neg_leaves])
    y = np.array([1 if p.labels[i] in pos_leaves else 0 for i in rows])
    pp = sum(_node_prob(tax, p, n) for n in pos)[rows]
    pn = sum(_node_prob(tax, p, n) for n in neg)[rows]
    return rows, y, pp / (pp + pn)


def _sk_threshold(y: np.ndarray, s: np.ndarray, target: float) -> float:
    """The largest threshold whose sensitivity reaches the target, from scikit-learn's ROC points."""
    _, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    return float(thr[np.argmax(tpr >= target)])


TASKS = [
    ("mel_vs_nv", ["melanoma"], ["melanocytic_nevus"]),
    ("kc_vs_bk", ["keratinocyte_carcinoma"], ["benign_keratosis"]),
    ("malignant_vs_benign", ["malignant"], ["benign"]),
]


# --- tasks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "pos", "neg"), TASKS)
def test_task_scores_equal_brute_force_conditional(
    tax: Taxonomy, data: Any, name: str, pos: list[str], neg: list[str]
) -> None:
    proto = _protocol(tax)
    for p in data[1]:
        rows, y, s = task_scores(tax, proto.task(name), p)
        bf_rows, bf_y, bf_s = _bf_task(tax, p, pos, neg)
        np.testing.assert_array_equal(rows, bf_rows)
        np.testing.assert_array_equal(y, bf_y)
        np.testing.assert_array_equal(s, bf_s)  # exact: the probabilities are dyadic


@pytest.mark.parametrize(("name", "pos", "neg"), TASKS)
def test_task_metrics_against_sklearn(
    tax: Taxonomy, data: Any, report: Any, name: str, pos: list[str], neg: list[str]
) -> None:
    res = report.tasks[name]
    target = 0.9
    for k, (v, t) in enumerate(zip(*data)):
        _, yv, sv = _bf_task(tax, v, pos, neg)
        _, yt, score_t = _bf_task(tax, t, pos, neg)
        thr = _sk_threshold(yv, sv, target)
        assert res.thresholds.per_seed[k] == pytest.approx(thr, rel=1e-12)
        called = score_t >= thr
        tp, fn = int((called & (yt == 1)).sum()), int((~called & (yt == 1)).sum())
        tn, fp = int((~called & (yt == 0)).sum()), int((called & (yt == 0)).sum())
        m = res.metrics
        assert m["sensitivity"].per_seed[k] == pytest.approx(tp / (tp + fn))
        assert m["specificity"].per_seed[k] == pytest.approx(tn / (tn + fp))
        assert m["ppv"].per_seed[k] == pytest.approx(tp / (tp + fp))
        assert m["npv"].per_seed[k] == pytest.approx(tn / (tn + fn))
        assert m["auc"].per_seed[k] == pytest.approx(roc_auc_score(yt, score_t), rel=1e-12)
        # the optimistic number re-chooses the threshold on test
        opt = _sk_threshold(yt, score_t, target)
        spec_opt = ((score_t < opt) & (yt == 0)).sum() / (yt == 0).sum()
        assert m["specificity_at_target_chosen_on_test"].per_seed[k] == pytest.approx(spec_opt)
        assert m["validation_sensitivity"].per_seed[k] >= target
        fpr, tpr, _ = roc_curve(yt, score_t, drop_intermediate=False)
        np.testing.assert_allclose(res.roc[k]["fpr"], fpr)
        np.testing.assert_allclose(res.roc[k]["tpr"], tpr)
        assert res.counts["test_positive"][k] == int(yt.sum())
        assert res.counts["test_groups"][k] == len(set(t.groups[_bf_task(tax, t, pos, neg)[0]]))
        if name == "malignant_vs_benign":
            assert len(np.unique(score_t)) < len(score_t)  # the case has tied scores
    assert res.threshold_source == "validation"
    assert "threshold chosen on validation" in res.metrics["specificity"].provenance
    assert res.metrics["specificity_at_target_chosen_on_test"].provenance.startswith("OPTIMISTIC")


def test_seed_aggregation_is_numpy_mean_and_std(report: Any) -> None:
    for res in report.tasks.values():
        for est in res.metrics.values():
            vals = np.asarray(est.per_seed)
            assert est.value == pytest.approx(np.mean(vals))
            assert est.std == pytest.approx(np.std(vals, ddof=1))
    assert report.n_seeds == 3


def test_pooled_ci_brackets_and_has_group_counts(report: Any) -> None:
    auc = report.tasks["malignant_vs_benign"].metrics["auc"]
    assert auc.ci[0] < auc.value < auc.ci[1] and auc.ci_level == 0.9
    # every seed has 400 test samples in the task, in 200 groups: one number each, not per-seed lists
    assert auc.n == 400
    assert report.tasks["malignant_vs_benign"].counts["test_groups"] == [200, 200, 200]
    assert auc.n_groups == 200


def test_bootstrap_resamples_groups_not_rows(tax: Taxonomy, data: Any) -> None:
    """With every sample in its own group the CI is the row-level one; with all samples of a seed in two
    huge groups it cannot be the same (a different resampling unit)."""
    val, test = data
    test_one = [test[0]]
    rows = evaluate(tax, _protocol(tax, group_column=None), [val[0]], test_one)
    t = test[0]
    coarse = Predictions(t.probs, t.columns, t.ids, t.labels, np.array([f"g{i % 5}" for i in range(len(t))]))
    grouped = evaluate(tax, _protocol(tax), [val[0]], [coarse])
    a = rows.tasks["malignant_vs_benign"].metrics["auc"]
    b = grouped.tasks["malignant_vs_benign"].metrics["auc"]
    assert a.value == b.value and a.n_groups == 400  # every row its own group
    assert b.n_groups == 5
    assert a.ci != b.ci
    assert any("ROW-LEVEL" in w for w in rows.warnings)


def test_few_seeds_warn(tax: Taxonomy, data: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hierclf.evaluation"):
        rep = evaluate(tax, _protocol(tax, min_seeds=5), data[0][:2], data[1][:2])
    assert any("ONLY 2 SEEDS" in w and "at least 5" in w for w in rep.warnings)
    assert any("ONLY 2 SEEDS" in r.getMessage() for r in caplog.records)
    enough = evaluate(tax, _protocol(tax, min_seeds=2), data[0][:2], data[1][:2])
    assert not any("SEED" in w for w in enough.warnings)


# --- partitions, hierarchy, calibration ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["three_way", "leaves"])
def test_partition_metrics_against_sklearn(tax: Taxonomy, data: Any, report: Any, name: str) -> None:
    part = report.partitions[name]
    cut = part.classes
    for k, t in enumerate(data[1]):
        probs = np.stack([_node_prob(tax, t, c) for c in cut], axis=1)
        pred = probs.argmax(1)
        y = np.array([next(i for i, c in enumerate(cut) if lab in tax.leaves_under(c)) for lab in t.labels])
        np.testing.assert_array_equal(part.confusion[k], confusion_matrix(y, pred, labels=range(len(cut))))
        assert part.metrics["balanced_accuracy"].per_seed[k] == pytest.approx(
            balanced_accuracy_score(y, pred)
        )
        recall = recall_score(y, pred, labels=range(len(cut)), average=None, zero_division=np.nan)
        for i, c in enumerate(cut):
            assert part.per_class_recall[c].per_seed[k] == pytest.approx(recall[i])
        assert part.metrics["macro_auc"].per_seed[k] == pytest.approx(
            roc_auc_score(y, probs, multi_class="ovr", average="macro")
        )
        malignant = np.array(
            [
                tax.is_leaf(c)
                and "malignant" in tax.ancestors(c)
                or c == "malignant"
                or "malignant" in tax.ancestors(c)
                for c in cut
            ]
        )
        truth, called = malignant[y], malignant[pred]
        assert part.metrics["cancer_sensitivity"].per_seed[k] == pytest.approx(
            (truth & called).sum() / truth.sum()
        )
    assert part.per_class_recall[cut[0]].ci[0] <= part.per_class_recall[cut[0]].value


def test_hierarchical_metrics_against_brute_force(tax: Taxonomy, data: Any, report: Any) -> None:
    for k, t in enumerate(data[1]):
        pred = np.asarray(t.columns)[t.probs.argmax(1)]

        def anc(n: str) -> set[str]:
            return {n, *tax.ancestors(n)} - {tax.root}

        common = sum(len(anc(a) & anc(b)) for a, b in zip(t.labels, pred))
        hp = common / sum(len(anc(b)) for b in pred)
        hr = common / sum(len(anc(a)) for a in t.labels)
        h = report.hierarchical
        assert h["hierarchical_precision"].per_seed[k] == pytest.approx(hp)
        assert h["hierarchical_recall"].per_seed[k] == pytest.approx(hr)
        assert h["hierarchical_f1"].per_seed[k] == pytest.approx(2 * hp * hr / (hp + hr))
        wrong = [(a, b) for a, b in zip(t.labels, pred) if a != b]
        assert h["mistake_distance"].per_seed[k] == pytest.approx(
            np.mean([tax.distance(a, b) for a, b in wrong])
        )
        assert h["error_rate"].per_seed[k] == pytest.approx(len(wrong) / len(t))


def test_calibration_uses_task_scores_and_node_probabilities(tax: Taxonomy, data: Any, report: Any) -> None:
    from hierclf.evaluation.metrics import expected_calibration_error

    t = data[1][0]
    _, y, s = _bf_task(tax, t, ["malignant"], ["benign"])
    ece = report.tasks["malignant_vs_benign"].calibration["ece"].per_seed[0]
    assert ece == pytest.approx(expected_calibration_error(y, s, n_bins=15))
    node = report.calibration_nodes["malignant"]["ece"].per_seed[0]
    assert node == pytest.approx(ece)  # P(malignant) = P(malignant | malignant or benign) for every leaf


# --- coarse prediction columns -------------------------------------------------------------------------


def test_coarse_columns(tax: Taxonomy, data: Any) -> None:
    """Predictions over a cut (training classes): tasks at or above it work, a finer partition is skipped."""
    cut = ["benign", "melanoma", "keratinocyte_carcinoma"]

    def coarse(p: Predictions) -> Predictions:
        probs = np.stack([_node_prob(tax, p, c) for c in cut], axis=1)
        return Predictions(probs, tuple(cut), p.ids, p.labels, p.groups)

    val, test = data
    proto = _protocol(tax, tasks=[{"name": "mel_vs_nv", "positive": ["melanoma"], "negative": ["benign"]}])
    rep = evaluate(tax, proto, [coarse(val[0])], [coarse(test[0])])
    _, y, s = _bf_task(tax, test[0], ["melanoma"], ["benign"])
    assert rep.tasks["mel_vs_nv"].metrics["auc"].per_seed[0] == pytest.approx(roc_auc_score(y, s))
    assert "leaves" not in rep.partitions and "three_way" in rep.partitions
    assert any("PARTITION 'leaves' SKIPPED" in w for w in rep.warnings)
    with pytest.raises(EvaluationError, match="below the prediction columns"):
        evaluate(tax, _protocol(tax), [coarse(val[0])], [coarse(test[0])])


# --- thresholds on test --------------------------------------------------------------------------------


def test_thresholds_on_test_refused_unless_allowed(tax: Taxonomy, data: Any) -> None:
    with pytest.raises(EvaluationError, match="allow"):
        evaluate(tax, _protocol(tax), None, data[1])
    rep = evaluate(tax, _protocol(tax), None, data[1], allow_test_thresholds=True)
    assert rep.threshold_source.startswith("test")
    assert any("THRESHOLDS CHOSEN ON TEST" in w for w in rep.warnings)
    res = rep.tasks["mel_vs_nv"]
    _, y, s = _bf_task(tax, data[1][0], ["melanoma"], ["melanocytic_nevus"])
    assert res.thresholds.per_seed[0] == pytest.approx(_sk_threshold(y, s, 0.9))
    assert "chosen on test" in res.metrics["specificity"].provenance
    rep2 = evaluate(tax, _protocol(tax, allow_test_thresholds=True), [], data[1][:1])
    assert rep2.threshold_source.startswith("test")


# --- bad inputs ----------------------------------------------------------------------------------------


def test_val_test_count_mismatch(tax: Taxonomy, data: Any) -> None:
    with pytest.raises(EvaluationError, match="2 validation and 3 test"):
        evaluate(tax, _protocol(tax), data[0][:2], data[1])


def test_split_without_positives(tax: Taxonomy, data: Any) -> None:
    t = data[1][0]
    keep = t.labels != "melanoma"
    no_mel = t.select(np.flatnonzero(keep))
    with pytest.raises(EvaluationError, match="task 'mel_vs_nv' has no positive samples in the test split"):
        evaluate(tax, _protocol(tax), [data[0][0]], [no_mel])
    no_nv = data[0][0].select(np.flatnonzero(data[0][0].labels != "melanocytic_nevus"))
    with pytest.raises(EvaluationError, match="no negative samples in the validation split"):
        evaluate(tax, _protocol(tax), [no_nv], [t])


def test_nan_probabilities(tax: Taxonomy, data: Any) -> None:
    t = data[1][0]
    probs = t.probs.copy()
    probs[7, 2] = np.nan
    bad = Predictions(probs, t.columns, t.ids, t.labels, t.groups)
    with pytest.raises(EvaluationError, match="row 7.*not a finite number"):
        evaluate(tax, _protocol(tax), [data[0][0]], [bad])


def test_missing_labels_and_groups(tax: Taxonomy, data: Any) -> None:
    t = data[1][0]
    with pytest.raises(EvaluationError, match="no true labels"):
        evaluate(tax, _protocol(tax), [data[0][0]], [Predictions(t.probs, t.columns, t.ids)])
    # no lesion ids anywhere (MedMNIST's DermaMNIST has none): rows are resampled, loudly
    rep = evaluate(tax, _protocol(tax), [data[0][0]], [Predictions(t.probs, t.columns, t.ids, t.labels)])
    assert any(w.startswith("NO LESION_ID GROUPS") for w in rep.warnings)
    assert rep.tasks["malignant_vs_benign"].metrics["auc"].n_groups == 400


# --- metadata and subgroups ----------------------------------------------------------------------------


def _write_metadata(path: Path, preds: list[Predictions], seed: int = 0) -> dict[str, dict[str, str]]:
    rng = np.random.default_rng(seed)
    rows = {}
    for p in preds:
        for i, g in zip(p.ids, p.groups):
            rows[str(i)] = {
                "lesion_id": str(g),
                "sex": str(rng.choice(["female", "male"])),
                "site": str(rng.choice(["back", "face", "ear"], p=[0.6, 0.36, 0.04])),
            }
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "lesion_id", "sex", "site"])
        for i, r in rows.items():
            w.writerow([i, r["lesion_id"], r["sex"], r["site"]])
    return rows


def test_subgroup_counts_equal_manual_counts(tax: Taxonomy, data: Any, tmp_path: Path) -> None:
    val, test = data
    meta = _write_metadata(tmp_path / "meta.csv", val + test)
    rep = evaluate(
        tax,
        _protocol(tax, subgroups=["sex", "site"], min_group_size=40),
        val,
        test,
        metadata=tmp_path / "meta.csv",
    )
    for col in ("sex", "site"):
        rows = {r["value"]: r for r in rep.subgroups[col]}
        for k, t in enumerate(test):
            counts = Counter(meta[i][col] for i in t.ids)
            for value, n in counts.items():
                n_seed = rows[value]["n"][k]
                assert n_seed == n
                assert rows[value]["small"] == (min(rows[value]["n"]) < 40)
            # per-task positives within the subgroup
            pos = {leaf for leaf in tax.leaves_under("malignant")}
            for value in counts:
                n_pos = sum(1 for i, lab in zip(t.ids, t.labels) if meta[i][col] == value and lab in pos)
                got = rows[value]["tasks"]["malignant_vs_benign"]["n_positive"]
                assert (got[k] if isinstance(got, list) else got) == n_pos
    assert any(r["small"] for r in rep.subgroups["site"])
    assert any("flagged small" in n and "ear" in n for n in rep.notes)
    # the metadata's lesion_id is the group column: the group count matches
    t = test[0]
    assert rep.tasks["malignant_vs_benign"].counts["test_groups"][0] == len(set(t.groups))


def test_metadata_errors(tax: Taxonomy, data: Any, tmp_path: Path) -> None:
    val, test = data
    _write_metadata(tmp_path / "meta.csv", [test[0]])  # validation ids missing
    with pytest.raises(
        EvaluationError, match=r"300 of 300 sample ids .* are not in the metadata.*e\.g\. 'v0_0'"
    ):
        evaluate(tax, _protocol(tax), [val[0]], [test[0]], metadata=tmp_path / "meta.csv")
    (tmp_path / "noid.csv").write_text("name,sex\na,male\n")
    with pytest.raises(FileFormatError, match="no sample id column"):
        read_metadata(tmp_path / "noid.csv")
    (tmp_path / "dup.csv").write_text("image_id,sex\na,male\na,female\n")
    with pytest.raises(FileFormatError, match="appears 2 times"):
        read_metadata(tmp_path / "dup.csv")
    _write_metadata(tmp_path / "all.csv", [val[0], test[0]])
    with pytest.raises(KeyError, match="unknown metadata column 'sexx'.*did you mean 'sex'"):
        evaluate(tax, _protocol(tax, subgroups=["sexx"]), [val[0]], [test[0]], metadata=tmp_path / "all.csv")


# --- readers -------------------------------------------------------------------------------------------


def test_reader_dominance_constructed_case() -> None:
    # ROC through (0, 0), (0, 0.5), (0.2, 0.8), (0.2, 0.9), (1, 1)
    fpr = np.array([0.0, 0.0, 0.2, 0.2, 1.0])
    tpr = np.array([0.0, 0.5, 0.8, 0.9, 1.0])
    sens = np.array([0.5, 0.51, 0.65, 0.66, 0.9, 0.91, 0.95, 1.0])
    spec = np.array([1.0, 1.0, 0.9, 0.9, 0.8, 0.8, 0.4, 0.0])
    # at fpr 0.1 the curve is halfway from (0, 0.5) to (0.2, 0.8): 0.65; at fpr 0.6 halfway to (1, 1): 0.95
    expected = [True, False, True, False, True, False, True, True]
    assert reader_dominance(fpr, tpr, sens, spec).tolist() == expected


def test_readers_in_report(tax: Taxonomy, data: Any, tmp_path: Path) -> None:
    val, test = data
    (tmp_path / "readers.csv").write_text(
        "reader,sensitivity,specificity,task\nA,0.0,1.0,mel_vs_nv\n"
        "B,1.0,0.0,\nC,1.0,0.999,malignant_vs_benign\n"
    )
    rep = evaluate(tax, _protocol(tax), val, test, readers=tmp_path / "readers.csv")
    mel = rep.tasks["mel_vs_nv"]
    assert [r.reader for r in mel.readers] == ["A", "B"]  # B has no task: the primary task
    assert all(r.dominated == [True] * 3 for r in mel.readers)  # trivial corners are always dominated
    assert mel.reader_fraction_dominated.value == 1.0
    mal = rep.tasks["malignant_vs_benign"]
    assert mal.readers[0].dominated == [False] * 3 and mal.reader_fraction_dominated.value == 0.0
    (tmp_path / "bad.csv").write_text("reader,sensitivity,specificity\nA,95,80\n")
    with pytest.raises(FileFormatError, match="fractions"):
        evaluate(tax, _protocol(tax), val, test, readers=tmp_path / "bad.csv")
    (tmp_path / "task.csv").write_text("reader,sensitivity,specificity,task\nA,0.9,0.8,mel_vs_nevus\n")
    with pytest.raises(KeyError, match="did you mean 'mel_vs_nv'"):
        evaluate(tax, _protocol(tax), val, test, readers=tmp_path / "task.csv")


# --- the written report --------------------------------------------------------------------------------


def test_report_files_and_json_numbers(tax: Taxonomy, data: Any, tmp_path: Path) -> None:
    val, test = data
    paths = []
    for k, (v, t) in enumerate(zip(val, test)):
        pv, pt = tmp_path / f"val{k}.npz", tmp_path / f"test{k}.csv"
        write_predictions(pv, v)
        write_predictions(pt, t)
        paths.append((pv, pt))
    readers = [{"reader": "r1", "sensitivity": 0.8, "specificity": 0.7}]
    rep = evaluate(
        tax,
        _protocol(tax, min_seeds=5),
        [p[0] for p in paths],
        [p[1] for p in paths],
        readers=readers,
        synthetic=True,
    )
    out = tmp_path / "out"
    written = write_report(rep, out)
    for name in (
        "report.md",
        "report.json",
        "roc_mel_vs_nv",
        "reliability_mel_vs_nv",
        "confusion_three_way",
        "confusion_leaves",
        "reliability_malignant",
    ):
        assert written[name].is_file() and written[name].stat().st_size > 0
    assert (out / "figures" / "roc_kc_vs_bk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data_json = json.loads((out / "report.json").read_text())
    api = rep.tasks["mel_vs_nv"].metrics["specificity"]
    js = data_json["tasks"]["mel_vs_nv"]["metrics"]["specificity"]
    assert js["value"] == api.value and js["per_seed"] == api.per_seed and js["std"] == api.std
    assert js["ci"] == list(api.ci) and js["n"] == api.n and "validation" in js["provenance"]
    assert data_json["tasks"]["mel_vs_nv"]["threshold_source"] == "validation"
    assert (
        data_json["tasks"]["mel_vs_nv"]["thresholds"]["per_seed"]
        == rep.tasks["mel_vs_nv"].thresholds.per_seed
    )
    assert (
        data_json["partitions"]["three_way"]["confusion"][0]
        == rep.partitions["three_way"].confusion[0].tolist()
    )
    assert data_json["primary"]["estimate"]["value"] == api.value
    assert data_json["synthetic"] is True and data_json["banner"].startswith("SYNTHETIC DATA")
    assert data_json["validation"] == [str(p[0]) for p in paths]
    assert data_json["seeds"] == [str(p[1]) for p in paths]
    assert any("ONLY 3 SEEDS" in w for w in data_json["warnings"])
    md = (out / "report.md").read_text()
    sections = md.split("\n## ")
    assert all("SYNTHETIC DATA — not a clinical result" in s for s in sections)
    assert md.index("ONLY 3 SEEDS") < md.index("## Task")
    assert "OPTIMISTIC" in md and "thresholds chosen on: **validation**" in md
    assert "| melanoma | " in md  # per-class recall in the partition tables ...
    summary = md[md.index("## Summary") : md.index("## Task")]  # ... and beside AUC at the top
    recall = rep.partitions["three_way"].per_class_recall["melanoma"].value
    assert f"melanoma {recall:.3f}" in summary and "| mel_vs_nv | " in summary
    assert f"- seed 1: validation `{paths[1][0]}`, test `{paths[1][1]}`" in md
    assert not list(out.rglob("*.tmp"))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(4, 60))
def test_reader_dominance_property(seed: int, n: int) -> None:
    """Readers on the curve's ROC points are dominated; a reader just above the top of a step is not."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = np.round(rng.random(n), 1)  # many ties
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert reader_dominance(fpr, tpr, tpr, 1 - fpr).all()
    top = np.array([tpr[fpr == f].max() for f in fpr])
    above = top + 0.01
    ok = above <= 1
    assert not reader_dominance(fpr, tpr, above[ok], (1 - fpr)[ok]).any()


# --- real HAM10000 metadata ----------------------------------------------------------------------------


def test_ham10000_metadata_groups_and_subgroups(tax: Taxonomy, shared_data: Path, tmp_path: Path) -> None:
    """The shipped protocol on predictions keyed by real HAM10000 image ids: lesions are the bootstrap unit
    and sex / localization subgroups are counted from the real metadata file."""
    from hierclf.evaluation.protocol_format import load_protocol

    path = shared_data / "HAM10000_metadata.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(0)
    lesions = sorted({r["lesion_id"] for r in rows})
    split_of = dict(zip(lesions, rng.permutation(len(lesions)) % 5))  # lesion-disjoint splits
    val_rows = [r for r in rows if split_of[r["lesion_id"]] == 0][:1500]
    test_rows = [r for r in rows if split_of[r["lesion_id"]] == 1][:1500]

    def preds(rs: list[dict[str, str]], seed: int) -> Predictions:
        labels = np.array([tax.resolve(r["dx"]) for r in rs])
        y = np.array([tax.leaves.index(lab) for lab in labels])
        r = np.random.default_rng(seed)
        logits = r.normal(size=(len(rs), 7))
        logits[np.arange(len(rs)), y] += 2.0
        p = np.exp(logits)
        ids = np.array([x["image_id"] for x in rs])
        return Predictions(p / p.sum(1, keepdims=True), tax.leaves, ids, labels)

    proto = load_protocol(REPO / "taxonomy" / "protocols" / "dermamnist.yaml", tax)
    proto = proto.model_copy(update={"bootstrap": proto.bootstrap.model_copy(update={"replicates": 20})})
    rep = evaluate(tax, proto, [preds(val_rows, 1)], [preds(test_rows, 2)], metadata=path)
    mel = rep.tasks["melanoma_vs_nevus"]
    in_task = [r for r in test_rows if r["dx"] in ("mel", "nv")]
    assert mel.counts["test_groups"] == [len({r["lesion_id"] for r in in_task})]
    assert mel.metrics["specificity"].n_groups == len({r["lesion_id"] for r in in_task})
    assert rep.primary["estimate"]["value"] == mel.metrics["specificity"].value
    for col in ("sex", "localization"):
        got = {r["value"]: r["n"][0] for r in rep.subgroups[col]}
        want = Counter(r[col] or "(missing)" for r in test_rows)
        assert got == dict(want)
    assert any(r["small"] for r in rep.subgroups["localization"])
    assert not any("ROW-LEVEL" in w for w in rep.warnings)


def test_evaluator_class_equals_function(tax: Taxonomy, data: Any, report: Any) -> None:
    from hierclf.evaluation.pipeline import Evaluator

    ev = Evaluator(tax, _protocol(tax))
    for v, t in zip(*data):
        ev.add(v, t)
    rep = ev.compute()
    for name, res in report.tasks.items():
        for key, est in res.metrics.items():
            assert rep.tasks[name].metrics[key].to_dict() == est.to_dict()
    assert (
        rep.partitions["three_way"].metrics["balanced_accuracy"].to_dict()
        == report.partitions["three_way"].metrics["balanced_accuracy"].to_dict()
    )
    with pytest.raises(EvaluationError, match="every seed or for none"):
        ev.add(None, data[1][0])
    ev.reset()
    with pytest.raises(EvaluationError, match="no test predictions"):
        ev.compute()


def test_partition_bootstrap_replicates_equal_weighted_sklearn(tax: Taxonomy) -> None:
    """Each replicate's per-class recall equals scikit-learn's recall with the replicate's per-sample draw
    counts (grouped_bootstrap_counts on the samples' groups) as sample weights."""
    from hierclf.evaluation.metrics import grouped_bootstrap_counts
    from hierclf.evaluation.partitions import _bootstrap_partition

    rng = np.random.default_rng(5)
    n, C = 300, 3
    y = rng.integers(0, C, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, C, n))
    groups = rng.integers(0, 90, n)  # some group numbers unused: codes are not contiguous
    cancer = np.stack([y == 2, pred == 2])
    out = _bootstrap_partition(y, pred, groups, C, cancer=cancer, replicates=25, seed=11)
    counts = np.concatenate(list(grouped_bootstrap_counts(groups, 25, 11)))
    for r in range(25):
        w = counts[r]
        keep = w > 0
        want = recall_score(
            y[keep], pred[keep], labels=range(C), average=None, sample_weight=w[keep], zero_division=np.nan
        )
        np.testing.assert_allclose(out["recall"][r], want, rtol=1e-12)
        assert out["balanced_accuracy"][r] == pytest.approx(np.nanmean(want))
        assert out["cancer_sensitivity"][r] == pytest.approx(want[2])


def test_json_roc_is_downsampled_for_large_curves(
    tax: Taxonomy, data: Any, report: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hierclf.evaluation.records as records

    monkeypatch.setattr(records, "JSON_ROC_POINTS", 11)
    roc = report.tasks["malignant_vs_benign"].roc[0]
    js = report.to_dict()["tasks"]["malignant_vs_benign"]["roc"][0]
    assert len(js["fpr"]) == 11 and js["downsampled_from"] == len(roc["fpr"])
    assert js["fpr"][0] == 0.0 and js["tpr"][-1] == 1.0
    assert set(js["fpr"]) <= set(roc["fpr"].tolist())
    c = report.tasks["malignant_vs_benign"].counts
    n_val = [a + b for a, b in zip(c["val_positive"], c["val_negative"])]
    assert report.tasks["malignant_vs_benign"].thresholds.n in (n_val, n_val[0])


def test_leakage_between_validation_and_test_is_a_warning(tax: Taxonomy, data: Any) -> None:
    val, test = data
    t = test[0]
    assert not any("LEAKAGE" in w for w in evaluate(tax, _protocol(tax), [val[0]], [t]).warnings)
    # the same lesions in validation and test (ids differ): the threshold has seen test patients
    v = val[0]
    shared = Predictions(v.probs, v.columns, v.ids, v.labels, t.groups[: len(v)])
    rep = evaluate(tax, _protocol(tax), [shared], [t])
    leak = [w for w in rep.warnings if w.startswith("LEAKAGE")]
    assert len(leak) == 1 and f"{len(set(t.groups[: len(v)]))} lesion_id group(s)" in leak[0]
    # the same images
    same = evaluate(tax, _protocol(tax, group_column=None), [t], [t])
    assert any("LEAKAGE" in w and f"{len(t)} sample id(s)" in w for w in same.warnings)


# --- the cancer node, threshold sources, quiet subgroups -------------------------------------------------


def _renamed_cancer_tree() -> Taxonomy:
    """The DermaMNIST tree with its cancer node called `neoplasm_malignant` (no `malignant` alias)."""
    text = (REPO / "taxonomy" / "dermamnist.yaml").read_text(encoding="utf-8")
    old = "    - id: malignant\n      name: Malignant\n      aliases: [malignant lesion, cancer]\n"
    assert old in text
    return Taxonomy.from_text(
        text.replace(
            old, "    - id: neoplasm_malignant\n      name: Malignant neoplasm\n      aliases: [neoplasia]\n"
        )
    )


def _cancer_reference(tax: Taxonomy, p: Predictions, cut: list[str], node: str) -> float:
    """Recall of `node` at the argmax of the cut, by brute force over `nx.descendants` leaf sets."""
    import networkx as nx

    probs = np.stack([_node_prob(tax, p, c) for c in cut], axis=1)
    pred = probs.argmax(1)
    under = {node} | nx.descendants(tax.graph, node)
    leaves_of = [set(tax.leaves_under(c)) for c in cut]
    y = np.array([next(i for i, ls in enumerate(leaves_of) if lab in ls) for lab in p.labels])
    is_cancer = np.array([c in under for c in cut])
    truth, called = is_cancer[y], is_cancer[pred]
    return float((truth & called).sum() / truth.sum())


def test_cancer_node_with_another_name(data: Any) -> None:
    """The cancer node is whatever the protocol declares: a tree without `malignant` keeps the metric."""
    tax = _renamed_cancer_tree()
    tasks = [{"name": "mel_vs_nv", "positive": ["melanoma"], "negative": ["melanocytic_nevus"]}]
    parts = [
        {"name": "two_way", "nodes": ["benign", "neoplasm_malignant"]},
        {"name": "three_way", "nodes": ["benign", "melanoma", "keratinocyte_carcinoma"]},
        {"name": "coarse_melanoma", "nodes": ["benign", "neoplasm_malignant"]},
    ]
    proto = _protocol(
        tax,
        tasks=tasks,
        partitions=parts[:2],
        cancer_node="neoplasia",
        calibration_nodes=["neoplasm_malignant"],
    )
    assert proto.cancer_node == "neoplasm_malignant"  # the alias is resolved when the protocol is loaded
    val, test = data
    rep = evaluate(tax, proto, val, test)
    for name, cut in (("two_way", ["benign", "neoplasm_malignant"]), ("three_way", parts[1]["nodes"])):
        got = rep.partitions[name].metrics["cancer_sensitivity"]
        for k, t in enumerate(test):
            assert got.per_seed[k] == pytest.approx(_cancer_reference(tax, t, cut, "neoplasm_malignant"))
        assert got.ci[0] <= got.value <= got.ci[1]
        assert not any("cancer" in n for n in rep.partitions[name].notes)
    # a cancer node inside a class of the cut: not reported, and the partition says why
    coarse = _protocol(tax, tasks=tasks, partitions=parts[2:], cancer_node="melanoma", calibration_nodes=[])
    inside = evaluate(tax, coarse, val, test)
    part = inside.partitions["coarse_melanoma"]
    assert "cancer_sensitivity" not in part.metrics
    assert part.notes == ["cancer sensitivity not reported: 'melanoma' lies inside a class of this cut"]


def test_protocol_without_cancer_node_says_why(tax: Taxonomy, data: Any, tmp_path: Path) -> None:
    """No declared cancer node: no cancer sensitivity anywhere, and every partition's notes say why (the
    other numbers are those of the protocol that declares it)."""
    val, test = data
    rep = evaluate(tax, _protocol(tax, cancer_node=None), val[:1], test[:1])
    declared = evaluate(tax, _protocol(tax), val[:1], test[:1])
    for name, part in rep.partitions.items():
        assert "cancer_sensitivity" not in part.metrics
        assert len(part.notes) == 1 and part.notes[0].startswith(
            "cancer sensitivity not reported: the protocol declares no cancer_node"
        )
        assert "cancer_sensitivity" in declared.partitions[name].metrics
        assert {k: e.to_dict() for k, e in part.metrics.items()} == {
            k: e.to_dict() for k, e in declared.partitions[name].metrics.items() if k != "cancer_sensitivity"
        }
    write_report(rep, tmp_path)
    assert "the protocol declares no cancer_node" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_threshold_source_values_in_report_json(tax: Taxonomy, data: Any) -> None:
    """report.json records exactly "validation" or "test"; the report's prose derives from the enum."""
    from hierclf.evaluation.catalog import ThresholdSource
    from hierclf.evaluation.report import render_markdown

    val, test = data
    on_val = evaluate(tax, _protocol(tax), val[:1], test[:1])
    on_test = evaluate(tax, _protocol(tax), None, test[:1], allow_test_thresholds=True)
    assert on_val.threshold_source is ThresholdSource.VALIDATION
    assert on_test.threshold_source is ThresholdSource.TEST
    for rep, value in ((on_val, "validation"), (on_test, "test")):
        js = json.loads(json.dumps(rep.to_dict()))
        assert js["threshold_source"] == value
        assert {t["threshold_source"] for t in js["tasks"].values()} == {value}
    md = render_markdown(on_test)
    assert f"thresholds chosen on: **{ThresholdSource.TEST.description}**" in md
    assert "| mel_vs_nv | " in md and " | test |" in md  # the summary's short source
    spec = on_test.tasks["mel_vs_nv"].metrics["specificity"].provenance
    assert spec == f"test, at the threshold chosen on {ThresholdSource.TEST.description}"


def test_subgroups_touch_no_logger_and_count_missing_replicates(
    tax: Taxonomy, data: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Small subgroups miss a class in many replicates: nothing is logged about it, no logger level changes,
    and one note per column gives the count, which equals the NaN replicates of a direct bootstrap."""
    from hierclf.evaluation import metrics as M
    from hierclf.evaluation.tasks import task_data

    val, test = data
    meta = _write_metadata(tmp_path / "meta.csv", val[:1] + test[:1])
    levels = {name: logging.getLogger(name).level for name in ("hierclf", "hierclf.evaluation.metrics")}
    proto = _protocol(tax, subgroups=["site"], min_group_size=40)
    with caplog.at_level(logging.DEBUG):
        rep = evaluate(tax, proto, val[:1], test[:1], metadata=tmp_path / "meta.csv")
    assert not [r for r in caplog.records if "bootstrap replicates miss a class" in r.getMessage()]
    assert {name: logging.getLogger(name).level for name in levels} == levels
    # the count, from the bootstrap itself
    from hierclf.evaluation.splits import Split

    t = test[0]
    split = Split("t", t, t.groups, None)
    site = np.array([meta[i]["site"] for i in t.ids])
    missing = drawn = 0
    for spec in proto.tasks:
        rows, y, s = task_data(tax, spec, split, "test")
        thr = rep.tasks[spec.name].thresholds.per_seed[0]
        for value in np.unique(site):
            sel = site[rows] == value
            if (y[sel] == 1).any() and (y[sel] == 0).any():
                boot = M.bootstrap_binary(
                    y[sel],
                    s[sel],
                    split.groups[rows][sel],
                    n_replicates=REPLICATES,
                    seed=3,
                    target_sensitivity=0.9,
                    threshold=thr,
                    warn_missing=False,
                )
                missing, drawn = missing + boot["auc"].n_nan, drawn + REPLICATES
    assert missing > 0
    note = f"subgroups of 'site': {missing} of {drawn} bootstrap replicates missed a class"
    assert any(n.startswith(note) for n in rep.notes)


def test_catalog_names_every_reported_number(report: Any) -> None:
    """Every metric the evaluation reports has one catalog entry; its provenance is the catalog's."""
    from hierclf.evaluation import catalog
    from hierclf.evaluation.protocol_format import BINARY_METRICS, PARTITION_METRICS

    task_keys = [m.key for m in catalog.TASK_TABLE]
    for res in report.tasks.values():
        assert list(res.metrics) == task_keys
        for key, est in res.metrics.items():
            assert est.provenance == catalog.task_metric(key).provenance_for(res.threshold_source, 0.9)
    for part in report.partitions.values():
        assert list(part.metrics) == [m.key for m in catalog.PARTITION_TABLE]
    assert list(report.hierarchical) == [m.key for m in catalog.HIERARCHICAL_TABLE]
    assert set(catalog.PRIMARY_KEYS) == set(BINARY_METRICS) | set(PARTITION_METRICS)
    assert {catalog.PRIMARY_KEYS[m] for m in BINARY_METRICS} <= set(task_keys)
    assert {catalog.PRIMARY_KEYS[m] for m in PARTITION_METRICS} <= {m.key for m in catalog.PARTITION_TABLE}
