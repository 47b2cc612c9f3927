"""Render an :class:`~hierclf.evaluation.records.EvaluationReport`: ``report.md``, ``report.json`` and PNG
figures.

``report.md`` is for people (a clinical reviewer first): warnings at the top, the pre-registered primary
metric, then one table per task with AUC and the operating point chosen on validation (sensitivity,
specificity, PPV, NPV on test, with confidence intervals), the optimistic test-chosen specificity labelled as
such, per-class recall beside AUC, and the seed mean ± std. ``report.json`` has every number with its
``n``, CI and provenance. Figures (matplotlib, Agg backend): the ROC of each task with the operating point and
reader points, reliability diagrams, and the confusion matrix of each partition. Every file is written
atomically. With synthetic data, every section carries the banner "SYNTHETIC DATA — not a clinical result".
Row labels and column headers come from :mod:`hierclf.evaluation.catalog`, as do those of
:func:`summary_rows`, the table ``hierclf evaluate`` and ``hierclf study`` print.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.evaluation.calibration import TASK_CALIBRATION_TABLE
from hierclf.evaluation.catalog import (
    HIERARCHICAL_TABLE,
    PER_CLASS_RECALL_LABEL,
    SUBGROUP_TASK_KEYS,
    SUMMARY_TASK_KEYS,
    TASK_TABLE,
    THRESHOLD_COLUMN,
    IntervalMethod,
    partition_metric,
    task_metric,
)
from hierclf.evaluation.formatting import _fmt_dict, _num, format_estimate
from hierclf.evaluation.records import (
    SYNTHETIC_BANNER,
    Estimate,
    EvaluationReport,
    PartitionResult,
    TaskResult,
)
from hierclf.io.atomic import atomic_write_bytes, atomic_write_text, output_folder

logger = logging.getLogger(__name__)

__all__ = [
    "format_estimate",
    "render_markdown",
    "summary_rows",
    "text_table",
    "write_replicates",
    "write_report",
]


def write_report(
    report: EvaluationReport, out_dir: str | Path, *, save_replicates: bool = False
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``checklist.md`` (and ``model_card.md`` for a model trained by
    hierclf), ``report.json`` and ``figures/*.png`` / ``*.svg`` under ``out_dir`` (created if needed).

    Args:
        save_replicates: also write ``replicates.npz``: every bootstrap replicate array of the report, keyed
            by its path in ``report.json`` (``tasks/<task>/metrics/<key>``, ...), each ``(n_seeds,
            n_replicates)`` (:meth:`EvaluationReport.replicates`).

    Returns:
        Name -> path of every file written.
    """
    out = Path(out_dir)
    output_folder(out)
    written: dict[str, Path] = {}
    figures = _figures(report, out / "figures")
    written.update(figures)
    md = render_markdown(report, {k: p.relative_to(out).as_posix() for k, p in figures.items()})
    atomic_write_text(out / "report.md", md)
    written["report.md"] = out / "report.md"
    written.update(_documents(report, md, out))
    data = report.to_dict()
    data["figures"] = {k: p.relative_to(out).as_posix() for k, p in figures.items()}
    atomic_write_text(out / "report.json", json.dumps(data, indent=2, allow_nan=False) + "\n")
    written["report.json"] = out / "report.json"
    if save_replicates:
        written["replicates.npz"] = write_replicates(report.replicates(), out / "replicates.npz")
    if report.mrmc is not None:
        written["mrmc_long.csv"] = write_mrmc_table(report.mrmc, out / "mrmc_long.csv")
    logger.info("wrote %d report files to %s", len(written), out)
    return written


def _documents(report: EvaluationReport, md: str, out: Path) -> dict[str, Path]:
    """``report.html`` (the same content, self-contained), ``checklist.md`` and, for a model trained by
    hierclf, ``model_card.md``."""
    from hierclf.evaluation.checklist import render_checklist, render_model_card
    from hierclf.evaluation.report_html import render_html

    texts = {"report.html": render_html(report, md, out), "checklist.md": render_checklist(report)}
    card = render_model_card(report)
    if card is not None:
        texts["model_card.md"] = card
    for name, text in texts.items():
        atomic_write_text(out / name, text)
    return {name: out / name for name in texts}


