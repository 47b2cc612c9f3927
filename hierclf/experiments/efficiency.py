"""Label efficiency (seed 002): how a protocol's primary metric grows with the fraction of training labels,
per backbone, and how many times fewer labels one backbone needs than another for the same metric.

For every backbone, fraction and seed, the training split keeps ``fraction`` of each class's images by whole
patients / lesions (:func:`hierclf.train.subsample.grouped_class_subsample`; one seed's subsets are nested
across fractions), then either

* ``method="probe"``: a frozen-feature probe (``linear`` or ``knn_k<k>``, :mod:`hierclf.probe`) is fitted on
  the kept rows; the features of the whole training split are extracted once per backbone and cached, so
  each (fraction, seed) costs a probe fit, not a pass over the images; or
* ``method="train"``: the protocol's training runs with ``data.train_fraction`` and ``data.subsample_seed``
  (one resumable run folder each, as ``hierclf study`` keeps them).

The seeds of one fraction are evaluated together under the protocol (:func:`hierclf.evaluation.pipeline.
evaluate`): a curve point is the seed mean of the primary metric with its pooled grouped-bootstrap CI, and
the same for every task's AUC. Validation and test are never subsampled.

**Labels saved** (:func:`labels_saved`): for each fraction ``f`` at which backbone B was measured, the
fraction ``f_A`` at which the reference backbone A reaches B's metric, interpolated linearly on the
log-fraction axis of A's curve (made non-decreasing first: its running maximum, so noise cannot make a
metric reachable twice); the factor is ``f_A / f`` (2 = B needs half the labels). Points where A never
reaches B's metric, or reaches it below A's smallest fraction, have no factor; the summary is the geometric
mean of the defined ones.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.errors import HierclfError
from hierclf.experiments.setup import ExperimentSetup, experiment_setup, with_settings
from hierclf.io.atomic import atomic_open, atomic_write_text
from hierclf.options import look_up_option

logger = logging.getLogger(__name__)

__all__ = [
    "jsonable",
    "render_efficiency",
    "write_efficiency",
    "DEFAULT_FRACTIONS",
    "EfficiencyResult",
    "LabelsSaved",
    "labels_saved",
    "parse_fractions",
    "probe_options",
    "run_label_efficiency",
]

DEFAULT_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
METHODS = ("probe", "train")


def parse_fractions(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.01,0.1,1"`` (or numbers) as sorted distinct fractions in (0, 1].

    Example:
        >>> parse_fractions("0.5, 0.1,1")
        (0.1, 0.5, 1.0)
    """
    items = [t for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    try:
        values = sorted({float(v) for v in items})
    except ValueError:
        raise HierclfError(
            f"fractions {text!r}: expected numbers separated by commas, e.g. 0.01,0.1,1"
        ) from None
    bad = [v for v in values if not 0 < v <= 1]
    if not values or bad:
        raise HierclfError(f"fractions must lie in (0, 1]; got {', '.join(map(str, bad)) or 'none'}")
    return tuple(values)


def probe_options(probe: str, cache_dir: Path | None) -> Any:
    """The :class:`~hierclf.probe.probing.ProbeOptions` of one probe: ``linear`` or ``knn_k<k>``."""
    from hierclf.probe.probing import ProbeOptions

    name = probe.strip().lower()
    if name == "linear":
        return ProbeOptions(ks=(), linear=True, cache_dir=cache_dir)
    match = re.fullmatch(r"knn(?:_k|:|_)?(\d+)", name)
    if match:
        return ProbeOptions(ks=(int(match.group(1)),), linear=False, cache_dir=cache_dir)
    raise HierclfError(f"unknown probe {probe!r} (expected linear or knn_k<k>, e.g. knn_k20)")


# --- labels saved ------------------------------------------------------------------------------------------


@dataclass
class LabelsSaved:
    """How many times fewer labels ``backbone`` needs than ``reference`` for the same metric.

    Attributes:
        per_fraction: ``[(fraction of backbone, fraction the reference needs or None, factor or None)]``.
        factor: geometric mean of the defined factors (None when none is defined).
    """

    reference: str
    backbone: str
    per_fraction: list[tuple[float, float | None, float | None]]
    factor: float | None


def _fraction_reaching(log_f: np.ndarray, envelope: np.ndarray, value: float) -> float | None:
    """The fraction at which a non-decreasing curve first reaches ``value`` (log-linear), or None."""
    if not math.isfinite(value) or value > envelope[-1]:
        return None
    i = int(np.searchsorted(envelope, value, side="left"))
    if i == 0:
        return float(np.exp(log_f[0])) if value == envelope[0] else None
    t = (value - envelope[i - 1]) / (envelope[i] - envelope[i - 1])
    return float(np.exp(log_f[i - 1] + t * (log_f[i] - log_f[i - 1])))


def labels_saved(
    reference: tuple[Sequence[float], Sequence[float]],
    other: tuple[Sequence[float], Sequence[float]],
    *,
    names: tuple[str, str] = ("A", "B"),
) -> LabelsSaved:
    """The labels-saved factor of curve ``other`` against curve ``reference`` (module docstring).

    Args:
        reference, other: ``(fractions, metric values)`` of each curve (higher metric is better).
        names: the two backbones' names, for the record.

    Example:
        >>> f = [0.01, 0.1, 1.0]
        >>> a = [np.log10(x) for x in f]                  # reference
        >>> b = [np.log10(2 * x) for x in f]              # reaches a's metric with half the labels
        >>> saved = labels_saved((f, a), (f, b))
        >>> round(saved.factor, 6), saved.per_fraction[-1]
        (2.0, (1.0, None, None))
    """
    fa, ma = np.asarray(reference[0], float), np.asarray(reference[1], float)
    order = np.argsort(fa)
    fa, ma = fa[order], ma[order]
    keep = np.isfinite(ma)
    if keep.sum() < 2:
        raise HierclfError(f"labels saved: {names[0]}'s curve needs at least two finite points")
    log_f, envelope = np.log(fa[keep]), np.maximum.accumulate(ma[keep])
    rows: list[tuple[float, float | None, float | None]] = []
    for f, value in zip(other[0], other[1]):  # a handful of fractions
        needed = _fraction_reaching(log_f, envelope, float(value))
        rows.append((float(f), needed, None if needed is None else needed / float(f)))
    factors = [r[2] for r in rows if r[2] is not None]
    mean = float(np.exp(np.mean(np.log(factors)))) if factors else None
    return LabelsSaved(names[0], names[1], rows, mean)


# --- the runs ----------------------------------------------------------------------------------------------


@dataclass
class EfficiencyResult:
    """The curves of a label-efficiency experiment and where they were written.

    Attributes:
        metric: the protocol's primary metric (``metric on target``).
        curves: ``backbone -> [point, ...]``; a point holds ``fraction``, ``n_train`` (per distinct run: a
            probe's seeds that draw the same rows are one), ``primary`` (an
            :class:`~hierclf.evaluation.pipeline.Estimate` as a dict) and ``auc`` (task -> estimate).
        saved: the labels-saved factor of every backbone against the first.
        files: the files written (``efficiency.json``, ``.csv``, ``.md``, ``.png``).
    """

    metric: str
    method: str
    probe: str | None
    fractions: tuple[float, ...]
    seeds: int
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    saved: list[LabelsSaved] = field(default_factory=list)
    synthetic: bool = False
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN and infinities as null)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("files", "saved")}
        out["saved"] = [asdict(s) for s in self.saved]
        return jsonable(out)


