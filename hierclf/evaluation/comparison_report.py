"""Render a :class:`~hierclf.evaluation.comparison.ComparisonReport`: ``comparison.md``, ``comparison.json``,
one ROC figure per task with every model's curve and operating points, and (on request) the replicates.

``comparison.md`` opens with the models, their files and what was resampled; then per task one table of each
model's numbers and one of the differences between every pair of models, each with its paired-bootstrap
interval, its bootstrap p-value and the analytic test (DeLong for the AUC, McNemar for sensitivity and
specificity); per partition the balanced accuracy and per-class recall of every model and their differences.
Every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hierclf.evaluation.comparison import (
    ComparisonReport,
    MetricComparison,
    PartitionComparison,
    TaskComparison,
)
from hierclf.evaluation.records import SYNTHETIC_BANNER, Estimate
from hierclf.evaluation.report import _header, _p, _png, _row, format_estimate, write_replicates
from hierclf.io.atomic import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["render_comparison", "write_comparison"]


def write_comparison(
    report: ComparisonReport, out_dir: str | Path, *, save_replicates: bool = False
) -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison.json``, ``figures/roc_<task>.png`` (and ``replicates.npz``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = _figures(report, out / "figures")
    md = render_comparison(report, {k: p.relative_to(out).as_posix() for k, p in written.items()})
    atomic_write_text(out / "comparison.md", md)
    written["comparison.md"] = out / "comparison.md"
    data = report.to_dict()
    data["figures"] = {k: p.relative_to(out).as_posix() for k, p in written.items() if k.startswith("roc_")}
    atomic_write_text(out / "comparison.json", json.dumps(data, indent=2, allow_nan=False) + "\n")
    written["comparison.json"] = out / "comparison.json"
    if save_replicates:
        written["replicates.npz"] = write_replicates(report.replicates(), out / "replicates.npz")
    logger.info("wrote %d comparison files to %s", len(written), out)
    return written


def render_comparison(report: ComparisonReport, figures: dict[str, str] | None = None) -> str:
    """The comparison as Markdown text (``figures``: name -> relative path of each PNG)."""
    figures = figures or {}
    banner = [f"> **{SYNTHETIC_BANNER}**", ""] if report.synthetic else []
    lines = [f"# Model comparison: {', '.join(report.models)} ({report.protocol['name']})", ""] + banner
    if report.warnings:
        lines += ["## Warnings", ""] + [f"- **{w}**" for w in report.warnings] + [""]
    lines += _overview(report)
    for task in report.tasks.values():
        lines += _task_section(report, task, figures)
    for part in report.partitions.values():
        lines += _partition_section(report, part)
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)


def _overview(report: ComparisonReport) -> list[str]:
    proto = report.protocol
    info = report.resampling
    unit = info.get("unit", "rows")
    level = int(proto["bootstrap"]["ci_level"] * 100)
    lines = [f"- models: {', '.join(f'`{m}`' for m in report.models)}; taxonomy `{report.taxonomy}`"]
    for model, files in report.files.items():
        val = ", ".join(f"`{f}`" for f in files["val"]) or "none"
        lines.append(f"  - `{model}`: test {', '.join(f'`{f}`' for f in files['test'])}; validation {val}")
    lines += [
        "- operating points: each model's own threshold, chosen on "
        f"**{report.threshold_source.description}** at sensitivity {proto['target_sensitivity']}",
        f"- intervals: {level} % paired percentile bootstrap, {proto['bootstrap']['replicates']} replicates "
        f"resampling **{unit}**: every replicate resamples the same groups for every model; a difference of "
        "seed means pools the replicates of every pair of seeds; p: two-sided bootstrap p-value of no "
        "difference",
        "- analytic tests: DeLong for the AUC (Obuchowski's clustered variance when cases come in groups), "
        "exact McNemar for sensitivity (on the positives) and specificity (on the negatives) per pair of "
        "seeds",
        "",
    ]
    return lines


def _est(est: Estimate | None) -> str:
    return format_estimate(est) if est is not None else "n/a"


def _signed(est: Estimate) -> str:
    text = format_estimate(est)
    return ("+" + text) if math.isfinite(est.value) and est.value > 0 else text


def _task_section(report: ComparisonReport, task: TaskComparison, figures: dict[str, str]) -> list[str]:
    lines = [f"## Task `{task.name}`: {', '.join(task.positive)} vs {', '.join(task.negative)}", ""]
    lines += [
        f"Test: {task.n_positive} positive, {task.n_negative} negative samples in {task.n_groups} groups. "
        "Thresholds: "
        + "; ".join(f"`{m}` {format_estimate(t, 4)}" for m, t in task.thresholds.items())
        + ".",
        "",
    ]
    lines += _models_table(report, task.metrics.values())
    lines += _differences_table(report, task.metrics.values())
    key = f"roc_{task.name}"
    if key in figures:
        lines += [f"![{key}]({figures[key]})", ""]
    return lines


def _models_table(report: ComparisonReport, metrics: Any) -> list[str]:
    lines = _header(["metric", *(f"`{m}`" for m in report.models)])
    for mc in metrics:
        lines.append(_row([mc.label, *(_est(mc.models.get(m)) for m in report.models)]))
    return lines + [""]


def _differences_table(report: ComparisonReport, metrics: Any) -> list[str]:
    lines = _header(["metric", "difference", "[CI] ± std over seed pairs", "p (bootstrap)", "analytic test"])
    for mc in metrics:
        for pair in report.pairs:
            est = mc.differences.get(pair)
            if est is None:
                continue
            lines.append(_row([mc.label, pair, _signed(est), _p(mc.p_values.get(pair)), _test(mc, pair)]))
    return lines + [""]


def _test(mc: MetricComparison, pair: str) -> str:
    test = mc.tests.get(pair)
    if not test:
        return ""
    if "note" in test:
        return f"{test['test']}: {test['note']}"
    if "z" in test:
        lo, hi = test["ci"]
        return f"{test['test']}: z = {test['z']:.2f}, p {_p_eq(test['p_value'])}, CI [{lo:.3f}, {hi:.3f}]"
    parts = []
    for row in test["per_seed_pair"]:
        seeds = f"seeds {row['seeds'][0]}/{row['seeds'][1]}"
        text = f"{seeds}: {row['first_only']} vs {row['second_only']}, p {_p_eq(row['p_value'])}"
        if "p_value_clustered" in row:
            text += f" (clustered {_p(row['p_value_clustered'])})"
        parts.append(text)
    return f"{test['test']} (discordant cases, first right vs second right): " + "; ".join(parts)


def _p_eq(p: float | None) -> str:
    """``= 0.031`` or ``< 0.001``: a p-value after its letter."""
    text = _p(p)
    return text if text.startswith("<") else f"= {text}"


def _partition_section(report: ComparisonReport, part: PartitionComparison) -> list[str]:
    lines = [f"## Partition `{part.name}` ({len(part.classes)} classes, {part.n} test samples)", ""]
    metrics = [part.balanced_accuracy, *part.per_class_recall.values()]
    return lines + _models_table(report, metrics) + _differences_table(report, metrics)


# --- figures ---------------------------------------------------------------------------------------------


def _figures(report: ComparisonReport, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    written: dict[str, Path] = {}
    for task in report.tasks.values():  # one figure a task
        fig = _roc_figure(Figure, report, task)
        if report.synthetic:
            fig.text(0.5, 0.995, SYNTHETIC_BANNER, ha="center", va="top", color="red", fontsize=9)
        written[f"roc_{task.name}"] = out / f"roc_{task.name}.png"
        atomic_write_bytes(written[f"roc_{task.name}"], _png(fig))
    return written


def _roc_figure(Figure: Any, report: ComparisonReport, task: TaskComparison) -> Any:  # noqa: N803
    """Every model's test ROC curve (its first seed bold) and its operating points."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    auc = task.metrics["auc"].models
    for c, model in enumerate(report.models):
        colour = f"C{c}"
        for k, roc in enumerate(task.roc[model]):
            label = f"{model} (AUC {auc[model].value:.3f})" if k == 0 else None
            ax.plot(
                roc["fpr"],
                roc["tpr"],
                color=colour,
                lw=1.5 if k == 0 else 0.7,
                alpha=1.0 if k == 0 else 0.4,
                label=label,
            )
        points = task.operating_points[model]
        ax.scatter(
            [1 - p["specificity"] for p in points],
            [p["sensitivity"] for p in points],
            color=colour,
            edgecolor="black",
            zorder=3,
            marker="o",
            label=f"{model}: operating point",
        )
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.set(
        xlabel="1 - specificity",
        ylabel="sensitivity",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"{task.name} (test)",
    )
    ax.title.set_fontsize(9)
    ax.legend(loc="lower right", fontsize=7)
    return fig
