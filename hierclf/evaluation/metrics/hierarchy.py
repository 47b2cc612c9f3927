"""Hierarchy-aware metrics: mistake severity (tree distance, LCA height) and hierarchical precision /
recall / F1, computed from the taxonomy's index (depths, lowest common ancestors), vectorised over samples."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from hierclf.evaluation.metrics.checks import MetricError, _check_labels, _ratio

if TYPE_CHECKING:
    from hierclf.taxonomy.tree import Taxonomy


def _check_rows(x: Any, n: int, what: str) -> np.ndarray:
    return _check_labels(x, n, what)


def mistake_severity(
    true_leaf_idx: Any,
    pred_leaf_idx: Any,
    taxonomy: Taxonomy,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample tree distance and LCA height between true and predicted leaves (Bertinetto et al. 2020,
    "Making Better Mistakes").

    Args:
        true_leaf_idx: ``(n,)`` column indices into ``taxonomy.leaves``.
        pred_leaf_idx: ``(n,)`` column indices into ``taxonomy.leaves``.
        taxonomy: the tree.

    Returns:
        ``(distance, lca_height)``, each ``(n,)`` int64: ``distance`` is the number of edges on the tree path
        (``taxonomy.distance``); ``lca_height`` is the height of the lowest common ancestor, i.e. the edges on
        the longest downward path from it to a leaf (0 for a correct prediction). In a tree whose leaves all
        sit at the same depth this equals ``taxonomy.height - depth(lca)``, the paper's definition.

    Example:
        >>> from hierclf.taxonomy.synthetic import random_taxonomy
        >>> tax = random_taxonomy(6, max_depth=3, seed=0)
        >>> d, h = mistake_severity([0, 0], [0, 5], tax)
        >>> d.tolist()[0], h.tolist()[0]
        (0, 0)
    """
    index = taxonomy.index
    t = index.leaf_rows[_check_rows(true_leaf_idx, index.n_leaves, "true_leaf_idx")]
    p = index.leaf_rows[_check_rows(pred_leaf_idx, index.n_leaves, "pred_leaf_idx")]
    if t.shape != p.shape:
        raise MetricError(f"true_leaf_idx has {t.size} samples but pred_leaf_idx has {p.size}")
    lca = index.lca(t, p)
    depth = index.depth
    return depth[t] + depth[p] - 2 * depth[lca], index.height[lca]


def hierarchical_terms(
    true_node_idx: Any,
    pred_node_idx: Any,
    taxonomy: Taxonomy,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample, the three sums behind :func:`hierarchical_prf`: ``|anc(pred) & anc(true)|`` (the depth of
    the lowest common ancestor), ``|anc(pred)|`` and ``|anc(true)|`` (depths), each ``(n,)`` int64. Their
    sums over any (re)sampled set give that set's hierarchical precision and recall.

    Example:
        >>> from hierclf.taxonomy.synthetic import random_taxonomy
        >>> tax = random_taxonomy(6, max_depth=3, seed=0)
        >>> [t.tolist() for t in hierarchical_terms([1], [1], tax)]
        [[1], [1], [1]]
    """
    index = taxonomy.index
    t = _check_rows(true_node_idx, index.n_nodes, "true_node_idx")
    p = _check_rows(pred_node_idx, index.n_nodes, "pred_node_idx")
    if t.shape != p.shape:
        raise MetricError(f"true_node_idx has {t.size} samples but pred_node_idx has {p.size}")
    depth = index.depth
    return depth[index.lca(t, p)], depth[p], depth[t]


def hierarchical_prf(
    true_node_idx: Any,
    pred_node_idx: Any,
    taxonomy: Taxonomy,
) -> tuple[float, float, float]:
    """Hierarchical precision, recall and F1 (Kiritchenko et al. 2006; the definitions HiClass implements,
    Miranda et al. 2023), micro-averaged over samples.

    With ``anc(x)`` = the node ``x`` and its ancestors, excluding the root:
    ``hP = sum_i |anc(pred_i) & anc(true_i)| / sum_i |anc(pred_i)|``,
    ``hR = sum_i |anc(pred_i) & anc(true_i)| / sum_i |anc(true_i)|``, ``hF = 2 hP hR / (hP + hR)``.
    Since ``|anc(x)| = depth(x)`` and the intersection is ``anc(lca)``, these are sums of depths.
    A ratio with a zero denominator (every prediction is the root) is ``nan``.

    Args:
        true_node_idx: ``(n,)`` rows into ``taxonomy.nodes`` (pre-order).
        pred_node_idx: ``(n,)`` rows into ``taxonomy.nodes``.
        taxonomy: the tree.

    Example:
        >>> from hierclf.taxonomy.synthetic import random_taxonomy
        >>> tax = random_taxonomy(6, max_depth=3, seed=0)
        >>> hierarchical_prf([1, 2], [1, 2], tax)
        (1.0, 1.0, 1.0)
    """
    common_each, pred_each, true_each = hierarchical_terms(true_node_idx, pred_node_idx, taxonomy)
    common = float(common_each.sum())
    precision = _ratio(common, float(pred_each.sum()))
    recall = _ratio(common, float(true_each.sum()))
    f1 = (
        _ratio(2 * precision * recall, precision + recall)
        if not (math.isnan(precision) or math.isnan(recall))
        else math.nan
    )
    return precision, recall, f1
