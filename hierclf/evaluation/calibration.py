"""Calibration: the ECE, Brier score and reliability curve of a probability against its event, for each
task's score and for the rolled-up probability of each node the protocol lists in ``calibration_nodes``,
with grouped-bootstrap intervals (for a task, from the task's own test replicates)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.catalog import (
    CALIBRATION_NODE_BRIER_PROVENANCE,
    CALIBRATION_NODE_PROVENANCE,
    TASK_BRIER_PROVENANCE,
    TASK_ECE_PROVENANCE,
    ReportedMetric,
)
from hierclf.evaluation.metrics import recalibration as RC
from hierclf.evaluation.protocol_format import Protocol
from hierclf.evaluation.records import IntervalPolicy, SeedMetrics, aggregate_metrics
from hierclf.evaluation.splits import Split, covered, node_probabilities
from hierclf.taxonomy.tree import Taxonomy

__all__ = [
    "TASK_CALIBRATION_TABLE",
    "Reliability",
    "evaluate_calibration_nodes",
    "measure_reliability",
    "measure_task_calibration",
    "reliability_band",
]


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
    """ECE, Brier score and reliability of P(node) against 'true label under node' (labels above the node
    left out), with grouped-bootstrap intervals."""
    if any(covered(taxonomy, [node], s.preds.columns) for s in test):
        return {"note": f"{node!r} lies below the prediction columns; not computed"}
    seeds = [_node_seed(taxonomy, proto, node, s) for s in test]
    estimates = aggregate_metrics(
        [metrics for _, metrics in seeds],
        _TABLE,
        level=proto.bootstrap.ci_level,
        provenance=lambda m: m.provenance.format(node=node),
        policy=IntervalPolicy.of(proto),
    )
    return {
        "ece": estimates["ece"],
        "reliability": [s.curve() for s, _ in seeds],
        "n_bins": proto.calibration_bins,
        "brier": estimates["brier"],
    }


_TABLE = (
    ReportedMetric("ece", "ECE", CALIBRATION_NODE_PROVENANCE),
    ReportedMetric("brier", "Brier score", CALIBRATION_NODE_BRIER_PROVENANCE),
)


def _node_seed(
    taxonomy: Taxonomy, proto: Protocol, node: str, split: Split
) -> tuple[Reliability, SeedMetrics]:
    idx = taxonomy.index
    row = idx.position[node]
    labels = idx.rows(split.label_names)  # 1 under the node, -1 above it (unknown), 0 elsewhere
    code = split.per_label_table(
        np.where(idx.is_under(labels, row), 1, np.where(idx.is_under(row, labels), -1, 0))
    )
    rows = np.flatnonzero(code >= 0)
    p = node_probabilities(taxonomy, split, [node], rows)[:, 0]
    y, groups = code[rows], split.groups[rows]
    reliability = measure_reliability(y, p, n_bins=proto.calibration_bins)
    values = {"ece": reliability.ece, "brier": float(np.mean((p - y) ** 2)) if len(y) else float("nan")}
    replicates = {}
    if len(y):
        ece, brier = M.bootstrap_calibration(
            y,
            p,
            groups,
            n_bins=proto.calibration_bins,
            n_replicates=proto.bootstrap.replicates,
            seed=proto.bootstrap.seed,
        )
        replicates = {"ece": ece, "brier": brier}
    events = {"ece": len(y), "brier": len(y)}
    metrics = SeedMetrics(values, replicates, len(y), int(len(np.unique(groups))), events=events)
    return reliability, metrics


_SCALED = "test, conditional task score after temperature scaling fitted on validation"
#: The calibration numbers of a task's score; the ``*_temperature_scaled`` ones only with the protocol's
#: ``temperature_scaling`` (reported beside the raw model's, never instead).
TASK_CALIBRATION_TABLE = (
    ReportedMetric("ece", "ECE", TASK_ECE_PROVENANCE),
    ReportedMetric("brier", "Brier score", TASK_BRIER_PROVENANCE),
    ReportedMetric(
        "calibration_intercept",
        "calibration intercept (slope fixed at 1; 0 = calibrated in the large)",
        "test, conditional task score: logistic recalibration logit P(y) = a + logit(p)",
    ),
    ReportedMetric(
        "calibration_slope",
        "calibration slope (1 = calibrated; < 1 = too extreme)",
        "test, conditional task score: logistic recalibration logit P(y) = a + b logit(p)",
    ),
    ReportedMetric("temperature", "temperature (fitted on validation)", "validation, conditional task score"),
    ReportedMetric("ece_temperature_scaled", "ECE after temperature scaling", _SCALED),
    ReportedMetric("brier_temperature_scaled", "Brier score after temperature scaling", _SCALED),
    ReportedMetric(
        "calibration_intercept_temperature_scaled", "calibration intercept after scaling", _SCALED
    ),
    ReportedMetric("calibration_slope_temperature_scaled", "calibration slope after scaling", _SCALED),
)


def _recalibration(
    proto: Protocol, y: np.ndarray, score: np.ndarray, groups: np.ndarray, suffix: str = ""
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Calibration intercept and slope of ``score`` with their grouped-bootstrap replicates."""
    intercept, slope = RC.logistic_calibration(y, score)
    reps = RC.bootstrap_logistic_calibration(
        y, score, groups, n_replicates=proto.bootstrap.replicates, seed=proto.bootstrap.seed
    )
    keys = (f"calibration_intercept{suffix}", f"calibration_slope{suffix}")
    return dict(zip(keys, (intercept, slope))), dict(zip(keys, reps))