def write_mrmc_table(table: dict[str, np.ndarray], path: Path) -> Path:
    """The long table of case-level reads and model scores (``task,reader,case,test,truth,rating``) that the
    R packages MRMCaov and iMRMC read, written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = list(table)
    writer.writerow(columns)
    writer.writerows(zip(*(np.asarray(table[c]).tolist() for c in columns)))
    atomic_write_text(path, buf.getvalue())
    return path


def write_replicates(arrays: dict[str, np.ndarray], path: Path) -> Path:
    """Bootstrap replicates as an uncompressed ``.npz`` (names are report paths), written atomically."""
    buf = io.BytesIO()
    np.savez(buf, **{name: np.asarray(a, dtype=np.float64) for name, a in arrays.items()})  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())
    return path


# --- markdown ------------------------------------------------------------------------------------------


def _interval_label(est: Estimate | None) -> str:
    """The interval column: how the interval was computed (``-`` without one)."""
    if est is None or est.interval is None:
        return "-"
    return IntervalMethod(est.interval).short


def _banner(report: EvaluationReport) -> list[str]:
    return [f"> **{SYNTHETIC_BANNER}**", ""] if report.synthetic else []


def render_markdown(report: EvaluationReport, figures: dict[str, str] | None = None) -> str:
    """The human report as Markdown text (``figures``: name -> relative path of each PNG)."""
    figures = figures or {}
    lines = [f"# Evaluation report: {report.protocol['name']}", ""] + _banner(report)
    lines += _warnings_section(report) + _overview_section(report)
    lines += _primary_section(report) + _summary_section(report)
    for task in report.tasks.values():
        lines += _task_section(report, task, figures)
    for part in report.partitions.values():
        lines += _partition_section(report, part, figures)
    lines += _hierarchical_section(report) + _calibration_section(report, figures)
    for col, rows in report.subgroups.items():
        lines += _subgroup_section(report, col, rows)
    lines += _notes_section(report) + _inputs_section(report) + _provenance_section(report)
    return "\n".join(lines)


def _provenance_section(report: EvaluationReport) -> list[str]:
    """The SHA-256 of every input, the code's version, time and command, and the pre-registration check."""
    rec = report.provenance
    if not rec:
        return []
    lines = ["## Pre-registration and provenance", ""]
    lines += _header(["input", "path", "SHA-256"])
    named = [("protocol", rec.get("protocol")), ("taxonomy", rec.get("taxonomy"))]
    for split in ("val", "test"):
        named += [(f"{split} predictions (seed {k})", f) for k, f in enumerate(rec["predictions"][split])]
    named += [(f"checkpoint {k}", f) for k, f in enumerate(rec.get("checkpoints", []))]
    for name, item in named:
        if item is not None:
            lines.append(_row([name, f"`{item['path']}`", f"`{item.get('sha256', 'in memory')}`"]))
    commit = rec.get("git_commit") or "not a git checkout"
    dirty = " (with uncommitted changes)" if rec.get("git_dirty") else ""
    lines += [
        "",
        f"- hierclf {rec.get('hierclf_version')}, git commit `{commit}`{dirty}; python {rec.get('python')}",
        f"- run at {rec.get('time_utc')} (UTC): `{' '.join(rec.get('command', []))}`",
    ]
    pre = rec.get("preregistration")
    if pre is None:
        lines.append("- no pre-registration record next to the predictions (written by `hierclf study`)")
    elif pre.get("unchanged"):
        lines.append(f"- the protocol is the one recorded when training started (`{pre['record']}`)")
    else:
        lines.append(f"- **PROTOCOL CHANGED** after training started (`{pre['record']}`)")
    return lines + [""]


def _warnings_section(report: EvaluationReport) -> list[str]:
    if not report.warnings:
        return []
    return ["## Warnings", ""] + _banner(report) + [f"- **{w}**" for w in report.warnings] + [""]


def _resampled(report: EvaluationReport) -> str:
    """What the bootstrap actually resampled, in words: the group column and where it came from, or rows
    (and why), with the blank group ids resampled one by one."""
    info = report.resampling
    if not info:
        return f"**{report.group_column or 'rows (no group column!)'}**"
    seeds = info.get("per_seed", [])
    sources = sorted({s["source"] for s in seeds})
    blank = sum(int(s.get("blank_group_ids", 0)) for s in seeds)
    if info["unit"] == "rows":
        why = (
            "the protocol has no group_column"
            if report.group_column is None
            else (f"no {report.group_column} groups were found")
        )
        text = f"**rows** ({why})"
    elif info["unit"] == "mixed":
        text = f"**{report.group_column} for some seeds, rows for others** ({'; '.join(sources)})"
    else:
        groups = "/".join(sorted({str(s["n_groups"]) for s in seeds}))
        text = f"**{report.group_column}** ({groups} groups; {'; '.join(sources)})"
    if blank:
        text += f"; {blank} samples with a blank {report.group_column} are resampled one by one"
    return text


def _overview_section(report: EvaluationReport) -> list[str]:
    """Taxonomy, seeds, operating point and how intervals were computed."""
    proto = report.protocol
    level = proto["bootstrap"]["ci_level"]
    intervals = proto.get("intervals") or {}
    lines = [
        f"- taxonomy: `{report.taxonomy}`; seeds: {report.n_seeds} (protocol asks for {proto['min_seeds']})",
        f"- target sensitivity: {proto['target_sensitivity']}; "
        f"thresholds chosen on: **{report.threshold_source.description}**",
        f"- intervals: {int(level * 100)} % percentile bootstrap, {proto['bootstrap']['replicates']} "
        f"replicates resampling {_resampled(report)}, pooled over seeds; `± x` is the standard deviation "
        "over seeds",
        "- proportions (sensitivity, specificity, PPV, NPV, recall, accuracy): "
        + _proportion_rule(intervals)
        + "; the interval column says which each number uses",
        f"- flags: `SMALL` = fewer than {proto['min_group_size']} of the events that drive the number "
        "(positives for a sensitivity, negatives for a specificity); `ZERO-WIDTH` = every replicate gave the "
        "same value",
    ]
    if proto.get("error_profile"):
        lines += [f"- error profile: {proto['error_profile']}"]
    return lines + [""]


