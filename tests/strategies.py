"""Hypothesis strategies for random taxonomies, reusable by every test module.

``tree_dicts()`` draws a taxonomy in its file form (plain data, as YAML would parse it); ``taxonomies()`` the
loaded :class:`~hierclf.Taxonomy`. Shapes are random recursive trees: node ``i`` (pre-order of creation)
hangs under a uniformly drawn earlier node, children keep creation order. Options add awkward display
names, aliases, dataset codes and metadata, so that round trips and name lookup are exercised too.

Example::

    from hypothesis import given
    from strategies import taxonomies  # tests/ is on sys.path under pytest

    @given(taxonomies(max_nodes=20))
    def test_something(tax): ...
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from hierclf import Taxonomy
from hierclf.taxonomy.synthetic import tree_from_parents
from hierclf.taxonomy.validation import normalise_name

_WORD = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=5)
_TAIL = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=3)

#: snake_case ids (see ``ID_PATTERN``); short, so that drawn trees stay readable in failure reports
node_ids = st.builds(lambda head, tail: "_".join([head, *tail]), _WORD, st.lists(_TAIL, max_size=2))

#: display names and aliases: printable text with YAML-hostile characters (':', '#', quotes, 'yes', '1e3')
_TRICKY = st.sampled_from(
    [
        "yes",
        "no",
        "null",
        "~",
        "1e3",
        "0x10",
        "- x",
        "a: b",
        "#c",
        "'q'",
        '"dq"',
        "Melanoma, NOS",
        "T-Cell/NK",
        "CD30+",
        "Café-au-lait",
        "[x]",
        "{y}",
        "&a",
        "*b",
        " lead",
        "trail ",
        "---",
        "%x",
        "\ufeffbom",
        "!tag",
        "? k",
        "|",
        ">",
    ]
)
_PLAIN = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=8)
#: display names and aliases: one line of printable text (control and line-break characters are refused)
names = st.one_of(_TRICKY, _PLAIN).filter(lambda s: bool(s.strip()))
#: free text (metadata): names, and text with line breaks and control characters, which YAML must round-trip
_LINE_BREAKS = st.sampled_from(["a\x85b", "c\u2028d", "e\u2029f", "tab\there", "two\nlines", "\x85"])
free_text = st.one_of(names, _LINE_BREAKS)

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), names)
metadata_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=2), max_leaves=3)


@st.composite
def tree_shapes(
    draw: st.DrawFn, min_nodes: int = 2, max_nodes: int = 30, single_child: bool = True
) -> list[int]:
    """Parent of each node (``-1`` for node 0, the root); node ``i``'s parent is an earlier node.

    With ``single_child=False``, nodes left with exactly one child get a second leaf child.
    """
    n = draw(st.integers(min_nodes, max_nodes))
    parent = [-1] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    if not single_child:
        counts = [0] * n
        for p in parent[1:]:
            counts[p] += 1
        for node, c in enumerate(counts):
            if c == 1:
                parent.append(node)
    return parent


@st.composite
def tree_dicts(
    draw: st.DrawFn, min_nodes: int = 2, max_nodes: int = 30, *, single_child: bool = True, rich: bool = True
) -> dict[str, Any]:
    """A valid taxonomy as plain data (the parsed form of a YAML file).

    Args:
        min_nodes, max_nodes: size of the random shape (before single-child repair).
        single_child: allow internal nodes with one child (valid, but a warning).
        rich: draw display names, aliases, codes and metadata; otherwise names are ``Node <id>``.
    """
    parent = draw(tree_shapes(min_nodes, max_nodes, single_child))
    n = len(parent)
    ids = draw(st.lists(node_ids, min_size=n, max_size=n, unique=True))
    id_keys = {normalise_name(i) for i in ids}
    nodes: list[dict[str, Any]] = []
    used_alias_keys: set[str] = set()
    for i in range(n):
        node: dict[str, Any] = {"id": ids[i], "name": draw(names) if rich else f"Node {ids[i]}"}
        if rich:
            aliases = []
            for alias in draw(st.lists(names, max_size=2)):
                key = normalise_name(alias)
                if key and key not in used_alias_keys and key not in id_keys:  # valid files only
                    used_alias_keys.add(key)
                    aliases.append(alias)
            if aliases:
                node["aliases"] = aliases
            meta = (
                draw(st.dictionaries(free_text, metadata_values, max_size=1)) if draw(st.booleans()) else {}
            )
            if meta:
                node["metadata"] = meta
        nodes.append(node)
    root = tree_from_parents(parent, nodes)  # children in creation order
    if rich:
        for dataset in draw(st.lists(st.sampled_from(["ham", "isic", "fitz"]), max_size=2, unique=True)):
            coded = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
            for code, i in enumerate(coded):
                nodes[i].setdefault("codes", {})[dataset] = code
    out: dict[str, Any] = {"name": draw(node_ids), "root": root}
    if rich and draw(st.booleans()):
        out["description"] = draw(names)
    return out


@st.composite
def taxonomies(
    draw: st.DrawFn, min_nodes: int = 2, max_nodes: int = 30, *, single_child: bool = True, rich: bool = True
) -> Taxonomy:
    """A loaded random :class:`Taxonomy` (see :func:`tree_dicts`)."""
    return Taxonomy.from_dict(draw(tree_dicts(min_nodes, max_nodes, single_child=single_child, rich=rich)))
