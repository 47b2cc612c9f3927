"""Protocol files: schema, positioned errors, checks against the taxonomy, the shipped DermaMNIST protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hierclf import Taxonomy
from hierclf.evaluation.protocol_format import (
    BINARY_METRICS,
    Protocol,
    ProtocolError,
    load_protocol,
    protocol_from_dict,
    protocol_from_text,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "taxonomy" / "protocols" / "dermamnist.yaml"

BASE = """\
name: demo
target_sensitivity: 0.95
group_column: lesion_id
primary_metric: {metric: specificity_at_target_sensitivity, task: mel_vs_nv}
tasks:
  - name: mel_vs_nv
    positive: [malignant_melanocytic]
    negative: [benign_melanocytic]
  - name: cancer
    positive: [malignant]
    negative: [benign]
partitions:
  - name: three_way
    nodes: [benign, melanoma, keratinocyte_carcinoma]
"""


def _error(text: str, tax: Taxonomy) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        protocol_from_text(text, tax, "p.yaml")
    return info.value


def test_shipped_protocol_loads_and_resolves_aliases(dermamnist: Taxonomy) -> None:
    proto = load_protocol(SHIPPED, dermamnist)
    tasks = {t.name: t for t in proto.tasks}
    assert tasks["melanoma_vs_nevus"].positive == ["melanoma"]
    assert tasks["melanoma_vs_nevus"].negative == ["melanocytic_nevus"]
    assert tasks["carcinoma_vs_keratosis"].positive == ["keratinocyte_carcinoma"]
    assert tasks["carcinoma_vs_keratosis"].negative == ["benign_keratosis"]
    assert (tasks["malignant_vs_benign"].positive, tasks["malignant_vs_benign"].negative) == (
        ["malignant"],
        ["benign"],
    )
    parts = {p.name: p.nodes for p in proto.partitions}
    # resolved to ids in tree order, and each one really is a cut of the tree
    assert parts["three_way"] == list(dermamnist.cut(["benign", "melanoma", "keratinocyte_carcinoma"]))
    assert sorted(parts["seven_way"]) == sorted(dermamnist.leaves)
    assert proto.target_sensitivity == 0.95 and proto.group_column == "lesion_id"
    assert proto.primary_metric.metric == "specificity_at_target_sensitivity"
    assert proto.primary_metric.task == "melanoma_vs_nevus"
    assert proto.min_seeds == 5 and proto.bootstrap.replicates == 1000
    assert proto.cancer_node == "malignant"  # declared, so its reports keep cancer sensitivity


def test_shipped_training_settings_are_a_valid_train_config(dermamnist: Taxonomy) -> None:
    """`hierclf study` turns the protocol's training mapping into one TrainConfig per seed."""
    from hierclf.train.config import TrainConfig

    training = dict(load_protocol(SHIPPED, dermamnist).training or {})
    assert (SHIPPED.parent / training["taxonomy"]).resolve() == (REPO / "taxonomy" / "dermamnist.yaml")
    cfg = TrainConfig.model_validate({**training, "taxonomy": str(SHIPPED.parent / training["taxonomy"])})
    assert (cfg.backbone, cfg.data.size, cfg.sampler, cfg.loss.name, cfg.schedule) == (
        "small_cnn",
        28,
        "balanced",
        "ce",
        "cosine",
    )


def test_defaults(dermamnist: Taxonomy) -> None:
    proto = protocol_from_text(BASE, dermamnist)
    assert isinstance(proto, Protocol)
    assert (proto.min_seeds, proto.bootstrap.replicates, proto.bootstrap.ci_level) == (5, 1000, 0.95)
    assert proto.allow_test_thresholds is False and proto.training is None and proto.subgroups == []
    assert proto.cancer_node is None
    assert proto.task("cancer").positive == ["malignant"]


def test_task_lookup_suggests(dermamnist: Taxonomy) -> None:
    proto = protocol_from_text(BASE, dermamnist)
    with pytest.raises(KeyError, match="did you mean 'cancer'"):
        proto.task("cancre")


def test_unknown_field_has_position_and_suggestion(dermamnist: Taxonomy) -> None:
    err = _error(BASE + "target_sensitivty: 0.9\n", dermamnist)
    assert str(err).startswith("p.yaml:15:")
    assert "unknown field 'target_sensitivty'" in str(err) and "did you mean 'target_sensitivity'" in str(err)


