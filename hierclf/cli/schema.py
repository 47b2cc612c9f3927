"""``hierclf schema``: print the JSON Schema of taxonomy files (for editors and other validators)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of taxonomy files",
        description="Print the JSON Schema exported from the pydantic model of taxonomy files.",
    )
    p.add_argument("--out", default=None, help="write to this file (atomically) instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hierclf.taxonomy.format import json_schema_text

    text = json_schema_text()
    if args.out:
        from hierclf.io.atomic import atomic_write_text

        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0
