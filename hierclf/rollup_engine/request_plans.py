"""The plan of a roll-up request: which input columns each output node sums (numpy only, no torch).

A request is ``(taxonomy, nodes, columns)``. Its input columns are the taxonomy's leaves, a cut of the tree
(e.g. training classes), or a cut with *residual classes* (``"<node>:residual"``, the images labelled
exactly at a split internal node; :mod:`hierclf.classes.esteva`). Every class is anchored at a node (a
residual class at its own node) and, sorted by their anchors in tree pre-order, the classes under any node,
its residual class included, are one contiguous column range: every output is a range sum. The plan holds
those ranges, the permutation of the input columns into that order, and the names for messages; it is
computed once per request and cached per taxonomy (:func:`plan`).

:func:`check_input` and :func:`check_out` are the one input check of every face of the roll-up (functions on
numpy arrays and on tensors, the modules, :meth:`hierclf.nn.head.LeafHead.rollup`): the same error class,
:class:`RollUpError`, with the same message. Tensors are recognised without importing torch.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hierclf.classes.residual import residual_class, residual_node
from hierclf.errors import HierclfError, UnknownNameError

if TYPE_CHECKING:
    from hierclf.taxonomy.tree import Taxonomy

__all__ = [
    "Plan",
    "RollUpError",
    "check_input",
    "check_out",
    "conditional_columns",
    "is_tensor",
    "log_tree",
    "pairs",
    "plan",
]

#: requests kept per taxonomy before the cache is emptied (a training loop asks for a handful)
_PLANS_KEPT = 64


class RollUpError(HierclfError, ValueError):
    """Bad roll-up request: a node below the input cut, overlapping classes, a wrong input shape."""


@dataclass(frozen=True)
class Plan:
    """Index structure of a roll-up request, in numpy (the torch side turns it into tensors or buffers).

    ``perm[k]`` is the input column holding the ``k``-th class in pre-order (``None`` when the input is
    already in pre-order); output ``i`` sums pre-order columns ``start[i]:end[i]``.
    """

    nodes: tuple[str, ...]
    columns: tuple[str, ...]
    perm: np.ndarray | None
    start: np.ndarray
    end: np.ndarray
    #: what one input column is, for messages: ``"leaf"`` (the taxonomy's leaves) or ``"class"``
    kind: str

    @property
    def n_columns(self) -> int:
        return len(self.columns)


_PLANS: dict[int, dict[tuple[Any, ...], Any]] = {}


def _plans_for(taxonomy: Taxonomy) -> dict[tuple[Any, ...], Any]:
    key = id(taxonomy)
    if key not in _PLANS:
        _PLANS[key] = {}
        weakref.finalize(taxonomy, _PLANS.pop, key, None)
    return _PLANS[key]


def _cached(taxonomy: Taxonomy, key: tuple[Any, ...], build: Any) -> Any:
    plans = _plans_for(taxonomy)
    found = plans.get(key)
    if found is None:
        found = build()
        if len(plans) >= _PLANS_KEPT:
            plans.clear()
        plans[key] = found
    return found


# --- input columns: leaves, a cut, or a cut with residual classes ------------------------------------------


def _anchor(name: str) -> str:
    """The node a column is anchored at: a residual class at its own node, any other class at itself."""
    return residual_node(name) or name


def _resolve_column(taxonomy: Taxonomy, name: str) -> str:
    base = residual_node(str(name))
    if base is None:
        return taxonomy.resolve(name)
    if base not in taxonomy:
        raise UnknownNameError("node", base, taxonomy.nodes, f"in residual class {residual_class(base)!r}")
    return residual_class(base)


def _check_residuals(taxonomy: Taxonomy, given: tuple[str, ...], cut: tuple[str, ...]) -> None:
    """A residual class belongs to a node strictly above the other classes (split into them), once."""
    bases = [b for c in given if (b := residual_node(c)) is not None]
    cut_set = set(cut)
    for base in bases:
        if base in cut_set or taxonomy.cut_node_above(base, cut) is not None:
            raise RollUpError(
                f"residual class {residual_class(base)!r} needs node {base!r} to lie above "
                "the other classes (split into them), but it is one of them or below one"
            )
    if len(set(bases)) != len(bases):
        raise RollUpError("classes list a residual class more than once")


def _cut_columns(
    taxonomy: Taxonomy, columns: Sequence[str] | None
) -> tuple[tuple[str, ...], np.ndarray | None, tuple[str, ...], tuple[str, ...]]:
    """(input columns as given, resolved; permutation input -> pre-order or None; columns in pre-order;
    the cut, i.e. the classes that are tree nodes, in pre-order)."""
    if columns is None:
        return taxonomy.leaves, None, taxonomy.leaves, taxonomy.leaves
    if isinstance(columns, str):
        raise RollUpError("columns must be a sequence of node names, not one string")
    given = tuple(_resolve_column(taxonomy, c) for c in columns)
    # raises TaxonomyError naming overlaps / uncovered leaves
    cut = taxonomy.cut([c for c in given if residual_node(c) is None])
    _check_residuals(taxonomy, given, cut)
    pos = taxonomy.index.position
    order = sorted(range(len(given)), key=lambda k: pos[_anchor(given[k])])
    ordered = tuple(given[k] for k in order)
    perm = None if ordered == given else np.array(order, dtype=np.int64)
    return given, perm, ordered, cut


def _subtree_end(taxonomy: Taxonomy) -> np.ndarray:
    """Per tree row, the row after its subtree: the first row whose first leaf is past the node's leaves
    (``leaf_start`` never decreases in pre-order, and every node has a leaf)."""
    idx = taxonomy.index
    return np.searchsorted(idx.leaf_start, idx.leaf_end, side="left")


def _column_ranges(taxonomy: Taxonomy, ordered: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(start, end)`` per tree row: the pre-order columns under the node (``-1, -1`` below the cut).

    The rows under a node are its own up to :func:`_subtree_end`; the columns under it are those anchored
    in that row range. A node strictly below the cut has no column anchored under it.
    """
    idx = taxonomy.index
    anchors = np.array([idx.position[_anchor(c)] for c in ordered], dtype=np.int64)
    rows = np.arange(idx.n_nodes, dtype=np.int64)
    start = np.searchsorted(anchors, rows, side="left")
    end = np.searchsorted(anchors, _subtree_end(taxonomy), side="left")
    below = end <= start
    return np.where(below, -1, start), np.where(below, -1, end)


