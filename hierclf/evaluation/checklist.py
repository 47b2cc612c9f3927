"""The reporting checklist and the model card, filled from the run's own artefacts.

* :func:`render_checklist` (``checklist.md``): the items of TRIPOD+AI, CLAIM and STARD-AI that an evaluation
  can fill by itself (data source, sizes and class counts per split, split level and the leakage check, the
  reference-standard mix, the operating point and how it was chosen, every headline metric with its
  interval, calibration, clinical utility, subgroups, seeds, code and data versions, pre-registration), each
  with its value and where the value came from; and the items only people can fill (intended use, ethics,
  annotators, human factors, ...) as marked placeholders.
* :func:`render_model_card` (``model_card.md``): the sections of Mitchell et al. 2019 ("Model Cards for
  Model Reporting") for a model trained by ``hierclf train`` / ``study`` (the prediction files record the
  training set); ``None`` for predictions from elsewhere.
"""

from __future__ import annotations

from typing import Any

from hierclf.evaluation.records import Estimate, EvaluationReport

__all__ = ["PLACEHOLDER", "render_checklist", "render_model_card"]

#: what marks an item only people can fill
PLACEHOLDER = "**[TO BE COMPLETED BY THE AUTHORS]**"

#: the items only people can fill: (guidelines, item)
HUMAN_ITEMS = (
    ("TRIPOD+AI, CLAIM, STARD-AI", "intended use and clinical setting (who uses the model, on whom, when)"),
    (
        "TRIPOD+AI, CLAIM, STARD-AI",
        "eligibility of participants, recruitment, dates and places of data collection",
    ),
    ("TRIPOD+AI, CLAIM, STARD-AI", "ethics approval and consent"),
    ("CLAIM, STARD-AI", "annotators: who established the reference standard, their qualifications, blinding"),
    ("TRIPOD+AI, STARD-AI", "human factors: how the output is shown to and acted on by clinicians"),
    ("TRIPOD+AI, CLAIM", "funding, conflicts of interest, data and code availability statement"),
)


def _fmt(est: Any) -> str:
    from hierclf.evaluation.formatting import format_estimate

    return format_estimate(est) if isinstance(est, Estimate) else "n/a"


def _fmt_json(est: dict[str, Any] | None) -> str:
    """An estimate from ``report.primary`` (JSON-cleaned) as ``value [low, high]``."""
    from hierclf.evaluation.formatting import _fmt_dict

    return _fmt_dict(est) if est else "not computed"


def _counts(split: dict[str, Any] | None) -> str:
    if not split:
        return "not known"
    groups = f" in {split['n_groups']} groups" if split.get("n_groups") else ""
    classes = ", ".join(f"{k} {v}" for k, v in split.get("class_counts", {}).items())
    return f"{split['n']} images{groups}" + (f" ({classes})" if classes else "")


def _data_rows(report: EvaluationReport) -> list[tuple[str, str, str, str]]:
    data = report.data
    test = data.get("test") or {}
    info = test.get("info") or {}
    leaks = [w for w in report.warnings if w.startswith("LEAKAGE")]
    checked = ", ".join(data.get("leakage_checked", [])) or "nothing (no validation or training ids)"
    reference = test.get("reference_standard")
    return [
        (
            "TRIPOD+AI, CLAIM",
            "data source",
            info.get("source", "not recorded in the prediction files"),
            "prediction files (`info.source`)",
        ),
        (
            "TRIPOD+AI, CLAIM, STARD-AI",
            "training set: size and class counts",
            _counts(data.get("training")),
            "prediction files (`info.training`)",
        ),
        (
            "TRIPOD+AI, CLAIM, STARD-AI",
            "validation set: size and class counts",
            _counts(data.get("validation")),
            "validation prediction files",
        ),
        (
            "TRIPOD+AI, CLAIM, STARD-AI",
            "test set: size and class counts",
            _counts(test),
            "test prediction files",
        ),
        (
            "CLAIM",
            "split level (unit of the partition)",
            info.get("split_level", "not recorded"),
            "prediction files (`info.split_level`)",
        ),
        (
            "CLAIM",
            "leakage check between partitions",
            f"checked {checked}: " + ("; ".join(leaks) if leaks else "no shared ids or groups found"),
            "evaluation (ids and groups of each split)",
        ),
        (
            "STARD-AI",
            "reference standard mix",
            (f"`{reference['column']}`: " + ", ".join(f"{k} {v}" for k, v in reference["counts"].items()))
            if reference
            else "no `dx_type`-like column given",
            "test metadata",
        ),
    ]


