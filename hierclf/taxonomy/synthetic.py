"""Synthetic taxonomies for tests and benchmarks: random trees and random cuts, one generator for all.

A tree is generated as a *parent array* in pre-order (node ``i``'s parent is an earlier node) and built by
:func:`tree_from_parents`; the property tests' hypothesis strategies (``tests/strategies.py``) draw their
parent arrays themselves, so that hypothesis can shrink them, and build their trees with the same function.
:func:`random_taxonomy` draws Esteva-scale trees (about 2,032 leaves, depth up to 9, random fan-out) and
larger ones for the benchmarks; :func:`random_cut` draws a cut of any tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hierclf.errors import HierclfError
from hierclf.taxonomy.format import NodeSpec, TaxonomyFile
from hierclf.taxonomy.tree import Taxonomy

__all__ = ["random_cut", "random_parents", "random_taxonomy", "tree_from_parents"]


class SyntheticTreeError(HierclfError, ValueError):
    """Impossible settings for a synthetic tree."""


def tree_from_parents(parent: Sequence[int], nodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The root node mapping (file form) of the tree whose node ``i`` is ``nodes[i]`` under ``parent[i]``.

    ``parent[0]`` is ``-1`` (the root) and every other node's parent is an earlier node; children keep
    their order in ``nodes``. The mappings of ``nodes`` receive their ``children`` lists.

    >>> root = tree_from_parents([-1, 0, 0, 1], [{"id": f"n{i}", "name": f"N{i}"} for i in range(4)])
    >>> [c["id"] for c in root["children"]], root["children"][0]["children"][0]["id"]
    (['n1', 'n2'], 'n3')
    """
    if len(parent) != len(nodes) or not parent or parent[0] != -1:
        raise SyntheticTreeError("parent[0] must be -1 and parent must have one entry per node")
    for i in range(len(nodes) - 1, 0, -1):  # building a tree visits each node once
        if not 0 <= parent[i] < i:
            raise SyntheticTreeError(f"node {i}'s parent must be an earlier node, got {parent[i]}")
        nodes[parent[i]].setdefault("children", []).insert(0, nodes[i])
    return nodes[0]


def random_parents(n_leaves: int, *, max_depth: int, max_fan_out: int, rng: np.random.Generator) -> list[int]:
    """A pre-order parent array with exactly ``n_leaves`` leaves, height at most ``max_depth`` and internal
    nodes of 2..``max_fan_out`` children.

    Leaves are split recursively: a node that must hold ``k`` leaves splits ``k`` among a random number of
    children, until ``k == 1`` or the depth limit (then all ``k`` leaves hang directly under the node).
    """
    parent: list[int] = []
    stack: list[tuple[int, int, int]] = [(n_leaves, 0, -1)]  # (leaves to hold, depth, parent): pre-order
    while stack:
        k, depth, up = stack.pop()
        me = len(parent)
        parent.append(up)
        if k == 1:
            continue
        if depth + 1 >= max_depth:  # last internal level: all k leaves directly below
            parent.extend([me] * k)
            continue
        fan = int(rng.integers(2, min(max_fan_out, k) + 1))
        cuts = np.sort(rng.choice(np.arange(1, k), size=fan - 1, replace=False))
        sizes = np.diff(np.concatenate(([0], cuts, [k])))
        stack.extend((int(size), depth + 1, me) for size in sizes[::-1])
    return parent


def random_taxonomy(
    n_leaves: int, *, max_depth: int = 9, max_fan_out: int = 8, seed: int = 0, name: str = "synthetic"
) -> Taxonomy:
    """A random tree with exactly ``n_leaves`` leaves, height at most ``max_depth``, and internal nodes
    of 2..``max_fan_out`` children (so no single-child nodes); see :func:`random_parents`.

    Node ids are ``n0, n1, ...`` in pre-order.

    >>> tax = random_taxonomy(50, max_depth=4, seed=1)
    >>> len(tax.leaves), tax.height <= 4
    (50, True)
    """
    if n_leaves < 2:
        raise SyntheticTreeError(f"n_leaves must be at least 2, got {n_leaves}")
    if max_depth < 1 or max_fan_out < 2:
        raise SyntheticTreeError("max_depth must be >= 1 and max_fan_out >= 2")
    parent = random_parents(
        n_leaves, max_depth=max_depth, max_fan_out=max_fan_out, rng=np.random.default_rng(seed)
    )
    nodes: list[dict[str, Any]] = [{"id": f"n{i}", "name": f"Node n{i}"} for i in range(len(parent))]
    root = tree_from_parents(parent, nodes)
    return Taxonomy(TaxonomyFile(name=name, root=NodeSpec.model_validate(root)), check=False)


def random_cut(taxonomy: Taxonomy, rng: np.random.Generator, *, stop: float = 0.5) -> list[str]:
    """A random cut: walking down from the root, each node below it stops the walk (becomes a cut node)
    with probability ``stop``; leaves always do. Node ids in pre-order."""
    idx = taxonomy.index
    stops = (rng.random(idx.n_nodes) < stop) | idx.is_leaf
    stops[0] = bool(idx.is_leaf[0])
    cut = idx.all_proper_ancestors(~stops) & stops
    return [idx.nodes[r] for r in np.flatnonzero(cut).tolist()]