def jsonable(obj: Any) -> Any:
    """A JSON-ready copy: tuples as lists, numpy numbers as Python ones, non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "backbone"


def _point(
    setup: ExperimentSetup, fraction: float, vals: list[Any], tests: list[Any], n_train: list[int]
) -> dict[str, Any]:
    """One curve point: the seeds of a fraction evaluated together under the protocol."""
    from hierclf.evaluation.pipeline import evaluate

    quiet = logging.getLogger("hierclf.evaluation.pipeline")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the one-seed / synthetic warnings repeat at every point
    try:
        report = evaluate(setup.taxonomy, setup.protocol, vals, tests, synthetic=setup.synthetic)
    finally:
        quiet.setLevel(level)
    auc = {
        name: task.metrics["auc"].to_dict() for name, task in report.tasks.items() if "auc" in task.metrics
    }
    return {"fraction": fraction, "n_train": n_train, "primary": report.primary["estimate"], "auc": auc}


def _probe_curve(
    setup: ExperimentSetup,
    config: Any,
    fractions: tuple[float, ...],
    seeds: int,
    probe: str,
    cache_dir: Path | None,
) -> list[dict[str, Any]]:
    """The curve of a frozen-feature probe: features once, a probe fit per (fraction, seed)."""
    from hierclf.evaluation.prediction_files import Predictions
    from hierclf.probe.features import FeatureExtractor
    from hierclf.probe.probing import class_targets, extract_splits, probe_classes, probe_probabilities

    options = probe_options(probe, cache_dir)
    classes = probe_classes(config, setup.taxonomy)
    extractor = FeatureExtractor(config, cache_dir=cache_dir)
    feats = extract_splits(config, setup.taxonomy, extractor)
    y = {s: class_targets(setup.taxonomy, classes, f.labels) for s, f in feats.items()}
    name = options.names()[0]
    points = []
    for fraction in fractions:  # a loop over a handful of fractions and seeds
        vals, tests, n_train = [], [], []
        for rows in _distinct_subsamples(feats["train"], fraction, seeds):
            evaluated = {"val": feats["val"], "test": feats["test"]}
            probs, _ = probe_probabilities(
                feats["train"].select(rows),
                y["train"][rows],
                evaluated,
                y["val"],
                n_classes=len(classes),
                options=options,
                device=extractor.device,
            )
            made = {
                s: Predictions(probs[name][s], classes, ids=fs.ids, labels=fs.labels, groups=fs.groups)
                for s, fs in evaluated.items()
            }
            vals.append(made["val"])
            tests.append(made["test"])
            n_train.append(int(rows.size))
        points.append(_point(setup, fraction, vals, tests, n_train))
        logger.info("%s, fraction %g: %s", config.backbone, fraction, points[-1]["primary"])
    return points


def _distinct_subsamples(train: Any, fraction: float, seeds: int) -> list[np.ndarray]:
    """The training rows of each seed, a repeat dropped.

    A probe is fit deterministically, so its seeds differ only in the subsample they draw; where two seeds
    draw the same rows (always at fraction 1) they are one run, not two, and counting them twice would
    shrink the seed spread to nothing (the evaluator refuses identical seeds as the same file passed twice).
    """
    from hierclf.train.subsample import grouped_class_subsample

    drawn: list[np.ndarray] = []
    for seed in range(seeds):  # a handful of seeds
        rows = grouped_class_subsample(train.labels, train.groups, fraction, seed=seed)
        if not any(np.array_equal(rows, earlier) for earlier in drawn):
            drawn.append(rows)
    return drawn


def _train_curve(
    setup: ExperimentSetup, config: Any, fractions: tuple[float, ...], seeds: int, out: Path
) -> list[dict[str, Any]]:
    """The curve of trained models: one resumable run per (fraction, seed)."""
    from hierclf.train.loop import fit
    from hierclf.train.subsample import grouped_class_subsample

    train = _training_source(setup, config)
    points = []
    for fraction in fractions:
        vals, tests, n_train = [], [], []
        for seed in range(seeds):
            run_dir = out / "runs" / _slug(str(config.backbone)) / f"fraction_{fraction:g}" / f"seed_{seed}"
            settings = {"data.train_fraction": fraction, "data.subsample_seed": seed, "seed": seed}
            cfg = with_settings(config, **settings, out_dir=run_dir)
            fitted = fit(cfg, resume=True, progress=False)
            vals.append(fitted.predictions["val"])
            tests.append(fitted.predictions["test"])
            n_train.append(grouped_class_subsample(train.labels, train.groups, fraction, seed=seed).size)
        points.append(_point(setup, fraction, vals, tests, n_train))
    return points


def _training_source(setup: ExperimentSetup, config: Any) -> Any:
    """The whole training split of the configuration's data (to count what each fraction keeps)."""
    import torch

    from hierclf.train.distributed import init_process_group
    from hierclf.train.inputs import load_sources

    group = init_process_group(torch.device("cpu"))
    try:
        return load_sources(with_settings(config, **{"data.train_fraction": 1.0}), setup.taxonomy, group)[
            "train"
        ]
    finally:
        group.close()


