"""Distribution shift (seed 004's out-of-distribution generalisation): train on some levels of a metadata
column, test on the others and in distribution, and report the gap per task with a CI.

A metadata CSV (keyed by sample id, as ``hierclf evaluate --metadata`` reads it) names a column such as the
source dataset or the acquisition site. With ``train_levels`` the images of those levels are **in
distribution** (ID), those of ``test_levels`` (default: every other level) **out of distribution** (OOD):

* the probe is fitted on the ID rows of the training split (its regularisation chosen on the ID rows of
  validation), on frozen features (:mod:`hierclf.probe`; cached like every probe's);
* the operating point of every task is chosen on the ID validation rows, as a deployed model's would be;
* ID test = the ID rows of the test split; OOD test = the OOD rows of every split (none of them was trained
  on), less any image of a patient / lesion that the ID training rows hold (leakage: left out, counted);
* each test set gets the protocol's full report (``in_distribution/``, ``out_of_distribution/``), and the gap
  ``ID - OOD`` of each task's AUC, sensitivity and specificity at the operating point gets a percentile CI
  from independent grouped bootstraps of the two test sets (:func:`hierclf.evaluation.metrics.
  bootstrap_binary`; the two sets share no group, so their replicates pair independently).

The protocol format has no ``shift:`` block yet; the column and levels are this command's options.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.errors import HierclfError
from hierclf.experiments.efficiency import jsonable, probe_options
from hierclf.experiments.setup import experiment_setup, with_settings
from hierclf.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["GAP_METRICS", "ShiftResult", "run_shift", "shift_gap"]

GAP_METRICS = ("auc", "sensitivity", "specificity")


@dataclass
class ShiftResult:
    """What :func:`run_shift` measured and wrote.

    Attributes:
        column, train_levels, test_levels: the split of the metadata column.
        pre_registered: the split came from the protocol's ``shift:`` block (else from the caller).
        counts: images per part (``train``, ``val``, ``test_id``, ``test_ood``, ``ood_left_out``).
        gaps: ``task -> metric -> {"id", "ood", "gap", "ci": [low, high]}``.
        files: what was written.
    """

    column: str
    train_levels: list[str]
    test_levels: list[str]
    probe: str
    counts: dict[str, int] = field(default_factory=dict)
    gaps: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    synthetic: bool = False
    pre_registered: bool = False
    files: dict[str, Path] = field(default_factory=dict)


def shift_gap(
    id_part: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    ood_part: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    *,
    threshold: float,
    target_sensitivity: float,
    replicates: int,
    seed: int,
    level: float,
) -> dict[str, dict[str, Any]]:
    """``metric -> {"id", "ood", "gap", "ci"}`` for AUC, sensitivity and specificity at ``threshold``.

    Args:
        id_part, ood_part: ``(y (n,) 0/1, scores (n,), groups (n,) or None)`` of each test set.
        threshold: the operating point (chosen on ID validation).
        target_sensitivity, replicates, seed, level: the protocol's bootstrap settings.
    """
    from hierclf.evaluation.metrics import bootstrap_binary, percentile_ci

    runs = [
        bootstrap_binary(
            y,
            s,
            groups=g,
            n_replicates=replicates,
            seed=seed + k,
            target_sensitivity=target_sensitivity,
            threshold=threshold,
            ci_level=level,
        )
        for k, (y, s, g) in enumerate((id_part, ood_part))
    ]
    out = {}
    for metric in GAP_METRICS:
        a, b = runs[0].estimates[metric], runs[1].estimates[metric]
        gap = a.replicates - b.replicates
        ci = percentile_ci(gap[np.isfinite(gap)], level) if np.isfinite(gap).any() else (math.nan, math.nan)
        out[metric] = {
            "id": a.point,
            "ood": b.point,
            "gap": a.point - b.point,
            "ci": [float(ci[0]), float(ci[1])],
        }
    return out


def _levels(metadata: Any, column: str, ids: np.ndarray, what: str) -> np.ndarray:
    return np.asarray(metadata.column(column))[metadata.lookup(ids, what)].astype(str)


def _parts(
    feats: dict[str, Any], levels: dict[str, np.ndarray], train: set[str], test: set[str]
) -> tuple[dict[str, Any], int]:
    """The ID training / validation / test rows and the OOD test rows (leaking groups left out)."""
    parts = {s: feats[s].select(np.isin(levels[s], list(train))) for s in ("train", "val")}
    parts["test_id"] = feats["test"].select(np.isin(levels["test"], list(train)))
    ood = [feats[s].select(np.isin(levels[s], list(test))) for s in ("train", "val", "test")]
    merged = ood[0]
    for more in ood[1:]:
        merged = _concat(merged, more)
    left_out = 0
    if merged.groups is not None and parts["train"].groups is not None:
        leak = np.isin(merged.groups, parts["train"].groups)
        left_out = int(leak.sum())
        if left_out:
            logger.warning(
                "%d out-of-distribution images belong to groups the training rows hold: left out", left_out
            )
        merged = merged.select(~leak)
    parts["test_ood"] = merged
    return parts, left_out


def _concat(a: Any, b: Any) -> Any:
    from hierclf.probe.features import FeatureSet

    groups = None if a.groups is None or b.groups is None else np.concatenate([a.groups, b.groups])
    return FeatureSet(
        np.concatenate([a.features, b.features]),
        np.concatenate([a.ids, b.ids]),
        np.concatenate([a.labels, b.labels]),
        groups,
        a.key,
    )


def _check_levels(
    levels: dict[str, np.ndarray], column: str, train: list[str], test: list[str] | None
) -> list[str]:
    present = sorted(set(np.concatenate(list(levels.values())).tolist()))
    unknown = [v for v in [*train, *(test or [])] if v not in present]
    if unknown:
        from hierclf.errors import UnknownNameError

        raise UnknownNameError(
            f"level of {column!r}", unknown[0], present, f"(its levels: {', '.join(present)})"
        )
    test_levels = list(test) if test else [v for v in present if v not in train]
    overlap = sorted(set(train) & set(test_levels))
    if not test_levels or overlap:
        why = f"levels {overlap} are on both sides" if overlap else "no level is left to test on"
        raise HierclfError(f"shift over {column!r}: {why} (train levels {train}, its levels {present})")
    return test_levels


def run_shift(
    protocol: str | Path,
    *,
    metadata: str | Path,
    column: str | None = None,
    train_levels: Sequence[str] | None = None,
    test_levels: Sequence[str] | None = None,
    backbone: str | None = None,
    pretrained: bool | None = None,
    probe: str = "linear",
    data: str = "dermamnist",
    data_root: str | Path | None = None,
    out_dir: str | Path = "runs/shift",
    taxonomy: str | Path | None = None,
    device: str | None = None,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
) -> ShiftResult:
    """Run a distribution-shift experiment (module docstring) and write its reports.

    ``column``, ``train_levels`` and ``test_levels`` default to the protocol's ``shift:`` block; given beside
    it, they must say the same (a pre-registered shift is not changed from the command line)."""
    from hierclf.evaluation.pipeline import read_metadata
    from hierclf.probe.features import FeatureExtractor
    from hierclf.probe.probing import extract_splits

    out = Path(out_dir).resolve()
    setup = experiment_setup(
        protocol,
        data=data,
        data_root=data_root,
        out_dir=out,
        taxonomy=taxonomy,
        device=device,
        workers=workers,
    )
    extra: dict[str, Any] = {} if backbone is None else {"backbone": backbone}
    if pretrained is not None:
        extra["pretrained"] = pretrained
    config = with_settings(setup.config, **extra) if extra else setup.config
    column, train_levels, test_levels = _shift_settings(setup.protocol, column, train_levels, test_levels)
    meta = read_metadata(metadata)
    meta.column(column)  # an unknown column: did you mean
    cache = Path(cache_dir) if cache_dir is not None else None
    feats = extract_splits(config, setup.taxonomy, FeatureExtractor(config, cache_dir=cache))
    levels = {s: _levels(meta, column, f.ids, f"the {s} split") for s, f in feats.items()}
    tests = _check_levels(levels, column, list(train_levels), list(test_levels) if test_levels else None)
    parts, left_out = _parts(feats, levels, set(train_levels), set(tests))
    result = ShiftResult(column, list(train_levels), tests, probe, synthetic=setup.synthetic)
    result.pre_registered = setup.protocol.shift is not None
    result.counts = {k: len(v) for k, v in parts.items()} | {"ood_left_out": left_out}
    predictions = _fit_and_predict(setup, config, parts, probe, cache, out)
    result.files, result.gaps = _evaluate_parts(setup, meta, predictions, out)
    result.files.update(_write_summary(result, out))
    return result


def _shift_settings(
    proto: Any, column: str | None, train: Sequence[str] | None, test: Sequence[str] | None
) -> tuple[str, list[str], list[str] | None]:
    """The shift's column and levels: the protocol's pre-registered block, else the caller's."""
    given: dict[str, Any] = {"column": column, "train_levels": _listed(train), "test_levels": _listed(test)}
    block = proto.shift
    if block is None:
        if column is None or train is None or not list(train):
            raise HierclfError(
                "shift: no shift to run: give --column and --train-levels, or pre-register a `shift:` block "
                "({column, train_levels, test_levels}) in the protocol"
            )
        return column, list(train), _listed(test)
    registered = {
        "column": block.column,
        "train_levels": block.train_levels,
        "test_levels": block.test_levels,
    }
    for key, value in given.items():
        if value is not None and value != registered[key]:
            raise HierclfError(
                f"shift: {key} {value!r} differs from the protocol's pre-registered shift ({key} "
                f"{registered[key]!r}); drop the option or change the protocol before the run"
            )
    return block.column, list(block.train_levels), block.test_levels


