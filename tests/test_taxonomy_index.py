"""The tree index (:class:`~hierclf.taxonomy.index.TaxonomyIndex`) against networkx, on random and shipped
trees.

Every array and query of the index is compared with a brute-force answer from a networkx DiGraph built from
the file data: ``nx.descendants`` for subtrees and "is under", ``nx.lowest_common_ancestor`` for the LCA,
longest paths for heights, and the definition of a cut (every leaf under exactly one listed node).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import tree_dicts

from hierclf import Taxonomy, TaxonomyError
from hierclf.taxonomy.synthetic import random_taxonomy

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "taxonomy").glob("*.yaml"))
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def graph_of(data: dict[str, Any]) -> nx.DiGraph:
    g = nx.DiGraph()
    stack = [data["root"]]
    while stack:
        node = stack.pop()
        g.add_node(node["id"])
        for child in node.get("children", []):
            g.add_edge(node["id"], child["id"])
        stack.extend(node.get("children", []))
    return g


def check_index(tax: Taxonomy, g: nx.DiGraph, rng: np.random.Generator) -> None:
    idx = tax.index
    root = tax.root
    n = idx.n_nodes
    assert list(idx.nodes) == list(nx.dfs_preorder_nodes(g, root))
    desc = {v: nx.descendants(g, v) for v in idx.nodes}
    for i, v in enumerate(idx.nodes):
        below = set(idx.nodes[i + 1 : idx.subtree_end[i]])
        assert below == desc[v]
        assert idx.depth[i] == nx.shortest_path_length(g, root, v)
        assert idx.height[i] == max((nx.shortest_path_length(g, v, d) for d in desc[v]), default=0)
        assert bool(idx.is_leaf[i]) == (g.out_degree(v) == 0)
        anc = [a for a in idx.ancestor_table[i] if a >= 0]
        assert [idx.nodes[a] for a in anc] == nx.shortest_path(g, root, v)
    assert [list(level) for level in idx.levels] == [
        [i for i in range(n) if idx.depth[i] == d] for d in range(int(idx.depth.max()) + 1)
    ]
    a, b = rng.integers(0, n, size=(2, 200))
    under = idx.is_under(a, b)
    assert under.tolist() == [
        idx.nodes[x] == idx.nodes[y] or idx.nodes[x] in desc[idx.nodes[y]] for x, y in zip(a, b)
    ]
    lca = idx.lca(a, b)
    expected = [idx.position[nx.lowest_common_ancestor(g, idx.nodes[x], idx.nodes[y])] for x, y in zip(a, b)]
    assert lca.tolist() == expected
    values = rng.integers(0, 100, size=n)
    sums = idx.subtree_sums(values)
    assert sums.tolist() == [
        int(values[i] + sum(values[idx.position[d]] for d in desc[v])) for i, v in enumerate(idx.nodes)
    ]


def check_cuts(tax: Taxonomy, g: nx.DiGraph, rng: np.random.Generator) -> None:
    idx = tax.index
    leaves = list(idx.leaves)
    for _ in range(20):
        k = int(rng.integers(1, min(idx.n_nodes, 8) + 1))
        rows = rng.choice(idx.n_nodes, size=k, replace=bool(rng.integers(0, 2)))
        names = [idx.nodes[r] for r in rows]
        under = {v: {v} | nx.descendants(g, v) for v in set(names)}
        holders = [sum(leaf in under[v] for v in set(names)) for leaf in leaves]
        check = idx.check_cut(rows)
        assert check.uncovered.tolist() == [i for i, h in enumerate(holders) if h == 0]
        nested = any(a != b and b in under[a] for a in set(names) for b in set(names))
        assert bool(check.overlaps) == nested
        for x, y in check.overlaps:
            assert idx.nodes[y] in under[idx.nodes[x]] and x != y
        assert bool(check.repeated) == (len(set(names)) < len(names))
        is_cut = all(h == 1 for h in holders) and len(set(names)) == len(names)
        assert check.ok == is_cut
        if not nested:
            owner = idx.cut_of(np.unique(rows))
            cut = list(np.unique(rows))
            for i, v in enumerate(idx.nodes):
                mine = [j for j, c in enumerate(cut) if v in under[idx.nodes[c]]]
                assert owner[i] == (mine[0] if mine else -1)
        if is_cut:
            assert tax.cut(names) == tuple(sorted(names, key=idx.position.__getitem__))
        else:
            with pytest.raises(TaxonomyError):
                tax.cut(names)


@SETTINGS
@given(tree_dicts(max_nodes=25), st.integers(0, 10_000))
def test_index_matches_networkx_on_random_trees(data: dict[str, Any], seed: int) -> None:
    tax = Taxonomy.from_dict(data)
    g = graph_of(data)
    rng = np.random.default_rng(seed)
    check_index(tax, g, rng)
    check_cuts(tax, g, rng)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_index_matches_networkx_on_shipped_trees(path: Path) -> None:
    tax = Taxonomy.from_yaml(path)
    g = graph_of(tax.to_dict())
    rng = np.random.default_rng(0)
    check_index(tax, g, rng)
    check_cuts(tax, g, rng)


def test_index_arrays_are_read_only() -> None:
    idx = random_taxonomy(30, seed=1).index
    for array in (idx.parent, idx.depth, idx.subtree_end, idx.leaf_start, idx.height, idx.ancestor_table):
        with pytest.raises(ValueError):
            array[0] = 5


def test_queries_accept_aliases() -> None:
    tax = Taxonomy.from_yaml(REPO / "taxonomy" / "dermamnist.yaml")
    assert tax.ancestors("mel") == tax.ancestors("melanoma")
    assert tax.depth("MEL") == tax.depth("melanoma")
    assert tax.lca("mel", "bcc") == "malignant"
    assert tax.path("nv") == tax.path("melanocytic_nevus")
    assert tax.leaves_under("mel") == ("melanoma",)
    assert tax.is_under("mel", "malignant") and not tax.is_under("nv", "malignant")
    assert tax.descendants("malignant") == tax.descendants("Malignant")


def test_large_cut_check_is_linear() -> None:
    """A cut of every leaf of a 20,000-leaf tree is checked without a pairwise table (memory would blow)."""
    tax = random_taxonomy(20_000, seed=3)
    rows = tax.index.leaf_rows
    check = tax.index.check_cut(rows)
    assert check.ok
    bad = tax.index.check_cut(np.concatenate(([0], rows)))  # the root over every leaf
    assert len(bad.overlaps) == len(rows) and not bad.uncovered.size


def test_rows_of_sample_labels() -> None:
    tax = Taxonomy.from_yaml(REPO / "taxonomy" / "dermamnist.yaml")
    labels = np.array(["melanoma", "melanocytic_nevus", "melanoma", "malignant"])
    assert tax.index.rows_of(labels).tolist() == [tax.index.position[v] for v in labels]
    assert tax.index.rows_of(np.array([], dtype=str)).shape == (0,)
