"""``hierclf compare``: a paired comparison of two or more models on the same test cases under a protocol.

Each ``--model NAME`` is followed by its ``--val`` and ``--test`` files (one per seed, in the same order);
the i-th ``--val`` and ``--test`` belong to the i-th ``--model``. ``--or-rule NAME`` makes that model an or
rule: its files are its members' (one per member), and a case is flagged when any member flags it at its
own validation threshold. Writes ``comparison.md``,
``comparison.json`` and ``figures/roc_<task>.png`` (and with ``--save-replicates`` ``replicates.npz``) into
``--out``. Exit codes: 0 done, 1 bad input (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="paired comparison of models: differences with clustered CIs, DeLong, McNemar",
        description="Compare two or more models tested on the same cases under one protocol: per task the "
        "differences in AUC, partial AUC, and sensitivity and specificity at each model's own "
        "validation-chosen threshold, with paired group-clustered bootstrap CIs and p-values, DeLong's test "
        "of the AUC difference and McNemar's exact test at the operating points; per partition the "
        "differences in balanced accuracy and per-class recall.",
        epilog="Example: hierclf compare --taxonomy T.yaml --protocol P.yaml --model resnet --val r/val0.npz "
        "--test r/test0.npz --model vit --val v/val0.npz --test v/test0.npz --metadata meta.csv --out cmp/",
    )
    p.add_argument("--taxonomy", required=True, metavar="T", help="taxonomy YAML file")
    p.add_argument("--protocol", required=True, metavar="P", help="protocol YAML file")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME",
        help="a model's name; give it once per model, each followed by its --val and --test files",
    )
    p.add_argument(
        "--val",
        action="append",
        nargs="+",
        default=[],
        metavar="FILE",
        help="the preceding model's validation prediction files, one per seed (thresholds are chosen here)",
    )
    p.add_argument(
        "--test",
        action="append",
        nargs="+",
        required=True,
        metavar="FILE",
        help="the preceding model's test prediction files, one per seed, in the same order as its --val",
    )
    p.add_argument(
        "--or-rule",
        action="append",
        default=[],
        metavar="NAME",
        help="the model NAME is an or rule over its files (one per member, each at its own validation "
        "threshold), not seeds (repeat for several)",
    )
    p.add_argument(
        "--metadata", default=None, metavar="CSV", help="metadata CSV keyed by id/image_id (the group column)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--allow-test-thresholds",
        action="store_true",
        help="without --val, choose each model's thresholds on test (optimistic; labelled so)",
    )
    p.add_argument(
        "--synthetic", action="store_true", help="the predictions come from synthetic data: banner it"
    )
    p.add_argument(
        "--save-replicates",
        action="store_true",
        help="also write OUT/replicates.npz: every model's and every difference's bootstrap replicates",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hierclf.errors import UnknownNameError
    from hierclf.evaluation.comparison import ModelInputs, compare
    from hierclf.evaluation.comparison_report import write_comparison
    from hierclf.evaluation.notices import EvaluationError
    from hierclf.evaluation.protocol_format import load_protocol
    from hierclf.taxonomy.tree import Taxonomy

    names, tests, vals = list(args.model), list(args.test), list(args.val)
    if len(tests) != len(names) or (vals and len(vals) != len(names)):
        raise EvaluationError(
            f"{len(names)} --model, {len(vals)} --val and {len(tests)} --test groups: give each --model its "
            "own --val and --test files (or no --val at all with --allow-test-thresholds)"
        )
    for name in args.or_rule:
        if name not in names:
            raise UnknownNameError("model", name, names)
    models = [
        ModelInputs(n, vals[i] if vals else None, tests[i], rule="or" if n in args.or_rule else "seeds")
        for i, n in enumerate(names)
    ]
    taxonomy = Taxonomy.from_yaml(args.taxonomy)
    protocol = load_protocol(args.protocol, taxonomy)
    report = compare(
        taxonomy,
        protocol,
        models,
        metadata=args.metadata,
        synthetic=args.synthetic,
        allow_test_thresholds=True if args.allow_test_thresholds else None,
    )
    written = write_comparison(report, args.out, save_replicates=args.save_replicates)
    _print_summary(report)
    print(f"wrote {len(written)} files to {args.out} (comparison.md, comparison.json, figures/)")
    return 0


def _print_summary(report: Any) -> None:
    """One line per task, metric and pair of models: the difference, its interval and p-values."""
    from hierclf.evaluation.report import format_estimate, text_table

    if report.synthetic:
        print("SYNTHETIC DATA — not a clinical result")
    if report.warnings:
        print(f"{len(report.warnings)} warning(s): see the top of comparison.md")
    rows = []
    for name, task in report.tasks.items():
        for mc in task.metrics.values():
            for pair, est in mc.differences.items():
                test = mc.tests.get(pair, {})
                analytic = test.get("p_value")
                rows.append(
                    {
                        "task": name,
                        "metric": mc.label,
                        "difference": pair,
                        "value [CI]": format_estimate(est),
                        "p (bootstrap)": f"{mc.p_values[pair]:.3g}",
                        "p (analytic)": ""
                        if analytic is None
                        else f"{analytic:.3g} ({test['test'].split(' (')[0]})",
                    }
                )
    for line in text_table(rows):
        print(f"  {line}")
