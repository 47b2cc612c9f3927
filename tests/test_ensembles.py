"""Ensembles at the operating point: the seed mean and the or rule against hand computations.

The references are written out here: means of explicit numbers, thresholds found by trying every score as a
cut-off, decisions and their sensitivity / specificity / PPV / NPV counted with numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from hierclf import Taxonomy
from hierclf.evaluation.ensembles import evaluate_seed_mean, finest_common_cut, or_rule, seed_mean
from hierclf.evaluation.metrics import bootstrap_binary
from hierclf.evaluation.notices import EvaluationError
from hierclf.evaluation.pipeline import evaluate
from hierclf.evaluation.prediction_files import Predictions
from hierclf.evaluation.protocol_format import protocol_from_dict

TARGET = 0.8


@pytest.fixture(scope="module")
def protocol(dermamnist: Taxonomy):
    return protocol_from_dict(
        {
            "name": "ensembles",
            "target_sensitivity": TARGET,
            "group_column": None,
            "primary_metric": {"metric": "auc", "task": "malignant_vs_benign"},
            "bootstrap": {"replicates": 200, "seed": 3, "ci_level": 0.9},
            "tasks": [{"name": "malignant_vs_benign", "positive": ["malignant"], "negative": ["benign"]}],
        },
        dermamnist,
    )


def _members(dermamnist: Taxonomy, n: int, seed: int, k: int = 3) -> list[Predictions]:
    """``k`` models' predictions over the same ``n`` cases (labels balanced between the two sides)."""
    rng = np.random.default_rng(seed)
    leaves = np.array(dermamnist.leaves)
    labels = leaves[rng.integers(0, len(leaves), n)]
    ids = np.array([f"case{i}" for i in range(n)])
    groups = np.array([f"g{i // 3}" for i in range(n)])
    out = []
    for _ in range(k):
        logits = rng.normal(size=(n, len(leaves))) + 2.0 * (leaves[None, :] == labels[:, None])
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        out.append(Predictions(probs, tuple(leaves), ids=ids, labels=labels, groups=groups))
    return out


def test_seed_mean_is_the_mean_matched_by_id_and_column() -> None:
    a = Predictions(np.array([[0.2, 0.8], [0.5, 0.5]]), ("nevus", "melanoma"), ids=np.array(["x", "y"]))
    b = Predictions(np.array([[0.9, 0.1], [0.3, 0.7]]), ("melanoma", "nevus"), ids=np.array(["y", "x"]))
    mean = seed_mean([a, b])
    assert mean.ids.tolist() == ["x", "y"] and mean.columns == ("nevus", "melanoma")
    # x: nevus (0.2 + 0.7) / 2, melanoma (0.8 + 0.3) / 2; y: nevus (0.5 + 0.1) / 2, melanoma (0.5 + 0.9) / 2
    np.testing.assert_allclose(mean.probs, [[0.45, 0.55], [0.3, 0.7]], atol=1e-15)


def test_seed_mean_of_different_cuts_rolls_up_first(dermamnist: Taxonomy) -> None:
    leaves = Predictions(np.full((1, 7), 1 / 7), dermamnist.leaves, ids=np.array(["x"]))
    coarse = Predictions(np.array([[0.25, 0.75]]), ("malignant", "benign"), ids=np.array(["x"]))
    mean = seed_mean([leaves, coarse], taxonomy=dermamnist)
    assert mean.columns == finest_common_cut(dermamnist, [dermamnist.leaves, ("malignant", "benign")])
    assert mean.columns == ("benign", "malignant")
    np.testing.assert_allclose(mean.probs, [[(4 / 7 + 0.75) / 2, (3 / 7 + 0.25) / 2]], atol=1e-12)
    with pytest.raises(EvaluationError, match="give the taxonomy"):
        seed_mean([leaves, coarse])


def test_seed_mean_refuses_other_cases_or_labels() -> None:
    a = Predictions(
        np.array([[0.2, 0.8]]), ("nevus", "melanoma"), ids=np.array(["x"]), labels=np.array(["nevus"])
    )
    b = Predictions(
        np.array([[0.2, 0.8]]), ("nevus", "melanoma"), ids=np.array(["z"]), labels=np.array(["nevus"])
    )
    c = Predictions(
        np.array([[0.2, 0.8]]), ("nevus", "melanoma"), ids=np.array(["x"]), labels=np.array(["melanoma"])
    )
    with pytest.raises(EvaluationError, match="other samples.*'x'"):
        seed_mean([a, b])
    with pytest.raises(EvaluationError, match="disagree on the true label"):
        seed_mean([a, c])


