"""The tree as integer arrays: :class:`TaxonomyIndex`, the one place that knows the structure of a taxonomy.

Rows are the nodes in depth-first pre-order. In that order the descendants of row ``i`` are exactly the rows
``i + 1 .. subtree_end[i] - 1`` and the leaves under it are one contiguous range of leaf columns
``leaf_start[i]:leaf_end[i]``, so "is ``a`` under ``b``", "which leaves", "which cut class holds this node"
and "how many images in this subtree" are comparisons and prefix sums over arrays, not walks up the parents.
Everything else in hierclf asks the index (through :class:`~hierclf.taxonomy.tree.Taxonomy` or directly);
nothing else walks parents or asks networkx for descendants.

The index is built once per taxonomy (``Taxonomy.index``); derived tables (levels, heights, the ancestor
table) are computed on first use and kept. All arrays are read-only.

Example:
    >>> from hierclf import Taxonomy
    >>> idx = Taxonomy.from_yaml("taxonomy/dermamnist.yaml").index
    >>> mel, malignant = idx.rows(["melanoma", "malignant"])
    >>> bcc, nevus = idx.rows(["basal_cell_carcinoma", "melanocytic_nevus"])
    >>> bool(idx.is_under(mel, malignant)), bool(idx.is_under(nevus, malignant)), idx.nodes[idx.lca(mel, bcc)]
    (True, False, 'malignant')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

__all__ = ["CutCheck", "TaxonomyIndex", "build_index"]


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class CutCheck:
    """What stops a list of node rows from being a cut (every leaf under exactly one of them).

    Attributes:
        overlaps: ``(a, b)`` row pairs of listed nodes whose subtrees share leaves (``b`` at or under ``a``),
            each listed node reported once, in the order given.
        repeated: rows listed more than once.
        uncovered: leaf columns under no listed node, in leaf order.
    """

    overlaps: tuple[tuple[int, int], ...]
    repeated: tuple[int, ...]
    uncovered: np.ndarray

    @property
    def ok(self) -> bool:
        return not self.overlaps and not self.repeated and self.uncovered.size == 0


@dataclass(frozen=True, eq=False)
class TaxonomyIndex:
    """Integer structure of a tree, computed once per taxonomy.

    Attributes:
        nodes: node ids, pre-order, shape ``(n_nodes,)``.
        leaves: leaf ids, pre-order, shape ``(n_leaves,)``.
        parent: row of each node's parent, ``-1`` for the root, shape ``(n_nodes,)``.
        depth: depth of each node (root 0), shape ``(n_nodes,)``.
        subtree_end: the descendants of node ``i`` are rows ``i + 1 .. subtree_end[i] - 1``.
        leaf_start, leaf_end: the leaves under node ``i`` are columns ``leaf_start[i]:leaf_end[i]``.
        leaf_rows: row of each leaf, shape ``(n_leaves,)``.
        position: node id -> row.
    """

    nodes: tuple[str, ...]
    leaves: tuple[str, ...]
    parent: np.ndarray
    depth: np.ndarray
    subtree_end: np.ndarray
    leaf_start: np.ndarray
    leaf_end: np.ndarray
    leaf_rows: np.ndarray
    position: Mapping[str, int]

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_leaves(self) -> int:
        return len(self.leaves)

    def rows(self, ids: Iterable[str]) -> np.ndarray:
        """Rows of node ids (ids only: resolve names and aliases with ``Taxonomy.resolve`` first)."""
        return np.fromiter((self.position[n] for n in ids), dtype=np.int64)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Rows of an array of node ids (one per sample, say), each distinct id looked up once."""
        distinct, inverse = np.unique(np.asarray(ids).astype(str), return_inverse=True)
        return self.rows(distinct.tolist())[inverse.reshape(-1)] if distinct.size else np.zeros(0, np.int64)

    # --- derived tables (computed on first use) -----------------------------------------------------

    @cached_property
    def is_leaf(self) -> np.ndarray:
        """``(n_nodes,)`` bool: the node has no children."""
        out = np.zeros(self.n_nodes, dtype=bool)
        out[self.leaf_rows] = True
        return _frozen(out)

    @cached_property
    def levels(self) -> tuple[np.ndarray, ...]:
        """Rows of the nodes at each depth (root first), each in pre-order: the order of level-by-level
        passes (top-down for what flows from parents, reversed for what flows from children)."""
        order = np.argsort(self.depth, kind="stable")
        bounds = np.searchsorted(self.depth[order], np.arange(int(self.depth.max()) + 2))
        return tuple(_frozen(order[bounds[d] : bounds[d + 1]]) for d in range(len(bounds) - 1))

    @cached_property
    def height(self) -> np.ndarray:
        """``(n_nodes,)``: edges on the longest downward path from each node to a leaf (0 for a leaf)."""
        deepest = self.depth.copy()
        for rows in reversed(self.levels[1:]):  # a loop over levels, deepest first: children into parents
            np.maximum.at(deepest, self.parent[rows], deepest[rows])
        return _frozen(deepest - self.depth)

    @cached_property
    def ancestor_table(self) -> np.ndarray:
        """``(n_nodes, height + 1)``: row of the ancestor of each node at each depth (``-1`` below its depth;
        a node is its own ancestor at its depth)."""
        table = np.full((self.n_nodes, int(self.depth.max()) + 1), -1, dtype=np.int64)
        table[0, 0] = 0
        for d, rows in enumerate(self.levels[1:], start=1):  # a loop over levels: copy the parent's row
            table[rows, :d] = table[self.parent[rows], :d]
            table[rows, d] = rows
        return _frozen(table)

    # --- queries, vectorised over rows -------------------------------------------------------------

    def is_under(self, rows: Any, ancestors: Any) -> np.ndarray:
        """Whether each node of ``rows`` is at or under the matching node of ``ancestors`` (broadcast).

        In pre-order, ``a`` is at or under ``b`` exactly when ``b <= a < subtree_end[b]``.
        """
        a, b = np.asarray(rows, dtype=np.int64), np.asarray(ancestors, dtype=np.int64)
        return np.asarray((b <= a) & (a < self.subtree_end[b]))

    def under_any(self, rows: Any, nodes: Sequence[int] | np.ndarray) -> np.ndarray:
        """``(len(rows),)`` bool: the node lies at or under at least one of ``nodes``."""
        a = np.asarray(rows, dtype=np.int64).reshape(-1, 1)
        b = np.asarray(nodes, dtype=np.int64).reshape(1, -1)
        if b.size == 0:
            return np.zeros(a.shape[0], dtype=bool)
        return np.asarray(self.is_under(a, b).any(axis=1))

    def all_proper_ancestors(self, flags: Any) -> np.ndarray:
        """``(n_nodes,)`` bool: every proper ancestor of the node has ``flags`` set (true for the root)."""
        table = self.ancestor_table
        proper = np.arange(table.shape[1])[None, :] < self.depth[:, None]
        return np.asarray((np.asarray(flags, dtype=bool)[np.maximum(table, 0)] | ~proper).all(axis=1))

    def lca(self, a: Any, b: Any) -> np.ndarray:
        """Rows of the lowest common ancestors of ``a`` and ``b`` (broadcast); a node is its own ancestor."""
        ra, rb = np.broadcast_arrays(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
        table = self.ancestor_table
        ta, tb = table[ra.ravel()], table[rb.ravel()]
        same = (ta == tb) & (ta >= 0)
        # ancestors agree from the root down to the lca and nowhere below it: count the agreeing depths
        depth = same.sum(axis=1) - 1
        return ta[np.arange(len(depth)), depth].reshape(ra.shape)

    def subtree_sums(self, values: Any) -> np.ndarray:
        """Per row, the sum of ``values`` (one per node row) over the node's subtree (itself included)."""
        v = np.asarray(values)
        prefix = np.concatenate(([0], np.cumsum(v, dtype=np.result_type(v.dtype, np.int64))))
        return prefix[self.subtree_end] - prefix[np.arange(self.n_nodes)]

    def cut_of(self, cut_rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """``(n_nodes,)``: for each node, the position in ``cut_rows`` of the cut node at or above it,
        ``-1`` for nodes above the cut (and under no cut node). ``cut_rows`` must not overlap."""
        cut = np.asarray(cut_rows, dtype=np.int64)
        owner = np.full(self.n_nodes, -1, dtype=np.int64)
        if cut.size:
            lengths = self.subtree_end[cut] - cut
            starts = np.repeat(cut - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
            owner[np.arange(int(lengths.sum())) + starts] = np.repeat(np.arange(cut.size), lengths)
        return owner

    def check_cut(self, rows: Sequence[int] | np.ndarray) -> CutCheck:
        """Why ``rows`` is not a cut, if it is not (see :class:`CutCheck`); ``O(k log k + n_leaves)``."""
        given = np.asarray(rows, dtype=np.int64).reshape(-1)
        _, first, counts = np.unique(given, return_index=True, return_counts=True)
        repeated = tuple(int(r) for r in given[np.sort(first[counts > 1])])
        distinct = given[np.sort(first)]
        covered = np.zeros(self.n_leaves + 1, dtype=np.int64)
        np.add.at(covered, self.leaf_start[distinct], 1)
        np.add.at(covered, self.leaf_end[distinct], -1)
        uncovered = np.flatnonzero(np.cumsum(covered)[:-1] == 0)
        return CutCheck(self._nested_pairs(distinct), repeated, uncovered)

    def _nested_pairs(self, rows: np.ndarray) -> tuple[tuple[int, int], ...]:
        """``(ancestor, descendant)`` pairs among distinct ``rows``: each listed node that lies under another
        listed node, with the listed node whose subtree reaches furthest before it (in pre-order)."""
        s = np.sort(rows)
        if s.size < 2:
            return ()
        ends = self.subtree_end[s]
        reach = np.maximum.accumulate(ends)
        holder = np.maximum.accumulate(np.where(ends == reach, np.arange(s.size), 0))
        nested = np.flatnonzero(s[1:] < reach[:-1]) + 1  # under the subtree that reaches furthest so far
        return tuple((int(s[holder[j - 1]]), int(s[j])) for j in nested)

    def cut_ranges(self, cut_rows: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For inputs over a cut (columns in the pre-order of ``cut_rows``), the column range of each node:
        node ``i`` is the sum of columns ``start[i]:end[i]``; nodes strictly below the cut get ``-1``."""
        cut = np.sort(np.asarray(cut_rows, dtype=np.int64))
        col_start, col_end = self.leaf_start[cut], self.leaf_end[cut]
        # the cut node holding a node's first leaf; the node lies strictly below the cut exactly when it is
        # deeper than that cut node (leaf ranges alone cannot tell a single child from its parent)
        holder = np.searchsorted(col_start, self.leaf_start, side="right") - 1
        below = self.depth > self.depth[cut[holder]]
        start = np.searchsorted(col_start, self.leaf_start, side="left")
        end = np.searchsorted(col_end, self.leaf_end, side="right")
        return np.where(below, -1, start), np.where(below, -1, end)


def build_index(
    nodes: Sequence[str], parent_of: Mapping[str, str | None], is_leaf: Sequence[bool]
) -> TaxonomyIndex:
    """The index of a tree given in pre-order: node ids, each node's parent id, and which nodes are leaves."""
    nodes = tuple(nodes)
    n = len(nodes)
    position = {node: i for i, node in enumerate(nodes)}
    parent = np.fromiter((position.get(parent_of[v] or "", -1) for v in nodes), dtype=np.int64, count=n)
    leaf = np.asarray(is_leaf, dtype=bool)
    depth = np.zeros(n, dtype=np.int64)
    for i in range(1, n):  # pre-order: a parent's row precedes its children's (one pass at build time)
        depth[i] = depth[parent[i]] + 1
    # pre-order: the subtree of i ends at the first later row that is not deeper than i
    subtree_end = np.full(n, n, dtype=np.int64)
    stack: list[int] = []
    for i in range(n):  # one pass with a stack of open subtrees (build time only)
        while stack and depth[stack[-1]] >= depth[i]:
            subtree_end[stack.pop()] = i
        stack.append(i)
    leaf_rank = np.concatenate(([0], np.cumsum(leaf)))
    leaf_start, leaf_end = leaf_rank[:-1], leaf_rank[subtree_end]
    return TaxonomyIndex(
        nodes=nodes,
        leaves=tuple(v for v, is_l in zip(nodes, leaf) if is_l),
        parent=_frozen(parent),
        depth=_frozen(depth),
        subtree_end=_frozen(subtree_end),
        leaf_start=_frozen(np.asarray(leaf_start, dtype=np.int64)),
        leaf_end=_frozen(np.asarray(leaf_end, dtype=np.int64)),
        leaf_rows=_frozen(np.flatnonzero(leaf)),
        position=position,
    )
