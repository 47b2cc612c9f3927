"""The probes of one configuration: kNN at several k and a linear probe, written as prediction files.

:func:`run_probes` reads the configuration's data (the same sources as training, ``data.train_fraction``
included), extracts or reuses the features of the three splits (:class:`~hierclf.probe.features.
FeatureExtractor`), fits every probe on the training features and writes each probe's validation and test
probabilities as ``<out>/predictions/<probe>/{val,test}.npz`` over the head's classes (the taxonomy leaves,
or the nodes of ``classes.kind: cut``). ``hierclf evaluate --val .../val.npz --test .../test.npz`` then gives
every probe the same clinical report as a trained model (operating points chosen on validation, grouped CIs,
recall beside AUC).

Training images labelled above the classes (at an internal node the classes split) have no class: they are
left out of the kNN bank and the linear probe's fit, and keep their rows in the prediction files (the
evaluation knows what to do with them). The kNN bank is the training split only: validation chooses the
linear probe's ``C`` and, in the evaluation, the operating point.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.errors import HierclfError
from hierclf.probe.features import FeatureExtractor, FeatureSet
from hierclf.probe.knn import DEFAULT_TEMPERATURE, knn_probabilities
from hierclf.probe.linear import DEFAULT_CS, fit_linear_probe

logger = logging.getLogger(__name__)

__all__ = [
    "ProbeOptions",
    "ProbeResult",
    "class_targets",
    "extract_splits",
    "file_probabilities",
    "probe_classes",
    "probe_probabilities",
    "run_probes",
    "write_probe_predictions",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ProbeOptions:
    """How the probes run.

    Attributes:
        ks: the kNN probes' numbers of neighbours (one probe each, ``knn_k<k>``); empty: no kNN.
        temperature, weighting: of the kNN votes (:func:`hierclf.probe.knn.knn_probabilities`).
        linear: also fit the logistic linear probe (``linear``).
        Cs: its grid of inverse regularisation strengths (chosen on validation).
        class_weight: ``balanced`` or None, for the linear probe.
        cache_dir: the feature cache (default ``hierclf.probe.features.default_cache_dir()``).
        batch_size: images per forward pass of the extraction (default: the config's).
    """

    ks: tuple[int, ...] = (10, 20, 50)
    temperature: float = DEFAULT_TEMPERATURE
    weighting: str = "distance"
    linear: bool = True
    Cs: tuple[float, ...] = DEFAULT_CS
    class_weight: str | None = None
    cache_dir: Path | None = None
    batch_size: int | None = None

    def names(self) -> list[str]:
        """The probes' names, in the order they run."""
        return [f"knn_k{k}" for k in self.ks] + (["linear"] if self.linear else [])


@dataclass
class ProbeResult:
    """What :func:`run_probes` wrote.

    Attributes:
        out_dir: the folder.
        classes: the columns of every prediction file.
        predictions: ``probe -> {"val": path, "test": path}``.
        details: per probe: the effective k, or the linear probe's C and its validation grid.
        features: per split: ``{"key": cache key, "reused": bool, "n": rows, "n_features": width}``.
        preprocessing: the input side, mean and std the features were extracted with.
    """

    out_dir: Path
    classes: tuple[str, ...]
    predictions: dict[str, dict[str, Path]] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)


def probe_classes(config: Any, taxonomy: Any) -> tuple[str, ...]:
    """The probes' classes: the taxonomy leaves, or the nodes of ``classes.kind: cut`` (in pre-order).

    Raises:
        HierclfError: ``classes.kind: partition`` (Esteva's partition is a trained head's choice; probes
            take the leaves or a cut).
    """
    kind = config.classes.kind
    if kind == "leaves":
        return tuple(taxonomy.leaves)
    if kind == "cut":
        return tuple(taxonomy.cut([taxonomy.resolve(n) for n in config.classes.nodes or []]))
    raise HierclfError(
        "probes run over the taxonomy leaves or a cut (classes.kind: leaves or cut), not Esteva's "
        "partition (classes.kind: partition), which is for a trained head"
    )


def class_targets(taxonomy: Any, classes: tuple[str, ...], labels: np.ndarray) -> np.ndarray:
    """``(n,)`` class index of each label, -1 for labels above the classes."""
    from hierclf.classes.label_mapping import ClassMap

    return ClassMap.of(taxonomy, list(classes)).class_index(
        list(np.asarray(labels).astype(str)), above="ignore"
    )


def extract_splits(config: Any, taxonomy: Any, extractor: FeatureExtractor) -> dict[str, FeatureSet]:
    """The features of the configuration's ``train``, ``val`` and ``test`` splits (cached)."""
    import torch

    from hierclf.train.distributed import init_process_group
    from hierclf.train.inputs import load_sources

    group = init_process_group(torch.device("cpu"))
    try:
        sources = load_sources(config, taxonomy, group)
    finally:
        group.close()
    return {split: extractor.features(sources[split]) for split in SPLITS}