def _proportion_rule(intervals: dict[str, Any]) -> str:
    mode = intervals.get("proportions", "auto")
    exact = "Wilson" if intervals.get("exact") == "wilson" else "Clopper-Pearson"
    if mode == "auto":
        return (
            f"the bootstrap interval, or the {exact} interval (clustered: Korn & Graubard's effective "
            f"counts) where the bootstrap's has zero width or fewer than {intervals.get('min_events', 10)} "
            "successes or failures"
        )
    if mode == "bootstrap":
        return "the bootstrap interval"
    name = "Wilson" if mode == "wilson" else "Clopper-Pearson"
    return f"the {name} interval (clustered where images share groups)"


def _primary_section(report: EvaluationReport) -> list[str]:
    p = report.primary
    where = f"task `{p['task']}`" if p.get("task") else f"partition `{p['partition']}`"
    est = p.get("estimate")
    lines = ["## Primary metric (pre-registered)", ""] + _banner(report)
    alerts = "".join(f" **{a}**" for a in report.alerts)
    if est is None:
        return lines + [f"**{p['metric']}** on {where}: not computed{alerts}", ""]
    return lines + [
        f"**{p['metric']}** on {where}: **{_fmt_dict(est)}** (n = {_n(est['n'])}; {est['provenance']})"
        + alerts,
        "",
    ]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(cells: list[str]) -> list[str]:
    return [_row(cells), "|" + " --- |" * len(cells)]


def _summary_section(report: EvaluationReport) -> list[str]:
    """AUC beside the operating point, and per-class recall beside balanced accuracy, in one place:
    seed 003's best-AUC model caught 41 % of melanomas, which an AUC alone hides."""
    lines = ["## Summary (test)", ""] + _banner(report)
    summary = [task_metric(k) for k in SUMMARY_TASK_KEYS]
    lines += _header(["task", *(m.label for m in summary), THRESHOLD_COLUMN])
    for t in report.tasks.values():
        values = [format_estimate(t.metrics.get(m.key)) for m in summary]
        lines.append(_row([t.name, *values, t.threshold_source.value]))
    lines.append("")
    if report.partitions:
        shown = [partition_metric(k) for k in ("balanced_accuracy", "macro_auc")]
        lines += _header(["partition", *(m.label for m in shown), PER_CLASS_RECALL_LABEL])
        for p in report.partitions.values():
            recalls = ", ".join(f"{c} {_num(e.value)}" for c, e in p.per_class_recall.items())
            lines.append(_row([p.name, *(format_estimate(p.metrics.get(m.key)) for m in shown), recalls]))
        lines.append("")
    return lines


def _task_section(report: EvaluationReport, task: TaskResult, figures: dict[str, str]) -> list[str]:
    c = task.counts
    lines = [f"## Task `{task.name}`: {', '.join(task.positive)} vs {', '.join(task.negative)}", ""]
    lines += _banner(report)
    lines += [
        f"Test: {_n(c['test_positive'])} positive, {_n(c['test_negative'])} negative samples in "
        f"{_n(c['test_groups'])} groups; validation: {_n(c['val_positive'])} positive, "
        f"{_n(c['val_negative'])} negative. Threshold chosen on **{task.threshold_source.description}**: "
        f"{format_estimate(task.thresholds, 4)}.",
        "",
    ]
    if task.operating_rule:
        lines += [f"Operating point (pre-registered): {task.operating_rule['description']}.", ""]
    lines += _header(["metric", "value [CI] ± std over seeds", "interval", "provenance"])
    for metric in TASK_TABLE:
        est = task.metrics.get(metric.key)
        if est is not None and metric.in_task_table:
            lines.append(_row([metric.label, format_estimate(est), _interval_label(est), est.provenance]))
    ece = task.calibration["ece"]
    lines.append(
        _row(
            [
                f"ECE ({task.calibration['n_bins']} bins)",
                format_estimate(ece),
                _interval_label(ece),
                ece.provenance,
            ]
        )
    )
    for metric in TASK_CALIBRATION_TABLE[1:]:  # the Brier score, intercept and slope (and after scaling)
        est = task.calibration.get(metric.key)
        if isinstance(est, Estimate):
            lines.append(_row([metric.label, format_estimate(est), _interval_label(est), est.provenance]))
    dominated = task.reader_fraction_dominated
    if dominated is not None:
        label = f"readers dominated by the ROC curve ({len(task.readers)} readers)"
        lines.append(
            _row([label, format_estimate(dominated), _interval_label(dominated), dominated.provenance])
        )
    lines.append("")
    lines += _readers_table(task) + _reader_study_section(task) + _utility_section(task)
    for key in (f"roc_{task.name}", f"reliability_{task.name}", f"decision_{task.name}"):
        if key in figures:
            lines += [f"![{key}]({figures[key]})", ""]
    return lines