def _method_rows(report: EvaluationReport) -> list[tuple[str, str, str, str]]:
    proto = report.protocol
    rows = []
    for name, task in report.tasks.items():
        rule = task.operating_rule.get("description", "target sensitivity on validation")
        value = f"{rule}; threshold {_fmt(task.thresholds)} chosen on {task.threshold_source.value}"
        rows.append(
            (
                "TRIPOD+AI, STARD-AI",
                f"operating point of `{name}` and how it was chosen",
                value,
                "protocol `operating_point`, report `tasks.<task>.thresholds`",
            )
        )
    boot = proto["bootstrap"]
    rows.append(
        (
            "TRIPOD+AI, CLAIM",
            "uncertainty of every metric",
            f"{int(boot['ci_level'] * 100)} % grouped percentile bootstrap, {boot['replicates']} replicates, "
            f"resampling {report.group_column or 'rows'}; binomial intervals at few events",
            "protocol `bootstrap`, `intervals`",
        )
    )
    rows.append(
        (
            "TRIPOD+AI, CLAIM",
            "seeds (training runs) evaluated",
            f"{report.n_seeds} (protocol asks for {proto['min_seeds']})",
            "report `seeds`",
        )
    )
    return rows


def _result_rows(report: EvaluationReport) -> list[tuple[str, str, str, str]]:
    p = report.primary
    est = p.get("estimate") or {}
    rows = [
        (
            "TRIPOD+AI, CLAIM, STARD-AI",
            "pre-registered primary metric",
            f"{p['metric']} on {p.get('task') or p.get('partition')}: {_fmt_json(est)}"
            + "".join(f" {a}" for a in report.alerts),
            "report `primary`",
        )
    ]
    for name, task in report.tasks.items():
        m = task.metrics
        rows.append(
            (
                "TRIPOD+AI, CLAIM, STARD-AI",
                f"`{name}`: discrimination and operating point",
                f"AUC {_fmt(m.get('auc'))}; sensitivity {_fmt(m.get('sensitivity'))}; specificity "
                f"{_fmt(m.get('specificity'))}; PPV {_fmt(m.get('ppv'))}; NPV {_fmt(m.get('npv'))}",
                "report.md task table",
            )
        )
        cal = task.calibration
        rows.append(
            (
                "TRIPOD+AI",
                f"`{name}`: calibration",
                f"Brier {_fmt(cal.get('brier'))}; intercept {_fmt(cal.get('calibration_intercept'))}; slope "
                f"{_fmt(cal.get('calibration_slope'))}; ECE {_fmt(cal.get('ece'))}",
                "report.md task table, reliability figure",
            )
        )
        prevalences = ", ".join(f"{r['prevalence']:g}" for r in task.utility.get("prevalences", []))
        rows.append(
            (
                "TRIPOD+AI",
                f"`{name}`: clinical utility",
                f"decision curve; PPV/NPV at prevalences {prevalences or 'none declared'}",
                "report.md, figures/decision_<task>",
            )
        )
    subgroups = ", ".join(report.subgroups) or "none pre-registered"
    rows.append(("TRIPOD+AI, CLAIM", "performance in subgroups", subgroups, "protocol `subgroups`"))
    return rows


def _version_rows(report: EvaluationReport) -> list[tuple[str, str, str, str]]:
    rec = report.provenance or {}
    protocol = (rec.get("protocol") or {}).get("sha256", "not recorded")
    pre = rec.get("preregistration")
    state = "no record" if pre is None else ("unchanged" if pre.get("unchanged") else "CHANGED")
    tests = ", ".join(
        f"{f.get('sha256', 'in memory')[:12]}" for f in rec.get("predictions", {}).get("test", [])
    )
    return [
        (
            "TRIPOD+AI, CLAIM",
            "code version",
            _code(rec),
            "report `provenance`",
        ),
        (
            "TRIPOD+AI, CLAIM",
            "data versions (SHA-256 of the test prediction files)",
            tests or "not recorded",
            "report `provenance`",
        ),
        (
            "TRIPOD+AI",
            "pre-registration (protocol SHA-256; since training started)",
            f"{protocol} ({state})",
            "report `provenance`, OUT/preregistration.json",
        ),
    ]


