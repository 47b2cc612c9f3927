"""Clinically partitioned evaluation: the numbers a protocol pre-registered, with their provenance.

:func:`evaluate` takes validation and test predictions (one file or
:class:`~hierclf.evaluation.prediction_files.Predictions`
per seed) and a :class:`~hierclf.evaluation.protocol_format.Protocol`, and returns an
:class:`EvaluationReport`:

* **binary tasks** -- samples whose true label lies under the task's positive or negative nodes; score =
  conditional roll-up ``P(pos) / (P(pos) + P(neg))``; ROC, AUC, partial AUC above the target sensitivity; the
  threshold chosen on **validation** at the target sensitivity, then applied to **test** (sensitivity,
  specificity, PPV, NPV); the optimistic specificity at the target sensitivity chosen on test itself,
  reported separately and labelled so; calibration; reader comparison;
* **partitions** (cuts) -- confusion matrix, per-class recall, balanced accuracy (Esteva's "mean of
  per-class accuracies"), macro one-vs-rest AUC and cancer sensitivity (recall of the protocol's
  ``cancer_node``);
* **hierarchical** -- mistake severity and hierarchical precision / recall / F1 of the predicted column;
* **subgroups** -- task metrics broken down by metadata columns, with counts and CIs, small groups flagged;
* **uncertainty** -- percentile bootstrap CIs that resample the protocol's groups (patients, lesions), and
  across seeds the mean, the sample standard deviation (``ddof=1``) and a pooled CI (the bootstrap
  replicates of all seeds together, so it carries both sampling and training variation).

This module is the sequence of steps; each section lives in its own module (``docs/evaluation.md`` has the
table): :mod:`~hierclf.evaluation.splits` reads and checks the inputs, :mod:`~hierclf.evaluation.tasks`,
:mod:`~hierclf.evaluation.partitions`, :mod:`~hierclf.evaluation.hierarchical`,
:mod:`~hierclf.evaluation.calibration`, :mod:`~hierclf.evaluation.readers` and
:mod:`~hierclf.evaluation.subgroups` measure, :mod:`~hierclf.evaluation.records` holds the results and
:mod:`~hierclf.evaluation.catalog` the words. The numeric kernels live in :mod:`hierclf.evaluation.metrics`;
:mod:`hierclf.evaluation.report` writes the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hierclf.evaluation.calibration import evaluate_calibration_nodes
from hierclf.evaluation.catalog import BELOW_TARGET_FLAG, FEWER_SEEDS, PRIMARY_KEYS, ThresholdSource
from hierclf.evaluation.data_summary import summarise_data
from hierclf.evaluation.hierarchical import evaluate_hierarchical
from hierclf.evaluation.notices import EvaluationError, Findings
from hierclf.evaluation.partitions import evaluate_partitions
from hierclf.evaluation.prediction_files import Predictions
from hierclf.evaluation.protocol_format import Protocol
from hierclf.evaluation.provenance import check_preregistration
from hierclf.evaluation.reader_studies import (
    ReaderReads,
    compare_readers,
    is_reads_file,
    mrmc_table,
    read_reader_reads,
    reader_points_from_reads,
)
from hierclf.evaluation.readers import assign_readers, load_readers, read_readers, reader_dominance
from hierclf.evaluation.records import (
    SYNTHETIC_BANNER,
    Estimate,
    EvaluationReport,
    PartitionResult,
    ReaderPoint,
    TaskResult,
)
from hierclf.evaluation.sample_metadata import Metadata, read_metadata
from hierclf.evaluation.splits import Inputs, Split, read_inputs
from hierclf.evaluation.subgroups import evaluate_subgroups
from hierclf.evaluation.tasks import evaluate_tasks, task_scores
from hierclf.taxonomy.tree import Taxonomy

__all__ = [
    "SYNTHETIC_BANNER",
    "EvaluationError",
    "EvaluationReport",
    "Estimate",
    "Evaluator",
    "Metadata",
    "PartitionResult",
    "ReaderPoint",
    "TaskResult",
    "ThresholdSource",
    "evaluate",
    "read_metadata",
    "read_readers",
    "reader_dominance",
    "task_scores",
]


def evaluate(
    taxonomy: Taxonomy,
    protocol: Protocol,
    val: Sequence[str | Path | Predictions] | None,
    test: Sequence[str | Path | Predictions],
    *,
    metadata: str | Path | Metadata | None = None,
    readers: str | Path | ReaderReads | Sequence[Mapping[str, Any]] | None = None,
    synthetic: bool = False,
    allow_test_thresholds: bool | None = None,
    allow_seed_mismatch: bool | None = None,
    provenance: dict[str, Any] | None = None,
) -> EvaluationReport:
    """Evaluate predictions under a pre-registered protocol.

    Args:
        taxonomy: the disease tree.
        protocol: a protocol loaded with :func:`hierclf.evaluation.protocol_format.load_protocol` (node names
            resolved).
        val: validation predictions, one per seed (paths or :class:`Predictions`), paired with ``test`` by
            position; thresholds are chosen on them. ``None`` or empty: thresholds would be chosen on test,
            which is refused unless ``allow_test_thresholds`` (or the protocol's flag) allows it.
        test: test predictions, one per seed. Each needs ``labels``; the columns may be leaves or any cut.
        metadata: a metadata CSV (or :class:`Metadata`) keyed by sample id (groups, subgroup columns).
        readers: a reader CSV of operating points (``reader,sensitivity,specificity[,task]``) or its rows;
            or a CSV of case-level reads (``reader,case_id,decision|score[,task]``, or
            :class:`~hierclf.evaluation.reader_studies.ReaderReads`): then each reader's operating point comes
            from its decisions, every reader is compared pairwise with the model on its cases, and the MRMC
            long table is kept (``mrmc_long.csv``). Readers without a task belong to the primary task (or
            the first task).
        synthetic: banner every section "SYNTHETIC DATA — not a clinical result" (also when a file says so).
        allow_test_thresholds, allow_seed_mismatch: override the protocol's flags (seeds tested on different
            samples, or repeating the same predictions, are refused otherwise).
        provenance: the run's :func:`~hierclf.evaluation.provenance.run_record`, printed in the report; a
            pre-registration record next to the test files is checked against its protocol hash.

    Returns the :class:`EvaluationReport`.

    Raises:
        EvaluationError: unequal numbers of val and test files, missing labels, NaN, a task with no
            positives or no negatives in a split, ids not in the metadata, a task node below the columns,
            seeds tested on different samples or repeating the same file (unless allowed), a rolled-up
            probability outside [0, 1] beyond rounding.
    """
    found = Findings()
    provenance = _checked(provenance, found)
    inputs = read_inputs(
        taxonomy,
        protocol,
        val,
        test,
        metadata=metadata,
        allow_test_thresholds=allow_test_thresholds,
        findings=found,
        allow_seed_mismatch=allow_seed_mismatch,
    )
    _warn_about_design(protocol, inputs.test, found)
    tasks, mrmc = _tasks_and_readers(taxonomy, protocol, inputs, readers)
    flag_missed_targets(protocol, tasks, found)
    partitions = evaluate_partitions(taxonomy, protocol, inputs.test, found)
    hierarchical = evaluate_hierarchical(taxonomy, protocol, inputs.test, found)
    calibration = evaluate_calibration_nodes(taxonomy, protocol, inputs.test)
    subgroups, subgroup_replicates = evaluate_subgroups(
        taxonomy, protocol, inputs.metadata, tasks, inputs.test, found
    )
    return _report(
        taxonomy,
        protocol,
        inputs,
        found,
        synthetic=synthetic,
        tasks=tasks,
        partitions=partitions,
        hierarchical=hierarchical,
        calibration=calibration,
        subgroups=subgroups,
        subgroup_replicates=subgroup_replicates,
        mrmc=mrmc,
        provenance=provenance or {},
    )


def _checked(provenance: dict[str, Any] | None, found: Findings) -> dict[str, Any] | None:
    """The run record with the result of the pre-registration check (``PROTOCOL CHANGED`` warns)."""
    if provenance is None:
        return None
    return provenance | {"preregistration": check_preregistration(provenance, found)}


def _tasks_and_readers(
    taxonomy: Taxonomy,
    protocol: Protocol,
    inputs: Inputs,
    readers: str | Path | ReaderReads | Sequence[Mapping[str, Any]] | None,
) -> tuple[dict[str, TaskResult], dict[str, Any] | None]:
    """The tasks with their readers on the task's replicates; with case-level reads, every reader compared
    pairwise with the model and the MRMC long table."""
    reads, reader_rows = _reader_input(taxonomy, protocol, readers, inputs)
    by_task = assign_readers(protocol, reader_rows) if reader_rows else None
    tasks = evaluate_tasks(taxonomy, protocol, inputs.val, inputs.test, inputs.source, readers=by_task)
    if reads is None:
        return tasks, None
    compare_readers(taxonomy, protocol, reads, tasks, inputs.test)
    return tasks, mrmc_table(taxonomy, protocol, reads, inputs.test)


def _reader_input(
    taxonomy: Taxonomy,
    protocol: Protocol,
    readers: str | Path | ReaderReads | Sequence[Mapping[str, Any]] | None,
    inputs: Inputs,
) -> tuple[ReaderReads | None, list[dict[str, Any]] | None]:
    """Case-level reads (a file with a ``case_id`` column) and the reader operating points: given in the
    file, or each reader's on its reads."""
    if readers is None:
        return None, None
    if isinstance(readers, ReaderReads) or (isinstance(readers, (str, Path)) and is_reads_file(readers)):
        reads = readers if isinstance(readers, ReaderReads) else read_reader_reads(readers)
        return reads, reader_points_from_reads(taxonomy, protocol, reads, inputs.test[0])
    return None, load_readers(readers)