#: Threshold probabilities of report.md's decision-curve table (report.json has the whole grid).
DECISION_TABLE_THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def _utility_section(task: TaskResult) -> list[str]:
    """PPV, NPV and the number needed to biopsy at the declared prevalences; the decision-curve table."""
    lines: list[str] = []
    rows = task.utility.get("prevalences") or []
    if rows:
        lines += [
            "At the declared prevalences (Bayes' rule from the test sensitivity and specificity at the "
            "chosen threshold):",
            "",
        ]
        lines += _header(["prevalence", "PPV", "NPV", "number needed to biopsy (1 / PPV)"])
        for row in rows:
            cells = [format_estimate(row[k]) for k in ("ppv", "npv", "nnb")]
            lines.append(_row([f"{row['prevalence']:g}", *cells]))
        lines.append("")
    curve = task.utility.get("decision_curve")
    if curve:
        grid = curve["thresholds"]
        shown = [i for i, x in enumerate(grid) if len(grid) <= 12 or x in DECISION_TABLE_THRESHOLDS]
        level = int(round(curve["ci_level"] * 100))
        lines += [
            f"Decision curve (test; net benefit, {level} % band; treat none = 0; all thresholds in "
            "report.json):",
            "",
        ]
        lines += _header(["threshold probability", "model", "treat all"])
        for i in shown:
            low, high = curve["model_ci"][0][i], curve["model_ci"][1][i]
            model = f"{_num(curve['model'][i])} [{_num(low)}, {_num(high)}]"
            lines.append(_row([f"{grid[i]:g}", model, _num(curve["treat_all"][i])]))
        lines.append("")
    return lines


def _readers_table(task: TaskResult) -> list[str]:
    """Each reader and the mean reader beside the model at the reader's sensitivity and specificity."""
    if not task.readers:
        return []
    lines = [
        "Readers against the model on test (threshold chosen on test at each reader's value; p: two-sided "
        "bootstrap p-value against the reader's own value):",
        "",
    ]
    lines += _header(
        [
            "reader",
            "sensitivity",
            "specificity",
            "model specificity at the reader's sensitivity",
            "p",
            "model sensitivity at the reader's specificity",
            "p",
            "dominated (seeds)",
        ]
    )
    several = len(task.readers) > 1 and task.mean_reader is not None
    points = task.readers + ([task.mean_reader] if several and task.mean_reader is not None else [])
    for r in points:
        name = f"**{r.reader}**" if r.mean_reader else r.reader.replace("|", "/")
        lines.append(
            _row(
                [
                    name,
                    _num(r.sensitivity),
                    _num(r.specificity),
                    format_estimate(r.model_specificity),
                    _p(r.p_specificity),
                    format_estimate(r.model_sensitivity),
                    _p(r.p_sensitivity),
                    f"{sum(r.dominated)} of {len(r.dominated)}",
                ]
            )
        )
    return lines + [""]


def _reader_study_section(task: TaskResult) -> list[str]:
    """Case-level reads: each reader against the model on the cases it read (paired)."""
    study = task.reader_study
    if not study or not study["readers"]:
        return []
    lines = [
        f"Case-level reads (`{study['file']}`; the long table for MRMCaov / iMRMC is `mrmc_long.csv`), each "
        "reader against the model on the cases it read; differences are model minus reader, paired "
        "(the reader's rates re-computed and the model's threshold re-chosen in every replicate):",
        "",
    ]
    lines += _header(
        ["reader", "cases (pos / neg)", "sensitivity", "specificity", "model spec. at reader's sens.",
         "Δ spec. [CI], p", "model sens. at reader's spec.", "Δ sens. [CI], p", "AUC: Δ [CI], DeLong p"]
    )  # fmt: skip
    for r in study["readers"]:
        cells = [r["reader"].replace("|", "/"), f"{r['n_cases']} ({r['n_positive']} / {r['n_negative']})"]
        if "sensitivity" in r:
            ms, mn = r["matched_specificity"], r["matched_sensitivity"]
            cells += [_fmt_dict(r["sensitivity"]), _fmt_dict(r["specificity"]), _fmt_dict(ms["model"])]
            cells += [
                f"{_fmt_dict(ms['difference'])}, {_p(ms['difference']['p_value'])}",
                _fmt_dict(mn["model"]),
            ]
            cells += [f"{_fmt_dict(mn['difference'])}, {_p(mn['difference']['p_value'])}"]
        else:
            cells += ["n/a"] * 6
        auc = r.get("auc")
        cells.append(
            f"{_fmt_dict(auc['difference'])}, {_p(auc['delong'].get('p_value'))}"
            if auc
            else "n/a (no scores)"
        )
        lines.append(_row(cells))
    return lines + [""]


