"""Experiments over many runs, each judged under a pre-registered protocol (seeds 002 and 004).

* :mod:`~hierclf.experiments.setup`: one protocol's training settings as a configuration per backbone (the
  protocol's ``training:`` mapping, as ``hierclf study`` reads it).
* :mod:`~hierclf.experiments.efficiency`: label-efficiency curves: the primary metric (and each task's AUC)
  against the fraction of training labels, several seeds per fraction, CIs, a figure, and the "labels saved"
  factor between two backbones at equal metric.
* :mod:`~hierclf.experiments.shift`: distribution shift: train on some levels of a metadata column (the
  source dataset, the acquisition site), test in and out of distribution, the gap per task with a CI.

This layer sits beside :mod:`hierclf.study`.
"""