def _warn_about_design(protocol: Protocol, test: list[Split], found: Findings) -> None:
    """Loud warnings about the study design: fewer seeds than pre-registered, row-level intervals."""
    n_seeds = len(test)
    if n_seeds < protocol.min_seeds:
        found.warn(
            f"ONLY {n_seeds} SEED{'S' if n_seeds != 1 else ''}: the protocol asks for at least "
            f"{protocol.min_seeds}; the seed mean ± std is not the pre-registered estimate.",
            alert=FEWER_SEEDS,
        )
    if protocol.group_column is None:
        found.warn(
            "ROW-LEVEL CONFIDENCE INTERVALS: the protocol has no group_column, so the bootstrap "
            "resamples images, not patients or lesions; intervals are too narrow when a patient "
            "contributes several images."
        )


def flag_missed_targets(protocol: Protocol, tasks: dict[str, TaskResult], found: Findings) -> None:
    """A test sensitivity (or specificity) below the target its threshold was chosen for on validation:
    the estimate carries ``BELOW-TARGET`` and a loud warning gives it with its interval."""
    for spec in protocol.tasks:
        rule = protocol.operating_point(spec)
        if rule.rule == "minimum_cost" or rule.target is None:
            continue
        key = "sensitivity" if rule.rule == "target_sensitivity" else "specificity"
        est = tasks[spec.name].metrics.get(key)
        if est is None or not est.value < rule.target:
            continue
        est.flags.append(BELOW_TARGET_FLAG)
        lo, hi = est.ci
        inside = "the interval excludes the target" if hi < rule.target else "the interval reaches the target"
        found.warn(
            f"TARGET MISSED: task {spec.name!r}: test {key} {est.value:.3f} [{lo:.3f}, {hi:.3f}] is below "
            f"the pre-registered {rule.target:g} its threshold was chosen for on validation ({inside})"
        )