def _p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _n(values: int | list[int] | None) -> str:
    if values is None:
        return "n/a"
    if isinstance(values, int):
        return str(values)
    return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))


def _partition_section(report: EvaluationReport, part: PartitionResult, figures: dict[str, str]) -> list[str]:
    lines = [f"## Partition `{part.name}` ({len(part.classes)} classes, test)", ""] + _banner(report)
    lines += _header(["metric", "value [CI] ± std over seeds", "interval"])
    for key, est in part.metrics.items():
        lines.append(_row([partition_metric(key).label, format_estimate(est), _interval_label(est)]))
    lines += [""] + _header(["class", "recall [CI] ± std", "n (test)", "interval"])
    for cls, est in part.per_class_recall.items():
        lines.append(_row([cls, format_estimate(est), _n(est.n), _interval_label(est)]))
    lines.append("")
    total = np.sum(part.confusion, axis=0)
    lines += ["Confusion matrix, summed over seeds (rows = true, columns = predicted):", ""]
    lines += _header(["true \\ predicted", *part.classes])
    for i, cls in enumerate(part.classes):
        lines.append(_row([cls, *(str(int(v)) for v in total[i])]))
    lines.append("")
    lines += [f"- {n}" for n in part.notes]
    key = f"confusion_{part.name}"
    if key in figures:
        lines += ["", f"![{key}]({figures[key]})"]
    return lines + [""]


def _hierarchical_section(report: EvaluationReport) -> list[str]:
    if not report.hierarchical:
        return []
    lines = ["## Hierarchical errors (test)", ""] + _banner(report)
    lines += _header(["metric", "value [CI] ± std over seeds", "interval", "provenance"])
    for metric in HIERARCHICAL_TABLE:
        est = report.hierarchical.get(metric.key)
        if est is not None:
            lines.append(_row([metric.label, format_estimate(est), _interval_label(est), est.provenance]))
    return lines + [""]


def _calibration_section(report: EvaluationReport, figures: dict[str, str]) -> list[str]:
    if not report.calibration_nodes:
        return []
    lines = ["## Calibration of node probabilities (test)", ""] + _banner(report)
    for node, cal in report.calibration_nodes.items():
        if "ece" in cal:
            brier = cal.get("brier")
            extra = f"; Brier score {format_estimate(brier)}" if isinstance(brier, Estimate) else ""
            lines.append(f"- P({node}): ECE {format_estimate(cal['ece'])} ({cal['n_bins']} bins){extra}")
        else:
            lines.append(f"- P({node}): {cal.get('note', 'not computed')}")
        if f"reliability_{node}" in figures:
            lines.append(f"  ![reliability {node}]({figures[f'reliability_{node}']})")
    return lines + [""]


def _subgroup_section(report: EvaluationReport, column: str, rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"## Subgroups by `{column}` (test)", ""] + _banner(report)
    shown = [task_metric(k) for k in SUBGROUP_TASK_KEYS]
    lines += _header(
        ["value", "n", "task", "n pos / neg", *(m.label for m in shown), "ECE", "SMALL (events)"]
    )
    for row in rows:
        value = str(row["value"]).replace("|", "/")  # a '|' would split the Markdown cell
        for t in report.tasks:
            r = row["tasks"][t]
            counts = f"{_n(r['n_positive'])} / {_n(r['n_negative'])}"
            cells = [_fmt_dict(r[m.key], flags=False) for m in shown]
            ece = _fmt_dict(r["ece"], flags=False) if "ece" in r else "n/a"
            lines.append(_row([value, _n(row["n"]), t, counts, *cells, ece, _small_cell(r, shown)]))
    lines.append("")
    return lines + _subgroup_differences(report, rows)


def _small_cell(cell: dict[str, Any], shown: list[Any]) -> str:
    """Which numbers of a subgroup cell rest on few events, and how many (``SMALL: sensitivity (6
    positives)``); ``ZERO-WIDTH`` intervals too."""
    parts = []
    for m in shown:
        est = cell.get(m.key) or {}
        for flag in est.get("flags") or []:
            events = est.get("events")
            count = f" ({_n(events)} {m.events})" if flag == "SMALL" and events is not None else ""
            parts.append(f"{flag}: {m.label}{count}")
    return "; ".join(parts)


def _subgroup_differences(report: EvaluationReport, rows: list[dict[str, Any]]) -> list[str]:
    """Each level minus the rest (or the reference level), with intervals and bootstrap p-values."""
    diffs = [(row, t, row["tasks"][t].get("difference")) for row in rows for t in report.tasks]
    diffs = [(row, t, d) for row, t, d in diffs if d and "auc" in d]
    if not diffs:
        return []
    against = diffs[0][2]["against"]
    lines = [f"Differences against {against} (paired bootstrap; p: two-sided bootstrap p-value):", ""]
    lines += _header(
        ["value", "task", "Δ AUC", "p", "Δ sensitivity", "p", "Δ specificity", "p", "Δ ECE", "p"]
    )
    for row, t, d in diffs:
        cells = []
        for key in ("auc", "sensitivity", "specificity", "ece"):
            cells += [_fmt_dict(d[key]), _p(d[key].get("p_value"))]
        lines.append(_row([str(row["value"]).replace("|", "/"), t, *cells]))
    return lines + [""]


