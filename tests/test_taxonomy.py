"""Every :class:`Taxonomy` query against a brute-force networkx answer, on random trees and shipped files.

The reference graph is built here from the *file data* (the dict the YAML parses to), not from
``Taxonomy.graph``, and every expected answer comes from networkx (``nx.descendants``,
``nx.lowest_common_ancestor``, ``nx.shortest_path`` on the undirected tree, ``nx.dfs_preorder_nodes``) or from
a direct definition (a cut is a node set that contains exactly one ancestor-or-self of every leaf).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import tree_dicts

from hierclf import Taxonomy, TaxonomyError, UnknownNameError
from hierclf.taxonomy.synthetic import random_taxonomy
from hierclf.taxonomy.validation import normalise_name

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "taxonomy").glob("*.yaml"))
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the reference ----------------------------------------------------------------------------------------


class Reference:
    """Brute-force answers from a networkx DiGraph built from the file data."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.g = nx.DiGraph()
        self.spec: dict[str, dict[str, Any]] = {}
        stack = [data["root"]]
        while stack:
            node = stack.pop()
            self.spec[node["id"]] = node
            self.g.add_node(node["id"])
            for child in node.get("children", []):
                self.g.add_edge(node["id"], child["id"])  # insertion order = children order
            stack.extend(node.get("children", []))
        self.root = data["root"]["id"]
        self.u = self.g.to_undirected()
        self.nodes = list(nx.dfs_preorder_nodes(self.g, self.root))
        self.leaves = [n for n in self.nodes if self.g.out_degree(n) == 0]
        self._paths = nx.shortest_path(self.g, self.root)  # root -> every node
        self.desc = {n: nx.descendants(self.g, n) for n in self.nodes}
        self._aliases = {n: {normalise_name(a) for a in self.spec[n].get("aliases", [])} for n in self.nodes}

    def ancestors(self, n: str) -> list[str]:
        return list(reversed(self._paths[n][:-1]))

    def leaves_under(self, n: str) -> list[str]:
        below = self.desc[n] | {n}
        return [leaf for leaf in self.leaves if leaf in below]

    def is_cut(self, nodes: list[str]) -> bool:
        if not nodes or len(set(nodes)) != len(nodes):
            return False
        return all(sum(a in nodes for a in [leaf, *self.ancestors(leaf)]) == 1 for leaf in self.leaves)

    def resolve(self, name: str) -> str | None:
        """Priority: id (exact or normalised), then alias, then an unambiguous display name."""
        key = normalise_name(name)
        for n in self.nodes:
            if n in (name, key):
                return n
        for n in self.nodes:
            if key in self._aliases[n]:
                return n
        owners = [n for n in self.nodes if normalise_name(self.spec[n]["name"]) == key]
        return owners[0] if len(owners) == 1 else None


def random_cut(ref: Reference, rng: np.random.Generator) -> list[str]:
    """A valid cut: walk down from the root, stopping at each node with probability 1/2 (leaves always)."""
    out, stack = [], [ref.root]
    while stack:
        n = stack.pop()
        kids = list(ref.g.successors(n))
        if not kids or (n != ref.root and rng.random() < 0.5):
            out.append(n)
        else:
            stack.extend(kids)
    return out