def _report(
    taxonomy: Taxonomy,
    protocol: Protocol,
    inputs: Inputs,
    found: Findings,
    *,
    synthetic: bool,
    tasks: dict[str, TaskResult],
    partitions: dict[str, PartitionResult],
    hierarchical: dict[str, Estimate],
    calibration: dict[str, dict[str, Any]],
    subgroups: dict[str, list[dict[str, Any]]],
    subgroup_replicates: dict[str, Any],
    mrmc: dict[str, Any] | None,
    provenance: dict[str, Any],
) -> EvaluationReport:
    return EvaluationReport(
        taxonomy=taxonomy.name,
        protocol=protocol.model_dump(mode="json"),
        seeds=[s.name for s in inputs.test],
        validation=inputs.validation_names,
        synthetic=synthetic or any(s.preds.info.get("synthetic") == "true" for s in inputs.test + inputs.val),
        threshold_source=inputs.source,
        group_column=protocol.group_column,
        resampling=inputs.resampling(protocol.group_column, protocol.bootstrap.replicates),
        seed_table=seed_table(inputs, tasks),
        warnings=found.warnings,
        notes=found.notes,
        primary=primary_result(protocol, tasks, partitions),
        tasks=tasks,
        partitions=partitions,
        hierarchical=hierarchical,
        calibration_nodes=calibration,
        subgroups=subgroups,
        subgroup_replicates=subgroup_replicates,
        mrmc=mrmc,
        alerts=found.alerts,
        provenance=provenance,
        data=summarise_data(inputs),
    )