def _notes_section(report: EvaluationReport) -> list[str]:
    if not report.notes:
        return []
    return ["## Notes", ""] + _banner(report) + [f"- {n}" for n in report.notes] + [""]


def _inputs_section(report: EvaluationReport) -> list[str]:
    lines = ["## Inputs", ""] + _banner(report)
    for i, name in enumerate(report.seeds):
        val = f"validation `{report.validation[i]}`, " if i < len(report.validation) else "no validation, "
        lines.append(f"- seed {i}: {val}test `{name}`")
    lines.append("")
    return lines + _seed_table_section(report)


def _seed_table_section(report: EvaluationReport) -> list[str]:
    """Every seed side by side: its test set and each task's AUC, sensitivity and specificity."""
    if len(report.seed_table) < 2:
        return []
    tasks = list(report.tasks)
    lines = ["Per seed (test):", ""]
    lines += _header(["seed", "test file", "n", "groups", *(f"{t}: AUC / sens / spec" for t in tasks)])
    for row in report.seed_table:
        cells = []
        for t in tasks:
            v = row["tasks"].get(t, {})
            cells.append(" / ".join(_num(v.get(k)) for k in ("auc", "sensitivity", "specificity")))
        lines.append(
            _row([str(row["seed"]), f"`{row['test']}`", str(row["n_test"]), str(row["n_groups"]), *cells])
        )
    return lines + [""]


# --- summary tables (the CLI's) ------------------------------------------------------------------------


def summary_rows(report: EvaluationReport) -> list[dict[str, str]]:
    """One row per task for a terminal summary: the :data:`~hierclf.evaluation.catalog.SUMMARY_TASK_KEYS`
    metrics and the threshold source, then one row per class of each partition with its recall in the
    sensitivity column (the threshold column says ``argmax``). Column headers are the catalog's labels."""
    summary = [task_metric(k) for k in SUMMARY_TASK_KEYS]
    rows = []
    for name, task in report.tasks.items():
        row = {"task": name, **{m.label: format_estimate(task.metrics.get(m.key)) for m in summary}}
        rows.append({**row, THRESHOLD_COLUMN: task.threshold_source.value})
    recall_column = task_metric("sensitivity").label
    for name, part in report.partitions.items():
        for cls, est in part.per_class_recall.items():
            row = {"task": f"{name}: recall of {cls}", **{m.label: "" for m in summary}}
            rows.append({**row, recall_column: format_estimate(est), THRESHOLD_COLUMN: "argmax"})
    return rows


def text_table(rows: list[dict[str, str]]) -> list[str]:
    """Rows of equal keys as aligned text lines, the header first (``[]`` for no rows).

    Example:
        >>> text_table([{"task": "a", "AUC": "0.9"}, {"task": "bb", "AUC": ""}])
        ['task  AUC', 'a     0.9', 'bb']
    """
    if not rows:
        return []
    headers = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(r[h].ljust(w) for h, w in zip(headers, widths)) for r in rows]
    return [line.rstrip() for line in lines]


# --- figures -------------------------------------------------------------------------------------------


#: Resolution of the PNG figures (each also written as SVG, the vector form a journal asks for).
FIGURE_DPI = 200


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    return buf.getvalue()