def _listed(levels: Sequence[str] | None) -> list[str] | None:
    return None if not levels else list(levels)


def _fit_and_predict(
    setup: Any, config: Any, parts: dict[str, Any], probe: str, cache: Path | None, out: Path
) -> dict[str, Path]:
    """Fit the probe on the ID training rows; write ``predictions/{val,test_id,test_ood}.npz``."""
    from hierclf.probe.probing import (
        class_targets,
        probe_classes,
        probe_probabilities,
        write_probe_predictions,
    )

    classes = probe_classes(config, setup.taxonomy)
    y = {k: class_targets(setup.taxonomy, classes, v.labels) for k, v in parts.items()}
    options = probe_options(probe, cache)
    evaluated = {k: parts[k] for k in ("val", "test_id", "test_ood")}
    for name, part in evaluated.items():
        if len(part) == 0:
            raise HierclfError(f"shift: the {name} part has no images")
    probs, _ = probe_probabilities(
        parts["train"], y["train"], evaluated, y["val"], n_classes=len(classes), options=options
    )
    name = options.names()[0]
    return write_probe_predictions(out, {name: probs[name]}, evaluated, classes)[name]


def _evaluate_parts(
    setup: Any, meta: Any, paths: dict[str, Path], out: Path
) -> tuple[dict[str, Path], dict[str, Any]]:
    """The protocol's report of the ID and the OOD test set (thresholds from ID validation), and the gaps."""
    from hierclf.evaluation.pipeline import evaluate, task_scores
    from hierclf.evaluation.prediction_files import read_predictions
    from hierclf.evaluation.report import write_report

    proto, files = setup.protocol, {}
    reports = {}
    for part, folder in (("test_id", "in_distribution"), ("test_ood", "out_of_distribution")):
        reports[part] = evaluate(
            setup.taxonomy, proto, [paths["val"]], [paths[part]], metadata=meta, synthetic=setup.synthetic
        )
        for key, path in write_report(reports[part], out / folder).items():
            files[f"{folder}/{key}"] = path
    group_column = proto.group_column if proto.group_column in meta.columns else None
    gaps = {}
    for task in proto.tasks:
        threshold = float(reports["test_id"].tasks[task.name].thresholds.value)
        sides = []
        for part in ("test_id", "test_ood"):
            preds = read_predictions(paths[part])
            rows, y, scores = task_scores(setup.taxonomy, task, preds)
            groups = (
                preds.groups
                if group_column is None
                else np.asarray(meta.column(group_column))[meta.lookup(preds.ids, part)]
            )
            sides.append((y, scores, None if groups is None else np.asarray(groups)[rows]))
        gaps[task.name] = shift_gap(
            sides[0],
            sides[1],
            threshold=threshold,
            target_sensitivity=proto.target_sensitivity,
            replicates=proto.bootstrap.replicates,
            seed=proto.bootstrap.seed,
            level=proto.bootstrap.ci_level,
        )
    return files, gaps


