"""What the evaluation reports, declared once: each metric's key, label and provenance; threshold sources.

Every number in an :class:`~hierclf.evaluation.records.EvaluationReport` says where it came from. The words
live here, in one table per section, and every reader of the report takes them from here: the evaluation
writes the provenance strings, :mod:`hierclf.evaluation.report` the labels and column headers of
``report.md``, ``hierclf evaluate`` and ``hierclf study`` their summary tables.

* :data:`TASK_TABLE`: the binary-task metrics (``report.tasks[name].metrics[key]``);
* :data:`PARTITION_TABLE`: the metrics of a cut (``report.partitions[name].metrics[key]``);
* :data:`HIERARCHICAL_TABLE`: the hierarchy-aware metrics (``report.hierarchical[key]``);
* :class:`ThresholdSource`: the split each operating point was chosen on;
* :class:`IntervalMethod`: how each interval was computed (the report says it beside every number);
* :data:`PRIMARY_KEYS`: the reported key behind each metric a protocol can pre-register.

Example:
    >>> task_metric("specificity").provenance_for(ThresholdSource.VALIDATION, 0.95)
    'test, at the threshold chosen on validation'
    >>> ThresholdSource.TEST.value, ThresholdSource.TEST.description
    ('test', 'test (no validation predictions; optimistic, allowed by allow_test_thresholds)')
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "BELOW_TARGET_FLAG",
    "FEWER_SEEDS",
    "HIERARCHICAL_TABLE",
    "IntervalMethod",
    "PARTITION_TABLE",
    "PRIMARY_KEYS",
    "SUBGROUP_TASK_KEYS",
    "SUMMARY_TASK_KEYS",
    "TASK_TABLE",
    "THRESHOLD_COLUMN",
    "ReportedMetric",
    "ThresholdSource",
    "partition_metric",
    "subgroup_provenance",
    "task_metric",
]


class ThresholdSource(str, Enum):
    """The split on which each task's threshold was chosen; ``report.json`` records the value.

    ``"validation"``: chosen on the validation predictions at the target sensitivity, then applied to test
    (the protocol's rule). ``"test"``: no validation predictions were given and the protocol (or
    ``--allow-test-thresholds``) allowed choosing on test itself, so every number at the operating point is
    optimistic; :attr:`description` says so wherever the report names the source.
    """

    VALIDATION = "validation"
    TEST = "test"

    @property
    def description(self) -> str:
        """The source in the report's words: ``validation``, or ``test (...)`` saying why, and the cost."""
        if self is ThresholdSource.TEST:
            return "test (no validation predictions; optimistic, allowed by allow_test_thresholds)"
        return "validation"

    def __str__(self) -> str:
        return self.value


class IntervalMethod(str, Enum):
    """How a confidence interval was computed; ``report.json`` records the value as ``interval``.

    ``percentile_bootstrap``: the percentile interval of the grouped bootstrap's replicates (pooled over
    seeds). ``clopper_pearson`` / ``wilson``: the exact or score interval of a proportion, at the seeds'
    mean counts; ``*_clustered``: at Korn & Graubard's effective counts because the trials come in clusters
    (``hierclf.evaluation.metrics.intervals``). ``normal``: an analytic (DeLong) interval. With several
    seeds a binomial interval is widened to the pooled bootstrap interval where that reaches further, so it
    keeps the training variation.
    """

    BOOTSTRAP = "percentile_bootstrap"
    CLOPPER_PEARSON = "clopper_pearson"
    CLOPPER_PEARSON_CLUSTERED = "clopper_pearson_clustered"
    WILSON = "wilson"
    WILSON_CLUSTERED = "wilson_clustered"
    NORMAL = "normal"

    @property
    def short(self) -> str:
        """The label of the report's interval column (and the tag after a binomial interval)."""
        return {
            "percentile_bootstrap": "bootstrap",
            "clopper_pearson": "Clopper-Pearson",
            "clopper_pearson_clustered": "Clopper-Pearson (clustered)",
            "wilson": "Wilson",
            "wilson_clustered": "Wilson (clustered)",
            "normal": "normal (DeLong)",
        }[self.value]

    def __str__(self) -> str:
        return self.value


