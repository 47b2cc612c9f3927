"""``hierclf check-protocol PROTOCOL...``: check evaluation protocols against their taxonomy, for CI.

Each protocol is read and resolved against ``--taxonomy`` or, without it, the taxonomy its ``training:``
mapping names (``taxonomy:``, relative to the protocol). Every problem is printed as ``file:line:column:
severity: message``. Exit codes: 0 every protocol valid, 1 any invalid, 2 usage error (a file that does not
exist, a protocol without a taxonomy to check against). The pre-commit hook ``hierclf-check-protocol`` runs
it; never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check-protocol",
        help="check evaluation protocols against their taxonomy (exit 0 valid, 1 invalid, 2 usage error)",
        description="Validate evaluation protocol YAML files (fields, tasks, partitions, nodes of the "
        "taxonomy) and report every problem with file:line:column.",
    )
    p.add_argument("files", nargs="+", metavar="PROTOCOL", help="protocol YAML files")
    p.add_argument(
        "--taxonomy",
        "-t",
        default=None,
        metavar="T",
        help="taxonomy file (default: each protocol's training.taxonomy, relative to the protocol)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print problems only, no per-file summary")
    p.set_defaults(func=run)


def _taxonomy_of(protocol: Path, given: str | None) -> tuple[Path | None, list[Any]]:
    """The taxonomy a protocol is checked against (``--taxonomy``, else its ``training.taxonomy``) and the
    protocol file's YAML problems (a file that cannot be read names no taxonomy)."""
    if given is not None:
        return Path(given), []
    from hierclf.io.yaml_files import load_located_file

    doc = load_located_file(protocol)
    training = doc.data.get("training") if isinstance(doc.data, dict) else None
    name = training.get("taxonomy") if isinstance(training, dict) else None
    return ((protocol.parent / name) if isinstance(name, str) else None), list(doc.problems)


def run(args: argparse.Namespace) -> int:
    from hierclf.errors import FileFormatError
    from hierclf.evaluation.protocol_format import load_protocol
    from hierclf.taxonomy.tree import Taxonomy

    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        print(f"hierclf check-protocol: error: not a file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    failed = False
    for file in args.files:
        taxonomy_path, unreadable = _taxonomy_of(Path(file), args.taxonomy)
        if unreadable:
            failed = True
            print(*unreadable, sep="\n")
            continue
        if taxonomy_path is None:
            print(
                f"hierclf check-protocol: error: {file}: no taxonomy to check it against; give --taxonomy or "
                "name it in the protocol (training: {taxonomy: <path>})",
                file=sys.stderr,
            )
            return EXIT_USAGE
        try:
            protocol = load_protocol(file, Taxonomy.from_yaml(taxonomy_path))
        except FileFormatError as exc:
            failed = True
            for problem in exc.problems:
                print(problem)
            continue
        if not args.quiet:
            print(
                f"{file}: valid against {taxonomy_path} ({len(protocol.tasks)} tasks, "
                f"{len(protocol.partitions)} partitions)"
            )
    return 1 if failed else 0
