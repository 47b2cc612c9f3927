"""What the evaluated data was, read from the inputs themselves: per split its size, groups, class counts,
source and split level (the prediction files' ``info``), the reference-standard mix when a ``dx_type``-like
column is given, and the training set when the files record it (``hierclf train`` / ``study``).

The checklist (TRIPOD+AI, CLAIM, STARD-AI) and the model card are filled from this summary
(:mod:`hierclf.evaluation.checklist`); ``report.json`` keeps it as ``data``.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

from hierclf.evaluation.sample_metadata import Metadata
from hierclf.evaluation.splits import Inputs, Split

__all__ = ["REFERENCE_STANDARD_COLUMNS", "summarise_data"]

#: metadata columns that say how each diagnosis was established (HAM10000's ``dx_type``: histopathology,
#: follow-up, expert consensus, confocal microscopy), in order of preference
REFERENCE_STANDARD_COLUMNS = ("dx_type", "diagnosis_confirm_type", "reference_standard")


def _counts(values: np.ndarray) -> dict[str, int]:
    return dict(sorted(Counter(str(v) for v in values.tolist()).items()))


def _reference_standard(split: Split, metadata: Metadata | None) -> dict[str, Any] | None:
    """``{"column", "counts"}`` of the first reference-standard column the file or the metadata has."""
    for column in REFERENCE_STANDARD_COLUMNS:
        if column in split.preds.metadata:
            return {"column": column, "counts": _counts(np.asarray(split.preds.metadata[column]))}
        if metadata is not None and split.meta_rows is not None and column in metadata.columns:
            return {
                "column": column,
                "counts": _counts(np.asarray(metadata.columns[column])[split.meta_rows]),
            }
    return None


def _split_summary(split: Split, metadata: Metadata | None) -> dict[str, Any]:
    labels = np.asarray(split.label_names, dtype=object)[split.label_codes] if split.label_names else None
    info = {k: v for k, v in split.preds.info.items() if k != "training"}
    return {
        "file": split.name,
        "n": len(split.preds),
        "n_groups": int(len(split.group_names)) if split.grouped else None,
        "class_counts": _counts(labels) if labels is not None else {},
        "reference_standard": _reference_standard(split, metadata),
        "info": info,
    }


def _training_summary(split: Split) -> dict[str, Any] | None:
    """The training set a prediction file of ``hierclf train`` records (ids, groups, labels when kept)."""
    text = split.preds.info.get("training")
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    groups, labels = data.get("groups"), data.get("labels")
    return {
        "n": len(data.get("ids", [])),
        "n_groups": len(set(groups)) if groups else None,
        "class_counts": _counts(np.asarray(labels)) if labels else {},
    }


def summarise_data(inputs: Inputs) -> dict[str, Any]:
    """The data summary of an evaluation (seed 0's files; the per-seed table has the rest)."""
    test = inputs.test[0]
    val = inputs.val[0] if inputs.val and inputs.val[0] is not test else None
    training = _training_summary(test)
    checked = ["validation/test"] if val is not None else []
    if training is not None:
        checked += ["training/test"] + (["training/validation"] if val is not None else [])
    return {
        "training": training,
        "validation": _split_summary(val, inputs.metadata) if val is not None else None,
        "test": _split_summary(test, inputs.metadata),
        "leakage_checked": checked,
        "from_training": training is not None,
    }