def check_all_queries(tax: Taxonomy, data: dict[str, Any], seed: int = 0, max_nodes: int = 60) -> None:
    """Compare every query with the reference; per-node checks on at most ``max_nodes`` sampled nodes."""
    ref = Reference(data)
    rng = np.random.default_rng(seed)
    sample = ref.nodes
    if len(ref.nodes) > max_nodes:
        sample = [str(n) for n in rng.choice(ref.nodes, max_nodes, replace=False)]
    assert tax.root == ref.root
    assert list(tax.nodes) == ref.nodes
    assert list(tax.leaves) == ref.leaves
    assert set(tax.graph.edges) == set(ref.g.edges)
    assert tax.height == max(nx.shortest_path_length(ref.g, ref.root).values())
    for n in sample:
        assert list(tax.children(n)) == list(ref.g.successors(n))
        preds = list(ref.g.predecessors(n))
        assert tax.parent(n) == (preds[0] if preds else None)
        assert list(tax.ancestors(n)) == ref.ancestors(n)
        assert set(tax.descendants(n)) == nx.descendants(ref.g, n)
        assert list(tax.descendants(n)) == [m for m in ref.nodes if m in ref.desc[n]]
        assert list(tax.leaves_under(n)) == ref.leaves_under(n)
        assert tax.depth(n) == nx.shortest_path_length(ref.g, ref.root, n)
        assert tax.is_leaf(n) == (ref.g.out_degree(n) == 0)
        assert list(tax.path(n)) == nx.shortest_path(ref.g, ref.root, n)
        assert tax.node(n).name == ref.spec[n]["name"]
        sub = tax.subtree(n)
        assert list(sub.nodes) == [n] + [m for m in ref.nodes if m in ref.desc[n]]
        assert sub.root == n and all(sub.node(m) == tax.node(m) for m in sub.nodes)
    pairs = list(itertools.product(sample, repeat=2))
    if len(pairs) > 200:
        pairs = [pairs[i] for i in rng.choice(len(pairs), 200, replace=False)]
    for a, b in pairs:
        assert tax.lca(a, b) == nx.lowest_common_ancestor(ref.g, a, b)
        assert tax.distance(a, b) == nx.shortest_path_length(ref.u, a, b)
        assert list(tax.path(a, b)) == nx.shortest_path(ref.u, a, b)
    check_index(tax, ref)
    check_names_and_codes(tax, ref, sample)
    check_cuts(tax, ref, seed, set(sample))


def check_index(tax: Taxonomy, ref: Reference) -> None:
    idx = tax.index
    assert list(idx.nodes) == ref.nodes and list(idx.leaves) == ref.leaves
    assert idx.position == {n: i for i, n in enumerate(ref.nodes)}
    assert idx.parent.dtype == np.int64
    for i, n in enumerate(ref.nodes):
        preds = list(ref.g.predecessors(n))
        assert idx.parent[i] == (ref.nodes.index(preds[0]) if preds else -1)
        assert idx.depth[i] == len(ref.ancestors(n))
        cols = [ref.leaves.index(leaf) for leaf in ref.leaves_under(n)]
        assert (idx.leaf_start[i], idx.leaf_end[i]) == (min(cols), max(cols) + 1)
        assert cols == list(range(min(cols), max(cols) + 1))  # contiguous: the roll-up's premise
    assert list(idx.leaf_rows) == [ref.nodes.index(leaf) for leaf in ref.leaves]
    assert idx.n_nodes == len(ref.nodes) and idx.n_leaves == len(ref.leaves)
    assert tax.index is tax.index  # cached


def check_names_and_codes(tax: Taxonomy, ref: Reference, sample: list[str]) -> None:
    candidates = set(sample)
    for n in sample:
        candidates.add(ref.spec[n]["name"])
        candidates.update(ref.spec[n].get("aliases", []))
        candidates.add(n.upper())
    for name in candidates:
        expected = ref.resolve(name)
        if expected is None:
            with pytest.raises(UnknownNameError):
                tax.resolve(name)
        else:
            assert tax.resolve(name) == expected, name
    with pytest.raises(UnknownNameError):
        tax.resolve("surely_not_a_node_name_0")
    datasets: dict[str, dict[int, str]] = {}
    for n in ref.nodes:
        for dataset, code in ref.spec[n].get("codes", {}).items():
            datasets.setdefault(dataset, {})[code] = n
    assert set(tax.datasets) == set(datasets)
    for dataset, table in datasets.items():
        assert tax.codes(dataset) == dict(sorted(table.items()))
        assert list(tax.codes(dataset)) == list(range(len(table)))
    with pytest.raises(UnknownNameError):
        tax.codes("no_such_dataset")


