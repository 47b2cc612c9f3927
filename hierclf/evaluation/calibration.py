"""Calibration: the ECE and reliability curve of a probability against its event, for each task's score and
for the rolled-up probability of each node the protocol lists in ``calibration_nodes``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.catalog import CALIBRATION_NODE_PROVENANCE
from hierclf.evaluation.protocol_format import Protocol
from hierclf.evaluation.records import estimate_over_seeds
from hierclf.evaluation.splits import Split, covered
from hierclf.functional import rollup
from hierclf.taxonomy.tree import Taxonomy

__all__ = ["Reliability", "evaluate_calibration_nodes", "measure_reliability"]


@dataclass(frozen=True)
class Reliability:
    """One seed's calibration of one probability: the ECE and the per-bin reliability curve ``(n_bins,)``."""

    ece: float
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    n: int

    def curve(self) -> dict[str, np.ndarray]:
        """The reliability curve as the report stores it."""
        return {"confidence": self.confidence, "accuracy": self.accuracy, "count": self.count}


def measure_reliability(y: np.ndarray, prob: np.ndarray, *, n_bins: int) -> Reliability:
    """ECE and reliability curve of ``prob`` ``(n,)`` against the 0/1 events ``y`` ``(n,)``."""
    ece = float(M.expected_calibration_error(y, prob, n_bins=n_bins))
    conf, acc, cnt = M.reliability_curve(y, prob, n_bins=n_bins)
    return Reliability(ece, np.asarray(conf), np.asarray(acc), np.asarray(cnt), len(y))


def evaluate_calibration_nodes(
    taxonomy: Taxonomy, proto: Protocol, test: list[Split]
) -> dict[str, dict[str, Any]]:
    """``{node: {"ece", "reliability", "n_bins"}}`` for each of the protocol's ``calibration_nodes``, or
    ``{node: {"note"}}`` when the node lies below the prediction columns."""
    return {node: _calibration_node(taxonomy, proto, node, test) for node in proto.calibration_nodes}


def _calibration_node(taxonomy: Taxonomy, proto: Protocol, node: str, test: list[Split]) -> dict[str, Any]:
    """ECE and reliability of P(node) against 'true label under node' (labels above the node left out)."""
    if any(covered(taxonomy, [node], s.preds.columns) for s in test):
        return {"note": f"{node!r} lies below the prediction columns; not computed"}
    seeds = [_node_seed(taxonomy, node, s, proto.calibration_bins) for s in test]
    return {
        "ece": estimate_over_seeds(
            [s.ece for s in seeds],
            n=[s.n for s in seeds],
            provenance=CALIBRATION_NODE_PROVENANCE.format(node=node),
        ),
        "reliability": [s.curve() for s in seeds],
        "n_bins": proto.calibration_bins,
    }


def _node_seed(taxonomy: Taxonomy, node: str, split: Split, n_bins: int) -> Reliability:
    idx = taxonomy.index
    row = idx.position[node]
    labels = idx.rows(split.label_names)  # 1 under the node, -1 above it (unknown), 0 elsewhere
    code = split.per_label_table(
        np.where(idx.is_under(labels, row), 1, np.where(idx.is_under(row, labels), -1, 0))
    )
    rows = np.flatnonzero(code >= 0)
    probs = np.asarray(split.preds.probs[rows], dtype=np.float64)
    p = np.asarray(rollup(probs, taxonomy, [node], columns=list(split.preds.columns)), dtype=np.float64)[:, 0]
    return measure_reliability(code[rows], p, n_bins=n_bins)