def _svg(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    return buf.getvalue()


def _figures(report: EvaluationReport, out: Path) -> dict[str, Path]:
    """Every figure of the report, written as ``out/<name>.png`` (200 dpi) and ``out/<name>.svg``; name ->
    path of the PNG (``<name>.svg`` -> the SVG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    written: dict[str, Path] = {}
    for name, fig in _each_figure(report, Figure):  # drawn and written one at a time
        stamp_figure(report, fig)
        written[name] = out / f"{name}.png"
        atomic_write_bytes(written[name], _png(fig))
        written[f"{name}.svg"] = out / f"{name}.svg"
        atomic_write_bytes(written[f"{name}.svg"], _svg(fig))
    return written


def _each_figure(report: EvaluationReport, Figure: Any) -> Iterator[tuple[str, Any]]:  # noqa: N803
    """``(name, figure)``: per task its ROC and reliability, per calibration node its reliability, per
    partition its confusion matrix."""
    for task in report.tasks.values():
        yield f"roc_{task.name}", _roc_figure(Figure, task)
        yield (
            f"reliability_{task.name}",
            _reliability(
                Figure,
                task.calibration["reliability"],
                task.name,
                band=task.calibration.get("reliability_band"),
            ),
        )
        if task.utility.get("decision_curve"):
            yield f"decision_{task.name}", _decision_figure(Figure, task)
    for node, cal in report.calibration_nodes.items():
        if "reliability" in cal:
            yield f"reliability_{node}", _reliability(Figure, cal["reliability"], f"P({node})")
    for part in report.partitions.values():
        yield f"confusion_{part.name}", _confusion_figure(Figure, part)


def stamp_figure(report: EvaluationReport, fig: Any) -> None:
    """Every figure carries the SYNTHETIC banner (top) and the run's alerts (``LEAKAGE``, ``FEWER SEEDS THAN
    PRE-REGISTERED``, ``PROTOCOL CHANGED``; bottom), in red."""
    if report.synthetic:
        _stamp_synthetic(fig)
    if report.alerts:
        fig.text(0.5, 0.005, " · ".join(report.alerts), ha="center", va="bottom", color="red", fontsize=9)


def _stamp_synthetic(fig: Any) -> None:
    fig.text(0.5, 0.995, SYNTHETIC_BANNER, ha="center", va="top", color="red", fontsize=9, fontweight="bold")


def _roc_figure(Figure: Any, task: TaskResult) -> Any:  # noqa: N803
    """The test ROC curve of every seed (the first drawn bold) with the bootstrap band, the pre-registered
    target, one labelled operating point per seed, the readers and the mean reader, and an inset zoomed on
    the high-sensitivity corner."""
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    _draw_roc(ax, task, legend=True)
    inset = ax.inset_axes((0.52, 0.3, 0.45, 0.4))
    _draw_roc(inset, task, legend=False)
    low = max(0.0, min([0.8] + [p["sensitivity"] - 0.05 for p in task.operating_points]))
    inset.set(xlim=(0.0, 0.5), ylim=(low, 1.005), title="high-sensitivity corner")
    inset.title.set_fontsize(7)
    inset.tick_params(labelsize=6)
    c = task.counts
    ax.set(
        xlabel="1 - specificity (false-positive rate)",
        ylabel="sensitivity (true-positive rate)",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"{task.name}: AUC {format_estimate(task.metrics['auc'])}\n"
        f"test n = {_n(c['test_positive'])} positive, {_n(c['test_negative'])} negative",
    )
    ax.title.set_fontsize(9)
    ax.legend(loc="lower right", fontsize=7)
    return fig


def _draw_roc(ax: Any, task: TaskResult, *, legend: bool) -> None:
    """One ROC panel: band, curves, target line, operating points, readers."""
    band = task.roc_band
    if band and len(band.get("tpr_ci", [[]])[0]):
        level = int(round(band["ci_level"] * 100))
        lo, hi = np.asarray(band["tpr_ci"][0], np.float64), np.asarray(band["tpr_ci"][1], np.float64)
        ok = np.isfinite(lo) & np.isfinite(hi)
        x = np.asarray(band["fpr"], np.float64)[ok]
        ax.fill_between(x, lo[ok], hi[ok], color="C0", alpha=0.15, lw=0, label=f"{level} % bootstrap band")
    for k, roc in enumerate(task.roc):
        first = k == 0
        label = "model (test)" if first and legend else None
        ax.plot(
            roc["fpr"],
            roc["tpr"],
            lw=1.5 if first else 0.8,
            alpha=1.0 if first else 0.5,
            color="C0",
            label=label,
        )
    _target_line(ax, task, legend)
    ops = task.operating_points
    source = task.threshold_source.value
    ax.scatter(
        [1 - p["specificity"] for p in ops],
        [p["sensitivity"] for p in ops],
        color="C3",
        zorder=3,
        marker="o",
        s=16,
        label=f"operating point per seed (threshold from {source})" if legend else None,
    )
    if legend:
        for k, p in enumerate(ops):
            ax.annotate(
                f"seed {k}",
                (1 - p["specificity"], p["sensitivity"]),
                fontsize=6,
                xytext=(3, -8),
                textcoords="offset points",
            )
    _reader_marks(ax, task, legend)
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")


def _target_line(ax: Any, task: TaskResult, legend: bool) -> None:
    """The pre-registered target: a horizontal line at the target sensitivity, a vertical one at the target
    specificity's false-positive rate."""
    rule = task.operating_rule or {}
    target = rule.get("target")
    if target is None:
        return
    if rule.get("rule") == "target_specificity":
        ax.axvline(
            1 - target, color="C3", lw=0.8, ls=":", label=f"target specificity {target:g}" if legend else None
        )
    else:
        ax.axhline(
            target, color="C3", lw=0.8, ls=":", label=f"target sensitivity {target:g}" if legend else None
        )


def _reader_marks(ax: Any, task: TaskResult, legend: bool) -> None:
    if task.readers:
        ax.scatter(
            [1 - r.specificity for r in task.readers],
            [r.sensitivity for r in task.readers],
            color="C1",
            marker="D",
            s=18,
            zorder=3,
            label="readers" if legend else None,
        )
    if legend:
        _matched_points(ax, task)
    if task.mean_reader is not None and len(task.readers) > 1:
        m = task.mean_reader
        label = "mean reader" if legend else None
        ax.scatter([1 - m.specificity], [m.sensitivity], color="C2", marker="*", s=80, zorder=4, label=label)