def test_the_seed_mean_is_evaluated_like_one_model(dermamnist: Taxonomy, protocol) -> None:
    val, test = _members(dermamnist, 120, seed=1), _members(dermamnist, 150, seed=2)
    report = evaluate_seed_mean(dermamnist, protocol, val, test)
    by_hand = [
        Predictions(np.mean([m.probs for m in s], axis=0), s[0].columns, ids=s[0].ids, labels=s[0].labels,
                    groups=s[0].groups)
        for s in (val, test)
    ]  # fmt: skip
    expected = evaluate(dermamnist, protocol, [by_hand[0]], [by_hand[1]])
    got, want = report.tasks["malignant_vs_benign"], expected.tasks["malignant_vs_benign"]
    assert got.thresholds.per_seed == pytest.approx(want.thresholds.per_seed, abs=1e-12)
    for key in ("auc", "sensitivity", "specificity", "ppv", "npv"):
        assert got.metrics[key].value == pytest.approx(want.metrics[key].value, abs=1e-12), key
        assert got.metrics[key].ci == pytest.approx(want.metrics[key].ci, abs=1e-12), key


def _score(p: Predictions, tax: Taxonomy) -> tuple[np.ndarray, np.ndarray]:
    """``(y, P(malignant) / (P(malignant) + P(benign)))`` by hand; every leaf is on one side here."""
    malignant = np.array([tax.is_under(leaf, "malignant") for leaf in p.columns])
    y = np.array([tax.is_under(label, "malignant") for label in p.labels]).astype(int)
    pos, neg = p.probs[:, malignant].sum(1), p.probs[:, ~malignant].sum(1)
    return y, pos / (pos + neg)


def _threshold_by_trying(y: np.ndarray, score: np.ndarray, target: float) -> float:
    """The largest score t whose rule ``score >= t`` catches at least ``target`` of the positives."""
    return max(t for t in np.unique(score) if (score[y == 1] >= t).mean() >= target)


def _rates(y: np.ndarray, flag: np.ndarray) -> dict[str, float]:
    tp, fp = np.sum(flag & (y == 1)), np.sum(flag & (y == 0))
    tn, fn = np.sum(~flag & (y == 0)), np.sum(~flag & (y == 1))
    return {
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "ppv": tp / (tp + fp),
        "npv": tn / (tn + fn),
    }


def test_the_or_rule_against_a_hand_computation(dermamnist: Taxonomy, protocol) -> None:
    val, test = _members(dermamnist, 120, seed=5), _members(dermamnist, 150, seed=6)
    test = [test[0], *(m.select(np.arange(len(m))[::-1]) for m in test[1:])]  # matched by id, not position
    report = or_rule(dermamnist, protocol, val, test, names=["a", "b", "c"])
    task = report.tasks["malignant_vs_benign"]
    flags, thresholds = [], []
    for v, t in zip(val, test):
        yv, sv = _score(v, dermamnist)
        thresholds.append(_threshold_by_trying(yv, sv, TARGET))
        position = {sid: i for i, sid in enumerate(test[0].ids)}
        order = np.argsort([position[sid] for sid in t.ids])  # every member in the first one's case order
        yt, st = _score(t.select(order), dermamnist)
        flags.append(st >= thresholds[-1])
    assert task.thresholds == pytest.approx(thresholds, abs=0)
    either = np.any(flags, axis=0)
    assert task.ids.tolist() == test[0].ids.tolist() and task.y.tolist() == yt.tolist()
    np.testing.assert_array_equal(task.decisions, either)
    for key, value in _rates(yt, either).items():
        assert task.metrics[key]["value"] == pytest.approx(value, abs=1e-12), key
    for member, own in zip(task.member_metrics, flags):
        for key, value in _rates(yt, own).items():
            assert member[key]["value"] == pytest.approx(value, abs=1e-12), key
    # the or rule never loses sensitivity nor gains specificity against any member
    assert task.metrics["sensitivity"]["value"] >= max(m["sensitivity"]["value"] for m in task.member_metrics)
    assert task.metrics["specificity"]["value"] <= min(m["specificity"]["value"] for m in task.member_metrics)
    # intervals: the evaluation's grouped bootstrap of the 0/1 decisions at the fixed threshold 1/2
    boot = bootstrap_binary(
        yt, either.astype(float), test[0].groups, n_replicates=200, seed=3, target_sensitivity=TARGET,
        threshold=0.5, ci_level=0.9,
    )  # fmt: skip
    for key in ("sensitivity", "specificity", "ppv", "npv"):
        assert (task.metrics[key]["ci_low"], task.metrics[key]["ci_high"]) == (boot[key].low, boot[key].high)
        assert task.metrics[key]["ci_low"] <= task.metrics[key]["value"] <= task.metrics[key]["ci_high"]
    assert task.n_groups == len(np.unique(test[0].groups)) and task.n == 150
    text = report.markdown()
    assert "| or rule |" in text and "| a (threshold" in text
    assert report.to_dict()["tasks"]["malignant_vs_benign"]["n_positive"] == int(yt.sum())


