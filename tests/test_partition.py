"""Esteva's PartitionDiseases: hand-built trees with known answers, and properties on random and real trees
checked against a brute-force recursive implementation written here over networkx descendants."""

from __future__ import annotations

import logging
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hierclf import Taxonomy
from hierclf.classes.esteva import RESIDUAL_SUFFIX, TrainingClasses, partition, residual_class, residual_node
from hierclf.errors import HierclfError, UnknownNameError
from hierclf.taxonomy.synthetic import random_taxonomy

ISIC = Path(__file__).resolve().parents[1] / "taxonomy" / "isic.yaml"

#   root
#   ├── a ── a1, a2
#   ├── b ── b1 ── b1x, b1y
#   │    └── b2
#   └── c
TREE = Taxonomy.from_text("""
name: hand
root:
  id: root
  name: Root
  children:
    - {id: a, name: A, children: [{id: a1, name: A1, aliases: [first]}, {id: a2, name: A2}]}
    - id: b
      name: B
      aliases: [bee]
      children:
        - {id: b1, name: B1, children: [{id: b1x, name: B1x}, {id: b1y, name: B1y}]}
        - {id: b2, name: B2}
    - {id: c, name: C}
""")
BASE = {"a1": 3, "a2": 4, "b1x": 2, "b1y": 2, "b2": 5, "c": 1}  # a: 7, b: 9, root: 17


def brute_force(
    tax: Taxonomy, counts: dict[str, int], limit: int, inclusive: bool, internal: str = "residual"
) -> tuple[list[str], list[int]]:
    """PartitionDiseases written as in the paper: recursion, subtree sums over nx.descendants."""
    g = tax.graph
    own = {n: 0 for n in tax.nodes}
    for k, v in counts.items():
        own[tax.resolve(k)] += v

    def total(n: str) -> int:
        return own[n] + sum(own[d] for d in nx.descendants(g, n))

    classes: list[str] = []
    sizes: list[int] = []

    def rec(n: str) -> None:
        t = total(n)
        if not list(g.successors(n)) or (t <= limit if inclusive else t < limit):
            classes.append(n)
            sizes.append(t)
            return
        if own[n] > 0 and internal == "residual":
            classes.append(n + ":residual")
            sizes.append(own[n])
        for child in g.successors(n):
            rec(child)

    rec(tax.root)
    return classes, sizes


# --- hand-built cases --------------------------------------------------------------------------------------


def test_basic_known_answer() -> None:
    p = partition(TREE, BASE, max_class_size=10)
    assert p.classes == ("a", "b", "c")
    assert p.counts == (7, 9, 1)
    assert TREE.cut(p.classes) == p.classes
    assert p.label_map == {
        "a": "a",
        "a1": "a",
        "a2": "a",
        "b": "b",
        "b1": "b",
        "b1x": "b",
        "b1y": "b",
        "b2": "b",
        "c": "c",
    }
    assert p.residual == () and p.empty == () and p.oversized == ()


def test_boundary_strict_vs_inclusive() -> None:
    # b holds exactly 9 images: the paper's `<` splits it at max_class_size 9, the authors' `<=` keeps it
    assert partition(TREE, BASE, max_class_size=9).classes == ("a", "b1", "b2", "c")
    assert partition(TREE, BASE, max_class_size=9, inclusive=True).classes == ("a", "b", "c")
    # root holds 17: a single class only when 17 < limit (or <= limit)
    assert partition(TREE, BASE, max_class_size=17).classes == ("a", "b", "c")
    assert partition(TREE, BASE, max_class_size=17, inclusive=True).classes == ("root",)
    assert partition(TREE, BASE, max_class_size=18).classes == ("root",)


def test_max_size_one_gives_leaves() -> None:
    # with max_class_size 1 and `<`, every node holding an image is split down to the leaves
    p = partition(TREE, BASE, max_class_size=1)
    assert p.classes == TREE.leaves
    assert p.counts == (3, 4, 2, 2, 5, 1)


def test_internal_labels_residual_class() -> None:
    counts = {**BASE, "b": 3}  # b now holds 12 images, 3 of them labelled "b" itself
    p = partition(TREE, counts, max_class_size=10)
    assert p.classes == ("a", "b:residual", "b1", "b2", "c")
    assert p.counts == (7, 3, 4, 5, 1)
    assert p.residual == ("b",) and p.cut == ("a", "b1", "b2", "c")
    assert TREE.cut(p.cut) == p.cut
    assert p.class_of("b") == "b:residual" and p.index_of("bee") == 1
    assert p.class_of("b1y") == "b1"
    # the residual class sits right before b's children: b's columns are the contiguous range 1:4
    cols = [p.index_of(x) for x in ("b", "b1", "b2")]
    assert cols == [1, 2, 3]
    assert sum(p.counts) == sum(counts.values())