def run_label_efficiency(
    protocol: str | Path,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    backbones: Sequence[str] | None = None,
    seeds: int = 3,
    method: str = "probe",
    probe: str = "linear",
    pretrained: bool | None = None,
    data: str = "dermamnist",
    data_root: str | Path | None = None,
    out_dir: str | Path = "runs/efficiency",
    taxonomy: str | Path | None = None,
    device: str | None = None,
    workers: int | None = None,
    epochs: int | None = None,
    cache_dir: str | Path | None = None,
) -> EfficiencyResult:
    """Run a label-efficiency experiment and write its curves, figure and labels-saved factors.

    Args:
        protocol: the protocol (its ``training:`` mapping gives the data, classes and the default backbone).
        fractions: fractions of each training class kept.
        backbones: backbone names (default: the protocol's); the first is the labels-saved reference.
        seeds: subsamples (and, with ``method="train"``, training seeds) per fraction.
        method: ``probe`` (frozen features) or ``train`` (the protocol's training).
        probe: ``linear`` or ``knn_k<k>`` (``method="probe"``).
        pretrained: override the protocol's ``pretrained`` for every backbone.
        data, data_root, taxonomy, device, workers, epochs: as ``hierclf study``.
        cache_dir: the feature cache (default: ``hierclf.probe.features.default_cache_dir()``).
    """
    method = look_up_option(method, METHODS, kind="method")
    fractions = parse_fractions(fractions)
    if seeds < 1:
        raise HierclfError(f"seeds must be at least 1, got {seeds}")
    out = Path(out_dir).resolve()
    setup = experiment_setup(
        protocol,
        data=data,
        data_root=data_root,
        out_dir=out,
        taxonomy=taxonomy,
        device=device,
        workers=workers,
        epochs=epochs,
    )
    pm = setup.protocol.primary_metric
    result = EfficiencyResult(
        f"{pm.metric} on {pm.target}",
        method,
        probe if method == "probe" else None,
        fractions,
        seeds,
        synthetic=setup.synthetic,
    )
    cache = Path(cache_dir) if cache_dir is not None else None
    for name in backbones or [setup.config.backbone]:
        extra = {"backbone": name} if pretrained is None else {"backbone": name, "pretrained": pretrained}
        config = with_settings(setup.config, **extra)
        label = str(config.backbone)
        if method == "probe":
            result.curves[label] = _probe_curve(setup, config, fractions, seeds, probe, cache)
        else:
            result.curves[label] = _train_curve(setup, config, fractions, seeds, out)
    result.saved = _all_saved(result)
    result.files = write_efficiency(result, out)
    return result