def seed_table(inputs: Inputs, tasks: dict[str, TaskResult]) -> list[dict[str, Any]]:
    """One row per seed: its files, its test set's size and groups, and each task's AUC and operating point
    (the per-seed values of ``report.json``, side by side)."""
    rows = []
    for k, test in enumerate(inputs.test):
        row: dict[str, Any] = {
            "seed": k,
            "validation": inputs.validation_names[k] if k < len(inputs.validation_names) else None,
            "test": test.name,
            "n_test": len(test.preds),
            "n_groups": int(len(test.group_names)),
            "tasks": {
                name: {
                    key: t.metrics[key].per_seed[k]
                    for key in ("auc", "sensitivity", "specificity")
                    if key in t.metrics
                }
                | {"threshold": t.thresholds.per_seed[k]}
                for name, t in tasks.items()
            },
        }
        rows.append(row)
    return rows


def primary_result(
    proto: Protocol, tasks: dict[str, TaskResult], partitions: dict[str, PartitionResult]
) -> dict[str, Any]:
    """The pre-registered metric's estimate (``None`` when its partition was skipped)."""
    pm = proto.primary_metric
    key = PRIMARY_KEYS[pm.metric]
    est: Estimate | None
    if pm.task is not None:
        est = tasks[pm.task].metrics.get(key)
    else:
        part = partitions.get(pm.target)
        est = part.metrics.get(key) if part is not None else None
    return {
        "metric": pm.metric,
        "task": pm.task,
        "partition": pm.partition,
        "estimate": est.to_dict() if est is not None else None,
    }


class Evaluator:
    """The stateful face of :func:`evaluate`: add one seed at a time, then compute the report.

    Useful when seeds finish one after another (e.g. at the end of each training run); the result is the
    same as calling :func:`evaluate` with all seeds at once.

    Example:
        >>> import numpy as np
        >>> from hierclf import Taxonomy
        >>> from hierclf.evaluation.protocol_format import protocol_from_dict
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> proto = protocol_from_dict({"name": "demo", "target_sensitivity": 0.9, "group_column": None,
        ...     "min_seeds": 1, "bootstrap": {"replicates": 20},
        ...     "primary_metric": {"metric": "auc", "task": "mel_vs_nv"},
        ...     "tasks": [{"name": "mel_vs_nv", "positive": ["mel"], "negative": ["nv"]}]}, tax)
        >>> rng = np.random.default_rng(0)
        >>> labels = np.array(["melanoma", "melanocytic_nevus"] * 20)
        >>> probs = rng.dirichlet(np.ones(7), size=40)
        >>> ev = Evaluator(tax, proto)
        >>> preds = Predictions(probs, tax.leaves, labels=labels)
        >>> ev.add(preds, preds)
        >>> report = ev.compute()
        >>> report.n_seeds, report.tasks["mel_vs_nv"].threshold_source.value
        (1, 'validation')
    """

    def __init__(
        self,
        taxonomy: Taxonomy,
        protocol: Protocol,
        *,
        metadata: str | Path | Metadata | None = None,
        readers: str | Path | Sequence[Mapping[str, Any]] | None = None,
        synthetic: bool = False,
        allow_test_thresholds: bool | None = None,
        allow_seed_mismatch: bool | None = None,
    ) -> None:
        self.taxonomy = taxonomy
        self.allow_seed_mismatch = allow_seed_mismatch
        self.protocol = protocol
        self.metadata = read_metadata(metadata) if isinstance(metadata, (str, Path)) else metadata
        self.readers = readers
        self.synthetic = synthetic
        self.allow_test_thresholds = allow_test_thresholds
        self.val: list[str | Path | Predictions] = []
        self.test: list[str | Path | Predictions] = []

    def add(self, val: str | Path | Predictions | None, test: str | Path | Predictions) -> None:
        """Add one seed's validation (``None`` only if every seed has none) and test predictions."""
        if (val is None) != (not self.val) and self.test:
            raise EvaluationError("give validation predictions for every seed or for none")
        if val is not None:
            self.val.append(val)
        self.test.append(test)

    def reset(self) -> None:
        """Forget the seeds added so far."""
        self.val, self.test = [], []

    def compute(self) -> EvaluationReport:
        """The :class:`EvaluationReport` of every seed added so far."""
        return evaluate(
            self.taxonomy,
            self.protocol,
            self.val or None,
            self.test,
            metadata=self.metadata,
            readers=self.readers,
            synthetic=self.synthetic,
            allow_test_thresholds=self.allow_test_thresholds,
            allow_seed_mismatch=self.allow_seed_mismatch,
        )
