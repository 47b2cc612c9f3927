"""Clinical evaluation (no torch): protocol, prediction files, metrics, the evaluation and its report.

``pipeline.evaluate`` runs the steps, one module each: ``splits`` (inputs), ``tasks``, ``partitions``,
``hierarchical``, ``calibration``, ``readers``, ``reader_studies`` (case-level reads), ``subgroups``;
``records`` holds the results and chooses each number's interval, ``catalog`` the words of the report
(metric labels, provenance, threshold sources, interval methods), ``notices`` the errors, warnings and
notes, ``report`` writes ``report.md`` / ``report.json`` / figures, and ``metrics`` the numeric kernels.
``comparison.compare`` puts several models side by side on the same cases (``comparison_report`` writes
it).
"""
