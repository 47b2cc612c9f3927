"""Partitions (cuts of the tree): multi-class summaries of the argmax of the rolled-up cut probabilities.

Per seed (:class:`PartitionSeed`): the confusion matrix, per-class recall, balanced accuracy (Esteva's "mean
of per-class accuracies"), accuracy, macro one-vs-rest AUC and, when the protocol declares a
``cancer_node`` that the cut's classes can express, cancer sensitivity (the recall of that node); grouped
bootstrap replicates of every one of them from the same draws (recalls and accuracy as ratios of group
sums, the macro AUC from one sorted layout per class). Samples labelled above the cut are left out and
counted; a cut finer than the prediction columns is skipped with a warning.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.catalog import PARTITION_TABLE, PER_CLASS_RECALL_PROVENANCE
from hierclf.evaluation.metrics.resampling import _chunk_rows, _n_jobs
from hierclf.evaluation.notices import Findings
from hierclf.evaluation.protocol_format import PartitionSpec, Protocol, cancer_classes
from hierclf.evaluation.records import (
    IntervalPolicy,
    PartitionResult,
    SeedMetrics,
    aggregate_metrics,
    estimate_over_seeds,
)
from hierclf.evaluation.splits import Split, covered, cut_labels, node_probabilities
from hierclf.taxonomy.tree import Taxonomy

__all__ = ["PartitionSeed", "evaluate_partitions"]


@dataclass(frozen=True)
class PartitionSeed:
    """One seed's measurement of one cut with ``C`` classes.

    Attributes:
        confusion: ``(C, C)`` counts, rows true, columns predicted.
        recall: ``(C,)`` per-class recall (NaN for a class without samples).
        recall_replicates: ``(n_replicates, C)`` bootstrap replicates of ``recall``.
        metrics: the :data:`PARTITION_TABLE` values and the replicates of those with an interval.
        excluded: samples labelled above the cut (left out).
        recall_counts: each class's correct and total samples, with their clustered effective counts.
    """

    confusion: np.ndarray
    recall: np.ndarray
    recall_replicates: np.ndarray
    metrics: SeedMetrics
    excluded: int
    recall_counts: list[M.EffectiveCounts]


def evaluate_partitions(
    taxonomy: Taxonomy, proto: Protocol, test: list[Split], findings: Findings
) -> dict[str, PartitionResult]:
    """Every partition of the protocol that the prediction columns can split."""
    out = {}
    for part in proto.partitions:
        below = sorted({n for s in test for n in covered(taxonomy, part.nodes, s.preds.columns)})
        if below:
            findings.warn(
                f"PARTITION {part.name!r} SKIPPED: its node(s) {', '.join(below)} lie below the prediction "
                "columns, whose probabilities cannot be split."
            )
            continue
        out[part.name] = _evaluate_partition(taxonomy, proto, part, test)
    return out


def _evaluate_partition(
    taxonomy: Taxonomy, proto: Protocol, part: PartitionSpec, test: list[Split]
) -> PartitionResult:
    notes: list[str] = []
    cancer = None
    if proto.cancer_node is None:
        notes.append(
            "cancer sensitivity not reported: the protocol declares no cancer_node "
            "(add `cancer_node: <node>`, e.g. the tree's malignant node, to report its recall)"
        )
    else:
        cancer = cancer_classes(taxonomy, part.nodes, proto.cancer_node)
        if cancer is None:
            notes.append(
                f"cancer sensitivity not reported: {proto.cancer_node!r} lies inside a class of this cut"
            )
    seeds = [_measure_seed(taxonomy, proto, part.nodes, cancer, s) for s in test]
    return _aggregate(proto, part, seeds, notes)


def _measure_seed(
    taxonomy: Taxonomy, proto: Protocol, cut: list[str], cancer: np.ndarray | None, split: Split
) -> PartitionSeed:
    """One seed: argmax of the rolled-up cut probabilities against the cut class of each label."""
    n_classes = len(cut)
    y_all = cut_labels(taxonomy, split, cut)
    rows = np.flatnonzero(y_all >= 0)
    y = y_all[rows]
    probs = node_probabilities(taxonomy, split, cut, rows)
    pred = probs.argmax(axis=1) if len(rows) else np.zeros(0, np.int64)
    values = {
        "balanced_accuracy": float(M.balanced_accuracy(y, pred, n_classes)),
        "macro_auc": float(M.macro_ovr_auc(y, probs)) if len(np.unique(y)) > 1 else math.nan,
        "accuracy": float((y == pred).mean()) if len(y) else math.nan,
    }
    pair = None
    if cancer is not None:
        pair = np.stack([cancer[y], cancer[pred]])  # truth under the cancer node, prediction under it
        values["cancer_sensitivity"] = (
            float((pair[0] & pair[1]).sum() / pair[0].sum()) if pair[0].any() else math.nan
        )
    groups = split.groups[rows]
    reps, seed = proto.bootstrap.replicates, proto.bootstrap.seed
    boot = _bootstrap_partition(
        y,
        pred,
        groups,
        n_classes,
        cancer=pair,
        replicates=reps,
        seed=seed,
        probs=probs if len(rows) else None,
    )
    recall_replicates = boot.pop("recall")
    confusion = np.asarray(M.confusion_matrix(y, pred, n_classes))
    support = confusion.sum(axis=1)
    counts = {"accuracy": M.effective_counts(y == pred, groups)}
    events = {
        "balanced_accuracy": int(support[support > 0].min()) if support.any() else 0,
        "macro_auc": int(support[support > 0].min()) if support.any() else 0,
        "accuracy": len(y),
    }
    if pair is not None:
        counts["cancer_sensitivity"] = M.effective_counts(pair[1][pair[0]], groups[pair[0]])
        events["cancer_sensitivity"] = int(pair[0].sum())
    metrics = SeedMetrics(values, boot, len(rows), int(len(np.unique(groups))), counts, events)
    recall_counts = [M.effective_counts(pred[y == c] == c, groups[y == c]) for c in range(n_classes)]
    return PartitionSeed(
        confusion,
        np.asarray(M.per_class_recall(y, pred, n_classes), dtype=np.float64),
        recall_replicates,
        metrics,
        int(len(y_all) - len(rows)),
        recall_counts,
    )


def _aggregate(
    proto: Protocol, part: PartitionSpec, seeds: list[PartitionSeed], notes: list[str]
) -> PartitionResult:
    """The seeds of one cut as its :class:`PartitionResult`."""
    level = proto.bootstrap.ci_level
    excluded = [s.excluded for s in seeds]
    if any(excluded):
        notes.append(
            f"{max(excluded)} test sample(s) per seed at most have a label above this cut and are left out"
        )
    policy = IntervalPolicy.of(proto)
    metrics = aggregate_metrics(
        [s.metrics for s in seeds],
        PARTITION_TABLE,
        level=level,
        provenance=lambda m: m.provenance,
        policy=policy,
    )
    recall = np.stack([s.recall for s in seeds])  # (seeds, C)
    per_class = {
        c: estimate_over_seeds(
            recall[:, i],
            [s.recall_replicates[:, i] for s in seeds],
            level=level,
            n=[int(s.confusion[i].sum()) for s in seeds],
            provenance=PER_CLASS_RECALL_PROVENANCE,
            counts=[s.recall_counts[i] for s in seeds],
            events=[int(s.confusion[i].sum()) for s in seeds],
            policy=policy,
        )
        for i, c in enumerate(part.nodes)
    }
    return PartitionResult(
        part.name,
        list(part.nodes),
        [s.metrics.n for s in seeds],
        excluded,
        [s.confusion for s in seeds],
        per_class,
        metrics,
        notes,
    )


def _bootstrap_partition(
    y: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray,
    n_classes: int,
    *,
    cancer: np.ndarray | None,
    replicates: int,
    seed: int,
    probs: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Bootstrap replicates of per-class recall ``(R, C)``, balanced accuracy, accuracy, cancer sensitivity
    and (with ``probs``) the macro AUC ``(R,)``, all in one pass over the same draws.

    A replicate draws groups with replacement (:func:`hierclf.evaluation.metrics.grouped_bootstrap_counts`
    over the distinct groups, the same draws as for the samples) and counts each group's samples as often as
    it was drawn. Samples are first summed per group, so a chunk of replicates costs two ``(chunk, n_groups)
    @ (n_groups, C + 1)`` products: recall_c = drawn correct class-c samples / drawn class-c samples; the
    macro AUC evaluates one sorted layout per class on the same chunk of counts.

    Args:
        y, pred: ``(n,)`` true and predicted class indices.
        groups: ``(n,)`` int group codes.
        n_classes: C.
        cancer: optional ``(2, n)`` bool: truth under the cancer node, prediction under it.
        replicates, seed: the bootstrap's replicates and seed.
        probs: optional ``(n, C)`` rolled-up probabilities (the macro AUC's scores).
    """
    codes, hits, total = _group_sums(y, pred, groups, n_classes, cancer)
    present = total[:, :n_classes].sum(0) > 0
    correct, all_samples = hits[:, :n_classes].sum(1), total[:, :n_classes].sum(1)
    plans = None
    if probs is not None:
        inverse = np.searchsorted(codes, groups)
        plans = M.OneVsRestPlans(y, np.asarray(probs, np.float64), inverse, len(codes))

    def run(counts: np.ndarray) -> dict[str, np.ndarray]:
        w = np.asarray(counts, dtype=np.float64)  # (chunk, n_groups): draws of each group
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {"ratios": (w @ hits) / (w @ total), "accuracy": (w @ correct) / (w @ all_samples)}
        if plans is not None:
            out["macro_auc"] = plans.macro(counts)
        return out

    n_groups = len(codes)
    chunk = _chunk_rows(8 * (n_groups + 2 * n_groups), replicates)  # grouped_bootstrap_counts's chunks
    parts = M.replicate_map(
        run, n_groups, replicates, np.random.default_rng(seed), chunk=chunk, jobs=_n_jobs(None)
    )
    ratios = np.concatenate([p["ratios"] for p in parts]) if parts else np.zeros((0, total.shape[1]))
    rec = ratios[:, :n_classes]
    rec[:, ~present] = np.nan
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicates stay NaN ('mean of empty slice')
        bal = np.nanmean(rec[:, present], axis=1) if present.any() else np.full(len(rec), np.nan)
    out = {
        "recall": rec,
        "balanced_accuracy": bal,
        "accuracy": np.concatenate([p["accuracy"] for p in parts]),
    }
    if cancer is not None:
        out["cancer_sensitivity"] = ratios[:, n_classes]
    if plans is not None:
        out["macro_auc"] = np.concatenate([p["macro_auc"] for p in parts])
    return out


def _group_sums(
    y: np.ndarray, pred: np.ndarray, groups: np.ndarray, n_classes: int, cancer: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(distinct groups, hits, totals)``: per group and class (plus a cancer column), the correct and all
    samples, ``(n_groups, C [+ 1])``."""
    codes, g = np.unique(groups, return_inverse=True)
    g = g.reshape(-1)
    extra = 1 if cancer is not None else 0
    total = np.zeros((len(codes), n_classes + extra))
    hits = np.zeros((len(codes), n_classes + extra))
    np.add.at(total, (g, y), 1.0)
    np.add.at(hits, (g, y), (pred == y).astype(np.float64))
    if cancer is not None:
        np.add.at(total[:, n_classes], g, cancer[0].astype(np.float64))
        np.add.at(hits[:, n_classes], g, (cancer[0] & cancer[1]).astype(np.float64))
    return codes, hits, total