def check_cuts(tax: Taxonomy, ref: Reference, seed: int, sample: set[str]) -> None:
    rng = np.random.default_rng(seed)
    trials = [random_cut(ref, rng) for _ in range(4)]
    trials += [
        list(rng.choice(ref.nodes, size=rng.integers(1, len(ref.nodes) + 1), replace=False)) for _ in range(4)
    ]
    trials += [[ref.root], list(ref.leaves), [ref.root, ref.leaves[0]], [ref.leaves[0], ref.leaves[0]], []]
    for cut in trials:
        cut = [str(c) for c in cut]
        if ref.is_cut(cut):
            ordered = sorted(cut, key=ref.nodes.index)
            assert list(tax.cut(cut)) == ordered
            start, end = tax.column_ranges(cut)
            assert start.shape == end.shape == (len(ref.nodes),)
            for i, n in enumerate(ref.nodes):
                if any(a in cut for a in ref.ancestors(n)):  # strictly below the cut
                    assert (start[i], end[i]) == (-1, -1)
                    if n in sample:
                        above = next(a for a in ref.ancestors(n) if a in cut)
                        assert tax.cut_node_above(n, cut) == above
                else:
                    under = [k for k, c in enumerate(ordered) if c == n or c in ref.desc[n]]
                    assert (start[i], end[i]) == (min(under), max(under) + 1)
                    assert under == list(range(min(under), max(under) + 1))
                    if n in sample:
                        assert tax.cut_node_above(n, cut) is None
        else:
            with pytest.raises(TaxonomyError):
                tax.cut(cut)
            with pytest.raises(TaxonomyError):
                tax.column_ranges(cut)


# --- random trees -------------------------------------------------------------------------------------------


@SETTINGS
@given(tree_dicts(max_nodes=25), st.integers(0, 2**16))
def test_queries_match_networkx_on_random_trees(data: dict[str, Any], seed: int) -> None:
    tax = Taxonomy.from_dict(data)
    check_all_queries(tax, data, seed)


@SETTINGS
@given(tree_dicts(max_nodes=25))
def test_round_trip_random(data: dict[str, Any]) -> None:
    tax = Taxonomy.from_dict(data)
    text = tax.to_yaml()
    again = Taxonomy.from_text(text)
    assert again == tax
    assert again.to_yaml() == text  # idempotent
    assert tax.to_dict() == {"format_version": 1, **data}  # nothing added, nothing lost
    assert yaml.safe_load(text) == tax.to_dict()


@SETTINGS
@given(tree_dicts(max_nodes=25, rich=False))
def test_from_networkx_round_trip(data: dict[str, Any]) -> None:
    tax = Taxonomy.from_dict(data)
    back = Taxonomy.from_networkx(tax.graph, name=tax.name)
    assert back == tax


def test_synthetic_trees_match_networkx() -> None:
    for seed in range(3):
        tax = random_taxonomy(40, max_depth=5, max_fan_out=4, seed=seed)
        check_all_queries(tax, tax.to_dict(), seed)
        assert Taxonomy.from_text(tax.to_yaml()) == tax


# --- shipped files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_queries_match_networkx_on_shipped_files(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    tax = Taxonomy.from_yaml(path)
    check_all_queries(tax, data)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_round_trip_shipped(path: Path) -> None:
    tax = Taxonomy.from_yaml(path)
    text = tax.to_yaml()
    assert Taxonomy.from_text(text) == tax
    assert Taxonomy.from_text(text).to_yaml() == text
    assert tax.to_dict() == yaml.safe_load(path.read_text(encoding="utf-8"))


# --- hand-checked facts of the shipped trees ---------------------------------------------------------------


def test_dermamnist_facts(dermamnist: Taxonomy) -> None:
    assert dermamnist.codes("dermamnist") == {
        0: "actinic_keratosis_intraepithelial_carcinoma",
        1: "basal_cell_carcinoma",
        2: "benign_keratosis",
        3: "dermatofibroma",
        4: "melanoma",
        5: "melanocytic_nevus",
        6: "vascular_lesion",
    }
    for code, node in {
        "akiec": "actinic_keratosis_intraepithelial_carcinoma",
        "bcc": "basal_cell_carcinoma",
        "bkl": "benign_keratosis",
        "df": "dermatofibroma",
        "mel": "melanoma",
        "nv": "melanocytic_nevus",
        "vasc": "vascular_lesion",
    }.items():
        assert dermamnist.resolve(code) == node and dermamnist.resolve(code.upper()) == node
    assert dermamnist.resolve("Melanoma, NOS") == "melanoma"
    assert dermamnist.cut(["malignant", "benign"]) == ("benign", "malignant")