#: Flags a number can carry (``Estimate.flags``), with the words the report prints.
SMALL_FLAG = "SMALL"
ZERO_WIDTH_FLAG = "ZERO-WIDTH"
#: The alert of a run with fewer seeds than the protocol asks for (the primary-metric line, every figure and
#: the CLI summary carry it, like ``LEAKAGE``).
FEWER_SEEDS = "FEWER SEEDS THAN PRE-REGISTERED"
#: a test sensitivity (specificity) below the pre-registered target its threshold was chosen for
BELOW_TARGET_FLAG = "BELOW-TARGET"


@dataclass(frozen=True)
class ReportedMetric:
    """One reported metric.

    Attributes:
        key: its key in the result records and ``report.json``.
        label: how the report and the CLI name it (table rows, column headers).
        provenance: where the number comes from; ``{source}`` stands for the threshold source's
            :attr:`ThresholdSource.description`, ``{target}`` for the protocol's target sensitivity.
        bootstrap: the key of :func:`~hierclf.evaluation.metrics.bootstrap_binary`'s estimate whose
            replicates give its interval (``None``: no interval).
        at_threshold: measured at the chosen operating point (its provenance names the threshold source).
        in_task_table: shown in the per-task table of ``report.md``.
        events: what its ``SMALL`` flag counts (``"positives"`` for a sensitivity, ``"negatives"`` for a
            specificity, ...): the events that drive the number, not the images.
        proportion: a ratio of counts, so a binomial interval applies where the bootstrap is degenerate.
    """

    key: str
    label: str
    provenance: str
    bootstrap: str | None = None
    at_threshold: bool = False
    in_task_table: bool = True
    events: str = "samples"
    proportion: bool = False

    def provenance_for(self, source: ThresholdSource, target: float) -> str:
        """The provenance string of this metric under a threshold source and target sensitivity."""
        return self.provenance.format(source=source.description, target=target)


_AT_THRESHOLD = "test, at the threshold chosen on {source}"

#: Binary-task metrics, in report order.
_BOTH = "positives or negatives, the fewer"
TASK_TABLE: tuple[ReportedMetric, ...] = (
    ReportedMetric("auc", "AUC", "test (threshold-free)", bootstrap="auc", events=_BOTH),
    ReportedMetric(
        "partial_auc",
        "partial AUC above target sensitivity",
        "test, ROC area above sensitivity {target} (normalised to 1 for a perfect classifier)",
        bootstrap="partial_auc",
        events="positives",
    ),
    ReportedMetric(
        "sensitivity",
        "sensitivity",
        _AT_THRESHOLD,
        bootstrap="sensitivity",
        at_threshold=True,
        events="positives",
        proportion=True,
    ),
    ReportedMetric(
        "specificity",
        "specificity",
        _AT_THRESHOLD,
        bootstrap="specificity",
        at_threshold=True,
        events="negatives",
        proportion=True,
    ),
    ReportedMetric(
        "ppv",
        "PPV",
        _AT_THRESHOLD,
        bootstrap="ppv",
        at_threshold=True,
        events="called positive",
        proportion=True,
    ),
    ReportedMetric(
        "npv",
        "NPV",
        _AT_THRESHOLD,
        bootstrap="npv",
        at_threshold=True,
        events="called negative",
        proportion=True,
    ),
    ReportedMetric(
        "validation_sensitivity",
        "sensitivity on the split that chose the threshold",
        "{source}, at the threshold chosen there",
        bootstrap="sensitivity",
        events="positives",
        proportion=True,
    ),
    ReportedMetric(
        "specificity_at_target_chosen_on_test",
        "OPTIMISTIC specificity at target, threshold chosen on test",
        "OPTIMISTIC: test, threshold chosen on test itself at sensitivity {target} (for comparison only)",
        bootstrap="specificity_at_sensitivity",
        events="negatives",
    ),
    ReportedMetric(
        "threshold_chosen_on_test",
        "OPTIMISTIC threshold chosen on test",
        "OPTIMISTIC: test",
        bootstrap="threshold_at_sensitivity",
        in_task_table=False,
        events="positives",
    ),
)
#: The task metrics of every summary table (report.md's summary, ``hierclf study``, ``hierclf evaluate``).
SUMMARY_TASK_KEYS = ("auc", "sensitivity", "specificity")
#: The task metrics broken down by subgroup.
SUBGROUP_TASK_KEYS = ("auc", "sensitivity", "specificity")
#: Header of the summary column that names the threshold source.
THRESHOLD_COLUMN = "threshold chosen on"
#: Provenance of the per-seed thresholds and of a task's calibration error.
THRESHOLD_PROVENANCE = "chosen on {source} at sensitivity {target}"
TASK_ECE_PROVENANCE = "test, conditional task score"
TASK_BRIER_PROVENANCE = "test, conditional task score (mean squared error of the probability)"