def _code(rec: dict[str, Any]) -> str:
    if not rec:
        return "not recorded (no run record: evaluate(..., provenance=run_record(...)) or the CLI)"
    return (
        f"hierclf {rec.get('hierclf_version', '?')}, git commit {rec.get('git_commit') or 'not a checkout'}"
    )


def _checkpoints(rec: dict[str, Any]) -> str:
    hashes = [str(c.get("sha256"))[:12] for c in rec.get("checkpoints", [])]
    return ", ".join(hashes) or "not recorded"


def render_checklist(report: EvaluationReport) -> str:
    """``checklist.md``: every item the run fills (value and source), then the placeholders."""
    lines = [f"# Reporting checklist: {report.protocol['name']}", ""]
    if report.synthetic:
        lines += ["> **SYNTHETIC DATA — not a clinical result**", ""]
    lines += [
        "Items of TRIPOD+AI, CLAIM and STARD-AI that this run fills from its own artefacts, with where each "
        "value came from; the items only people can fill are marked " + PLACEHOLDER + ".",
        "",
        "| guideline | item | value | source |",
        "| --- | --- | --- | --- |",
    ]
    rows = _data_rows(report) + _method_rows(report) + _result_rows(report) + _version_rows(report)
    lines += [f"| {g} | {item} | {value} | {source} |" for g, item, value, source in rows]
    lines += ["", "## Items only people can fill", "", "| guideline | item | value |", "| --- | --- | --- |"]
    lines += [f"| {g} | {item} | {PLACEHOLDER} |" for g, item in HUMAN_ITEMS]
    return "\n".join(lines) + "\n"


def render_model_card(report: EvaluationReport) -> str | None:
    """``model_card.md`` (Mitchell et al. 2019) for a model trained by hierclf, else ``None``."""
    data = report.data
    if not data.get("from_training"):
        return None
    rec = report.provenance or {}
    p = report.primary
    est = p.get("estimate") or {}
    test_info = (data.get("test") or {}).get("info") or {}
    lines = [f"# Model card: {report.protocol['name']}", ""]
    if report.synthetic:
        lines += ["> **SYNTHETIC DATA — not a clinical result**", ""]
    sections = {
        "Model details": [
            f"{_code(rec)}; taxonomy `{report.taxonomy}`; {report.n_seeds} training seed(s); evaluated "
            f"{rec.get('time_utc', '?')}.",
            f"Checkpoints (SHA-256): {_checkpoints(rec)}.",
        ],
        "Intended use": [f"{PLACEHOLDER} (primary intended uses and users; out-of-scope uses)."],
        "Factors": [
            f"Subgroups evaluated: {', '.join(report.subgroups) or 'none pre-registered'}. "
            f"Other relevant factors (devices, sites, skin types): {PLACEHOLDER}."
        ],
        "Metrics": [
            f"Pre-registered primary metric: {p['metric']} on {p.get('task') or p.get('partition')}; "
            "operating points chosen on validation: "
            + "; ".join(f"`{n}` {t.operating_rule.get('description', '')}" for n, t in report.tasks.items())
            + f". Error profile: {report.protocol.get('error_profile') or PLACEHOLDER}."
        ],
        "Evaluation data": [
            f"Test: {_counts(data.get('test'))}; validation: {_counts(data.get('validation'))}; "
            f"source {test_info.get('source', 'not recorded')}, split by "
            f"{test_info.get('split_level', 'not recorded')}."
        ],
        "Training data": [f"{_counts(data.get('training'))}."],
        "Quantitative analyses": [
            f"Primary: {_fmt_json(est)}; every number with its "
            "interval in report.md / report.json, subgroups and decision curves there."
        ],
        "Ethical considerations": [f"{PLACEHOLDER}"],
        "Caveats and recommendations": [f"- {w}" for w in report.warnings] or ["No warnings were raised."],
    }
    for title, body in sections.items():
        lines += [f"## {title}", "", *body, ""]
    return "\n".join(lines)