def test_internal_labels_drop(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hierclf.classes.esteva"):
        p = partition(TREE, {**BASE, "b": 3}, max_class_size=10, internal_labels="drop")
    assert p.classes == ("a", "b1", "b2", "c") and p.dropped == {"b": 3}
    assert "dropping 3 images labelled at split internal node 'b'" in caplog.text
    with pytest.raises(HierclfError, match="its 3 images were dropped"):
        p.class_of("b")


def test_internal_labels_error() -> None:
    with pytest.raises(
        HierclfError,
        match=r"3 images are labelled at internal node 'b', which holds 12 "
        r"images in all \(>= max_class_size 10\).*"
        r"internal_labels='residual'",
    ):
        partition(TREE, {**BASE, "b": 3}, max_class_size=10, internal_labels="error")
    # images at an internal node that is NOT split are simply part of its class
    counts = {**BASE, "b": 3}
    assert partition(TREE, counts, max_class_size=21, internal_labels="error").classes == ("root",)
    assert partition(TREE, counts, max_class_size=13, internal_labels="error").classes == ("a", "b", "c")


def test_no_residual_class_without_images() -> None:
    # root is split but nothing is labelled "root": no residual class for it
    assert not any(c.endswith(RESIDUAL_SUFFIX) for c in partition(TREE, BASE, max_class_size=10).classes)


def test_zero_count_leaf_and_subtree(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hierclf.classes.esteva"):
        p = partition(TREE, {**BASE, "c": 0}, max_class_size=5)
    # a (7) and b (9) split; a1 (3), a2 (4) classes; b1 (4), b2 (5 -> leaf, oversized) ; c empty leaf class
    assert p.classes == ("a1", "a2", "b1", "b2", "c")
    assert p.empty == ("c",) and p.counts[-1] == 0
    assert p.oversized == ("b2",)
    assert "1 training classes have no images: c" in caplog.text
    # a whole subtree without images is one class (0 < limit), not split into empty leaves
    q = partition(TREE, {"b2": 50, "c": 1}, max_class_size=10)
    assert q.classes == ("a", "b1", "b2", "c") and q.empty == ("a", "b1")
    assert q.oversized == ("b2",)


def test_labels_above_the_cut_name_the_spanned_classes() -> None:
    p = partition(TREE, BASE, max_class_size=5)  # classes a1 a2 b1 b2 c
    with pytest.raises(
        HierclfError,
        match=r"label 'bee' \(node 'b'\) lies above the training classes: it "
        r"spans 2 classes \('b1', 'b2'\)",
    ):
        p.class_of("bee")
    with pytest.raises(HierclfError, match="spans 5 classes"):
        p.class_index(["a1", "root"])
    with pytest.raises(UnknownNameError, match="did you mean"):
        p.class_of("b1z")


def test_class_index_vectorised_with_aliases() -> None:
    p = partition(TREE, BASE, max_class_size=10)
    idx = p.class_index(["first", "b1x", "c", "a2", "bee", "B2"])
    assert idx.dtype == np.int64 and idx.tolist() == [0, 1, 2, 0, 1, 1]
    assert p.class_index(np.array(["c", "c"])).tolist() == [2, 2]
    assert p.class_index([]).shape == (0,)


def test_counts_keys_resolve_and_add_up() -> None:
    p = partition(TREE, {"first": 2, "a1": 1, "A2": 4, "bee": 0, "b1x": 2, "b1y": 2, "b2": 5, "c": 1}, 10)
    assert p.counts == (7, 9, 1)


@pytest.mark.parametrize(
    "counts, kwargs, error, match",
    [
        ({"zz": 1}, {}, UnknownNameError, "unknown node 'zz' in the counts"),
        ({"a1": -1}, {}, HierclfError, "count of 'a1' must be a non-negative integer, got -1"),
        ({"a1": 1.5}, {}, HierclfError, "non-negative integer"),
        ({"a1": True}, {}, HierclfError, "non-negative integer"),
        ([("a1", 1)], {}, HierclfError, "counts must be a mapping"),
        (BASE, {"max_class_size": 0}, HierclfError, "max_class_size must be an integer >= 1"),
        (BASE, {"max_class_size": 2.5}, HierclfError, "max_class_size must be an integer >= 1"),
        (BASE, {"internal_labels": "residal"}, UnknownNameError, "did you mean 'residual'"),
    ],
)
def test_bad_input(counts: object, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        partition(TREE, counts, **kwargs)  # type: ignore[arg-type]


def test_float_integral_counts_accepted() -> None:
    assert partition(TREE, {k: float(v) for k, v in BASE.items()}, 10).counts == (7, 9, 1)


def test_residual_names() -> None:
    assert residual_class("b") == "b:residual" and residual_node("b:residual") == "b"
    assert residual_node("b") is None


def test_dermamnist_real_counts(dermamnist: Taxonomy) -> None:
    # HAM10000 / DermaMNIST class sizes (all splits): nv 6705, mel 1113, bkl 1099, bcc 514, akiec 327,
    # vasc 142, df 115
    counts = {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115}
    p = partition(dermamnist, counts, max_class_size=1000)
    assert p.classes == (
        "melanocytic_nevus",
        "benign_keratosis",
        "benign_dermal",
        "melanoma",
        "keratinocyte_carcinoma",
    )
    assert p.oversized == ("melanocytic_nevus", "benign_keratosis", "melanoma")
    assert p.classes == tuple(brute_force(dermamnist, counts, 1000, False)[0])


# --- properties ------------------------------------------------------------------------------------------


def _random_counts(tax: Taxonomy, rng: np.random.Generator, internal_share: float) -> dict[str, int]:
    leaf_counts = (rng.pareto(1.2, len(tax.leaves)) * 40).astype(int)
    leaf_counts[rng.random(len(tax.leaves)) < 0.15] = 0
    counts = dict(zip(tax.leaves, leaf_counts.tolist(), strict=True))
    internal = [n for n in tax.nodes if not tax.is_leaf(n)]
    for n in internal:
        if rng.random() < internal_share:
            counts[n] = int(rng.integers(1, 200))
    return counts


def check_partition(
    tax: Taxonomy, counts: dict[str, int], limit: int, inclusive: bool, internal: str
) -> None:
    p = partition(tax, counts, limit, inclusive=inclusive, internal_labels=internal)
    assert isinstance(p, TrainingClasses)
    # the node classes are a cut: every leaf under exactly one (Taxonomy.cut checks it)
    assert tax.cut(p.cut) == p.cut
    g = tax.graph
    own = dict.fromkeys(tax.nodes, 0)
    for k, v in counts.items():
        own[k] += v
    total = {n: own[n] + sum(own[d] for d in nx.descendants(g, n)) for n in tax.nodes}

    def small(t: int) -> bool:
        return t <= limit if inclusive else t < limit

    # every class is small unless it is a leaf (cannot be split) or a residual class
    for c, n in zip(p.classes, p.counts, strict=True):
        node = residual_node(c)
        if node is None:
            assert n == total[c]
            assert small(n) or tax.is_leaf(c)
        else:
            assert n == own[node] > 0 and internal == "residual"
    # every split node (a proper ancestor of a class) was too large, so it had to be split
    split = {a for c in p.cut for a in tax.ancestors(c)}
    assert all(not small(total[s]) for s in split)
    # label map: nodes at or below the cut map to the class containing them; split nodes only to residuals
    for node in tax.nodes:
        if node in split:
            expected = residual_class(node) if internal == "residual" and own[node] > 0 else None
            assert p.label_map.get(node) == expected
        else:
            cls = p.label_map[node]
            assert cls == node or cls in tax.ancestors(node)
    # images: all accounted for (residual) or dropped
    assert sum(p.counts) + sum(p.dropped.values()) == sum(counts.values())
    # and the whole thing equals the paper's recursion written plainly
    expected_classes, expected_counts = brute_force(tax, counts, limit, inclusive, internal)
    assert p.classes == tuple(expected_classes)
    assert p.counts == tuple(expected_counts)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_leaves=st.integers(2, 120),
    seed=st.integers(0, 10_000),
    limit=st.integers(1, 2000),
    inclusive=st.booleans(),
    internal=st.sampled_from(["residual", "drop"]),
    internal_share=st.sampled_from([0.0, 0.3]),
)
def test_random_trees_properties(
    n_leaves: int, seed: int, limit: int, inclusive: bool, internal: str, internal_share: float
) -> None:
    tax = random_taxonomy(n_leaves, max_depth=6, max_fan_out=5, seed=seed)
    counts = _random_counts(tax, np.random.default_rng(seed), internal_share)
    check_partition(tax, counts, limit, inclusive, internal)


@pytest.mark.parametrize("limit", [100, 1000])
@pytest.mark.parametrize("inclusive", [False, True])
def test_isic_taxonomy_with_synthetic_counts(limit: int, inclusive: bool) -> None:
    if not ISIC.exists():
        pytest.skip("taxonomy/isic.yaml not generated yet")
    tax = Taxonomy.from_yaml(ISIC)
    counts = _random_counts(tax, np.random.default_rng(418), internal_share=0.1)
    check_partition(tax, counts, limit, inclusive, "residual")
    p = partition(tax, counts, limit, inclusive=inclusive)
    assert 1 < len(p) <= len(tax.leaves) + len(p.residual)


def test_esteva_scale_tree_is_iterative_and_quick() -> None:
    # 20,000 leaves, depth up to 9: no recursion, and a single call well under a second on one core
    tax = random_taxonomy(20_000, max_depth=9, seed=3)
    counts = _random_counts(tax, np.random.default_rng(0), internal_share=0.05)
    p = partition(tax, counts, 1000)
    assert tax.cut(p.cut) == p.cut
    assert sum(p.counts) == sum(counts.values())
