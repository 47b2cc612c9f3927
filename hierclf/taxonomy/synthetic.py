"""Synthetic taxonomies for tests and benchmarks: random trees of a chosen size and shape.

The benchmarks need Esteva-scale trees (about 2,032 leaves, depth up to 9, random fan-out) and larger ones;
property tests need many small random trees. Both come from :func:`random_taxonomy`.
"""

from __future__ import annotations

import numpy as np

from hierclf.taxonomy.format import NodeSpec, TaxonomyFile
from hierclf.taxonomy.tree import Taxonomy


def random_taxonomy(
    n_leaves: int, *, max_depth: int = 9, max_fan_out: int = 8, seed: int = 0, name: str = "synthetic"
) -> Taxonomy:
    """A random tree with exactly ``n_leaves`` leaves, height at most ``max_depth``, and internal nodes
    of 2..``max_fan_out`` children (so no single-child nodes).

    Leaves are split recursively: a node that must hold ``k`` leaves splits ``k`` among a random number of
    children, until ``k == 1`` or the depth limit (then all ``k`` leaves hang directly under the node).
    Node ids are ``n0, n1, ...`` in pre-order.

    >>> tax = random_taxonomy(50, max_depth=4, seed=1)
    >>> len(tax.leaves), tax.height <= 4
    (50, True)
    """
    if n_leaves < 2:
        raise ValueError(f"n_leaves must be at least 2, got {n_leaves}")
    if max_depth < 1 or max_fan_out < 2:
        raise ValueError("max_depth must be >= 1 and max_fan_out >= 2")
    rng = np.random.default_rng(seed)
    counter = iter(range(10**9))

    def build(k: int, depth: int) -> NodeSpec:
        ident = f"n{next(counter)}"
        if k == 1:
            return NodeSpec(id=ident, name=f"Node {ident}")
        if depth + 1 >= max_depth:
            # last internal level: all k leaves directly below
            kids = [NodeSpec(id=f"n{next(counter)}", name="leaf") for _ in range(k)]
            return NodeSpec(id=ident, name=f"Node {ident}", children=kids)
        fan = int(rng.integers(2, min(max_fan_out, k) + 1))
        # split k into `fan` positive parts at random
        cuts = np.sort(rng.choice(np.arange(1, k), size=fan - 1, replace=False))
        sizes = np.diff(np.concatenate(([0], cuts, [k])))
        kids = []
        for size in sizes:
            kids.append(build(int(size), depth + 1))
        return NodeSpec(id=ident, name=f"Node {ident}", children=kids)

    # pre-order ids: build() draws the node's id before its children's
    root = build(n_leaves, 0)
    return Taxonomy(TaxonomyFile(name=name, root=root), check=False)