def test_unknown_field_in_task(dermamnist: Taxonomy) -> None:
    text = BASE.replace("    negative: [benign]\n", "    negative: [benign]\n    postive: [x]\n")
    err = _error(text, dermamnist)
    assert "p.yaml:12:" in str(err) and "did you mean 'positive'" in str(err)


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "high"])
def test_target_sensitivity_must_be_in_open_unit_interval(dermamnist: Taxonomy, value: str) -> None:
    err = _error(BASE.replace("target_sensitivity: 0.95", f"target_sensitivity: {value}"), dermamnist)
    assert "p.yaml:2:" in str(err) and "target_sensitivity" in str(err)


def test_missing_group_column_is_an_error_null_is_allowed(dermamnist: Taxonomy) -> None:
    err = _error(BASE.replace("group_column: lesion_id\n", ""), dermamnist)
    assert "missing required field 'group_column'" in str(err)
    assert protocol_from_text(BASE.replace("lesion_id", "null"), dermamnist).group_column is None


def test_unknown_task_node_did_you_mean(dermamnist: Taxonomy) -> None:
    err = _error(BASE.replace("positive: [malignant]", "positive: [malignat]"), dermamnist)
    assert str(err).startswith("p.yaml:10:16:")
    assert "unknown node 'malignat'" in str(err) and "did you mean 'malignant'" in str(err)


def test_overlapping_task_sides_name_the_leaves(dermamnist: Taxonomy) -> None:
    err = _error(BASE.replace("negative: [benign]", "negative: [benign, bcc]"), dermamnist)
    assert "positive and negative nodes overlap" in str(err)
    assert "'basal_cell_carcinoma'" in str(err) and "p.yaml:9:" in str(err)


def test_overlap_through_descendants(dermamnist: Taxonomy) -> None:
    err = _error(BASE.replace("negative: [benign_melanocytic]", "negative: [malignant]"), dermamnist)
    assert "leaves 'melanoma' lie under both sides" in str(err)


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ("[benign, malignant, melanoma]", "overlap"),
        ("[benign, melanoma]", "uncovered"),
    ],
)
def test_partition_must_be_a_cut(dermamnist: Taxonomy, nodes: str, message: str) -> None:
    err = _error(BASE.replace("[benign, melanoma, keratinocyte_carcinoma]", nodes), dermamnist)
    assert "partition 'three_way'" in str(err) and message in str(err) and "p.yaml:14:" in str(err)


def test_primary_metric_task_must_exist(dermamnist: Taxonomy) -> None:
    err = _error(BASE.replace("task: mel_vs_nv}", "task: mel_vs_nevus}"), dermamnist)
    assert "unknown task 'mel_vs_nevus'" in str(err) and "did you mean 'mel_vs_nv'" in str(err)


def test_primary_metric_kind_must_fit_target(dermamnist: Taxonomy) -> None:
    err = _error(
        BASE.replace("metric: specificity_at_target_sensitivity", "metric: balanced_accuracy"), dermamnist
    )
    assert "partition metric" in str(err)
    text = BASE.replace(
        "{metric: specificity_at_target_sensitivity, task: mel_vs_nv}",
        "{metric: balanced_accuracy, partition: three_way}",
    )
    assert protocol_from_text(text, dermamnist).primary_metric.target == "three_way"
    err = _error(
        BASE.replace(
            "primary_metric: {metric: specificity_at_target_sensitivity, task: mel_vs_nv}",
            "primary_metric: {metric: auc}",
        ),
        dermamnist,
    )
    assert "exactly one of 'task' or 'partition'" in str(err)


def test_duplicate_task_names_and_bad_names(dermamnist: Taxonomy) -> None:
    err = _error(BASE.replace("name: cancer", "name: mel_vs_nv"), dermamnist)
    assert "task name 'mel_vs_nv' is used twice" in str(err)
    err = _error(BASE.replace("name: cancer", "name: Cancer Task"), dermamnist)
    assert "invalid name 'Cancer Task'" in str(err)


