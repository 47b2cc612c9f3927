"""``hierclf validate FILE...``: check taxonomy files, for people and for CI.

Exit codes: 0 all files valid, 1 any file invalid, 2 usage error (bad options, or a FILE that does not exist
or is a directory: nothing is validated then).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


def usage_problem(files: list[str]) -> str | None:
    """One line naming the FILE arguments that are not files, or ``None`` when all exist."""
    missing = [f for f in files if not Path(f).exists()]
    dirs = [f for f in files if Path(f).is_dir()]
    parts = []
    if missing:
        parts.append(f"file not found: {', '.join(missing)}")
    if dirs:
        parts.append(f"is a directory, not a taxonomy file: {', '.join(dirs)} (e.g. give {dirs[0]}/*.yaml)")
    return "; ".join(parts) or None


def register(sub: Any) -> None:
    p = sub.add_parser(
        "validate",
        help="check taxonomy files (exit 0 valid, 1 invalid, 2 usage error)",
        description="Validate taxonomy YAML files and report every problem with file:line:column.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="taxonomy YAML files")
    p.add_argument("--strict", action="store_true", help="treat warnings (e.g. single-child nodes) as errors")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    p.add_argument("-q", "--quiet", action="store_true", help="print problems only, no per-file summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hierclf.taxonomy.tree import Taxonomy
    from hierclf.taxonomy.validation import validate_file

    usage = usage_problem(args.files)
    if usage:
        print(f"hierclf validate: error: {usage}", file=sys.stderr)
        return EXIT_USAGE
    results = []
    for file in args.files:
        report = validate_file(file, strict=args.strict)
        summary: dict[str, Any] = {
            "file": file,
            "valid": report.ok,
            "errors": len(report.errors),
            "warnings": len(report.warnings),
            "problems": [p.to_dict() for p in report.problems],
        }
        if report.spec is not None:
            tax = Taxonomy(report.spec, check=False, source=file)
            summary.update(name=tax.name, nodes=len(tax.nodes), leaves=len(tax.leaves), height=tax.height)
        results.append((report, summary))
    ok = all(r.ok for r, _ in results)
    if args.format == "json":
        json.dump({"valid": ok, "files": [s for _, s in results]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for report, summary in results:
            for problem in report.problems:
                print(problem)
            if args.quiet:
                continue
            if report.ok:
                warn = f", {summary['warnings']} warning(s)" if summary["warnings"] else ""
                leaves = "1 leaf" if summary["leaves"] == 1 else f"{summary['leaves']} leaves"
                print(
                    f"{summary['file']}: ok ({summary['nodes']} nodes, {leaves}, "
                    f"height {summary['height']}{warn})"
                )
            else:
                print(
                    f"{summary['file']}: invalid ({summary['errors']} error(s), "
                    f"{summary['warnings']} warning(s))"
                )
    return 0 if ok else 1