def _temperature_scaled(
    proto: Protocol,
    validation: tuple[np.ndarray, np.ndarray],
    y: np.ndarray,
    score: np.ndarray,
    groups: np.ndarray,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The temperature fitted on validation and the test calibration of the scaled score."""
    temperature = RC.fit_temperature(*validation)
    values: dict[str, float] = {"temperature": temperature}
    if not np.isfinite(temperature):
        return values, {}
    scaled = RC.temperature_scale(score, temperature)
    ece, brier = M.bootstrap_calibration(
        y,
        scaled,
        groups,
        n_bins=proto.calibration_bins,
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
    )
    values["ece_temperature_scaled"] = float(
        M.expected_calibration_error(y, scaled, n_bins=proto.calibration_bins)
    )
    values["brier_temperature_scaled"] = float(np.mean((scaled - y) ** 2))
    fit_values, fit_reps = _recalibration(proto, y, scaled, groups, "_temperature_scaled")
    reps = {"ece_temperature_scaled": ece, "brier_temperature_scaled": brier} | fit_reps
    return values | fit_values, reps


def measure_task_calibration(
    proto: Protocol,
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    boot: M.BootstrapResult,
) -> SeedMetrics:
    """ECE and Brier score (the task's test replicates), the calibration intercept and slope, and with the
    protocol's ``temperature_scaling`` the same after scaling by a temperature fitted on ``validation``
    ``(y, score)``. ``test`` is ``(y, score, groups)``."""
    y, score, groups = test
    values = {"ece": float(boot["ece"].point), "brier": float(boot["brier"].point)}
    replicates = {key: np.asarray(boot[key].replicates, np.float64) for key in ("ece", "brier")}
    fit_values, fit_reps = _recalibration(proto, y, score, groups)
    values, replicates = values | fit_values, replicates | fit_reps
    if proto.temperature_scaling:
        scaled_values, scaled_reps = _temperature_scaled(proto, validation, y, score, groups)
        values, replicates = values | scaled_values, replicates | scaled_reps
    events = dict.fromkeys(values, len(y))
    if "temperature" in events:
        events["temperature"] = len(validation[0])
    sizes: dict[str, tuple[int, int | None]] = {"temperature": (len(validation[0]), None)}
    return SeedMetrics(values, replicates, len(y), int(len(np.unique(groups))), events=events, sizes=sizes)


def reliability_band(proto: Protocol, y: np.ndarray, score: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``(R, n_bins)`` grouped-bootstrap replicates of the observed frequency per bin (the diagram's band)."""
    return RC.bootstrap_reliability(
        y,
        score,
        groups,
        n_bins=proto.calibration_bins,
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
    )
