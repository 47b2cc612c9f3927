"""The roll-up on tensors: the compute behind :mod:`hierclf.functional` on tensors and the roll-up modules.

Written once, used by every tensor face:

* **the differentiable compute** (:func:`range_sums`, :func:`slice_sum`, :func:`log_range_sums`,
  :func:`log_slice_sum`): whole-batch, TorchScript-compatible free functions over tensors, so autograd,
  ``torch.jit.script``, ``torch.export`` and ``torch.compile`` go through them; ``RollUp.forward`` /
  ``LogRollUp.forward`` call them when scripted or traced, the dispatchers below when autograd records;
* **the dispatchers** (:func:`rollup`, :func:`log_rollup`, eager only): the single-node slice sum, the CPU
  kernels (:mod:`hierclf.rollup_engine.cpu_kernels`, on ``tensor.numpy()`` views) in eager CPU inference,
  else the row-blocked torch path (:func:`blocked_range_sums`) or the differentiable compute;
* :func:`conditional`'s two side sums.

This module imports torch; :mod:`hierclf.rollup_engine.numpy_ops` is its numpy twin (same numbers) that
does not.
"""

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from hierclf.rollup_engine import cpu_kernels
from hierclf.rollup_engine.request_plans import Plan, RollUpError, pairs

__all__ = [
    "RangeIndex",
    "blocked_range_sums",
    "conditional",
    "is_tracing",
    "log_range_sums",
    "log_rollup",
    "log_slice_sum",
    "range_index",
    "range_sums",
    "rollup",
    "slice_sum",
    "split_ranges",
    "uses_cpu_kernel",
]

#: bytes of work space per row block on CPU (float64 prefix, gathered ends, sums): measured best at 8 MB
#: (inside the 32 MB L3) with 1 and 2 threads; smaller blocks pay per-op overhead, badly with 2 threads
_CPU_BLOCK_BYTES = 8 * 1024 * 1024
#: on accelerators the blocks only bound the temporary memory
_DEVICE_BLOCK_BYTES = 512 * 1024 * 1024


# --- the differentiable compute, written once (TorchScript-compatible) ------------------------------------


def split_ranges(start: Tensor, end: Tensor, n_columns: int) -> tuple[Tensor, Tensor, Tensor]:
    """Separate the outputs that are one input column (copied exactly) from those that need a sum.

    Returns ``(sum_start, sum_end, take)``: the ranges that need a sum, and for each output the column of
    ``Z = [x, sums]`` holding it (``take[k] = start[k]`` for a one-column output, ``n_columns + i`` for the
    ``i``-th sum).
    """
    multi = (end - start) > 1
    rank = torch.cumsum(multi.to(torch.int64), 0) - 1
    take = torch.where(multi, rank + n_columns, start)
    return start[multi], end[multi], take


def range_sums(x: Tensor, sum_start: Tensor, sum_end: Tensor, take: Tensor) -> Tensor:
    """Range sums over the whole batch at once: differentiable, traceable (export, compile, script).

    Args:
        x: ``(batch, n_columns)`` in pre-order.
        sum_start, sum_end, take: :func:`split_ranges` of the outputs' pre-order column ranges.

    Returns:
        ``(batch, n_out)`` in ``x.dtype``; one-column outputs are exact copies of their column. The prefix is
        accumulated in float64 (float32 on MPS, which has no float64).
    """
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    prefix = torch.nn.functional.pad(torch.cumsum(x, 1, dtype=acc), [1, 0])
    sums = (prefix.index_select(1, sum_end) - prefix.index_select(1, sum_start)).to(x.dtype)
    return torch.cat([x, sums], 1).index_select(1, take)


