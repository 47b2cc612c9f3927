"""Hierarchy-aware errors of the predicted column (the argmax of the prediction columns) against the true
label: hierarchical precision / recall / F1 (HiClass's definitions) for any columns, and, for leaf-level
columns, the mean tree distance and LCA height of the mistakes (making-better-mistakes) and the error rate.
Every one is a ratio of per-sample sums, so its grouped-bootstrap replicates are ratios of replicate sums
(:func:`~hierclf.evaluation.metrics.bootstrap_sums` over all test samples' groups)."""

from __future__ import annotations

import math

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.catalog import HIERARCHICAL_TABLE
from hierclf.evaluation.notices import Findings
from hierclf.evaluation.protocol_format import Protocol
from hierclf.evaluation.records import Estimate, IntervalPolicy, SeedMetrics, aggregate_metrics
from hierclf.evaluation.splits import Split
from hierclf.taxonomy.tree import Taxonomy

__all__ = ["evaluate_hierarchical"]


def evaluate_hierarchical(
    taxonomy: Taxonomy, proto: Protocol, test: list[Split], findings: Findings
) -> dict[str, Estimate]:
    """The :data:`HIERARCHICAL_TABLE` metrics over the seeds, with grouped-bootstrap intervals; the mistake
    metrics only when every seed has leaf-level prediction columns (a note says so otherwise)."""
    seeds = [_measure_seed(taxonomy, proto, s) for s in test]
    if any("error_rate" not in s.values for s in seeds):
        findings.note(
            "mistake severity needs leaf-level prediction columns; not computed for coarser columns"
        )
    return aggregate_metrics(
        seeds,
        HIERARCHICAL_TABLE,
        level=proto.bootstrap.ci_level,
        provenance=lambda m: m.provenance,
        policy=IntervalPolicy.of(proto),
    )


def _measure_seed(taxonomy: Taxonomy, proto: Protocol, split: Split) -> SeedMetrics:
    pos = taxonomy.index.position
    cols = split.preds.columns
    probs = np.asarray(split.preds.probs)
    pred_node = np.asarray([pos[c] for c in cols])[probs.argmax(axis=1)]
    true_node = split.per_label(pos.__getitem__)
    common, pred_depth, true_depth = M.hierarchical_terms(true_node, pred_node, taxonomy)
    columns = [common, pred_depth, true_depth]
    values = dict(zip(_PRF, M.hierarchical_prf(true_node, pred_node, taxonomy)))
    leaf_level = all(taxonomy.is_leaf(c) for c in cols)
    if leaf_level:
        mistakes, mistake_columns = _mistakes(taxonomy, split, probs)
        values.update(mistakes)
        columns += mistake_columns
    n = len(split.preds)
    reps = proto.bootstrap
    sums = (
        M.bootstrap_sums(np.stack(columns, axis=1), split.groups, reps.replicates, reps.seed) if n else None
    )
    replicates = _replicates(sums, leaf_level) if sums is not None else {}
    counts, events = {}, dict.fromkeys(values, n)
    if leaf_level:
        wrong, is_leaf = mistake_columns[2] > 0, mistake_columns[3] > 0
        counts["error_rate"] = M.effective_counts(wrong[is_leaf], split.groups[is_leaf])
        events.update(dict.fromkeys(("mistake_distance", "mistake_lca_height"), int(wrong.sum())))
        events["error_rate"] = int(is_leaf.sum())
    n_groups = int(len(np.unique(split.groups)))
    return SeedMetrics(values, replicates, n, n_groups, counts, events)


_PRF = ("hierarchical_precision", "hierarchical_recall", "hierarchical_f1")


def _replicates(sums: np.ndarray, leaf_level: bool) -> dict[str, np.ndarray]:
    """Each metric's replicates from the replicate sums of its per-sample terms (``(R, 3 [+ 4])``)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precision, recall = sums[:, 0] / sums[:, 1], sums[:, 0] / sums[:, 2]
        out = {
            "hierarchical_precision": precision,
            "hierarchical_recall": recall,
            "hierarchical_f1": 2 * precision * recall / (precision + recall),
        }
        if leaf_level:
            dist, height, wrong, leaves = sums[:, 3], sums[:, 4], sums[:, 5], sums[:, 6]
            # no mistake in a replicate: the mean severity is 0, as for the full data
            out["mistake_distance"] = np.where(wrong > 0, dist / wrong, 0.0)
            out["mistake_lca_height"] = np.where(wrong > 0, height / wrong, 0.0)
            out["error_rate"] = np.where(leaves > 0, wrong / leaves, np.nan)
    return out


def _mistakes(
    taxonomy: Taxonomy, split: Split, probs: np.ndarray
) -> tuple[dict[str, float], list[np.ndarray]]:
    """Mean distance and LCA height over the mistakes, and the error rate, of samples labelled at a leaf;
    and the per-sample terms of their sums ``[distance x wrong, height x wrong, wrong, labelled at a leaf]``
    (zero for samples labelled above the leaves)."""
    leaf_pos = {leaf: i for i, leaf in enumerate(taxonomy.leaves)}
    leaf_code = split.per_label(lambda u: leaf_pos.get(u, -1))
    is_leaf = leaf_code >= 0
    t_idx = leaf_code[is_leaf]
    col_leaf = np.asarray([leaf_pos[c] for c in split.preds.columns])
    p_idx = col_leaf[probs[is_leaf].argmax(axis=1)] if len(t_idx) else t_idx
    dist, lca_h = M.mistake_severity(t_idx, p_idx, taxonomy)
    wrong = t_idx != p_idx
    values = {
        "mistake_distance": float(np.mean(dist[wrong])) if wrong.any() else 0.0,
        "mistake_lca_height": float(np.mean(lca_h[wrong])) if wrong.any() else 0.0,
        "error_rate": float(wrong.mean()) if len(wrong) else math.nan,
    }
    terms = np.zeros((4, len(leaf_code)))
    terms[0, is_leaf] = dist * wrong
    terms[1, is_leaf] = lca_h * wrong
    terms[2, is_leaf] = wrong
    terms[3, is_leaf] = 1.0
    return values, list(terms)
