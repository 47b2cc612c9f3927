"""Roll-up of leaf probabilities to any node of the tree: ``P(node) = sum of P(leaf)`` over its leaves.

Three functions, one kernel (shared with :class:`hierclf.nn.rollup_modules.RollUp`):

* :func:`rollup`: probabilities of named nodes (all nodes in pre-order by default);
* :func:`log_rollup`: ``log P(node)`` from log-probabilities, stable for very negative inputs;
* :func:`conditional`: ``P(pos) / (P(pos) + P(neg))``, the score of a clinical task (melanoma vs nevus).

How it works. In the taxonomy's pre-order the leaves under any node are one contiguous column range
(``taxonomy.index.leaf_start/leaf_end``; for inputs over a cut, :meth:`Taxonomy.column_ranges`), so every
node is a range sum: with the row prefix sum ``S[:, j] = sum(probs[:, :j])``,
``P(node) = S[:, end] - S[:, start]``. The prefix is accumulated in float64: a float32 prefix would lose
*relative* precision for small nodes late in the column order (a node of probability 1e-9 after a prefix of
0.5 would come out as noise of about 6e-8), which breaks conditional scores and ranking metrics for
confident samples; in float64 the absolute error is about 1e-16. The batch is processed in row blocks sized
to stay in cache, written into one preallocated output; there is no Python loop over samples or nodes.
A single node is a slice sum ``probs[:, s:e].sum(1)`` accumulated in float32 (or float64 for float64
input), which keeps relative precision because every term is non-negative.

Inputs: ``(..., n_columns)`` tensors of any floating dtype on any device, or numpy arrays (numpy in, numpy
out). The output has the input's dtype (float16 / bfloat16 results are rounded once, at the end) and device.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from hierclf.errors import HierclfError

if TYPE_CHECKING:
    from hierclf.taxonomy.tree import Taxonomy

logger = logging.getLogger(__name__)

__all__ = ["RollUpError", "conditional", "log_rollup", "rollup", "rollup_nodes"]

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)

#: bytes of work space per row block on CPU (float64 prefix, gathered ends, sums): measured best at 8 MB
#: (inside the 32 MB L3) with 1 and 2 threads; smaller blocks pay per-op overhead, badly with 2 threads
_CPU_BLOCK_BYTES = 8 * 1024 * 1024
#: on accelerators the blocks only bound the temporary memory
_DEVICE_BLOCK_BYTES = 512 * 1024 * 1024


class RollUpError(HierclfError, ValueError):
    """Bad roll-up request: a node below the input cut, overlapping classes, a wrong input shape."""


# --- the plan: which column ranges to sum (computed once per taxonomy / nodes / columns) ---------------


@dataclass(frozen=True)
class _Plan:
    """Index structure of a roll-up request, in numpy (modules turn it into buffers).

    ``perm[k]`` is the input column holding the ``k``-th cut node in pre-order (``None`` when the input is
    already in pre-order); node ``i`` of the request sums pre-order columns ``start[i]:end[i]``.
    """

    nodes: tuple[str, ...]
    columns: tuple[str, ...]
    perm: np.ndarray | None
    start: np.ndarray
    end: np.ndarray


_PLANS: dict[int, dict[tuple[Any, ...], _Plan]] = {}


def _plans_for(taxonomy: Taxonomy) -> dict[tuple[Any, ...], _Plan]:
    key = id(taxonomy)
    if key not in _PLANS:
        _PLANS[key] = {}
        weakref.finalize(taxonomy, _PLANS.pop, key, None)
    return _PLANS[key]


def _cut_columns(
    taxonomy: Taxonomy, columns: Sequence[str] | None
) -> tuple[tuple[str, ...], np.ndarray | None, tuple[str, ...]]:
    """(input columns as node ids, permutation input -> pre-order or None, cut in pre-order)."""
    if columns is None:
        return taxonomy.leaves, None, taxonomy.leaves
    if isinstance(columns, str):
        raise RollUpError("columns must be a sequence of node names, not one string")
    given = tuple(taxonomy.resolve(c) for c in columns)
    cut = taxonomy.cut(given)  # raises TaxonomyError naming overlaps / uncovered leaves
    if given == cut:
        return given, None, cut
    where = {c: k for k, c in enumerate(given)}
    return given, np.array([where[c] for c in cut], dtype=np.int64), cut


def _resolve_nodes(
    taxonomy: Taxonomy,
    nodes: Sequence[str] | str | None,
    cut: tuple[str, ...],
    ranges: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[str, ...]:
    if nodes is None:
        if ranges is None:
            return taxonomy.nodes
        return tuple(n for n, s in zip(taxonomy.nodes, ranges[0]) if s >= 0)
    if isinstance(nodes, str):
        nodes = [nodes]
    ids = tuple(taxonomy.resolve(n) for n in nodes)
    if ranges is not None:
        pos = taxonomy.index.position
        for name, n in zip(nodes, ids):
            if ranges[0][pos[n]] < 0:
                above = taxonomy.cut_node_above(n, cut)
                raise RollUpError(
                    f"node {name!r} lies below the input columns: the probabilities only cover "
                    f"its ancestor {above!r} (a class of the cut), so P({name!r}) is unknown; "
                    f"ask for {above!r} or a node above it"
                )
    return ids


def _plan(taxonomy: Taxonomy, nodes: Sequence[str] | str | None, columns: Sequence[str] | None) -> _Plan:
    key = (
        None if nodes is None else (nodes,) if isinstance(nodes, str) else tuple(nodes),
        None if columns is None else tuple(columns),
    )
    plans = _plans_for(taxonomy)
    found = plans.get(key)
    if found is not None:
        return found
    given, perm, cut = _cut_columns(taxonomy, columns)
    idx = taxonomy.index
    if columns is None:
        starts, ends, ranges = idx.leaf_start, idx.leaf_end, None
    else:
        starts, ends = taxonomy.column_ranges(cut)
        ranges = (starts, ends)
    ids = _resolve_nodes(taxonomy, nodes, cut, ranges)
    rows = np.array([idx.position[n] for n in ids], dtype=np.int64)
    plan = _Plan(
        nodes=ids,
        columns=given,
        perm=perm,
        start=np.asarray(starts[rows], dtype=np.int64),
        end=np.asarray(ends[rows], dtype=np.int64),
    )
    if len(plans) > 64:
        plans.clear()
    plans[key] = plan
    return plan


# --- kernels (tensor in, tensor out; shared with the nn.Modules) -----------------------------------------


def _acc_dtype(x: Tensor) -> torch.dtype:
    """Prefix accumulation dtype: float64 where the device has it."""
    return torch.float32 if x.device.type == "mps" else torch.float64


def _sum_dtype(x: Tensor) -> torch.dtype:
    """Slice-sum accumulation dtype: at least float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _block_rows(x: Tensor, n_columns: int, n_sums: int) -> int:
    budget = _CPU_BLOCK_BYTES if x.device.type == "cpu" else _DEVICE_BLOCK_BYTES
    per_row = 8 * (n_columns + 1 + 3 * n_sums) + x.element_size() * (n_columns + n_sums)
    return max(8, min(4096, budget // max(per_row, 1)))


def _split(start: Tensor, end: Tensor, n_columns: int) -> tuple[Tensor, Tensor, Tensor]:
    """Separate the outputs that are one input column (copied exactly) from those that need a sum.

    Returns ``(sum_start, sum_end, take)``: the ranges that need a sum, and for each output the column of
    ``Z = [x, sums]`` holding it (``take[k] = start[k]`` for a one-column output, ``n_columns + i`` for the
    ``i``-th sum).
    """
    multi = (end - start) > 1
    rank = torch.cumsum(multi.to(torch.int64), 0) - 1
    take = torch.where(multi, rank + n_columns, start)
    return start[multi], end[multi], take


def _range_sums(x: Tensor, perm: Tensor | None, start: Tensor, end: Tensor) -> Tensor:
    """Range sums over the whole batch at once: differentiable, traceable (export, compile, script).

    Args:
        x: ``(batch, n_columns)``.
        perm: ``(n_columns,)`` input column of each pre-order column, or None.
        start, end: ``(n_out,)`` pre-order column ranges.

    Returns:
        ``(batch, n_out)`` in ``x.dtype``; one-column outputs are exact copies of their column.
    """
    if perm is not None:
        x = x.index_select(1, perm)
    sum_start, sum_end, take = _split(start, end, x.shape[1])
    acc = _acc_dtype(x)
    prefix = torch.nn.functional.pad(torch.cumsum(x, 1, dtype=acc), (1, 0))
    sums = (prefix.index_select(1, sum_end) - prefix.index_select(1, sum_start)).to(x.dtype)
    return torch.cat([x, sums], 1).index_select(1, take)


def _range_sums_blocked(
    x: Tensor, perm: Tensor | None, start: Tensor, end: Tensor, out: Tensor | None = None
) -> Tensor:
    """As :func:`_range_sums`, computed in cache-sized row blocks into one output (no autograd).

    Per block: float64 prefix of the block, one gather of both ends of every multi-column range, one
    subtraction, then one gather of the output columns from ``[block, sums]``. (``torch.gather`` with an
    expanded index is used: on CPU it is several times faster than ``index_select`` along dim 1.)
    """
    from hierclf.rollup_engine import cpu_kernels as _rollup_kernel

    if _rollup_kernel.usable(x):  # fused, four rows at a time; bit-identical to the code below
        return _rollup_kernel.range_sums(x, perm, start, end, out)
    batch, n_out = x.shape[0], start.shape[0]
    n_cols = x.shape[1]
    if out is None:
        out = torch.empty((batch, n_out), dtype=x.dtype, device=x.device)
    if batch == 0:
        return out
    sum_start, sum_end, take = _split(start, end, n_cols)
    n_sums = sum_start.shape[0]
    rows = min(_block_rows(x, n_cols, n_sums), batch)
    acc = _acc_dtype(x)
    dev = x.device
    prefix = torch.zeros((rows, n_cols + 1), dtype=acc, device=dev)
    ends = torch.cat([sum_end, sum_start]).expand(rows, 2 * n_sums)
    gathered = torch.empty((rows, 2 * n_sums), dtype=acc, device=dev)
    diff = torch.empty((rows, n_sums), dtype=acc, device=dev)
    z = torch.empty((rows, n_cols + n_sums), dtype=x.dtype, device=dev)
    take_rows = take.expand(rows, n_out)
    for b0 in range(0, batch, rows):  # loop over row blocks (a handful), never over samples or nodes
        b1 = min(batch, b0 + rows)
        n = b1 - b0
        if perm is None:
            z[:n, :n_cols].copy_(x[b0:b1])
        else:
            torch.index_select(x[b0:b1], 1, perm, out=z[:n, :n_cols])
        if n_sums:
            torch.cumsum(z[:n, :n_cols], 1, dtype=acc, out=prefix[:n, 1:])
            torch.gather(prefix[:n], 1, ends[:n], out=gathered[:n])
            torch.sub(gathered[:n, :n_sums], gathered[:n, n_sums:], out=diff[:n])
            z[:n, n_cols:].copy_(diff[:n])
        torch.gather(z[:n], 1, take_rows[:n], out=out[b0:b1])
    return out


def _slice_sum(x: Tensor, perm: Tensor | None, s: int, e: int) -> Tensor:
    """``(batch, 1)``: one node's columns summed (fast path for a single node)."""
    block = x[:, s:e] if perm is None else x.index_select(1, perm[s:e])
    return block.sum(1, keepdim=True, dtype=_sum_dtype(x)).to(x.dtype)


def _is_tracing() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - very old torch
        return False


def _rollup_tensor(
    x: Tensor, perm: Tensor | None, start: Tensor, end: Tensor, out: Tensor | None = None
) -> Tensor:
    """Dispatch: single-node slice sum, blocked (no grad, eager) or whole-batch differentiable path."""
    needs_grad = x.requires_grad and torch.is_grad_enabled()
    if out is not None and needs_grad:
        raise RollUpError("out= is for inference: a roll-up that records gradients allocates its result")
    if start.shape[0] == 1:
        s, e = int(start[0]), int(end[0])
        result = _slice_sum(x, perm, s, e)
        return result if out is None else out.copy_(result)
    if needs_grad or _is_tracing():
        return _range_sums(x, perm, start, end)
    return _range_sums_blocked(x, perm, start, end, out)


def _log_range_sums(
    x: Tensor, perm: Tensor | None, start: Tensor, end: Tensor, pair_col: Tensor, pair_node: Tensor
) -> Tensor:
    """``log`` of range sums of ``exp(x)``, each node shifted by its own maximum (stable to any magnitude).

    ``pair_col``/``pair_node`` list every (pre-order column, output node) membership. Accumulates in float64.
    """
    if perm is not None:
        x = x.index_select(1, perm)
    n_out = start.shape[0]
    acc = _acc_dtype(x)
    if n_out == 1:
        s, e = int(start[0]), int(end[0])
        return torch.logsumexp(x[:, s:e].to(acc), dim=1, keepdim=True).to(x.dtype)
    vals = x.index_select(1, pair_col).to(acc)  # (batch, n_pairs)
    index = pair_node.expand(x.shape[0], -1)
    with torch.no_grad():
        shift = torch.full((x.shape[0], n_out), float("-inf"), dtype=acc, device=x.device)
        shift = shift.scatter_reduce(1, index, vals.detach(), reduce="amax", include_self=True)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    terms = torch.exp(vals - shift.index_select(1, pair_node))
    sums = torch.zeros((x.shape[0], n_out), dtype=acc, device=x.device).index_add(1, pair_node, terms)
    return (torch.log(sums) + shift).to(x.dtype)


# --- public functions --------------------------------------------------------------------------------------


def _as_tensor(values: Any, what: str) -> tuple[Tensor, bool]:
    if isinstance(values, Tensor):
        return values, False
    if isinstance(values, np.ndarray):
        if values.dtype.kind != "f":
            raise RollUpError(f"{what} must be a floating-point array, got dtype {values.dtype}")
        if any(s < 0 for s in values.strides) or not values.flags.writeable:
            values = np.array(values)  # from_numpy needs non-negative strides and a writable buffer
        return torch.from_numpy(values), True
    raise RollUpError(f"{what} must be a torch.Tensor or numpy.ndarray, got {type(values).__name__}")


def _flatten(x: Tensor, n_columns: int, what: str, columns: tuple[str, ...]) -> Tensor:
    if not x.is_floating_point():
        raise RollUpError(f"{what} must be floating point, got dtype {x.dtype}")
    if x.ndim == 0 or x.shape[-1] != n_columns:
        shape = tuple(x.shape)
        first = ", ".join(columns[:3]) + (", ..." if len(columns) > 3 else "")
        raise RollUpError(
            f"{what} has shape {shape}; expected (..., {n_columns}) with one column per "
            f"{'leaf' if what else 'class'} ({first})"
        )
    return x.reshape(-1, n_columns)


def _tensors(plan: _Plan, device: torch.device) -> tuple[Tensor | None, Tensor, Tensor]:
    perm = None if plan.perm is None else torch.as_tensor(plan.perm, device=device)
    return perm, torch.as_tensor(plan.start, device=device), torch.as_tensor(plan.end, device=device)


def rollup(
    probs: ArrayT,
    taxonomy: Taxonomy,
    nodes: Sequence[str] | str | None = None,
    *,
    columns: Sequence[str] | None = None,
    out: Tensor | None = None,
) -> ArrayT:
    """Probabilities of tree nodes: each node is the sum of its leaves' (or cut classes') probabilities.

    Args:
        probs: ``(..., n_columns)`` probabilities over ``taxonomy.leaves`` (``columns=None``) or over
            ``columns``; any float dtype, any device; a numpy array gives a numpy array back.
        taxonomy: the tree.
        nodes: node names (ids, aliases, display names) in the order wanted; a single name gives a
            ``(..., 1)`` result through the fast slice-sum path. ``None``: every node the input determines,
            in pre-order (all of ``taxonomy.nodes`` for leaf inputs; the nodes at or above the cut for a cut).
        columns: names of the input columns when they are a cut of the tree (e.g. training classes), in
            any order; ``None`` means ``taxonomy.leaves`` in pre-order.
        out: a preallocated, contiguous result tensor (same dtype and device as ``probs``) to write into,
            for inference over many batches: a fresh result of millions of values costs the operating system
            more to hand out (page faults) than the roll-up costs to compute. Not with autograd.

    Returns:
        ``(..., len(nodes))`` in the input's dtype and device (``out`` when given). Accumulation is in
        float64 (float32 on MPS). On CPU, float32/float64 inputs without autograd run through a fused kernel
        (``hierclf.rollup_engine.cpu_kernels``, numba) whose results are bit-identical to the torch path.

    Raises:
        RollUpError: wrong shape or dtype, or a node below the cut (the message names the cut node above it).
        UnknownNameError: a node or column name the taxonomy does not know (with "did you mean").

    Example:
        >>> from hierclf import Taxonomy
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> probs = torch.tensor([[0.1, 0.2, 0.3, 0.05, 0.05, 0.25, 0.05]])  # tax.leaves order
        >>> rollup(probs, tax, ["malignant", "benign", "skin_lesion"])
        tensor([[0.3500, 0.6500, 1.0000]])
        >>> rollup(probs.numpy(), tax, "mel")  # numpy in, numpy out; aliases resolve
        array([[0.05]], dtype=float32)
    """
    plan = _plan(taxonomy, nodes, columns)
    x, was_numpy = _as_tensor(probs, "probs")
    flat = _flatten(x, len(plan.columns), "probs", plan.columns)
    perm, start, end = _tensors(plan, flat.device)
    shape: tuple[int, ...] = tuple(x.shape[:-1]) + (len(plan.nodes),)
    if out is not None and (
        not isinstance(out, Tensor)
        or tuple(out.shape) != shape
        or out.dtype != flat.dtype
        or out.device != flat.device
        or not out.is_contiguous()
    ):
        raise RollUpError(f"out must be a contiguous {flat.dtype} tensor of shape {shape} on {flat.device}")
    flat_out = None if out is None else out.view(-1, len(plan.nodes))
    result = _rollup_tensor(flat, perm, start, end, flat_out).reshape(shape)
    if out is not None:
        return out  # type: ignore[return-value]
    return result.numpy() if was_numpy else result  # type: ignore[return-value]


def rollup_nodes(
    taxonomy: Taxonomy, nodes: Sequence[str] | str | None = None, *, columns: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The node ids of :func:`rollup`'s output columns, in order (names resolved, ``None`` expanded).

    Same arguments and errors as :func:`rollup`, without the probabilities: use it to label a result, or
    to size an ``out=`` buffer before the first batch arrives.

    Example:
        >>> from hierclf import Taxonomy
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> rollup_nodes(tax, ["mel", "benign"])
        ('melanoma', 'benign')
        >>> len(rollup_nodes(tax)) == len(tax.nodes)
        True
    """
    return _plan(taxonomy, nodes, columns).nodes


def _pairs(plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    lengths = plan.end - plan.start
    pair_node = np.repeat(np.arange(len(plan.nodes), dtype=np.int64), lengths)
    offsets = np.repeat(plan.start - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    pair_col = np.arange(int(lengths.sum()), dtype=np.int64) + offsets
    return pair_col, pair_node


def _log_tree(
    taxonomy: Taxonomy, plan: _Plan, columns: Sequence[str] | None, *, permuted: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CPU log kernel's tree: for every node at or above the input columns (pre-order) its input column
    (-1 for inner nodes) and parent position (-1 for the root), and the positions of ``plan.nodes``.

    ``permuted=False``: columns counted in pre-order, for an input already put in pre-order (the modules).
    """
    key = ("log-tree", plan.nodes, None if columns is None else tuple(columns), permuted)
    plans = _plans_for(taxonomy)
    found = plans.get(key)
    if found is not None:
        return found  # type: ignore[return-value]
    full = _plan(taxonomy, None, columns)
    idx = taxonomy.index
    rows = np.array([idx.position[n] for n in full.nodes], dtype=np.int64)
    to_full = np.full(idx.n_nodes, -1, dtype=np.int64)
    to_full[rows] = np.arange(len(rows))
    parent_rows = np.asarray(idx.parent, dtype=np.int64)[rows]
    parent = np.where(parent_rows >= 0, to_full[np.maximum(parent_rows, 0)], -1)
    has_children = np.bincount(parent[parent >= 0], minlength=len(rows)) > 0
    pre_col = full.start
    in_col = pre_col if full.perm is None or not permuted else full.perm[pre_col]
    column = np.where(has_children, -1, in_col).astype(np.int64)
    wanted = to_full[np.array([idx.position[n] for n in plan.nodes], dtype=np.int64)]
    tree = (column, parent.astype(np.int64), wanted.astype(np.int64))
    plans[key] = tree  # type: ignore[assignment]
    return tree


def log_rollup(
    log_probs: ArrayT,
    taxonomy: Taxonomy,
    nodes: Sequence[str] | str | None = None,
    *,
    columns: Sequence[str] | None = None,
) -> ArrayT:
    """``log P(node)`` from leaf (or cut-class) log-probabilities: a log-sum-exp over each node's columns.

    Every node is shifted by its own maximum before exponentiating and sums are accumulated in float64, so
    nodes whose log-probability is far below the row's maximum (say -1000) come out exactly instead of
    ``-inf``; gradients are those of log-sum-exp (softmax weights within the node). Arguments, result
    shape and errors as in :func:`rollup`. Columns at ``-inf`` are fine; a node whose columns are all
    ``-inf`` gets ``-inf``.

    Example:
        >>> from hierclf import Taxonomy
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> lp = torch.full((1, 7), -1000.0, dtype=torch.float64)
        >>> log_rollup(lp, tax, ["malignant", "skin_lesion"]) + 1000  # log 3 and log 7
        tensor([[1.0986, 1.9459]], dtype=torch.float64)
    """
    plan = _plan(taxonomy, nodes, columns)
    x, was_numpy = _as_tensor(log_probs, "log_probs")
    flat = _flatten(x, len(plan.columns), "log_probs", plan.columns)
    needs_grad = flat.requires_grad and torch.is_grad_enabled()
    from hierclf.rollup_engine import cpu_kernels as _rollup_kernel

    if not needs_grad and len(plan.nodes) > 1 and _rollup_kernel.usable(flat) and not _is_tracing():
        # CPU, no autograd: one pass over the tree per row (each node still shifted by its own maximum)
        out = _rollup_kernel.log_range_sums(flat, *_log_tree(taxonomy, plan, columns))
        out = out.reshape(*x.shape[:-1], len(plan.nodes))
        return out.numpy() if was_numpy else out  # type: ignore[return-value]
    perm, start, end = _tensors(plan, flat.device)
    pair_col, pair_node = (torch.as_tensor(a, device=flat.device) for a in _pairs(plan))
    if needs_grad or len(plan.nodes) == 1 or flat.shape[0] == 0:
        out = _log_range_sums(flat, perm, start, end, pair_col, pair_node)
    else:  # bound the (rows, n_pairs) temporaries
        step = max(1, (_CPU_BLOCK_BYTES * 2) // max(8 * len(pair_col), 1))
        out = torch.cat(
            [
                _log_range_sums(flat[b : b + step], perm, start, end, pair_col, pair_node)
                for b in range(0, flat.shape[0], step)
            ]
        )
    out = out.reshape(*x.shape[:-1], len(plan.nodes))
    return out.numpy() if was_numpy else out  # type: ignore[return-value]


def _column_set(taxonomy: Taxonomy, plan: _Plan) -> list[np.ndarray]:
    """Input columns covered by each node of the plan."""
    sets = []
    for s, e in zip(plan.start, plan.end):
        pre = np.arange(s, e)
        sets.append(pre if plan.perm is None else plan.perm[pre])
    return sets


def conditional(
    probs: ArrayT,
    taxonomy: Taxonomy,
    positive: Sequence[str] | str,
    negative: Sequence[str] | str,
    *,
    columns: Sequence[str] | None = None,
    undefined: float = 0.5,
) -> ArrayT:
    """The score of a binary clinical task: ``P(pos) / (P(pos) + P(neg))``.

    ``P(pos)`` is the probability of the union of the ``positive`` nodes' leaves (a leaf under two positive
    nodes counts once), likewise ``P(neg)``. Sums are accumulated in float64.

    Args:
        probs: ``(..., n_columns)`` as in :func:`rollup`.
        taxonomy: the tree.
        positive, negative: node names (ids or aliases); their leaf sets must be disjoint.
        columns: input columns when they are a cut (see :func:`rollup`).
        undefined: the score of rows where ``P(pos) + P(neg) == 0`` (the model puts all its mass elsewhere
            and has no opinion on this task). Default 0.5, the uninformative score, so ranking metrics stay
            defined; pass ``float("nan")`` to mark such rows instead.

    Returns:
        ``(...,)`` scores in the input's dtype.

    Raises:
        RollUpError: overlapping positive and negative sets (the message names the shared leaves or
            classes), empty sets, nodes below the cut.

    Example:
        >>> from hierclf import Taxonomy
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> probs = torch.tensor([[0.1, 0.2, 0.3, 0.05, 0.05, 0.25, 0.05]], dtype=torch.float64)
        >>> tax.leaves[0], tax.leaves[4]
        ('melanocytic_nevus', 'melanoma')
        >>> conditional(probs, tax, ["mel"], ["nv"])  # 0.05 / (0.05 + 0.1)
        tensor([0.3333], dtype=torch.float64)
    """
    pos_names = [positive] if isinstance(positive, str) else list(positive)
    neg_names = [negative] if isinstance(negative, str) else list(negative)
    if not pos_names or not neg_names:
        raise RollUpError("conditional needs at least one positive and one negative node")
    pos_plan = _plan(taxonomy, pos_names, columns)
    neg_plan = _plan(taxonomy, neg_names, columns)
    pos_cols = np.unique(np.concatenate(_column_set(taxonomy, pos_plan)))
    neg_cols = np.unique(np.concatenate(_column_set(taxonomy, neg_plan)))
    shared = np.intersect1d(pos_cols, neg_cols)
    if len(shared):
        names = [pos_plan.columns[c] for c in shared[:8]]
        more = f" and {len(shared) - 8} more" if len(shared) > 8 else ""
        kind = "leaves" if columns is None else "classes"
        raise RollUpError(
            f"positive {pos_names} and negative {neg_names} overlap: {len(shared)} {kind} lie "
            f"under both ({', '.join(map(repr, names))}{more}); the two sides must be disjoint"
        )
    x, was_numpy = _as_tensor(probs, "probs")
    flat = _flatten(x, len(pos_plan.columns), "probs", pos_plan.columns)
    acc = _acc_dtype(flat)

    def side(cols: np.ndarray) -> Tensor:
        if cols[-1] - cols[0] + 1 == len(cols):  # contiguous: a slice, no copy
            return flat[:, int(cols[0]) : int(cols[-1]) + 1].sum(1, dtype=acc)
        return flat.index_select(1, torch.as_tensor(cols, device=flat.device)).sum(1, dtype=acc)

    p_pos, p_neg = side(pos_cols), side(neg_cols)
    total = p_pos + p_neg
    defined = total > 0
    score = torch.where(
        defined,
        p_pos / torch.where(defined, total, torch.ones_like(total)),
        torch.full_like(total, undefined),
    )
    out = score.to(flat.dtype).reshape(x.shape[:-1])
    return out.numpy() if was_numpy else out  # type: ignore[return-value]