_ARGMAX = "test, argmax of the rolled-up cut probabilities"
#: Metrics of a cut, in report order (``cancer_sensitivity`` only where the protocol declares a cancer node
#: that the cut's classes can express).
PARTITION_TABLE: tuple[ReportedMetric, ...] = (
    ReportedMetric("balanced_accuracy", "balanced accuracy", _ARGMAX, events="samples of the rarest class"),
    ReportedMetric(
        "macro_auc",
        "macro AUC",
        _ARGMAX + " (one-vs-rest, classes present)",
        events="samples of the rarest class",
    ),
    ReportedMetric("accuracy", "accuracy", _ARGMAX, events="samples", proportion=True),
    ReportedMetric("cancer_sensitivity", "cancer sensitivity", _ARGMAX, events="cancers", proportion=True),
)
PER_CLASS_RECALL_LABEL = "per-class recall"
PER_CLASS_RECALL_PROVENANCE = _ARGMAX

_HPRF = "test, predicted column vs true label; ancestor sets without the root (HiClass), micro-averaged"
#: Hierarchy-aware metrics (the mistake metrics need leaf-level prediction columns).
HIERARCHICAL_TABLE: tuple[ReportedMetric, ...] = (
    ReportedMetric("hierarchical_precision", "hierarchical precision", _HPRF),
    ReportedMetric("hierarchical_recall", "hierarchical recall", _HPRF),
    ReportedMetric("hierarchical_f1", "hierarchical F1", _HPRF),
    ReportedMetric(
        "mistake_distance",
        "mistake distance",
        "test, mean tree distance between true and predicted leaf over the mistakes",
    ),
    ReportedMetric(
        "mistake_lca_height",
        "mistake LCA height",
        "test, mean height of the lowest common ancestor over the mistakes (making-better-mistakes)",
    ),
    ReportedMetric("error_rate", "error rate", "test, leaf-level top-1 error", proportion=True),
)

CALIBRATION_NODE_PROVENANCE = "test, rolled-up P({node})"
CALIBRATION_NODE_BRIER_PROVENANCE = "test, rolled-up P({node}) (mean squared error of the probability)"
READERS_PROVENANCE = "fraction of readers on or below the test ROC curve"
READER_COMPARISON_PROVENANCE = "test, model {what} (threshold chosen on test at {reader}'s value)"

#: Pre-registered metric (protocol ``primary_metric.metric``) -> key of the reported metric.
PRIMARY_KEYS = {
    "specificity_at_target_sensitivity": "specificity",
    "sensitivity_at_target_sensitivity": "sensitivity",
    "auc": "auc",
    "partial_auc": "partial_auc",
    "ppv": "ppv",
    "npv": "npv",
    "balanced_accuracy": "balanced_accuracy",
    "macro_auc": "macro_auc",
    "cancer_sensitivity": "cancer_sensitivity",
}


def task_metric(key: str) -> ReportedMetric:
    """The :data:`TASK_TABLE` entry of ``key`` (KeyError for a key the table does not hold)."""
    return _by_key(TASK_TABLE, key)


def partition_metric(key: str) -> ReportedMetric:
    """The :data:`PARTITION_TABLE` entry of ``key``."""
    return _by_key(PARTITION_TABLE, key)


def _by_key(table: tuple[ReportedMetric, ...], key: str) -> ReportedMetric:
    for metric in table:
        if metric.key == key:
            return metric
    raise KeyError(key)


def subgroup_provenance(key: str, column: str, value: str, source: ThresholdSource) -> str:
    """Provenance of a subgroup's task metric: the subgroup and, at the operating point, the source.

    >>> subgroup_provenance("sensitivity", "sex", "male", ThresholdSource.VALIDATION)
    'test subgroup sex=male, at the threshold chosen on validation'
    """
    where = f"test subgroup {column}={value}"
    if not task_metric(key).at_threshold:
        return where
    return f"{where}, at the threshold chosen on {source.value}"