# --- output nodes -----------------------------------------------------------------------------------------


def _below_cut_error(taxonomy: Taxonomy, name: str, node: str, cut: tuple[str, ...]) -> RollUpError:
    above = taxonomy.cut_node_above(node, cut)
    return RollUpError(
        f"node {name!r} lies below the input columns: the probabilities only cover its ancestor {above!r} "
        f"(a class of the cut), so P({node!r}) is unknown; ask for {above!r} or a node above it"
    )


def _resolve_nodes(
    taxonomy: Taxonomy,
    nodes: Sequence[str] | str | None,
    cut: tuple[str, ...],
    starts: np.ndarray,
) -> tuple[str, ...]:
    if nodes is None:
        return tuple(n for n, s in zip(taxonomy.nodes, starts) if s >= 0)
    names = [nodes] if isinstance(nodes, str) else list(nodes)
    ids = tuple(taxonomy.resolve(n) for n in names)
    pos = taxonomy.index.position
    for name, node in zip(names, ids):
        if starts[pos[node]] < 0:
            raise _below_cut_error(taxonomy, str(name), node, cut)
    return ids


def _build(taxonomy: Taxonomy, nodes: Sequence[str] | str | None, columns: Sequence[str] | None) -> Plan:
    given, perm, ordered, cut = _cut_columns(taxonomy, columns)
    idx = taxonomy.index
    if columns is None:
        starts, ends = idx.leaf_start, idx.leaf_end
    else:
        starts, ends = _column_ranges(taxonomy, ordered)
    ids = _resolve_nodes(taxonomy, nodes, cut, starts)
    rows = np.array([idx.position[n] for n in ids], dtype=np.int64)
    return Plan(
        nodes=ids,
        columns=given,
        perm=perm,
        start=np.asarray(starts[rows], dtype=np.int64),
        end=np.asarray(ends[rows], dtype=np.int64),
        kind="leaf" if ordered == taxonomy.leaves else "class",
    )