def file_probabilities(probs: np.ndarray) -> np.ndarray:
    """Probabilities as prediction files hold them: float32 rows whose sum (in float64) is at most 1.

    A float32 row of a confident probe (``1.0`` and a few ``1e-17``) sums above 1 by rounding, and so would
    a node's rolled-up probability; the excess (at most a few float32 ulps) is taken off the largest entry.

    Example:
        >>> p = file_probabilities(np.array([[1 - 1e-17, 1e-17, 1e-17]]))
        >>> bool(p.astype(np.float64).sum() <= 1.0), p.dtype.name
        (True, 'float32')
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
    p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    excess = p.astype(np.float64).sum(axis=1) - 1.0
    rows = np.flatnonzero(excess > 0)
    top = p[rows].argmax(axis=1)
    p[rows, top] = (p[rows, top].astype(np.float64) - excess[rows]).astype(np.float32)
    over = p.astype(np.float64).sum(axis=1) > 1.0  # float32 rounding of the subtraction itself
    p[over, p[over].argmax(axis=1)] = np.nextafter(p[over, p[over].argmax(axis=1)], np.float32(0))
    return p


def probe_probabilities(
    train: FeatureSet,
    train_y: np.ndarray,
    evaluated: dict[str, FeatureSet],
    val_y: np.ndarray,
    *,
    n_classes: int,
    options: ProbeOptions,
    device: Any = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
    """Every probe's probabilities on the ``evaluated`` splits, fitted on the training rows with a class.

    Returns:
        ``(probe -> split -> (n, n_classes) probabilities, probe -> details)``.
    """
    keep = train_y >= 0
    bank, bank_y = train.features[keep], train_y[keep]
    if bank.shape[0] == 0:
        raise HierclfError("no training image has one of the probe's classes")
    probs: dict[str, dict[str, np.ndarray]] = {}
    details: dict[str, dict[str, Any]] = {}
    for k in options.ks:  # a handful of probes
        k_used = min(int(k), bank.shape[0])
        if k_used < k:
            logger.warning(
                "knn_k%d: the training bank has only %d images; %d neighbours vote", k, k_used, k_used
            )
        probs[f"knn_k{k}"] = {
            split: file_probabilities(
                knn_probabilities(
                    bank,
                    bank_y,
                    fs.features,
                    n_classes=n_classes,
                    k=k_used,
                    temperature=options.temperature,
                    weighting=options.weighting,  # type: ignore[arg-type]
                    device=device,
                )
            )
            for split, fs in evaluated.items()
        }
        details[f"knn_k{k}"] = {
            "k": k_used,
            "temperature": options.temperature,
            "weighting": options.weighting,
        }
    if options.linear:
        probe = fit_linear_probe(
            bank,
            bank_y,
            evaluated["val"].features,
            val_y,
            n_classes=n_classes,
            Cs=options.Cs,
            class_weight=options.class_weight,
        )
        probs["linear"] = {
            split: file_probabilities(probe.predict_proba(fs.features)) for split, fs in evaluated.items()
        }
        details["linear"] = {"C": probe.C, "validation_cross_entropy": [[c, v] for c, v in probe.grid]}
    return probs, details


def write_probe_predictions(
    out_dir: Path,
    probs: dict[str, dict[str, np.ndarray]],
    evaluated: dict[str, FeatureSet],
    classes: tuple[str, ...],
) -> dict[str, dict[str, Path]]:
    """``<out_dir>/predictions/<probe>/<split>.npz`` for every probe and split (atomic writes)."""
    from hierclf.evaluation.prediction_files import Predictions, write_predictions

    paths: dict[str, dict[str, Path]] = {}
    for name, by_split in probs.items():
        paths[name] = {}
        for split, p in by_split.items():
            fs = evaluated[split]
            path = Path(out_dir) / "predictions" / name / f"{split}.npz"
            write_predictions(path, Predictions(p, classes, ids=fs.ids, labels=fs.labels, groups=fs.groups))
            paths[name][split] = path
    return paths


def run_probes(config: Any, *, out_dir: str | Path, options: ProbeOptions | None = None) -> ProbeResult:
    """Extract (or reuse) the features of ``config``'s backbone, fit the probes, write their predictions.

    Args:
        config: a :class:`~hierclf.train.config.TrainConfig` (backbone, pretrained, data, classes, device).
        out_dir: where ``predictions/<probe>/{val,test}.npz`` go.
        options: :class:`ProbeOptions` (default: kNN at 10, 20, 50 and the linear probe).
    """
    from hierclf.taxonomy.tree import Taxonomy

    options = options or ProbeOptions()
    taxonomy = Taxonomy.from_yaml(config.taxonomy)
    classes = probe_classes(config, taxonomy)
    extractor = FeatureExtractor(config, cache_dir=options.cache_dir, batch_size=options.batch_size)
    feats = extract_splits(config, taxonomy, extractor)
    targets = {split: class_targets(taxonomy, classes, fs.labels) for split, fs in feats.items()}
    evaluated = {"val": feats["val"], "test": feats["test"]}
    probs, details = probe_probabilities(
        feats["train"],
        targets["train"],
        evaluated,
        targets["val"],
        n_classes=len(classes),
        options=options,
        device=extractor.device,
    )
    out = Path(out_dir)
    result = ProbeResult(out, classes, write_probe_predictions(out, probs, evaluated, classes), details)
    result.features = {
        s: {"key": f.key, "reused": f.reused, "n": len(f), "n_features": int(f.features.shape[1])}
        for s, f in feats.items()
    }
    result.preprocessing = extractor.preprocessing.to_dict()
    return result
