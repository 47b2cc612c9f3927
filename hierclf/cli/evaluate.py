"""``hierclf evaluate``: evaluate predictions under a pre-registered protocol and write the report.

Several prediction files per split are several seeds (paired by position; the same count for ``--val`` and
``--test``), tested on the same samples. Writes ``report.md``, ``report.html``, ``checklist.md`` (and
``model_card.md`` for predictions of ``hierclf train``), ``report.json``, ``figures/*.png`` / ``*.svg``
(and with ``--save-replicates`` ``replicates.npz``) into ``--out``; the report records the SHA-256 of every
input, the code's version, the time and the command line, and checks the protocol against the record
``hierclf study`` wrote when training started. With ``--ensemble mean`` the files are the members of one seed
ensemble, evaluated as one model (the mean of their probabilities, its own validation-chosen thresholds, the
same intervals); with ``--ensemble or`` they are the models of an or rule (a case is flagged when any model
flags it at its own validation threshold), written as ``or_rule.md`` and ``or_rule.json``. Exit codes: 0
done, 1 bad input (one line on stderr), 2 usage error, 3 done with warnings under ``--strict`` (the report is
written).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="clinical evaluation report: validation-chosen operating points, grouped CIs, seeds",
        description="Evaluate prediction files under a protocol: per task AUC and sensitivity/specificity/"
        "PPV/NPV on test at the threshold chosen on validation, per-partition recall and balanced accuracy, "
        "hierarchical errors, calibration, subgroups and readers, with bootstrap CIs over patients/lesions "
        "and mean ± std over seeds.",
    )
    p.add_argument("--taxonomy", required=True, metavar="T", help="taxonomy YAML file")
    p.add_argument("--protocol", required=True, metavar="P", help="protocol YAML file")
    p.add_argument(
        "--val",
        nargs="+",
        default=[],
        metavar="FILE",
        help="validation prediction files (.npz/.csv), one per seed; thresholds are chosen here",
    )
    p.add_argument(
        "--test",
        nargs="+",
        required=True,
        metavar="FILE",
        help="test prediction files (.npz/.csv), one per seed, in the same order as --val",
    )
    p.add_argument(
        "--metadata",
        default=None,
        metavar="CSV",
        help="metadata CSV keyed by id/image_id (group column, subgroup columns)",
    )
    p.add_argument(
        "--readers",
        default=None,
        metavar="CSV",
        help="reader operating points (reader,sensitivity,specificity[,task]) or case-level reads "
        "(reader,case_id,decision and/or score[,task]: paired tests per reader, and mrmc_long.csv for "
        "MRMCaov / iMRMC)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--allow-test-thresholds",
        action="store_true",
        help="without --val, choose thresholds on test (optimistic; labelled so in the report)",
    )
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="the predictions come from synthetic data: banner every section of the report",
    )
    p.add_argument(
        "--save-replicates",
        action="store_true",
        help="also write OUT/replicates.npz: every bootstrap replicate array, keyed by its report.json path",
    )
    p.add_argument(
        "--allow-seed-mismatch",
        action="store_true",
        help="report seeds tested on different samples, or repeating the same file, instead of refusing "
        "them (a loud warning and a per-seed table)",
    )
    p.add_argument(
        "--ensemble",
        choices=("mean", "or"),
        default=None,
        help="the files are the members of one ensemble: 'mean' evaluates the mean of their probabilities "
        "as one model; 'or' reports the or rule (any member flags, at its own validation threshold) as "
        "or_rule.md / or_rule.json",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="every warning (leakage, fewer seeds than pre-registered, a changed protocol, a missed target, "
        "...) makes the exit status 3, after the report is written",
    )
    p.set_defaults(func=run)


def _run_or_rule(args: argparse.Namespace, taxonomy: Any, protocol: Any) -> int:
    from pathlib import Path

    from hierclf.evaluation.ensembles import or_rule, write_or_rule
    from hierclf.evaluation.pipeline import EvaluationError

    if args.metadata or args.readers or args.save_replicates:
        raise EvaluationError(
            "--ensemble or takes its groups from the prediction files; --metadata, --readers and "
            "--save-replicates apply to a model's report (evaluate with --ensemble mean, or each member)"
        )
    names = [Path(f).stem for f in args.test]
    report = or_rule(taxonomy, protocol, args.val, args.test, names=names)
    written = write_or_rule(report, args.out)
    for name, task in report.tasks.items():
        rates = ", ".join(f"{k} {v['value']:.3f}" for k, v in task.metrics.items())
        print(f"  {name}: or rule of {len(names)} models: {rates}")
    print(f"wrote {len(written)} files to {args.out} (or_rule.md, or_rule.json)")
    return 0


def run(args: argparse.Namespace) -> int:
    from hierclf.evaluation.pipeline import EvaluationError, evaluate
    from hierclf.evaluation.protocol_format import load_protocol
    from hierclf.evaluation.report import write_report
    from hierclf.taxonomy.tree import Taxonomy

    if args.val and len(args.val) != len(args.test):
        raise EvaluationError(
            f"{len(args.val)} --val and {len(args.test)} --test files: give one of each per "
            "seed, in the same order"
        )
    if args.ensemble and not args.val:
        raise EvaluationError(
            f"--ensemble {args.ensemble} needs --val: each ensemble's thresholds are chosen on validation"
        )
    from hierclf.evaluation.provenance import run_record

    taxonomy = Taxonomy.from_yaml(args.taxonomy)
    protocol = load_protocol(args.protocol, taxonomy)
    if args.ensemble == "or":
        return _run_or_rule(args, taxonomy, protocol)
    record = run_record(
        protocol=args.protocol, taxonomy=args.taxonomy, val=args.val, test=args.test, argv=_argv(args)
    )
    how: Any = evaluate
    if args.ensemble == "mean":
        from hierclf.evaluation.ensembles import evaluate_seed_mean as how
    report = how(
        taxonomy,
        protocol,
        args.val,
        args.test,
        metadata=args.metadata,
        readers=args.readers,
        synthetic=args.synthetic,
        allow_test_thresholds=True if args.allow_test_thresholds else None,
        allow_seed_mismatch=True if args.allow_seed_mismatch else None,
        provenance=record,
    )
    written = write_report(report, args.out, save_replicates=args.save_replicates)
    _print_summary(report)
    extra = ", replicates.npz" if args.save_replicates else ""
    print(
        f"wrote {len(written)} files to {args.out} (report.md, report.html, checklist.md, "
        f"report.json{extra}, figures/)"
    )
    return strict_exit(report.warnings, strict=args.strict)


def _argv(args: argparse.Namespace) -> list[str] | None:
    return list(args.argv) if getattr(args, "argv", None) else None


def strict_exit(warnings: list[str], *, strict: bool) -> int:
    """0, or under ``--strict`` with warnings 3 and one line on stderr (the outputs are written)."""
    import sys

    if strict and warnings:
        print(
            f"hierclf: error: --strict: {len(warnings)} warning(s), e.g. {warnings[0].split(':')[0]}; "
            "see the top of report.md",
            file=sys.stderr,
        )
        return 3
    return 0


def _print_summary(report: Any) -> None:
    """The banner, the warning count, the primary metric, and the summary table (labels from the catalog)."""
    from hierclf.evaluation.report import summary_rows, text_table

    primary = report.primary
    est = primary.get("estimate") or {}
    target = primary.get("task") or primary.get("partition")
    value, ci = est.get("value"), est.get("ci") or [None, None]
    show = (
        "n/a"
        if value is None
        else f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if None not in ci else "")
    )
    if report.synthetic:
        print("SYNTHETIC DATA — not a clinical result")
    if report.warnings:  # each was logged to stderr as it arose
        print(f"{len(report.warnings)} warning(s): see the top of report.md")
    alerts = "".join(f" {a}" for a in getattr(report, "alerts", []))
    print(
        f"primary metric {primary['metric']} on {target}: {show} ({report.n_seeds} seed(s), thresholds "
        f"chosen on {report.threshold_source.value}){alerts}"
    )
    for line in text_table(summary_rows(report)):
        print(f"  {line}")