def plan(taxonomy: Taxonomy, nodes: Sequence[str] | str | None, columns: Sequence[str] | None) -> Plan:
    """The plan of a request, built once per ``(taxonomy, nodes, columns)`` and cached.

    Raises:
        RollUpError: a node below the cut, misplaced residual classes, ``columns`` given as one string.
        UnknownNameError: an unknown node or column name (with "did you mean").
        TaxonomyError: ``columns`` (less the residual classes) do not form a cut of the tree.
    """
    key = (
        "plan",
        None if nodes is None else (nodes,) if isinstance(nodes, str) else tuple(nodes),
        None if columns is None else tuple(columns),
    )
    found: Plan = _cached(taxonomy, key, lambda: _build(taxonomy, nodes, columns))
    return found


def pairs(request: Plan) -> tuple[np.ndarray, np.ndarray]:
    """Every (pre-order column, output) membership, grouped by output: ``(pair_col, pair_node)``."""
    lengths = request.end - request.start
    pair_node = np.repeat(np.arange(len(request.nodes), dtype=np.int64), lengths)
    offsets = np.repeat(request.start - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    pair_col = np.arange(int(lengths.sum()), dtype=np.int64) + offsets
    return pair_col, pair_node


def _tree_rows(taxonomy: Taxonomy, request: Plan, full: Plan) -> np.ndarray:
    """Positions in ``full.nodes`` (the nodes the input determines, pre-order) of the nodes at or below a
    node of ``request``."""
    idx = taxonomy.index
    wanted = np.array([idx.position[n] for n in request.nodes], dtype=np.int64)
    cover = np.zeros(idx.n_nodes + 1, dtype=np.int64)  # +1 from a wanted row to the end of its subtree
    np.add.at(cover, wanted, 1)
    np.add.at(cover, _subtree_end(taxonomy)[wanted], -1)
    rows = np.array([idx.position[n] for n in full.nodes], dtype=np.int64)
    return np.flatnonzero(np.cumsum(cover)[rows] > 0)


def log_tree(
    taxonomy: Taxonomy, request: Plan, columns: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CPU log kernel's tree, cut down to the subtrees of the wanted nodes: for each of its nodes the
    input column (-1 for inner nodes) and parent (-1 for a top node), each parent before its children, and
    the position of every node of ``request``.

    The nodes are those the input determines, in pre-order, then one leaf per residual class (the column
    of an inner node). Each wanted node's subtree is whole, so every wanted node is computed exactly as in
    the whole tree.
    """
    key = ("log-tree", request.nodes, None if columns is None else tuple(columns))
    found: tuple[np.ndarray, np.ndarray, np.ndarray] = _cached(
        taxonomy, key, lambda: _build_log_tree(taxonomy, request, columns)
    )
    return found


def _build_log_tree(
    taxonomy: Taxonomy, request: Plan, columns: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    full = plan(taxonomy, None, columns)
    idx = taxonomy.index
    keep = _tree_rows(taxonomy, request, full)
    names = [full.nodes[k] for k in keep]
    rows = np.array([idx.position[n] for n in names], dtype=np.int64)
    to_tree = np.full(idx.n_nodes, -1, dtype=np.int64)
    to_tree[rows] = np.arange(len(rows))
    parent_rows = np.asarray(idx.parent, dtype=np.int64)[rows]
    parent = np.where(parent_rows >= 0, to_tree[np.maximum(parent_rows, 0)], -1)
    has_children = np.bincount(parent[parent >= 0], minlength=len(rows)) > 0
    pre_col = full.start[keep]  # a class node's column; a residual class's node: its residual column
    # a residual class is a column of an inner node: a leaf of its own below that node, appended after
    # every node (the kernel only needs each parent before its children)
    split = {residual_node(c) for c in full.columns}
    residual = [k for k, n in enumerate(names) if n in split]
    column = np.concatenate([np.where(has_children, -1, pre_col), pre_col[residual]])
    parent = np.concatenate([parent, np.array(residual, dtype=np.int64)])
    if full.perm is not None:
        column = np.where(column >= 0, full.perm[np.maximum(column, 0)], -1)
    wanted = to_tree[np.array([idx.position[n] for n in request.nodes], dtype=np.int64)]
    return column.astype(np.int64), parent.astype(np.int64), wanted.astype(np.int64)


def _input_columns(request: Plan) -> np.ndarray:
    """The sorted input columns under any node of the plan (a column under two nodes once)."""
    pre = np.concatenate([np.arange(s, e) for s, e in zip(request.start, request.end)])
    return np.unique(pre if request.perm is None else request.perm[pre])


def conditional_columns(
    taxonomy: Taxonomy,
    positive: Sequence[str] | str,
    negative: Sequence[str] | str,
    columns: Sequence[str] | None,
) -> tuple[Plan, np.ndarray, np.ndarray]:
    """``(plan of the positive nodes, positive input columns, negative input columns)`` of a binary task,
    each side the sorted union of its nodes' columns.

    Raises:
        RollUpError: an empty side, or sides that share columns (the message names them).
    """
    pos_names = [positive] if isinstance(positive, str) else list(positive)
    neg_names = [negative] if isinstance(negative, str) else list(negative)
    if not pos_names or not neg_names:
        raise RollUpError("conditional needs at least one positive and one negative node")
    pos_plan = plan(taxonomy, pos_names, columns)
    pos_cols = _input_columns(pos_plan)
    neg_cols = _input_columns(plan(taxonomy, neg_names, columns))
    shared = np.intersect1d(pos_cols, neg_cols)
    if len(shared):
        names = [pos_plan.columns[c] for c in shared[:8]]
        more = f" and {len(shared) - 8} more" if len(shared) > 8 else ""
        kind = "leaves" if columns is None else "classes"
        raise RollUpError(
            f"positive {pos_names} and negative {neg_names} overlap: {len(shared)} {kind} lie "
            f"under both ({', '.join(map(repr, names))}{more}); the two sides must be disjoint"
        )
    return pos_plan, pos_cols, neg_cols


# --- the one input check ------------------------------------------------------------------------------------


def is_tensor(values: Any) -> bool:
    """Whether ``values`` is a torch tensor, without importing torch (no torch loaded: no tensor)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(values, torch.Tensor)


def _dtype_name(values: Any) -> str:
    return str(values.dtype).removeprefix("torch.")


def check_input(values: Any, request: Plan) -> None:
    """Raise :class:`RollUpError` unless ``values`` is a floating ``(..., n_columns)`` array or tensor.

    The message is the same on every face of the roll-up; it names the columns expected ("leaf" when
    they are the taxonomy's leaves, "class" for a cut) and the first few of them.
    """
    if isinstance(values, np.ndarray):
        floating = values.dtype.kind == "f"
    elif is_tensor(values):
        floating = values.is_floating_point()
    else:
        raise RollUpError(
            f"roll-up input must be a torch.Tensor or numpy.ndarray, got {type(values).__name__}"
        )
    if not floating:
        raise RollUpError(f"roll-up input must be floating point, got dtype {_dtype_name(values)}")
    shape = tuple(int(s) for s in values.shape)
    n = request.n_columns
    if not shape or shape[-1] != n:
        first = ", ".join(request.columns[:3]) + (", ..." if n > 3 else "")
        raise RollUpError(
            f"roll-up input has shape {shape}; expected (..., {n}) "
            f"with one column per {request.kind} ({first})"
        )


def check_out(out: Any, values: Any, shape: tuple[int, ...]) -> None:
    """Raise :class:`RollUpError` unless ``out`` can take the result: contiguous, writable, of ``shape``
    and of the input's dtype, kind (numpy array or tensor) and device."""
    if isinstance(values, np.ndarray):
        fits = (
            isinstance(out, np.ndarray)
            and out.dtype == values.dtype
            and out.flags.c_contiguous
            and out.flags.writeable
        )
    else:
        fits = (
            is_tensor(out)
            and out.dtype == values.dtype
            and out.device == values.device
            and out.is_contiguous()
        )
    if not fits or tuple(int(s) for s in out.shape) != shape:
        raise RollUpError(
            f"out must be a contiguous {_dtype_name(values)} array of shape {shape} like the input "
            "(a numpy array for numpy input, a tensor on the input's device for a tensor)"
        )