def _all_saved(result: EfficiencyResult) -> list[LabelsSaved]:
    names = list(result.curves)
    if len(names) < 2:
        return []

    def curve(name: str) -> tuple[list[float], list[float]]:
        pts = result.curves[name]
        return [p["fraction"] for p in pts], [(p["primary"] or {}).get("value", math.nan) for p in pts]

    out = []
    for other in names[1:]:
        try:
            out.append(labels_saved(curve(names[0]), curve(other), names=(names[0], other)))
        except HierclfError as exc:
            logger.warning("labels saved of %s against %s: %s", other, names[0], exc)
    return out


# --- writing -----------------------------------------------------------------------------------------------


def _num(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _estimate_text(est: dict[str, Any] | None) -> str:
    if not est:
        return "n/a"
    ci = est.get("ci") or [None, None]
    std = f" ± {_num(est.get('std'))}" if est.get("std") is not None else ""
    return f"{_num(est.get('value'))}{std} [{_num(ci[0])}, {_num(ci[1])}]"


def render_efficiency(result: EfficiencyResult) -> str:
    """The markdown report: one table per backbone, then the labels-saved factors."""
    lines = ["# Label efficiency", ""]
    if result.synthetic:
        lines += ["**SYNTHETIC DATA — not a clinical result.**", ""]
    how = f"probe `{result.probe}` on frozen features" if result.method == "probe" else "trained models"
    lines += [
        f"Primary metric: **{result.metric}** (seed mean ± std [pooled grouped-bootstrap CI]); {how}; "
        f"{result.seeds} seed(s) per fraction; training labels kept per class by whole groups.",
        "",
    ]
    for name, points in result.curves.items():
        tasks = sorted({t for p in points for t in p["auc"]})
        lines += [
            f"## {name}",
            "",
            "| fraction | training images | primary | " + " | ".join(f"AUC {t}" for t in tasks) + " |",
        ]
        lines.append("| --- " * (3 + len(tasks)) + "|")
        for p in points:
            n = [v for v in p["n_train"] if v >= 0]
            images = f"{np.mean(n):.0f}" if n else "n/a"
            aucs = " | ".join(_estimate_text(p["auc"].get(t)) for t in tasks)
            lines.append(f"| {p['fraction']:g} | {images} | {_estimate_text(p['primary'])} | {aucs} |")
        lines.append("")
    for s in result.saved:
        lines += [f"## Labels saved: {s.backbone} against {s.reference}", ""]
        lines.append(
            f"Geometric mean factor: **{_num(s.factor, 2)}** (> 1: {s.backbone} needs fewer labels)."
        )
        lines += [
            "",
            f"| fraction ({s.backbone}) | fraction {s.reference} needs | factor |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {f:g} | {_num(need, 4)} | {_num(fac, 2)} |" for f, need, fac in s.per_fraction]
        lines.append("")
    return "\n".join(lines)


def _csv_text(result: EfficiencyResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(["backbone", "fraction", "quantity", "value", "std", "ci_low", "ci_high"])
    for name, points in result.curves.items():
        for p in points:
            for quantity, est in [("primary", p["primary"]), *((f"auc:{t}", e) for t, e in p["auc"].items())]:
                est = est or {}
                ci = est.get("ci") or [None, None]
                writer.writerow(
                    [name, p["fraction"], quantity, est.get("value"), est.get("std"), ci[0], ci[1]]
                )
    return buffer.getvalue()


def _figure(result: EfficiencyResult, path: Path) -> None:
    """The primary metric and each task's AUC against the fraction (log axis), a CI band per backbone."""
    from matplotlib.figure import Figure

    tasks = sorted({t for pts in result.curves.values() for p in pts for t in p["auc"]})
    panels = [("primary", result.metric)] + [(f"auc:{t}", f"AUC {t}") for t in tasks]
    fig = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels):
        for name, points in result.curves.items():
            ests = [p["primary"] if key == "primary" else p["auc"].get(key[4:]) for p in points]
            x = [p["fraction"] for p in points]
            value = [(e or {}).get("value") for e in ests]
            lo = [((e or {}).get("ci") or [None, None])[0] for e in ests]
            hi = [((e or {}).get("ci") or [None, None])[1] for e in ests]
            as_float = lambda v: np.array([np.nan if t is None else t for t in v], float)  # noqa: E731
            line = ax.plot(x, as_float(value), marker="o", label=name)[0]
            ax.fill_between(x, as_float(lo), as_float(hi), alpha=0.2, color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel("fraction of training labels")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if result.synthetic:
        fig.suptitle("SYNTHETIC DATA — not a clinical result", color="red", fontsize=9)
    with atomic_open(path, "wb", encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=120)


def write_efficiency(result: EfficiencyResult, out_dir: str | Path) -> dict[str, Path]:
    """``efficiency.json``, ``efficiency.csv``, ``efficiency.md`` and ``efficiency.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        name: out / name for name in ("efficiency.json", "efficiency.csv", "efficiency.md", "efficiency.png")
    }
    atomic_write_text(files["efficiency.json"], json.dumps(result.to_dict(), indent=2) + "\n")
    atomic_write_text(files["efficiency.csv"], _csv_text(result))
    atomic_write_text(files["efficiency.md"], render_efficiency(result) + "\n")
    _figure(result, files["efficiency.png"])
    return files