def slice_sum(x: Tensor, first: int, stop: int) -> Tensor:
    """``(batch, 1)``: columns ``first:stop`` summed, in float32 (float64 for float64 input).

    Every term of a probability is non-negative, so a plain sum keeps its relative precision.
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x[:, first:stop].sum(1, keepdim=True, dtype=acc).to(x.dtype)


def log_range_sums(x: Tensor, pair_col: Tensor, pair_node: Tensor, n_out: int) -> Tensor:
    """``log`` of range sums of ``exp(x)``, each node shifted by its own maximum (stable to any magnitude).

    Args:
        x: ``(batch, n_columns)`` log-probabilities in pre-order.
        pair_col, pair_node: every (pre-order column, output) membership
            (:func:`~hierclf.rollup_engine.request_plans.pairs`).
        n_out: number of outputs.

    Returns:
        ``(batch, n_out)`` in ``x.dtype``, accumulated in float64 (float32 on MPS).
    """
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    vals = x.index_select(1, pair_col).to(acc)  # (batch, n_pairs)
    index = pair_node.expand(x.shape[0], pair_node.shape[0])
    with torch.no_grad():
        shift = torch.full([x.shape[0], n_out], float("-inf"), dtype=acc, device=x.device)
        shift = shift.scatter_reduce(1, index, vals.detach(), reduce="amax", include_self=True)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    terms = torch.exp(vals - shift.index_select(1, pair_node))
    sums = torch.zeros([x.shape[0], n_out], dtype=acc, device=x.device).index_add(1, pair_node, terms)
    return (torch.log(sums) + shift).to(x.dtype)


def log_slice_sum(x: Tensor, first: int, stop: int) -> Tensor:
    """``(batch, 1)``: ``logsumexp`` of columns ``first:stop``, in float64 (float32 on MPS)."""
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    return torch.logsumexp(x[:, first:stop].to(acc), dim=1, keepdim=True).to(x.dtype)


# --- eager dispatch -------------------------------------------------------------------------------------


class RangeIndex(NamedTuple):
    """A request's index as tensors on the input's device (a module's buffers, or built per call)."""

    perm: Tensor | None
    start: Tensor
    end: Tensor
    sum_start: Tensor
    sum_end: Tensor
    take: Tensor


def range_index(request: Plan, device: torch.device) -> RangeIndex:
    """The tensors of a plan on ``device`` (on CPU they share the plan's memory)."""
    perm = None if request.perm is None else torch.as_tensor(request.perm, device=device)
    start = torch.as_tensor(request.start, device=device)
    end = torch.as_tensor(request.end, device=device)
    return RangeIndex(perm, start, end, *split_ranges(start, end, request.n_columns))


def is_tracing() -> bool:
    """Whether dynamo (``torch.compile``, ``torch.export``) is tracing the call."""
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - very old torch
        return False


def _needs_grad(x: Tensor) -> bool:
    return bool(x.requires_grad and torch.is_grad_enabled())


def uses_cpu_kernel(x: Tensor) -> bool:
    """Whether an eager call on ``x`` runs the numba CPU kernels: CPU, float32/float64, no autograd."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() == 2
        and x.shape[1] < 2**31
        and not _needs_grad(x)
        and not is_tracing()
        and cpu_kernels.enabled()
    )


def _block_rows(x: Tensor, n_columns: int, n_sums: int) -> int:
    budget = _CPU_BLOCK_BYTES if x.device.type == "cpu" else _DEVICE_BLOCK_BYTES
    per_row = 8 * (n_columns + 1 + 3 * n_sums) + x.element_size() * (n_columns + n_sums)
    return max(8, min(4096, budget // max(per_row, 1)))


def blocked_range_sums(x: Tensor, index: RangeIndex, out: Tensor) -> Tensor:
    """As :func:`range_sums`, computed in cache-sized row blocks into ``out`` (no autograd).

    Per block: float64 prefix of the block, one gather of both ends of every multi-column range, one
    subtraction, then one gather of the output columns from ``[block, sums]``. (``torch.gather`` with an
    expanded index is used: on CPU it is several times faster than ``index_select`` along dim 1.)
    """
    batch, n_cols = x.shape
    n_out, n_sums = index.start.shape[0], index.sum_start.shape[0]
    if batch == 0:
        return out
    rows = min(_block_rows(x, n_cols, n_sums), batch)
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    dev = x.device
    prefix = torch.zeros((rows, n_cols + 1), dtype=acc, device=dev)
    ends = torch.cat([index.sum_end, index.sum_start]).expand(rows, 2 * n_sums)
    gathered = torch.empty((rows, 2 * n_sums), dtype=acc, device=dev)
    diff = torch.empty((rows, n_sums), dtype=acc, device=dev)
    z = torch.empty((rows, n_cols + n_sums), dtype=x.dtype, device=dev)
    take_rows = index.take.expand(rows, n_out)
    for b0 in range(0, batch, rows):  # loop over row blocks (a handful), never over samples or nodes
        b1 = min(batch, b0 + rows)
        n = b1 - b0
        if index.perm is None:
            z[:n, :n_cols].copy_(x[b0:b1])
        else:
            torch.index_select(x[b0:b1], 1, index.perm, out=z[:n, :n_cols])
        if n_sums:
            torch.cumsum(z[:n, :n_cols], 1, dtype=acc, out=prefix[:n, 1:])
            torch.gather(prefix[:n], 1, ends[:n], out=gathered[:n])
            torch.sub(gathered[:n, :n_sums], gathered[:n, n_sums:], out=diff[:n])
            z[:n, n_cols:].copy_(diff[:n])
        torch.gather(z[:n], 1, take_rows[:n], out=out[b0:b1])
    return out


def _single(x: Tensor, index: RangeIndex) -> Tensor:
    first, stop = int(index.start[0]), int(index.end[0])
    if index.perm is None:
        return slice_sum(x, first, stop)
    return slice_sum(x.index_select(1, index.perm[first:stop]), 0, stop - first)


def rollup(x: Tensor, index: RangeIndex, out: Tensor | None = None) -> Tensor:
    """``(batch, n_columns) -> (batch, n_out)``, eager: the single-node slice sum, the CPU kernel (CPU
    inference), the row-blocked torch path (other inference), or the differentiable :func:`range_sums`.

    Raises:
        RollUpError: ``out`` given while autograd records.
    """
    needs_grad = _needs_grad(x)
    if out is not None and needs_grad:
        raise RollUpError("out= is for inference: a roll-up that records gradients allocates its result")
    if index.start.shape[0] == 1:
        result = _single(x, index)
        return result if out is None else out.copy_(result)
    if needs_grad or is_tracing():
        pre = x if index.perm is None else x.index_select(1, index.perm)
        return range_sums(pre, index.sum_start, index.sum_end, index.take)
    if out is None:
        out = torch.empty((x.shape[0], index.start.shape[0]), dtype=x.dtype, device=x.device)
    if uses_cpu_kernel(x):  # fused, four rows at a time; bit-identical to the torch path
        perm = None if index.perm is None else index.perm.numpy()
        cpu_kernels.range_sums(x.detach().numpy(), perm, index.start.numpy(), index.end.numpy(), out.numpy())
        return out
    return blocked_range_sums(x, index, out)


def log_rollup(
    x: Tensor,
    index: RangeIndex,
    pair_col: Tensor,
    pair_node: Tensor,
    tree: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> Tensor:
    """``(batch, n_columns) -> (batch, n_out)`` log roll-up, eager: the CPU log kernel in CPU inference
    (any number of nodes), else :func:`log_slice_sum` / :func:`log_range_sums` (row blocks without autograd).

    ``tree``: the kernel's tree for the input's column order
    (:func:`~hierclf.rollup_engine.request_plans.log_tree`).
    """
    if uses_cpu_kernel(x):  # one pass over the (pruned) tree per row, each node shifted by its own maximum
        return torch.from_numpy(cpu_kernels.log_range_sums(x.detach().numpy(), *tree))
    pre = x if index.perm is None else x.index_select(1, index.perm)
    n_out = index.start.shape[0]
    if n_out == 1:
        return log_slice_sum(pre, int(index.start[0]), int(index.end[0]))
    if _needs_grad(x) or is_tracing() or x.shape[0] == 0:
        return log_range_sums(pre, pair_col, pair_node, n_out)
    step = max(
        1, (_CPU_BLOCK_BYTES * 2) // max(8 * pair_col.shape[0], 1)
    )  # bound (rows, n_pairs) temporaries
    return torch.cat(
        [log_range_sums(pre[b : b + step], pair_col, pair_node, n_out) for b in range(0, pre.shape[0], step)]
    )


def pair_tensors(request: Plan, device: torch.device) -> tuple[Tensor, Tensor]:
    """:func:`~hierclf.rollup_engine.request_plans.pairs` of a plan as tensors on ``device``."""
    pair_col, pair_node = pairs(request)
    return torch.as_tensor(pair_col, device=device), torch.as_tensor(pair_node, device=device)


def _side(x: Tensor, cols: np.ndarray, acc: torch.dtype) -> Tensor:
    if cols[-1] - cols[0] + 1 == len(cols):  # contiguous: a slice, no copy
        return x[:, int(cols[0]) : int(cols[-1]) + 1].sum(1, dtype=acc)
    return x.index_select(1, torch.as_tensor(cols, device=x.device)).sum(1, dtype=acc)


def conditional(x: Tensor, positive: np.ndarray, negative: np.ndarray, *, undefined: float = 0.5) -> Tensor:
    """``(batch,)`` scores ``P(pos) / (P(pos) + P(neg))`` over the input columns ``positive`` / ``negative``
    (sorted), summed in float64 (float32 on MPS); ``undefined`` where both sides are 0, with gradient 0."""
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    p_pos, p_neg = _side(x, positive, acc), _side(x, negative, acc)
    total = p_pos + p_neg
    defined = total > 0
    score = torch.where(
        defined,
        p_pos / torch.where(defined, total, torch.ones_like(total)),
        torch.full_like(total, undefined),
    )
    return score.to(x.dtype)
