"""Clinical evaluation (no torch): protocol, prediction files, metrics, the evaluation and its report.

``pipeline.evaluate`` runs the steps, one module each: ``splits`` (inputs), ``tasks``, ``partitions``,
``hierarchical``, ``calibration``, ``readers``, ``subgroups``; ``records`` holds the results, ``catalog`` the
words of the report (metric labels, provenance, threshold sources), ``notices`` the errors, warnings and
notes, ``report`` writes ``report.md`` / ``report.json`` / figures, and ``metrics`` the numeric kernels.
"""