def _matched_points(ax: Any, task: TaskResult) -> None:
    """The model at the (mean) reader's sensitivity and at its specificity: two crosses joined to the reader
    by dotted lines (seed means)."""
    r = task.mean_reader if len(task.readers) > 1 else (task.readers[0] if task.readers else None)
    if r is None or r.model_specificity is None or r.model_sensitivity is None:
        return
    at_sens = (1 - r.model_specificity.value, r.sensitivity)
    at_spec = (1 - r.specificity, r.model_sensitivity.value)
    for x, y in (at_sens, at_spec):
        ax.plot([1 - r.specificity, x], [r.sensitivity, y], color="C2", lw=0.8, ls=":", zorder=2)
    ax.scatter(
        *zip(at_sens, at_spec), color="C2", marker="x", s=30, zorder=4, label=f"model at {r.reader}'s rates"
    )


def _confusion_figure(Figure: Any, part: PartitionResult) -> Any:  # noqa: N803
    """The confusion matrix row-normalised within each seed (each row: where that class's test samples
    went) and averaged over seeds; each cell prints the mean fraction."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = [
            np.asarray(c, np.float64) / np.asarray(c, np.float64).sum(axis=1, keepdims=True)
            for c in part.confusion
        ]
    with warnings.catch_warnings():  # a class absent from every seed's test set: its row stays 0
        warnings.simplefilter("ignore", RuntimeWarning)
        frac = np.nan_to_num(np.nanmean(np.stack(per_seed), axis=0)) if per_seed else np.zeros((0, 0))
    n = len(part.classes)
    size = max(4.0, 0.6 * n + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):  # a loop over the cells of a small matrix (one label each)
        for j in range(n):
            colour = "white" if frac[i, j] > 0.5 else "black"
            ax.text(j, i, f"{frac[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(n), part.classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), part.classes, fontsize=7)
    seeds = len(part.confusion)
    ax.set(
        xlabel="predicted class",
        ylabel="true class",
        title=f"{part.name} (test, n = {_n(part.n)}; row-normalised, mean of {seeds} seed(s))",
    )
    ax.title.set_fontsize(9)
    return fig


def _reliability(
    Figure: Any,  # noqa: N803
    curves: list[dict[str, np.ndarray]],
    title: str,
    *,
    band: list[list[float]] | None = None,
) -> Any:
    """Observed frequency against predicted probability per bin, each seed (the first bold), with the
    grouped-bootstrap band of the observed frequency (pooled over seeds) when given."""
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--", label="perfect calibration")
    n = 0
    for k, c in enumerate(curves):
        conf, acc, cnt = (np.asarray(c[key], dtype=np.float64) for key in ("confidence", "accuracy", "count"))
        keep = cnt > 0
        n = n or int(cnt.sum())
        label = "model (test)" if k == 0 else None
        ax.plot(
            conf[keep],
            acc[keep],
            marker="o",
            ms=3,
            lw=1,
            color="C0",
            alpha=1.0 if k == 0 else 0.4,
            label=label,
        )
    if band is not None and curves and len(band[0]):
        edges = np.linspace(0.0, 1.0, len(band[0]) + 1)
        mids = 0.5 * (edges[1:] + edges[:-1])
        lo, hi = np.asarray(band[0], np.float64), np.asarray(band[1], np.float64)
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.fill_between(mids[ok], lo[ok], hi[ok], color="C0", alpha=0.2, label="bootstrap band")
    ax.set(
        xlabel="predicted probability",
        ylabel="observed frequency",
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"reliability: {title} (test, n = {n})",
    )
    ax.title.set_fontsize(9)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def _decision_figure(Figure: Any, task: TaskResult) -> Any:  # noqa: N803
    """Net benefit against threshold probability: the model (seed mean) with its band, treat all, treat
    none (Vickers & Elkin 2006)."""
    curve = task.utility["decision_curve"]
    t = np.asarray(curve["thresholds"], dtype=np.float64)
    model, treat_all = np.asarray(curve["model"]), np.asarray(curve["treat_all"])
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot()
    level = int(round(curve["ci_level"] * 100))
    ax.fill_between(
        t, curve["model_ci"][0], curve["model_ci"][1], color="C0", alpha=0.2, label=f"model {level} % band"
    )
    ax.plot(t, model, color="C0", lw=1.5, label="model (test)")
    ax.plot(t, treat_all, color="C1", lw=1.0, ls="--", label="treat all")
    ax.axhline(0.0, color="0.3", lw=1.0, ls=":", label="treat none")
    top = float(np.nanmax(np.r_[model, treat_all, 0.0]))
    n = task.counts["test_positive"], task.counts["test_negative"]
    ax.set(
        xlabel="threshold probability",
        ylabel="net benefit (true positives per patient)",
        xlim=(float(t.min()), float(t.max())),
        ylim=(-0.05 * max(top, 0.01), 1.1 * max(top, 0.01)),
        title=f"decision curve: {task.name} (n = {_n(n[0])} positive, {_n(n[1])} negative)",
    )
    ax.title.set_fontsize(9)
    ax.legend(loc="upper right", fontsize=8)
    return fig
