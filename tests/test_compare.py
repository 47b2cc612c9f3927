"""compare() and ``hierclf compare``: paired differences against explicitly resampled data, each model's
numbers against evaluate's, DeLong and McNemar against independent references, alignment by id, the
refusals, and the CLI with exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from hierclf import Taxonomy
from hierclf.cli import main
from hierclf.evaluation import metrics as M
from hierclf.evaluation.comparison import ModelInputs, compare
from hierclf.evaluation.comparison_report import write_comparison
from hierclf.evaluation.notices import EvaluationError
from hierclf.evaluation.pipeline import evaluate
from hierclf.evaluation.prediction_files import Predictions, write_predictions
from hierclf.evaluation.protocol_format import protocol_from_dict
from hierclf.evaluation.splits import Split
from hierclf.evaluation.tasks import task_data

REPO = Path(__file__).resolve().parents[1]
TAXONOMY = REPO / "taxonomy" / "dermamnist.yaml"
REPS = 25


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return Taxonomy.from_yaml(TAXONOMY)


def _protocol(tax: Taxonomy, **over: Any) -> Any:
    data: dict[str, Any] = {
        "name": "cmp",
        "target_sensitivity": 0.9,
        "group_column": "lesion_id",
        "min_seeds": 1,
        "bootstrap": {"replicates": REPS, "ci_level": 0.9, "seed": 2},
        "primary_metric": {"metric": "auc", "task": "mel_vs_nv"},
        "tasks": [
            {"name": "mel_vs_nv", "positive": ["melanoma"], "negative": ["melanocytic_nevus"]},
            {"name": "malignant_vs_benign", "positive": ["malignant"], "negative": ["benign"]},
        ],
        "partitions": [{"name": "three_way", "nodes": ["benign", "melanoma", "keratinocyte_carcinoma"]}],
    }
    data.update(over)
    return protocol_from_dict(data, tax)


def _labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 7, n)


def _model(tax: Taxonomy, y: np.ndarray, signal: float, seed: int, prefix: str) -> Predictions:
    """Probabilities with a signal towards the true leaf ``y``; ids and lesions (3 images) from ``prefix``."""
    rng = np.random.default_rng(seed)
    n = len(y)
    logits = rng.normal(size=(n, 7))
    logits[np.arange(n), y] += signal
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    ids = np.array([f"{prefix}{i}" for i in range(n)])
    return Predictions(
        p, tax.leaves, ids, np.asarray(tax.leaves)[y], np.array([f"{prefix}L{i // 3}" for i in range(n)])
    )


@pytest.fixture(scope="module")
def data(tax: Taxonomy) -> dict[str, Any]:
    yv, yt = _labels(300, 1), _labels(600, 2)
    return {
        "A": (
            [_model(tax, yv, 2.0, s, "v") for s in (10, 11)],
            [_model(tax, yt, 2.0, s, "t") for s in (20, 21)],
        ),
        "B": ([_model(tax, yv, 1.2, 30, "v")], [_model(tax, yt, 1.2, 40, "t")]),
    }


@pytest.fixture(scope="module")
def report(tax: Taxonomy, data: dict[str, Any]) -> Any:
    return compare(tax, _protocol(tax), data)


def _task(tax: Taxonomy, name: str, p: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return task_data(tax, _protocol(tax).task(name), Split("x", p, p.groups, None), "test")


def test_paired_differences_equal_explicit_resampling(
    tax: Taxonomy, data: dict[str, Any], report: Any
) -> None:
    """Replicate k of A - B: every seed of A against every seed of B on the one resampled data set."""
    (val_a, test_a), (val_b, test_b) = data["A"], data["B"]
    rows, y, s_a0 = _task(tax, "mel_vs_nv", test_a[0])
    s_a1, s_b = _task(tax, "mel_vs_nv", test_a[1])[2], _task(tax, "mel_vs_nv", test_b[0])[2]
    groups = test_a[0].groups[rows]
    counts = np.concatenate(list(M.grouped_bootstrap_counts(groups, REPS, seed=2)))
    thr = [M.threshold_at_sensitivity(*_task(tax, "mel_vs_nv", v)[1:], 0.9) for v in (*val_a, *val_b)]
    mel = report.tasks["mel_vs_nv"].metrics
    auc, spec = mel["auc"].differences["A - B"], mel["specificity"].differences["A - B"]
    assert auc.replicates.shape == (2, REPS)  # seed pairs (A0, B0) and (A1, B0)
    for k in (0, 9, 24):
        idx = np.repeat(np.arange(len(y)), counts[k])
        for pair, s_a, t_a in ((0, s_a0, thr[0]), (1, s_a1, thr[1])):
            want = skm.roc_auc_score(y[idx], s_a[idx]) - skm.roc_auc_score(y[idx], s_b[idx])
            assert auc.replicates[pair, k] == pytest.approx(want, abs=1e-12)
            neg = y[idx] == 0
            want = ((s_a[idx] < t_a) & neg).sum() / neg.sum() - ((s_b[idx] < thr[2]) & neg).sum() / neg.sum()
            assert spec.replicates[pair, k] == pytest.approx(want, abs=1e-12)
    want = np.mean([M.roc_auc(y, s_a0), M.roc_auc(y, s_a1)]) - M.roc_auc(y, s_b)
    assert auc.value == pytest.approx(want, abs=1e-14)
    assert mel["auc"].p_values["A - B"] == pytest.approx(M.bootstrap_p_value(auc.replicates, 0.0))
    pauc = mel["partial_auc"].differences["A - B"]
    idx = np.repeat(np.arange(len(y)), counts[3])
    want = M.partial_auc_above_sensitivity(y[idx], s_a0[idx], 0.9) - M.partial_auc_above_sensitivity(
        y[idx], s_b[idx], 0.9
    )
    assert pauc.replicates[0, 3] == pytest.approx(want, abs=1e-12)


def test_each_model_reads_as_evaluate_reads_it(tax: Taxonomy, data: dict[str, Any], report: Any) -> None:
    for name in ("A", "B"):
        ev = evaluate(tax, _protocol(tax), *data[name])
        for task in ("mel_vs_nv", "malignant_vs_benign"):
            for key in ("auc", "partial_auc", "sensitivity", "specificity"):
                mine, theirs = report.tasks[task].metrics[key].models[name], ev.tasks[task].metrics[key]
                assert mine.per_seed == theirs.per_seed
                assert mine.ci == theirs.ci and mine.interval == theirs.interval, (name, task, key)
        part = report.partitions["three_way"]
        assert (
            part.balanced_accuracy.models[name].per_seed
            == ev.partitions["three_way"].metrics["balanced_accuracy"].per_seed
        )
        assert (
            part.balanced_accuracy.models[name].ci
            == ev.partitions["three_way"].metrics["balanced_accuracy"].ci
        )
        assert (
            part.per_class_recall["melanoma"].models[name].per_seed
            == ev.partitions["three_way"].per_class_recall["melanoma"].per_seed
        )


def test_delong_and_mcnemar(tax: Taxonomy, data: dict[str, Any], report: Any) -> None:
    (val_a, test_a), (val_b, test_b) = data["A"], data["B"]
    rows, y, s_a0 = _task(tax, "malignant_vs_benign", test_a[0])
    s_a1, s_b = (
        _task(tax, "malignant_vs_benign", test_a[1])[2],
        _task(tax, "malignant_vs_benign", test_b[0])[2],
    )
    groups = test_a[0].groups[rows]
    delong = report.tasks["malignant_vs_benign"].metrics["auc"].tests["A - B"]
    want = M.delong_test(y, np.stack([s_a0, s_a1, s_b]), [0.5, 0.5, -1.0], groups=groups)
    assert delong["p_value"] == pytest.approx(want.p_value) and delong["test"].startswith("DeLong (clustered")
    assert delong["difference"] == pytest.approx(
        report.tasks["malignant_vs_benign"].metrics["auc"].differences["A - B"].value
    )
    thr_a = M.threshold_at_sensitivity(*_task(tax, "malignant_vs_benign", val_a[0])[1:], 0.9)
    thr_b = M.threshold_at_sensitivity(*_task(tax, "malignant_vs_benign", val_b[0])[1:], 0.9)
    pos = y == 1
    a_right, b_right = s_a0[pos] >= thr_a, s_b[pos] >= thr_b
    b, c = int((a_right & ~b_right).sum()), int((~a_right & b_right).sum())
    test = report.tasks["malignant_vs_benign"].metrics["sensitivity"].tests["A - B"]
    row = test["per_seed_pair"][0]
    assert (row["first_only"], row["second_only"]) == (b, c)
    assert row["p_value"] == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue)
    assert 0 < row["p_value_clustered"] <= 1
    assert len(test["per_seed_pair"]) == 1  # A has two seeds, B one: one pair of k-th seeds


def test_partition_differences_equal_explicit_resampling(
    tax: Taxonomy, data: dict[str, Any], report: Any
) -> None:
    (_, test_a), (_, test_b) = data["A"], data["B"]
    three = {"benign": 0, "melanoma": 1, "keratinocyte_carcinoma": 2}
    cls = {leaf: three[c] for c in three for leaf in tax.leaves_under(c)}
    y = np.array([cls[v] for v in test_a[0].labels])

    def pred(p: Predictions) -> np.ndarray:
        return np.stack(
            [p.probs[:, [tax.leaves.index(x) for x in tax.leaves_under(c)]].sum(1) for c in three], 1
        ).argmax(1)

    pa, pb = pred(test_a[0]), pred(test_b[0])
    counts = np.concatenate(list(M.grouped_bootstrap_counts(test_a[0].groups, REPS, seed=2)))
    diff = report.partitions["three_way"].balanced_accuracy.differences["A - B"]
    for k in (0, 12):
        idx = np.repeat(np.arange(len(y)), counts[k])
        want = skm.balanced_accuracy_score(y[idx], pa[idx]) - skm.balanced_accuracy_score(y[idx], pb[idx])
        assert diff.replicates[0, k] == pytest.approx(want, abs=1e-12)
    rec = report.partitions["three_way"].per_class_recall["melanoma"].differences["A - B"]
    assert rec.value == pytest.approx(
        skm.recall_score(y == 1, pa == 1) / 2
        + skm.recall_score(y == 1, pred(test_a[1]) == 1) / 2
        - skm.recall_score(y == 1, pb == 1)
    )


def test_test_files_are_aligned_by_id(tax: Taxonomy, data: dict[str, Any], report: Any) -> None:
    """The same predictions of B in another row order give the same comparison."""
    val_b, test_b = data["B"]
    order = np.random.default_rng(0).permutation(len(test_b[0]))
    shuffled = compare(tax, _protocol(tax), {"A": data["A"], "B": (val_b, [test_b[0].select(order)])})
    for task in report.tasks:
        for key, mc in report.tasks[task].metrics.items():
            np.testing.assert_array_equal(
                shuffled.tasks[task].metrics[key].differences["A - B"].replicates,
                mc.differences["A - B"].replicates,
            )


def test_refusals(tax: Taxonomy, data: dict[str, Any]) -> None:
    proto = _protocol(tax)
    with pytest.raises(EvaluationError, match="two or more models, got 1 \\('A'\\)"):
        compare(tax, proto, {"A": data["A"]})
    with pytest.raises(EvaluationError, match="'A' given more than once"):
        compare(tax, proto, [ModelInputs("A", *data["A"]), ModelInputs("A", *data["B"])])
    val_b, test_b = data["B"]
    fewer = test_b[0].select(np.arange(590))
    with pytest.raises(
        EvaluationError,
        match=r"TEST SETS DIFFER BETWEEN MODELS: model 'B': .* lacks 10 of the 600 sample ids .* "
        r"e\.g\. 't590', 't591', 't592'",
    ):
        compare(tax, proto, {"A": data["A"], "B": (val_b, [fewer])})
    t = test_b[0]
    moved = Predictions(t.probs, t.columns, t.ids, t.labels, np.r_[t.groups[1:], t.groups[:1]])
    with pytest.raises(
        EvaluationError, match="model 'B': .* puts sample 't2' in group 'tL1', model 'A': .* in 'tL0'"
    ):
        compare(tax, proto, {"A": data["A"], "B": (val_b, [moved])})
    # a model whose columns cannot be rolled up to a task's nodes
    coarse_cols = ["benign", "malignant"]

    def cols(p: Predictions) -> np.ndarray:
        return np.stack(
            [p.probs[:, [tax.leaves.index(x) for x in tax.leaves_under(c)]].sum(1) for c in coarse_cols], 1
        )

    coarse = [Predictions(cols(p), coarse_cols, p.ids, p.labels, p.groups) for p in (val_b[0], t)]
    with pytest.raises(
        EvaluationError,
        match="task 'mel_vs_nv': node\\(s\\) 'melanoma', 'melanocytic_nevus' lie below the prediction",
    ):
        compare(tax, proto, {"A": data["A"], "B": ([coarse[0]], [coarse[1]])})


def test_write_comparison(tax: Taxonomy, report: Any, tmp_path: Path) -> None:
    written = write_comparison(report, tmp_path, save_replicates=True)
    for name in ("comparison.md", "comparison.json", "roc_mel_vs_nv", "replicates.npz"):
        assert written[name].is_file() and written[name].stat().st_size > 0
    js = json.loads((tmp_path / "comparison.json").read_text())
    d = js["tasks"]["mel_vs_nv"]["metrics"]["auc"]
    assert (
        d["differences"]["A - B"]["value"]
        == report.tasks["mel_vs_nv"].metrics["auc"].differences["A - B"].value
    )
    assert js["models"] == ["A", "B"] and js["pairs"] == ["A - B"]
    md = (tmp_path / "comparison.md").read_text()
    assert "| AUC | A - B | " in md and "DeLong (clustered" in md and "exact McNemar" in md
    reps = np.load(tmp_path / "replicates.npz")
    assert reps["tasks/mel_vs_nv/auc/differences/A - B"].shape == (2, REPS)
    assert reps["partitions/three_way/balanced_accuracy/models/B"].shape == (1, REPS)


# --- the CLI -----------------------------------------------------------------------------------------------

PROTOCOL = """\
name: cli_compare
target_sensitivity: 0.9
group_column: lesion_id
min_seeds: 1
bootstrap: {replicates: 20, seed: 1}
primary_metric: {metric: auc, task: mel_vs_nv}
tasks:
  - {name: mel_vs_nv, positive: [melanoma], negative: [melanocytic_nevus]}
