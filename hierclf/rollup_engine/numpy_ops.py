"""The roll-up on numpy arrays: range sums, log range sums and the conditional score; never imports torch.

Every function takes a C-contiguous ``(batch, n_columns)`` array and a
:class:`~hierclf.rollup_engine.request_plans.Plan` and returns numpy. The numbers are those of the torch path
(:mod:`hierclf.rollup_engine.torch_ops`) bit for bit, so evaluating on numpy or on tensors gives the same
scores:

* several nodes: the fused numba kernel (:mod:`hierclf.rollup_engine.cpu_kernels`), the very kernel the
  tensor path runs on CPU; without numba, the same float64 prefix in numpy (``np.cumsum`` adds in column
  order, as ``torch.cumsum`` does);
* one node, and the two sides of :func:`conditional`: torch sums a slice with its cascade summation
  (:func:`torch_order_sum` reproduces its order of additions on x86 CPUs);
* log roll-ups: the numba log kernel, as the tensor path in eager CPU inference; without numba, a numpy
  version of the torch path's per-node shifts (equal to it to rounding, not bit for bit).
"""

from __future__ import annotations

import numpy as np

from hierclf.rollup_engine import cpu_kernels
from hierclf.rollup_engine.request_plans import Plan, pairs

__all__ = ["conditional", "log_rollup", "rollup", "torch_order_sum"]

#: bytes of work space per row block of the numpy fallbacks (float64 prefix or pairs): inside the L3 cache
_BLOCK_BYTES = 8 * 1024 * 1024
#: torch's CPU sum kernels work on 256-bit vectors (AVX2; its AVX512 build keeps the AVX2 sum kernel)
_VECTOR_BYTES = 32
_ILP = 4  # independent vectors torch's row sum accumulates side by side
_LEVELS = 4  # levels of its cascade


