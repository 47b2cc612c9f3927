"""Numeric evaluation metrics: ROC, operating points, multi-class summaries, calibration, hierarchy-aware
errors and a grouped (patient-level) bootstrap vectorised over replicates.

Everything here is pure numpy: arrays in, float64 results out, no Python loop over samples (loops run over a
handful of classes, tree levels or replicate chunks). Conventions, shared by every binary function:

* ``y_true`` holds 0/1 (or bool); ``scores`` are floats, higher means more positive; a sample is called
  positive when ``score >= threshold``.
* Ties are handled as blocks: all samples with the same score are called positive or negative together, and
  a tied positive/negative pair counts 1/2 towards the AUC (Mann-Whitney).
* Sensitivity ``tp / P`` "reaches" a target when ``tp / P >= target`` evaluated in float64 (the same test in
  every function, so weighted, unweighted and bootstrap thresholds agree exactly).
* Degenerate splits: functions that need both classes (ROC, AUC, specificity at sensitivity) raise
  :class:`MetricError`; ratios of counts at a fixed threshold (PPV with nothing called positive, ...) are
  ``nan``; bootstrap replicates that miss a class are ``nan`` and counted.

``docs/metrics.md`` defines every metric precisely; scikit-learn is the reference in
``tests/test_metrics.py``. One module per concept, every public name re-exported here
(``from hierclf.evaluation import metrics as M; M.roc_auc(...)``):

* ``checks``: input checks and :class:`MetricError`;
* ``roc``: ROC curve, AUC, partial AUC, thresholds and the rates at an operating point;
* ``multiclass``: confusion matrix, per-class recall, balanced accuracy, macro one-vs-rest AUC;
* ``calibration``: reliability curve, expected calibration error;
* ``hierarchy``: mistake severity, hierarchical precision / recall / F1;
* ``resampling``: grouped bootstrap draws (:func:`grouped_bootstrap_counts`), percentile intervals;
* ``bootstrap``: the vectorised grouped bootstrap of a binary task (:func:`bootstrap_binary`), and of
  several score vectors on the same draws (:func:`paired_bootstrap_binary`);
* ``intervals``: Clopper-Pearson and Wilson intervals, Korn & Graubard's effective counts, bootstrap
  p-values;
* ``delong``: DeLong's test of correlated AUCs (Sun & Xu's O(n log n) algorithm; clustered variance);
* ``paired_tests``: McNemar's exact test and its clustered form;
* ``operating_points``: thresholds at a target specificity or at the minimum expected cost (and their
  bootstrap), PPV / NPV at a prevalence, net benefit (decision curves);
* ``recalibration``: calibration intercept and slope, temperature scaling, the reliability band.
"""

from __future__ import annotations

from hierclf.evaluation.metrics.bootstrap import (
    BootstrapEstimate,
    BootstrapResult,
    CurveQueries,
    OneVsRestPlans,
    bootstrap_binary,
    bootstrap_macro_auc,
    bootstrap_reader_comparison,
    paired_bootstrap_binary,
    subset_bootstrap_binary,
)
from hierclf.evaluation.metrics.calibration import (
    bootstrap_calibration,
    expected_calibration_error,
    reliability_curve,
)
from hierclf.evaluation.metrics.checks import MetricError
from hierclf.evaluation.metrics.delong import DeLongResult, delong_covariance, delong_test, midranks
from hierclf.evaluation.metrics.hierarchy import hierarchical_prf, hierarchical_terms, mistake_severity
from hierclf.evaluation.metrics.intervals import (
    EffectiveCounts,
    bootstrap_p_value,
    clopper_pearson,
    effective_counts,
    normal_quantile,
    normal_two_sided_p,
    regularized_incomplete_beta,
    wilson,
)
from hierclf.evaluation.metrics.multiclass import (
    balanced_accuracy,
    confusion_matrix,
    macro_ovr_auc,
    per_class_recall,
)
from hierclf.evaluation.metrics.operating_points import (
    bootstrap_net_benefit,
    bootstrap_thresholds,
    net_benefit,
    predictive_values_at_prevalence,
    threshold_at_minimum_cost,
    threshold_at_specificity,
)
from hierclf.evaluation.metrics.paired_tests import (
    McNemarResult,
    binomial_two_sided_p,
    clustered_mcnemar,
    discordant_pairs,
    mcnemar_exact,
)
from hierclf.evaluation.metrics.recalibration import (
    bootstrap_logistic_calibration,
    bootstrap_reliability,
    fit_temperature,
    logistic_calibration,
    temperature_scale,
)
from hierclf.evaluation.metrics.resampling import (
    GroupSums,
    bootstrap_sums,
    grouped_bootstrap_counts,
    per_group_sums,
    percentile_ci,
    replicate_map,
)
from hierclf.evaluation.metrics.roc import (
    binary_metrics_at_threshold,
    partial_auc_above_sensitivity,
    roc_auc,
    roc_curve,
    roc_polyline_height,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
    threshold_at_sensitivity,
)

__all__ = [
    "temperature_scale",
    "logistic_calibration",
    "fit_temperature",
    "bootstrap_reliability",
    "bootstrap_logistic_calibration",
    "threshold_at_specificity",
    "threshold_at_minimum_cost",
    "predictive_values_at_prevalence",
    "net_benefit",
    "bootstrap_thresholds",
    "bootstrap_net_benefit",
    "BootstrapEstimate",
    "BootstrapResult",
    "CurveQueries",
    "DeLongResult",
    "EffectiveCounts",
    "GroupSums",
    "McNemarResult",
    "MetricError",
    "OneVsRestPlans",
    "balanced_accuracy",
    "binary_metrics_at_threshold",
    "binomial_two_sided_p",
    "bootstrap_binary",
    "bootstrap_calibration",
    "bootstrap_macro_auc",
    "bootstrap_p_value",
    "bootstrap_reader_comparison",
    "bootstrap_sums",
    "clopper_pearson",
    "clustered_mcnemar",
    "confusion_matrix",
    "delong_covariance",
    "delong_test",
    "discordant_pairs",
    "effective_counts",
    "expected_calibration_error",
    "grouped_bootstrap_counts",
    "hierarchical_prf",
    "hierarchical_terms",
    "macro_ovr_auc",
    "mcnemar_exact",
    "midranks",
    "mistake_severity",
    "normal_quantile",
    "normal_two_sided_p",
    "paired_bootstrap_binary",
    "partial_auc_above_sensitivity",
    "per_class_recall",
    "per_group_sums",
    "percentile_ci",
    "regularized_incomplete_beta",
    "reliability_curve",
    "replicate_map",
    "roc_auc",
    "roc_curve",
    "roc_polyline_height",
    "sensitivity_at_specificity",
    "specificity_at_sensitivity",
    "subset_bootstrap_binary",
    "threshold_at_sensitivity",
    "wilson",
]