partitions:
  - {name: three_way, nodes: [benign, melanoma, keratinocyte_carcinoma]}
"""


@pytest.fixture(scope="module")
def files(tax: Taxonomy, data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("compare")
    out = {}
    for name, (val, test) in data.items():
        for k, (v, t) in enumerate(zip(val, test)):
            out[f"{name}val{k}"], out[f"{name}test{k}"] = d / f"{name}_val{k}.npz", d / f"{name}_test{k}.npz"
            write_predictions(out[f"{name}val{k}"], v)
            write_predictions(out[f"{name}test{k}"], t)
    (d / "p.yaml").write_text(PROTOCOL)
    out["protocol"], out["dir"] = d / "p.yaml", d
    return out


def _args(f: dict[str, Path], out: Path) -> list[str]:
    return [
        "compare", "--taxonomy", str(TAXONOMY), "--protocol", str(f["protocol"]),
        "--model", "A", "--val", str(f["Aval0"]), str(f["Aval1"]),
        "--test", str(f["Atest0"]), str(f["Atest1"]),
        "--model", "B", "--val", str(f["Bval0"]), "--test", str(f["Btest0"]),
        "--out", str(out),
    ]  # fmt: skip


def test_cli_compare(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_args(files, tmp_path / "o") + ["--save-replicates"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "A - B" in captured.out and "DeLong" in captured.out
    for name in ("comparison.md", "comparison.json", "figures/roc_mel_vs_nv.png", "replicates.npz"):
        assert (tmp_path / "o" / name).is_file(), name
    js = json.loads((tmp_path / "o" / "comparison.json").read_text())
    assert js["files"]["A"]["test"] == [str(files["Atest0"]), str(files["Atest1"])]


def _one_line_error(args: list[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hierclf compare: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_cli_compare_errors(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args(files, tmp_path / "o")
    single = args[: args.index("--model", args.index("--model") + 1)] + ["--out", str(tmp_path / "o")]
    _one_line_error(single, capsys, "two or more models, got 1 ('A')")
    args2 = list(args)
    del args2[args2.index(str(files["Bval0"])) - 1 : args2.index(str(files["Bval0"])) + 1]  # B without --val
    _one_line_error(args2, capsys, "2 --model, 1 --val and 2 --test groups")
    other = tmp_path / "other.npz"
    write_predictions(
        other,
        Predictions(
            np.full((3, 7), 1 / 7),
            Taxonomy.from_yaml(TAXONOMY).leaves,
            np.array(["x", "y", "z"]),
            np.array(["melanoma", "melanocytic_nevus", "melanoma"]),
        ),
    )
    args3 = list(args)
    args3[args3.index(str(files["Btest0"]))] = str(other)
    _one_line_error(args3, capsys, "TEST SETS DIFFER BETWEEN MODELS", "e.g. 't0'")
    assert main(["compare", "--taxonomy", str(TAXONOMY)]) == 2  # a usage error: its code, not SystemExit


def test_cli_compare_refuses_a_model_of_another_taxonomy(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model trained on another tree: its columns are not nodes of this taxonomy (named, with the file)."""
    other = tmp_path / "other_tree.npz"
    probs = np.full((4, 2), 0.5)
    labels = np.array(["melanoma", "melanocytic_nevus"] * 2)
    write_predictions(
        other, Predictions(probs, ("naevus", "lentigo_maligna"), np.array(["t0", "t1", "t2", "t3"]), labels)
    )
    args = _args(files, tmp_path / "o")
    args[args.index(str(files["Btest0"]))] = str(other)
    _one_line_error(args, capsys, "other_tree.npz", "'lentigo_maligna'", "taxonomy 'dermamnist'")