def test_esteva_partitions(esteva: Taxonomy) -> None:
    assert esteva.cut(["benign", "malignant"]) == ("benign", "malignant")
    kc_vs_sk = esteva.lca("basal_cell_carcinoma", "seborrheic_keratosis")
    assert kc_vs_sk == "skin_lesion"
    assert esteva.leaves_under("malignant_keratinocyte") == (
        "basal_cell_carcinoma",
        "squamous_cell_carcinoma",
    )


# --- improvements: suggestions name distinct nodes ---------------------------------------------------------


def test_unknown_name_suggests_each_node_once(dermamnist: Taxonomy) -> None:
    with pytest.raises(UnknownNameError) as info:
        dermamnist.resolve("malignat")
    assert str(info.value) == "unknown node 'malignat' in taxonomy 'dermamnist'; did you mean 'malignant'?"
    owners = [dermamnist.resolve(s) for s in info.value.suggestions]
    assert len(owners) == len(set(owners))


def test_unknown_name_suggestions_are_distinct_on_random_trees() -> None:
    for seed in range(5):
        tax = random_taxonomy(30, seed=seed)
        for n in tax.nodes[:10]:
            with pytest.raises(UnknownNameError) as info:
                tax.resolve(n + "x")
            owners = [tax.resolve(s) for s in info.value.suggestions]
            assert len(owners) == len(set(owners)) and n in owners


def test_query_on_unknown_node_raises_with_suggestion(dermamnist: Taxonomy) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'melanoma'"):
        dermamnist.children("melanomma")


@pytest.mark.parametrize("text", ["a\x85b", "c\u2028d", "e\u2029f", "\x85", "tab\there", "two\nlines"])
def test_round_trip_keeps_line_breaks_in_metadata(text: str) -> None:
    # regression: PyYAML writes U+0085 raw in single quotes with allow_unicode and reads it back as a space
    data = {
        "name": "t",
        "root": {
            "id": "a",
            "name": "A",
            "metadata": {"note": text},
            "children": [{"id": "b", "name": "B"}, {"id": "c", "name": "C", "metadata": {text: text}}],
        },
    }
    tax = Taxonomy.from_dict(data)
    assert Taxonomy.from_text(tax.to_yaml()) == tax
    assert Taxonomy.from_text(tax.to_yaml()).node("a").metadata["note"] == text


@pytest.mark.parametrize("text", ["a\x85b", "c\u2028d", "tab\there", "two\nlines", "nul\x00"])
def test_names_and_aliases_are_one_line_of_printable_text(text: str) -> None:
    for field in ("name", "aliases"):
        value = "A" + text if field == "name" else ["A" + text]
        data = {
            "name": "t",
            "root": {
                "id": "a",
                "name": "A",
                field: value,
                "children": [{"id": "b", "name": "B"}, {"id": "c", "name": "C"}],
            },
        }
        with pytest.raises(TaxonomyError, match=r"contains the control or line-break character U\+00|U\+20"):
            Taxonomy.from_dict(data)


def test_ids_do_not_end_in_a_newline() -> None:
    data = {
        "name": "t",
        "root": {"id": "a\n", "name": "A", "children": [{"id": "b", "name": "B"}, {"id": "c", "name": "C"}]},
    }
    with pytest.raises(TaxonomyError, match=r"invalid id 'a\\n'"):
        Taxonomy.from_dict(data)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 300), st.integers(1, 9), st.integers(2, 8), st.integers(0, 1000))
def test_random_taxonomy_shape(n_leaves: int, max_depth: int, max_fan_out: int, seed: int) -> None:
    tax = random_taxonomy(n_leaves, max_depth=max_depth, max_fan_out=max_fan_out, seed=seed)
    assert len(tax.leaves) == n_leaves
    assert tax.height <= max_depth
    assert all(len(tax.children(n)) != 1 for n in tax.nodes)  # no single-child nodes
    assert list(tax.nodes) == [f"n{i}" for i in range(len(tax.nodes))]  # ids in pre-order
    assert nx.is_arborescence(tax.graph)
    assert tax == random_taxonomy(n_leaves, max_depth=max_depth, max_fan_out=max_fan_out, seed=seed)