def test_every_problem_is_reported(dermamnist: Taxonomy) -> None:
    text = BASE.replace("positive: [malignant]", "positive: [malignat]").replace(
        "[benign, melanoma, keratinocyte_carcinoma]", "[benign, melanoma]"
    )
    err = _error(text, dermamnist)
    assert len(err.problems) == 2 and "1 more problem" in str(err)
    assert [p.line for p in err.problems] == sorted(p.line for p in err.problems)


def test_duplicate_yaml_key_and_syntax(dermamnist: Taxonomy) -> None:
    assert "duplicate key 'name'" in str(_error(BASE + "name: again\n", dermamnist))
    assert "malformed YAML" in str(_error("name: [unclosed\n", dermamnist))
    assert "expected a mapping" in str(_error("- a\n- b\n", dermamnist))


def test_missing_file(dermamnist: Taxonomy, tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="file not found"):
        load_protocol(tmp_path / "nope.yaml", dermamnist)


def test_from_dict_round_trip(dermamnist: Taxonomy) -> None:
    data = yaml.safe_load(BASE)
    assert protocol_from_dict(data, dermamnist) == protocol_from_text(BASE, dermamnist)


def test_metric_lists_are_disjoint() -> None:
    from hierclf.evaluation.protocol_format import PARTITION_METRICS

    assert not set(BINARY_METRICS) & set(PARTITION_METRICS)


CANCER_PRIMARY = BASE.replace(
    "{metric: specificity_at_target_sensitivity, task: mel_vs_nv}",
    "{metric: cancer_sensitivity, partition: three_way}",
)


def test_cancer_node_is_resolved(dermamnist: Taxonomy) -> None:
    assert (
        protocol_from_text(BASE + "cancer_node: cancer\n", dermamnist).cancer_node == "malignant"
    )  # an alias
    proto = protocol_from_text(CANCER_PRIMARY + "cancer_node: malignant\n", dermamnist)
    assert proto.primary_metric.metric == "cancer_sensitivity" and proto.cancer_node == "malignant"


def test_unknown_cancer_node_did_you_mean(dermamnist: Taxonomy) -> None:
    err = _error(BASE + "cancer_node: malignat\n", dermamnist)
    assert str(err).startswith("p.yaml:15:14:")
    assert "cancer_node: unknown node 'malignat'" in str(err) and "did you mean 'malignant'" in str(err)


def test_cancer_sensitivity_primary_needs_the_cancer_node(dermamnist: Taxonomy) -> None:
    """Pre-registering cancer sensitivity without declaring its node is refused with one positioned line."""
    err = _error(CANCER_PRIMARY, dermamnist)
    assert len(err.problems) == 1
    line = str(err.problems[0])
    assert line.startswith("p.yaml:4:26: error: primary_metric: cancer_sensitivity")
    assert "none is declared; add `cancer_node: <node>`" in line and "\n" not in line


def test_cancer_sensitivity_primary_on_a_cut_that_hides_the_node(dermamnist: Taxonomy) -> None:
    text = CANCER_PRIMARY.replace("[benign, melanoma, keratinocyte_carcinoma]", "[benign, malignant]")
    err = _error(text + "cancer_node: melanoma\n", dermamnist)
    assert len(err.problems) == 1 and str(err.problems[0]).startswith("p.yaml:4:")
    assert "undefined on partition 'three_way': cancer_node 'melanoma' lies inside one of its classes" in str(
        err
    )
    assert protocol_from_text(text + "cancer_node: malignant\n", dermamnist).cancer_node == "malignant"


def test_cancer_classes_against_leaf_sets(dermamnist: Taxonomy) -> None:
    """cancer_classes marks exactly the cut classes whose leaves lie under the node, or refuses."""
    from hierclf.evaluation.protocol_format import cancer_classes

    cuts = [
        ["benign", "malignant"],
        ["benign", "melanoma", "keratinocyte_carcinoma"],
        list(dermamnist.leaves),
    ]
    for cut in cuts:
        for node in dermamnist.nodes:
            under = set(dermamnist.leaves_under(node))
            classes = [set(dermamnist.leaves_under(c)) for c in cut]
            inside = [c <= under for c in classes]
            expressible = set().union(*(c for c, i in zip(classes, inside) if i)) == under
            got = cancer_classes(dermamnist, cut, node)
            assert (got.tolist() if got is not None else None) == (inside if expressible else None), (
                cut,
                node,
            )
