"""``hierclf show FILE [--depth N]``: print the tree with ids, names and leaf counts."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "show",
        help="print a taxonomy as a tree with ids, names and leaf counts",
        description="Print the tree: one line per node with its id, display name and the "
        "number of leaves under it.",
    )
    p.add_argument("file", metavar="FILE", help="taxonomy YAML file")
    p.add_argument(
        "--depth",
        type=_non_negative,
        default=None,
        metavar="N",
        help="show nodes down to depth N only (root is 0)",
    )
    p.add_argument("--node", default=None, help="show only the subtree under this node (id or alias)")
    p.set_defaults(func=run)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def _leaves(count: int) -> str:
    return f"{count} leaf" if count == 1 else f"{count} leaves"


def render_tree(tax: Any, depth: int | None = None, node: str | None = None) -> list[str]:
    """Lines of the tree drawing (used by ``show`` and the docs)."""
    from hierclf.taxonomy.tree import Taxonomy

    assert isinstance(tax, Taxonomy)
    top = tax.resolve(node) if node else tax.root
    base = tax.depth(top)
    lines = [f"{top}  {tax.display_name(top)}  [{_leaves(len(tax.leaves_under(top)))}]"]

    def walk(n: str, prefix: str) -> None:
        kids = tax.children(n)
        for i, child in enumerate(kids):
            last = i == len(kids) - 1
            count = len(tax.leaves_under(child))
            label = "leaf" if tax.is_leaf(child) else _leaves(count)
            lines.append(f"{prefix}{'└── ' if last else '├── '}{child}  {tax.display_name(child)}  [{label}]")
            if depth is None or tax.depth(child) - base < depth:
                walk(child, prefix + ("    " if last else "│   "))

    if depth is None or depth > 0:
        walk(top, "")
    return lines


def run(args: argparse.Namespace) -> int:
    import sys

    from hierclf.cli.validate import EXIT_USAGE, usage_problem
    from hierclf.taxonomy.tree import Taxonomy

    usage = usage_problem([args.file])
    if usage:
        print(f"hierclf show: error: {usage}", file=sys.stderr)
        return EXIT_USAGE
    tax = Taxonomy.from_yaml(args.file)
    print(f"{tax.name}: {len(tax.nodes)} nodes, {len(tax.leaves)} leaves, height {tax.height}")
    for line in render_tree(tax, args.depth, args.node):
        print(line)
    return 0