def test_the_or_rule_needs_two_models_and_the_same_cases(dermamnist: Taxonomy, protocol) -> None:
    val, test = _members(dermamnist, 60, seed=7, k=2), _members(dermamnist, 60, seed=8, k=2)
    with pytest.raises(EvaluationError, match="at least two models"):
        or_rule(dermamnist, protocol, val[:1], test[:1])
    other = test[1].select(np.arange(30))
    with pytest.raises(EvaluationError, match="other samples"):
        or_rule(dermamnist, protocol, val, [test[0], other])


def test_the_or_rule_is_compared_like_a_model(dermamnist: Taxonomy, protocol) -> None:
    """``compare`` with an or-rule model: its sensitivity / specificity are the rule's (counted by hand), its
    differences with another model are paired on the same cases, and McNemar counts the discordant cases."""
    from hierclf.evaluation.comparison import ModelInputs, compare

    val, test = _members(dermamnist, 120, seed=11, k=4), _members(dermamnist, 150, seed=12, k=4)
    members_val, members_test, single = val[:3], test[:3], (val[3], test[3])
    report = compare(
        dermamnist,
        protocol,
        [
            ModelInputs("or", members_val, members_test, rule="or"),
            ModelInputs("one", [single[0]], [single[1]]),
        ],
    )
    flags = []
    for v, t in zip(members_val, members_test):
        yv, sv = _score(v, dermamnist)
        yt, st = _score(t, dermamnist)
        flags.append(st >= _threshold_by_trying(yv, sv, TARGET))
    either = np.any(flags, axis=0)
    yv, sv = _score(single[0], dermamnist)
    own = _score(single[1], dermamnist)[1] >= _threshold_by_trying(yv, sv, TARGET)
    task = report.tasks["malignant_vs_benign"]
    for key in ("sensitivity", "specificity"):
        mc = task.metrics[key]
        assert mc.models["or"].value == pytest.approx(_rates(yt, either)[key], abs=1e-12), key
        assert mc.models["one"].value == pytest.approx(_rates(yt, own)[key], abs=1e-12), key
        diff = mc.differences["or - one"]
        assert diff.value == pytest.approx(_rates(yt, either)[key] - _rates(yt, own)[key], abs=1e-12)
        cases = yt == (1 if key == "sensitivity" else 0)
        row = mc.tests["or - one"]["per_seed_pair"][0]
        right_or, right_one = either[cases] == (key == "sensitivity"), own[cases] == (key == "sensitivity")
        assert row["first_only"] == int(np.sum(right_or & ~right_one))
        assert row["second_only"] == int(np.sum(right_one & ~right_or))
    assert task.thresholds["or"].value == 0.0
    assert any("or rule of 3 members" in note for note in report.notes)
    with pytest.raises(EvaluationError, match="two or more members"):
        ModelInputs("or", members_val[:1], members_test[:1], rule="or")


def _protocol_file(tmp_path, dermamnist: Taxonomy) -> str:
    import yaml

    path = tmp_path / "protocol.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "ensembles",
                "target_sensitivity": TARGET,
                "group_column": None,
                "primary_metric": {"metric": "auc", "task": "malignant_vs_benign"},
                "bootstrap": {"replicates": 200, "seed": 3, "ci_level": 0.9},
                "tasks": [{"name": "malignant_vs_benign", "positive": ["malignant"], "negative": ["benign"]}],
            }
        )
    )
    return str(path)