def _write_summary(result: ShiftResult, out: Path) -> dict[str, Path]:
    lines = ["# Distribution shift", ""]
    if result.synthetic:
        lines += ["**SYNTHETIC DATA — not a clinical result.**", ""]
    lines += [
        f"Column `{result.column}`: trained on {', '.join(result.train_levels)}; out of distribution: "
        f"{', '.join(result.test_levels)} ("
        + ("pre-registered in the protocol" if result.pre_registered else "given on the command line")
        + f"). Probe `{result.probe}` on frozen features; operating points "
        "chosen on the in-distribution validation rows.",
        "",
        "Images: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()),
        "",
        "| task | metric | in distribution | out of distribution | gap (ID - OOD) [CI] |",
        "| --- | --- | --- | --- | --- |",
    ]
    for task, metrics in result.gaps.items():
        for metric, g in metrics.items():
            ci = f"[{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]"
            lines.append(f"| {task} | {metric} | {g['id']:.3f} | {g['ood']:.3f} | {g['gap']:+.3f} {ci} |")
    summary = {k: v for k, v in result.__dict__.items() if k != "files"}
    paths = {"shift.md": out / "shift.md", "shift.json": out / "shift.json"}
    atomic_write_text(paths["shift.md"], "\n".join(lines) + "\n")
    atomic_write_text(paths["shift.json"], json.dumps(jsonable(summary), indent=2) + "\n")
    return paths