def _block_rows(per_row_bytes: int) -> int:
    return max(8, min(4096, _BLOCK_BYTES // max(per_row_bytes, 1)))


# --- torch's summation order --------------------------------------------------------------------------------


def _ceil_log2(n: int) -> int:
    return 1 if n <= 2 else int(n - 1).bit_length()


def _multi_row_sum(v: np.ndarray) -> np.ndarray:
    """``(batch, size, rows, w) -> (batch, rows, w)``: torch's ``multi_row_sum`` over ``size`` steps.

    Steps are added in chunks of ``2**level_power``; each chunk's sum is added into level 1, and a level's
    sum moves up when the step count is a multiple of the next level's size (a cascade with O(1) state).
    """
    batch, size = v.shape[:2]
    power = max(4, _ceil_log2(size) // _LEVELS)
    step, mask = 1 << power, (1 << power) - 1
    acc = np.zeros((_LEVELS, batch, *v.shape[2:]), dtype=v.dtype)
    n_chunks = size // step
    chunk_sums = np.zeros((batch, n_chunks, *v.shape[2:]), dtype=v.dtype)
    chunks = v[:, : n_chunks * step].reshape(batch, n_chunks, step, *v.shape[2:])
    for j in range(step):  # each chunk summed in order from 0, all chunks at once
        chunk_sums += chunks[:, :, j]
    for c in range(n_chunks):  # a loop over chunks of 16+ steps, each a vector operation over the batch
        acc[0] = chunk_sums[:, c]
        done = (c + 1) * step
        for level in range(1, _LEVELS):
            acc[level] += acc[level - 1]
            acc[level - 1] = 0
            if done & (mask << (level * power)):
                break
    for i in range(n_chunks * step, size):
        acc[0] += v[:, i]
    for level in range(1, _LEVELS):
        acc[0] += acc[level]
    return acc[0]


def _row_sum(v: np.ndarray) -> np.ndarray:
    """``(batch, size, w) -> (batch, w)``: torch's ``row_sum``, four steps side by side, then combined."""
    batch, size, width = v.shape
    size_ilp = size // _ILP
    partial = _multi_row_sum(v[:, : size_ilp * _ILP].reshape(batch, size_ilp, _ILP, width))
    total = partial[:, 0].copy()
    for i in range(size_ilp * _ILP, size):
        total += v[:, i]
    for k in range(1, _ILP):
        total += partial[:, k]
    return total


def torch_order_sum(values: np.ndarray) -> np.ndarray:
    """``(batch, n) -> (batch,)``: each row summed in the order torch's CPU ``sum(dim=1)`` adds it.

    torch sums a contiguous row as vectors of ``32 / itemsize`` lanes with a cascade
    (``aten/src/ATen/native/cpu/SumKernel.cpp``: ``vectorized_inner_sum``), the leftover columns first, then
    the lanes; rows shorter than one vector go through its scalar ``row_sum``. Following that order, the
    sums equal torch's bit for bit (tested); numpy's own ``sum`` (pairwise, 8 accumulators) does not.

    Args:
        values: ``(batch, n)`` in the accumulation dtype (torch casts to it before summing).
    """
    batch, n = values.shape
    lanes = _VECTOR_BYTES // values.dtype.itemsize
    zero = np.zeros(batch, dtype=values.dtype)
    if n < lanes:
        return zero + _row_sum(values[:, :, None])[:, 0]
    n_vec = n // lanes
    vector_sum = _row_sum(values[:, : n_vec * lanes].reshape(batch, n_vec, lanes))
    total = zero.copy()
    for k in range(n_vec * lanes, n):
        total += values[:, k]
    for lane in range(lanes):
        total += vector_sum[:, lane]
    return zero + total


def _sum_columns(x: np.ndarray, cols: np.ndarray, acc: type) -> np.ndarray:
    """``(batch,)`` sums of the columns ``cols`` (in that order) in dtype ``acc``, in row blocks."""
    out: np.ndarray = np.empty(x.shape[0], dtype=acc)
    step = _block_rows(8 * len(cols))
    contiguous = bool(np.all(np.diff(cols) == 1))
    for b in range(0, x.shape[0], step):
        block = x[b : b + step, int(cols[0]) : int(cols[-1]) + 1] if contiguous else x[b : b + step, cols]
        out[b : b + step] = torch_order_sum(block.astype(acc, copy=False))
    return out


# --- range sums ---------------------------------------------------------------------------------------------


def _fallback_range_sums(x: np.ndarray, request: Plan, out: np.ndarray) -> np.ndarray:
    """The float64 prefix in numpy, row block by row block: bit-identical to the kernel and torch."""
    start, end = request.start, request.end
    multi = (end - start) > 1
    n_cols = x.shape[1]
    step = _block_rows(8 * (n_cols + 1) + 16 * int(multi.sum()))
    for b in range(0, x.shape[0], step):
        block = x[b : b + step] if request.perm is None else x[b : b + step][:, request.perm]
        prefix = np.zeros((block.shape[0], n_cols + 1), dtype=np.float64)
        np.cumsum(block, axis=1, dtype=np.float64, out=prefix[:, 1:])
        rows = out[b : b + step]
        rows[:, multi] = prefix[:, end[multi]] - prefix[:, start[multi]]
        rows[:, ~multi] = block[:, start[~multi]]
    return out


def rollup(x: np.ndarray, request: Plan, out: np.ndarray | None = None) -> np.ndarray:
    """``(batch, n_columns) -> (batch, len(request.nodes))`` node probabilities, in ``x``'s dtype.

    One node: its columns summed (float32, float64 for float64 input) in torch's order; several: float64
    prefix differences, one-column outputs copied bit for bit.
    """
    if out is None:
        out = np.empty((x.shape[0], len(request.nodes)), dtype=x.dtype)
    if x.shape[0] == 0:
        return out
    if len(request.nodes) == 1:
        pre = np.arange(int(request.start[0]), int(request.end[0]))
        cols = pre if request.perm is None else request.perm[pre]
        acc = np.float64 if x.dtype == np.float64 else np.float32
        out[:, 0] = _sum_columns(x, cols, acc)
        return out
    if cpu_kernels.usable(x):
        return cpu_kernels.range_sums(x, request.perm, request.start, request.end, out)
    return _fallback_range_sums(x, request, out)


# --- log roll-up --------------------------------------------------------------------------------------------


def _fallback_log_rollup(x: np.ndarray, request: Plan) -> np.ndarray:
    """Per-node shifted log-sum-exp in numpy (the torch path's arithmetic), row block by row block."""
    pair_col, pair_node = pairs(request)
    in_col = pair_col if request.perm is None else request.perm[pair_col]
    firsts = np.concatenate(([0], np.cumsum(request.end - request.start)[:-1]))
    out = np.empty((x.shape[0], len(request.nodes)), dtype=x.dtype)
    step = _block_rows(8 * 3 * max(len(pair_col), 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        for b in range(0, x.shape[0], step):
            vals = x[b : b + step, in_col].astype(np.float64)
            shift = np.maximum.reduceat(vals, firsts, axis=1)
            shift = np.where(np.isfinite(shift), shift, 0.0)
            sums = np.add.reduceat(np.exp(vals - shift[:, pair_node]), firsts, axis=1)
            out[b : b + step] = np.log(sums) + shift
    return out


def log_rollup(x: np.ndarray, request: Plan, tree: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """``(batch, n_columns) -> (batch, len(request.nodes))``: ``log`` of each node's sum of ``exp(x)``.

    Args:
        x: log-probabilities.
        request: the plan.
        tree: :func:`~hierclf.rollup_engine.request_plans.log_tree` of the request (input columns as given).
    """
    if cpu_kernels.usable(x):
        return cpu_kernels.log_range_sums(x, *tree)
    if x.shape[0] == 0:
        return np.empty((0, len(request.nodes)), dtype=x.dtype)
    return _fallback_log_rollup(x, request)


# --- conditional --------------------------------------------------------------------------------------------


def conditional(
    x: np.ndarray, positive: np.ndarray, negative: np.ndarray, *, undefined: float = 0.5
) -> np.ndarray:
    """``(batch,)`` scores ``P(pos) / (P(pos) + P(neg))`` over the input columns ``positive`` / ``negative``
    (sorted), summed in float64 in torch's order; ``undefined`` where both sides are 0."""
    p_pos = _sum_columns(x, positive, np.float64)
    p_neg = _sum_columns(x, negative, np.float64)
    total = p_pos + p_neg
    defined = total > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(defined, p_pos / np.where(defined, total, 1.0), undefined)
    return score.astype(x.dtype)