def test_evaluate_and_compare_reach_the_ensembles_from_the_cli(
    tmp_path, dermamnist: Taxonomy, protocol
) -> None:
    """``hierclf evaluate --ensemble mean|or`` and ``hierclf compare --or-rule`` give the library's
    numbers."""
    import json

    from hierclf.cli import main
    from hierclf.evaluation.comparison import ModelInputs, compare
    from hierclf.evaluation.prediction_files import write_predictions

    val, test = _members(dermamnist, 90, seed=21, k=3), _members(dermamnist, 120, seed=22, k=3)
    files: dict[str, list[str]] = {"val": [], "test": []}
    for split, sets in (("val", val), ("test", test)):
        for k, preds in enumerate(sets):
            path = tmp_path / f"{split}_m{k}.csv"
            write_predictions(path, preds)
            files[split].append(str(path))
    common = ["--taxonomy", "taxonomy/dermamnist.yaml", "--protocol", _protocol_file(tmp_path, dermamnist)]
    evaluate_args = [*common, "--val", *files["val"], "--test", *files["test"]]

    assert main(["evaluate", *evaluate_args, "--ensemble", "mean", "--out", str(tmp_path / "mean")]) == 0
    got = json.loads((tmp_path / "mean" / "report.json").read_text())
    want = evaluate_seed_mean(dermamnist, protocol, files["val"], files["test"])
    auc = got["tasks"]["malignant_vs_benign"]["metrics"]["auc"]
    assert auc["value"] == pytest.approx(want.tasks["malignant_vs_benign"].metrics["auc"].value, abs=1e-12)
    assert "SEED ENSEMBLE" in (tmp_path / "mean" / "report.md").read_text()

    assert main(["evaluate", *evaluate_args, "--ensemble", "or", "--out", str(tmp_path / "or")]) == 0
    got = json.loads((tmp_path / "or" / "or_rule.json").read_text())
    want_or = or_rule(dermamnist, protocol, files["val"], files["test"])
    sens = want_or.tasks["malignant_vs_benign"].metrics["sensitivity"]["value"]
    assert got["tasks"]["malignant_vs_benign"]["metrics"]["sensitivity"]["value"] == pytest.approx(sens)
    assert got["members"] == ["test_m0", "test_m1", "test_m2"]

    compare_args = [*common, "--model", "or", "--val", *files["val"][:2], "--test", *files["test"][:2]]
    compare_args += ["--model", "m2", "--val", files["val"][2], "--test", files["test"][2]]
    assert main(["compare", *compare_args, "--or-rule", "or", "--out", str(tmp_path / "cmp")]) == 0
    got = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    direct = compare(
        dermamnist,
        protocol,
        [ModelInputs("or", val[:2], test[:2], rule="or"), ModelInputs("m2", [val[2]], [test[2]])],
    )
    sens = direct.tasks["malignant_vs_benign"].metrics["sensitivity"].differences["or - m2"].value
    assert got["tasks"]["malignant_vs_benign"]["metrics"]["sensitivity"]["differences"]["or - m2"][
        "value"
    ] == pytest.approx(sens, abs=1e-12)
    assert got["models"] == ["or", "m2"]


def test_the_cli_refuses_bad_ensemble_requests(tmp_path, dermamnist: Taxonomy, capsys) -> None:
    from hierclf.cli import main
    from hierclf.evaluation.prediction_files import write_predictions

    val, test = _members(dermamnist, 60, seed=23, k=2), _members(dermamnist, 60, seed=24, k=2)
    paths = []
    for name, preds in (("v0", val[0]), ("v1", val[1]), ("t0", test[0]), ("t1", test[1])):
        write_predictions(tmp_path / f"{name}.csv", preds)
        paths.append(str(tmp_path / f"{name}.csv"))
    common = ["--taxonomy", "taxonomy/dermamnist.yaml", "--protocol", _protocol_file(tmp_path, dermamnist)]
    code = main(["compare", *common, "--model", "either", "--val", *paths[:2], "--test", *paths[2:],
                 "--model", "b", "--val", paths[0], "--test", paths[2], "--or-rule", "eithr", "--out",
                 str(tmp_path / "c")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "unknown model 'eithr'; did you mean 'either'?" in err[0]
    code = main(["evaluate", *common, "--test", *paths[2:], "--ensemble", "or", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "--ensemble or needs --val" in err[0]
