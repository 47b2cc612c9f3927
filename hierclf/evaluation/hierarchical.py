"""Hierarchy-aware errors of the predicted column (the argmax of the prediction columns) against the true
label: hierarchical precision / recall / F1 (HiClass's definitions) for any columns, and, for leaf-level
columns, the mean tree distance and LCA height of the mistakes (making-better-mistakes) and the error rate."""

from __future__ import annotations

import math

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.catalog import HIERARCHICAL_TABLE
from hierclf.evaluation.notices import Findings
from hierclf.evaluation.records import Estimate, SeedMetrics, aggregate_metrics
from hierclf.evaluation.splits import Split
from hierclf.taxonomy.tree import Taxonomy

__all__ = ["evaluate_hierarchical"]

#: The hierarchical numbers have no bootstrap; their estimates carry the default level.
_LEVEL = 0.95


def evaluate_hierarchical(taxonomy: Taxonomy, test: list[Split], findings: Findings) -> dict[str, Estimate]:
    """The :data:`HIERARCHICAL_TABLE` metrics over the seeds; the mistake metrics only when every seed has
    leaf-level prediction columns (a note says so otherwise)."""
    seeds = [_measure_seed(taxonomy, s) for s in test]
    if any("error_rate" not in s.values for s in seeds):
        findings.note(
            "mistake severity needs leaf-level prediction columns; not computed for coarser columns"
        )
    return aggregate_metrics(seeds, HIERARCHICAL_TABLE, level=_LEVEL, provenance=lambda m: m.provenance)


def _measure_seed(taxonomy: Taxonomy, split: Split) -> SeedMetrics:
    pos = taxonomy.index.position
    cols = split.preds.columns
    probs = np.asarray(split.preds.probs)
    pred_node = np.asarray([pos[c] for c in cols])[probs.argmax(axis=1)]
    p, r, f = M.hierarchical_prf(split.per_label(pos.__getitem__), pred_node, taxonomy)
    values = {
        "hierarchical_precision": float(p),
        "hierarchical_recall": float(r),
        "hierarchical_f1": float(f),
    }
    if all(taxonomy.is_leaf(c) for c in cols):
        values.update(_mistakes(taxonomy, split, probs))
    return SeedMetrics(values, n=len(split.preds))


def _mistakes(taxonomy: Taxonomy, split: Split, probs: np.ndarray) -> dict[str, float]:
    """Mean distance and LCA height over the mistakes, and the error rate, of samples labelled at a leaf."""
    leaf_pos = {leaf: i for i, leaf in enumerate(taxonomy.leaves)}
    leaf_code = split.per_label(lambda u: leaf_pos.get(u, -1))
    is_leaf = leaf_code >= 0
    t_idx = leaf_code[is_leaf]
    col_leaf = np.asarray([leaf_pos[c] for c in split.preds.columns])
    p_idx = col_leaf[probs[is_leaf].argmax(axis=1)] if len(t_idx) else t_idx
    dist, lca_h = M.mistake_severity(t_idx, p_idx, taxonomy)
    wrong = t_idx != p_idx
    return {
        "mistake_distance": float(np.mean(dist[wrong])) if wrong.any() else 0.0,
        "mistake_lca_height": float(np.mean(lca_h[wrong])) if wrong.any() else 0.0,
        "error_rate": float(wrong.mean()) if len(wrong) else math.nan,
    }
