"""Frozen-feature evaluation (seed 002): a backbone's features, extracted once and cached, judged by a
cosine kNN and a logistic linear probe whose probabilities are ordinary prediction files.

* :mod:`~hierclf.probe.features`: extract features batched (on the GPU when there is one) and cache them on
  disk, keyed by a hash of the backbone, its weights, the data and the preprocessing; an interrupted
  extraction resumes from its last finished shard.
* :mod:`~hierclf.probe.knn`: cosine k-nearest neighbours as chunked matrix products, class probabilities by
  temperature-weighted votes (DINO's kNN classifier).
* :mod:`~hierclf.probe.linear`: scikit-learn's ``LogisticRegression`` on standardised features, the
  regularisation chosen on validation.
* :mod:`~hierclf.probe.probing`: the probes of a configuration over the leaves or a cut, written as
  ``predictions/<probe>/{val,test}.npz`` for ``hierclf evaluate``.

This layer sits beside :mod:`hierclf.train` (it reads the same configuration and data sources).
"""
