"""Fused CPU kernels for the roll-up (numba), on numpy arrays; used when numba is installed.

numpy in, numpy out, and no torch at module level: the numpy core (:mod:`hierclf.rollup_engine.numpy_ops`)
and the torch side (:mod:`hierclf.rollup_engine.torch_ops`, which hands over ``tensor.numpy()`` views) call
the same kernels. The torch path (:func:`hierclf.rollup_engine.torch_ops.blocked_range_sums`) builds a
float64 prefix with ``cumsum`` and reads the outputs back with ``gather``; on CPU both run well below memory
speed. The range-sum kernel does the same arithmetic (the same additions in the same order, the same
rounding), so its results are bit-identical to the torch path, which the tests check. How it gets close to
memory speed:

* **Four rows at a time.** The rows of a tile are scanned together: their four float64 prefixes sit side
  by side (``z[j] = [prefix of row 0, ..., row 3]``), so one vector addition advances all four, and four
  independent chains hide the addition's latency (a single row's scan waits on every addition).
* **One read of each input.** The scan loads each input value once and also writes it to its output
  column (a leaf or cut class is copied, bit for bit); only ranges of two or more columns need the prefix.
* **Sums while the prefix is in cache.** The columns are scanned in blocks; after each block, the ranges
  ending in it are written (``prefix[end] - prefix[start]`` for the tile's four rows), so the prefix is
  read back from L1/L2 rather than from memory, also for 20,000-leaf trees.
* **Short rows staged.** When a tile's four output rows are short (:data:`_STAGE_BYTES`, e.g. the shipped
  ISIC tree's 419 float32 outputs), ``_kernel_staged`` assembles them output by output in a scratch tile
  (one vector store per column instead of four scattered ones, all in L1) and writes each row out
  forward; single-child chains (a node whose only child is a leaf: two outputs, one column) are copied
  into the scratch tile too, so the output is still written in one pass.
* **SLP vectorisation.** numba turns LLVM's SLP vectoriser off by default; the four-row statements above
  need it, so this module compiles its kernel with it switched on (:func:`_compiling_with_slp`), without
  changing numba's settings for anything else.

float16/bfloat16 inputs, CUDA tensors and autograd stay on the torch path. Threads: torch's setting
(``torch.get_num_threads()``) when torch is already imported, else numba's default. Set
``HIERCLF_NO_NUMBA=1`` to disable the kernels (e.g. to compare with the torch path). Measured figures:
``docs/rollup.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_TILE = 4  # rows scanned together: one 256-bit vector of float64 prefixes
_TASKS_PER_THREAD = 4  # row ranges per thread: some balance on a shared machine, few prefix buffers
_BLOCK_COLUMNS = 1024  # columns per scan block: the block's prefix (32 KB) stays in L1/L2 for its sums
_PROGRAMS_KEPT = 32
#: output tiles up to this size go through ``_kernel_staged``: four short rows written column by column
#: interleave their scattered stores within the same few pages, which the hardware handles badly (the
#: shipped ISIC tree, 419 float32 outputs: 1.2-1.4x faster staged); for longer rows the staging copy costs
#: more than it saves (measured: 2,032 leaves 0.8x, float64 ISIC 0.9x)
_STAGE_BYTES = 10 * 1024
#: calls with fewer input and output values than this run on one thread (see ``_threads``)
_PARALLEL_WORK = 1 << 18


def _cached_parallel_njit(fn: Any) -> Any:
    """``numba.njit(parallel=True, cache=True, nogil=True)``, with somewhere to keep the cache.

    numba caches compiled kernels beside the source (``__pycache__``) or in the user's cache folder, and
    refuses to decorate when neither is writable (a read-only installation with no writable home). Then the
    cache goes to a temporary folder, and failing that the kernel compiles without one: slower to start,
    never a crash. A notice is logged.
    """
    import numba

    try:
        return numba.njit(parallel=True, cache=True, nogil=True)(fn)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        if "cache" not in str(exc):
            raise
    if not getattr(numba.config, "CACHE_DIR", ""):
        folder = tempfile.mkdtemp(prefix="hierclf-numba-")
        setattr(numba.config, "CACHE_DIR", folder)  # noqa: B010 - a module attribute the stubs do not list
        try:
            kernel = numba.njit(parallel=True, cache=True, nogil=True)(fn)
            logger.info("numba's cache is not writable here; caching %s in %s", fn.__name__, folder)
            return kernel
        except RuntimeError:
            pass
    logger.info("numba cannot cache %s here; it is compiled in every process", fn.__name__)
    return numba.njit(parallel=True, nogil=True)(fn)


try:  # pragma: no branch - numba is a declared dependency; the fallback keeps hierclf usable without it
    import numba

    @numba.njit(inline="always")
    def _task_rows(batch: Any, n_threads: Any, multiple: Any) -> tuple[Any, Any]:  # pragma: no cover
        """(tasks, rows per task): a few contiguous row ranges per thread, each a multiple of ``multiple``
        rows (some balance on a shared machine, few scratch buffers)."""
        n_tasks = min(n_threads * _TASKS_PER_THREAD, (batch + multiple - 1) // multiple)
        rows = (batch + n_tasks - 1) // n_tasks
        return n_tasks, (rows + multiple - 1) // multiple * multiple

    @numba.njit(inline="always")
    def _scan_column(
        x0: Any,
        x1: Any,
        x2: Any,
        x3: Any,
        col: Any,
        a0: Any,
        a1: Any,
        a2: Any,
        a3: Any,
        prefix: Any,
        to: Any,
        o0: Any,
        o1: Any,
        o2: Any,
        o3: Any,
    ) -> tuple[Any, Any, Any, Any]:  # pragma: no cover - compiled
        """One input column of a four-row tile: advance the prefixes, store them, copy the values out."""
        v0, v1, v2, v3 = x0[col], x1[col], x2[col], x3[col]
        a0 += v0
        a1 += v1
        a2 += v2
        a3 += v3
        prefix[0] = a0
        prefix[1] = a1
        prefix[2] = a2
        prefix[3] = a3
        o0[to] = v0
        o1[to] = v1
        o2[to] = v2
        o3[to] = v3
        return a0, a1, a2, a3

    @numba.njit(inline="always")
    def _tile_sums(
        z: Any,
        o0: Any,
        o1: Any,
        o2: Any,
        o3: Any,
        sum_to: Any,
        sum_start: Any,
        sum_end: Any,
        lo: Any,
        hi: Any,
    ) -> None:  # pragma: no cover - compiled
        """The sums ``lo:hi`` of a four-row tile: ``o[sum_to[i]] = z[sum_end[i]] - z[sum_start[i]]``."""
        for i in range(lo, hi):
            to, e, s = sum_to[i], sum_end[i], sum_start[i]
            d0 = z[e, 0] - z[s, 0]
            d1 = z[e, 1] - z[s, 1]
            d2 = z[e, 2] - z[s, 2]
            d3 = z[e, 3] - z[s, 3]
            o0[to] = d0
            o1[to] = d1
            o2[to] = d2
            o3[to] = d3

    @numba.njit(inline="always")
    def _tile_extras(
        x0: Any, x1: Any, x2: Any, x3: Any, o0: Any, o1: Any, o2: Any, o3: Any, extra_col: Any, extra_to: Any
    ) -> None:  # pragma: no cover - compiled
        """The one-column outputs the scan does not write (e.g. single-child chains), copied from ``x``."""
        for i in range(extra_col.shape[0]):
            col, to = extra_col[i], extra_to[i]
            o0[to] = x0[col]
            o1[to] = x1[col]
            o2[to] = x2[col]
            o3[to] = x3[col]

    @_cached_parallel_njit
    def _kernel(
        x: Any,
        permuted: Any,
        perm: Any,
        copy_to: Any,
        extra_col: Any,
        extra_to: Any,
        block_end: Any,
        block_ptr: Any,
        sum_to: Any,
        sum_start: Any,
        sum_end: Any,
        scan_end: Any,
        n_threads: Any,
        out: Any,
    ) -> None:  # pragma: no cover - compiled
        """Write ``out[b, sum_to[i]] = z[sum_end[i]] - z[sum_start[i]]`` (z: float64 prefix of row b over the
        pre-order columns ``x[b, perm]``, ``z[0] = 0``) and the one-column outputs, copied from ``x``.

        The scan writes pre-order column ``j`` to output ``copy_to[j]``; ``extra_col``/``extra_to`` are
        copied after the scan. Block ``k`` scans columns up to ``block_end[k]`` and then writes the sums
        ``block_ptr[k]:block_ptr[k + 1]``. ``scan_end``: columns to scan. Index arrays are unsigned, which
        spares every indexing numba's negative-index check.
        """
        batch = x.shape[0]
        n_blocks = block_end.shape[0]
        n_tasks, rows_per_task = _task_rows(batch, n_threads, _TILE)  # whole tiles
        for task in numba.prange(n_tasks):
            z = np.empty((scan_end + 1, _TILE), np.float64)
            z[0, :] = 0.0
            prefix = z[1:]  # prefix[j]: sum of the pre-order columns 0..j
            first = task * rows_per_task
            last = min(batch, first + rows_per_task) - 1
            for b in range(first, last + 1, _TILE):
                # the tile's rows; past the batch end the last row is repeated (same values, same thread)
                b1, b2, b3 = min(b + 1, last), min(b + 2, last), min(b + 3, last)
                x0, x1, x2, x3 = x[b], x[b1], x[b2], x[b3]
                o0, o1, o2, o3 = out[b], out[b1], out[b2], out[b3]
                a0 = a1 = a2 = a3 = 0.0  # the four running prefixes (float64)
                j0 = np.uint64(0)
                for k in range(n_blocks):
                    if permuted:  # two copies of the loop, so that neither tests the flag per column
                        for j in range(j0, block_end[k]):
                            a0, a1, a2, a3 = _scan_column(
                                x0, x1, x2, x3, perm[j], a0, a1, a2, a3, prefix[j], copy_to[j], o0, o1, o2, o3
                            )
                    else:
                        for j in range(j0, block_end[k]):
                            a0, a1, a2, a3 = _scan_column(
                                x0, x1, x2, x3, j, a0, a1, a2, a3, prefix[j], copy_to[j], o0, o1, o2, o3
                            )
                    j0 = block_end[k]
                    _tile_sums(z, o0, o1, o2, o3, sum_to, sum_start, sum_end, block_ptr[k], block_ptr[k + 1])
                _tile_extras(x0, x1, x2, x3, o0, o1, o2, o3, extra_col, extra_to)

    @numba.njit(inline="always")
    def _stage_column(
        x0: Any,
        x1: Any,
        x2: Any,
        x3: Any,
        col: Any,
        a0: Any,
        a1: Any,
        a2: Any,
        a3: Any,
        prefix: Any,
        cell: Any,
    ) -> tuple[Any, Any, Any, Any]:  # pragma: no cover - compiled
        """As :func:`_scan_column`, the values going to the tile's staged output ``cell`` (four rows)."""
        v0, v1, v2, v3 = x0[col], x1[col], x2[col], x3[col]
        a0 += v0
        a1 += v1
        a2 += v2
        a3 += v3
        prefix[0] = a0
        prefix[1] = a1
        prefix[2] = a2
        prefix[3] = a3
        cell[0] = v0
        cell[1] = v1
        cell[2] = v2
        cell[3] = v3
        return a0, a1, a2, a3

    @numba.njit(inline="always")
    def _stage_sums(
        z: Any, stage: Any, sum_to: Any, sum_start: Any, sum_end: Any, lo: Any, hi: Any
    ) -> None:  # pragma: no cover - compiled
        """The sums ``lo:hi`` of a four-row tile, into its staged outputs ``stage[sum_to[i]]``."""
        for i in range(lo, hi):
            e, s, cell = z[sum_end[i]], z[sum_start[i]], stage[sum_to[i]]
            cell[0] = e[0] - s[0]
            cell[1] = e[1] - s[1]
            cell[2] = e[2] - s[2]
            cell[3] = e[3] - s[3]

    @numba.njit(inline="always")
    def _stage_extras(
        x0: Any, x1: Any, x2: Any, x3: Any, stage: Any, extra_col: Any, extra_to: Any
    ) -> None:  # pragma: no cover - compiled
        """:func:`_tile_extras` into the staged outputs."""
        for i in range(extra_col.shape[0]):
            col, cell = extra_col[i], stage[extra_to[i]]
            cell[0] = x0[col]
            cell[1] = x1[col]
            cell[2] = x2[col]
            cell[3] = x3[col]

    @numba.njit(inline="always")
    def _write_tile(stage: Any, out: Any, b: Any, last: Any) -> None:  # pragma: no cover - compiled
        """The staged tile ``(n_out, 4)`` to output rows ``b..``, one row at a time, forward (rows past
        ``last`` are repeats of it and not written)."""
        for r in range(min(_TILE, last + 1 - b)):
            o = out[b + r]
            for t in range(o.shape[0]):
                o[t] = stage[t, r]

    @_cached_parallel_njit
    def _kernel_staged(
        x: Any,
        permuted: Any,
        perm: Any,
        copy_to: Any,
        extra_col: Any,
        extra_to: Any,
        block_end: Any,
        block_ptr: Any,
        sum_to: Any,
        sum_start: Any,
        sum_end: Any,
        scan_end: Any,
        n_threads: Any,
        out: Any,
    ) -> None:  # pragma: no cover - compiled
        """:func:`_kernel` for short output rows: the tile's outputs are assembled output by output in a
        scratch ``(n_out, 4)`` tile (one 16- or 32-byte store per column instead of four scattered ones)
        and then written out row by row, forward. The arithmetic is the same, so are the results."""
        batch = x.shape[0]
        n_blocks = block_end.shape[0]
        n_tasks, rows_per_task = _task_rows(batch, n_threads, _TILE)
        for task in numba.prange(n_tasks):
            z = np.empty((scan_end + 1, _TILE), np.float64)
            z[0, :] = 0.0
            prefix = z[1:]
            stage = np.empty((out.shape[1], _TILE), out.dtype)
            first = task * rows_per_task
            last = min(batch, first + rows_per_task) - 1
            for b in range(first, last + 1, _TILE):
                b1, b2, b3 = min(b + 1, last), min(b + 2, last), min(b + 3, last)
                x0, x1, x2, x3 = x[b], x[b1], x[b2], x[b3]
                a0 = a1 = a2 = a3 = 0.0
                j0 = np.uint64(0)
                for k in range(n_blocks):
                    if permuted:
                        for j in range(j0, block_end[k]):
                            a0, a1, a2, a3 = _stage_column(
                                x0, x1, x2, x3, perm[j], a0, a1, a2, a3, prefix[j], stage[copy_to[j]]
                            )
                    else:
                        for j in range(j0, block_end[k]):
                            a0, a1, a2, a3 = _stage_column(
                                x0, x1, x2, x3, j, a0, a1, a2, a3, prefix[j], stage[copy_to[j]]
                            )
                    j0 = block_end[k]
                    _stage_sums(z, stage, sum_to, sum_start, sum_end, block_ptr[k], block_ptr[k + 1])
                _stage_extras(x0, x1, x2, x3, stage, extra_col, extra_to)
                _write_tile(stage, out, b, last)

    @_cached_parallel_njit
    def _log_kernel(
        x: Any, column: Any, parent: Any, wanted: Any, n_threads: Any, out: Any
    ) -> None:  # pragma: no cover - compiled
        """``out[b, i] = log sum exp`` over the columns under node ``wanted[i]``, for every row ``b``.

        The nodes are those of the tree above the input columns (or of some of its subtrees), in
        pre-order; ``column[k]`` is the input column of node ``k`` when it is one (-1 for inner nodes) and
        ``parent[k]`` its parent (-1: a top node). Two passes in reverse pre-order (children before
        parents): each node's maximum ``m``, then ``s = sum exp(x - m)`` over its columns, from its
        children's sums scaled by ``exp(m_child - m)`` (at most 1). So every node is shifted by its own
        maximum, as the torch path does.
        """
        batch = x.shape[0]
        n_nodes = parent.shape[0]
        n_out = wanted.shape[0]
        n_tasks, rows_per_task = _task_rows(batch, n_threads, 1)
        for task in numba.prange(n_tasks):
            m = np.empty(n_nodes, np.float64)
            s = np.empty(n_nodes, np.float64)
            for b in range(task * rows_per_task, min(batch, (task + 1) * rows_per_task)):
                row = x[b]
                for k in range(n_nodes):
                    c = column[k]
                    if c >= 0:
                        m[k] = row[c]
                        s[k] = 1.0
                    else:
                        m[k] = -np.inf
                        s[k] = 0.0
                for k in range(n_nodes - 1, -1, -1):  # each node's maximum, children first
                    p = parent[k]
                    if p >= 0:
                        m[p] = max(m[p], m[k])
                for k in range(n_nodes - 1, -1, -1):  # then its sum, every term scaled by that maximum
                    mk = m[k]
                    p = parent[k]
                    if p >= 0 and mk != -np.inf:  # a child at -inf adds exp(-inf) = 0 (-inf - -inf is NaN)
                        s[p] += s[k] * np.exp(mk - m[p])
                o = out[b]
                for i in range(n_out):
                    k = wanted[i]
                    mk = m[k]
                    # -inf: every column at -inf; +inf or NaN: passed on as they are
                    o[i] = mk + np.log(s[k]) if np.isfinite(mk) else mk

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    AVAILABLE = False

_COMPILE_LOCK = threading.Lock()


@contextlib.contextmanager
def _compiling_with_slp() -> Iterator[None]:
    """Compile (first call of a signature) with LLVM's SLP vectoriser on, then restore numba's setting.

    numba reads ``config.SLP_VECTORIZE`` each time it builds a pass manager, under its global compiler
    lock; holding that lock while the setting is changed keeps other threads' compilations unaffected.
    Without the setting (another numba version) the kernel is still correct, only slower.
    """
    from numba.core import config
    from numba.core.compiler_lock import global_compiler_lock

    with _COMPILE_LOCK, global_compiler_lock:
        if not hasattr(config, "SLP_VECTORIZE"):
            yield
            return
        saved = config.SLP_VECTORIZE
        setattr(config, "SLP_VECTORIZE", 1)  # noqa: B010 - a module attribute the type stubs do not list
        try:
            yield
        finally:
            setattr(config, "SLP_VECTORIZE", saved)  # noqa: B010


_compiled: set[Any] = set()
#: one kernel at a time: each call already uses every thread it is given, and numba's ``workqueue``
#: threading layer (used where neither TBB nor OpenMP is installed) aborts on concurrent parallel calls
_RUN_LOCK = threading.Lock()


def _run(*args: Any) -> None:
    # what selects a compiled signature (both arrays are C-contiguous and 2-d): any new one compiles inside
    # the SLP setting. Lock order, always: _RUN_LOCK, then the compile locks.
    out = args[-1]
    kernel = _kernel_staged if _TILE * out.shape[1] * out.itemsize <= _STAGE_BYTES else _kernel
    key = (kernel, *((a.dtype, a.flags.writeable, a.flags.aligned) for a in (args[0], out)))
    with _RUN_LOCK:
        if key in _compiled:
            kernel(*args)
            return
        with _compiling_with_slp():
            kernel(*args)
        _compiled.add(key)


@dataclass(frozen=True)
class _Program:
    """The kernel's index arrays for one (perm, start, end) request, built once with numpy and cached."""

    perm: np.ndarray
    copy_to: np.ndarray
    extra_col: np.ndarray
    extra_to: np.ndarray
    block_end: np.ndarray
    block_ptr: np.ndarray
    sum_to: np.ndarray
    sum_start: np.ndarray
    sum_end: np.ndarray
    scan_end: int


_PROGRAMS: OrderedDict[tuple[bytes, ...], _Program] = OrderedDict()
_PROGRAMS_LOCK = threading.Lock()


def _program(n_cols: int, perm: np.ndarray | None, start: np.ndarray, end: np.ndarray) -> _Program:
    key = (
        n_cols.to_bytes(8, "little"),
        b"" if perm is None else perm.tobytes(),
        start.tobytes(),
        end.tobytes(),
    )
    with _PROGRAMS_LOCK:
        found = _PROGRAMS.get(key)
        if found is not None:
            _PROGRAMS.move_to_end(key)
            return found
    program = _build_program(n_cols, perm, start, end)
    with _PROGRAMS_LOCK:
        _PROGRAMS[key] = program
        while len(_PROGRAMS) > _PROGRAMS_KEPT:
            _PROGRAMS.popitem(last=False)
    return program


def _build_program(n_cols: int, perm: np.ndarray | None, start: np.ndarray, end: np.ndarray) -> _Program:
    in_col = np.arange(n_cols, dtype=np.int64) if perm is None else perm.astype(np.int64)
    single = (end - start) == 1
    outputs = np.arange(start.shape[0], dtype=np.int64)
    copy_cols, copy_outs = start[single], outputs[single]
    multi = ~single
    order = np.argsort(end[multi], kind="stable")
    sum_to, sum_start, sum_end = outputs[multi][order], start[multi][order], end[multi][order]
    cols_first, first = np.unique(copy_cols, return_index=True)
    if len(cols_first) == n_cols:
        # every column is an output (all nodes over leaves or a cut): the scan writes each column's first
        # output as it reads the column; the others (single-child chains) are copied after the scan
        copy_to = np.empty(n_cols, np.int64)
        copy_to[cols_first] = copy_outs[first]
        rest = np.ones(len(copy_cols), bool)
        rest[first] = False
        extra_col, extra_to = in_col[copy_cols[rest]], copy_outs[rest]
        scan_end = n_cols
        final = -1
    else:
        # a few nodes: the copies are made after the scan, and the scan's branch-free stores all go to one
        # output that is written last (a copy, made after the scan, or else the sum moved to the end)
        extra_col, extra_to = in_col[copy_cols], copy_outs
        scan_end = int(sum_end.max()) if len(sum_end) else 0
        target = int(copy_outs[0]) if len(copy_outs) else int(sum_to[-1]) if len(sum_to) else 0
        copy_to = np.full(n_cols, target, np.int64)
        final = -1 if len(copy_outs) else len(sum_to) - 1
    block_end = np.unique(np.minimum(np.arange(1, scan_end // _BLOCK_COLUMNS + 2) * _BLOCK_COLUMNS, scan_end))
    block_end = block_end[block_end > 0]
    # a sum is written after the block holding its last column; ``final`` after the last block
    block = np.searchsorted(block_end, sum_end - 1, side="right")
    if final >= 0:
        block[final] = len(block_end) - 1
    by_block = np.argsort(block, kind="stable")
    sum_to, sum_start, sum_end = sum_to[by_block], sum_start[by_block], sum_end[by_block]
    block_ptr = np.concatenate(([0], np.cumsum(np.bincount(block, minlength=len(block_end)))))
    u32, u64 = np.uint32, np.uint64
    return _Program(
        perm=in_col.astype(u32),
        copy_to=copy_to.astype(u32),
        extra_col=extra_col.astype(u32),
        extra_to=extra_to.astype(u32),
        block_end=block_end.astype(u64),
        block_ptr=block_ptr.astype(u64),
        sum_to=sum_to.astype(u32),
        sum_start=sum_start.astype(u32),
        sum_end=sum_end.astype(u32),
        scan_end=scan_end,
    )


def _threads(work: int) -> int:
    """Threads for a kernel call of ``work`` values: torch's setting (``torch.set_num_threads``) when torch
    is imported, else numba's default; within numba's pool either way; one for small calls.

    One thread below :data:`_PARALLEL_WORK`: waking numba's OpenMP pool right after torch's (two OpenMP
    runtimes, each spinning for a while after its parallel region) cost about 8 ms per call on the project
    machine, for the kernel and for torch's next operation alike (tiny calls alternated with a softmax:
    8 ms each with two threads, 0.02 ms with one).
    """
    limit = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    torch = sys.modules.get("torch")
    threads = max(1, min(limit, torch.get_num_threads())) if torch is not None else limit
    if work < _PARALLEL_WORK:
        threads = 1
    numba.set_num_threads(threads)
    return int(threads)


def enabled() -> bool:
    """Whether the kernels run: numba is installed and ``HIERCLF_NO_NUMBA`` is not set."""
    return AVAILABLE and not os.environ.get("HIERCLF_NO_NUMBA")


def usable(x: np.ndarray) -> bool:
    """Whether the kernels can take ``x``: a 2-d float32/float64 array (fewer than 2**31 columns), with
    the kernels :func:`enabled`."""
    return x.dtype in (np.float32, np.float64) and x.ndim == 2 and x.shape[1] < 2**31 and enabled()


def range_sums(
    x: np.ndarray,
    perm: np.ndarray | None,
    start: np.ndarray,
    end: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``(batch, n_out)``: for each output ``k`` the sum of pre-order columns ``start[k]:end[k]`` of ``x``
    (``perm[j]`` is the input column of pre-order column ``j``), accumulated in float64, in ``x``'s dtype.

    ``out``: a C-contiguous, writable ``(batch, n_out)`` array of ``x``'s dtype to write into.
    """
    x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty((x.shape[0], start.shape[0]), dtype=x.dtype)
    if x.shape[0] == 0 or start.shape[0] == 0:
        return out
    program = _program(
        x.shape[1],
        None if perm is None else np.asarray(perm),
        np.asarray(start).astype(np.int64, copy=False),
        np.asarray(end).astype(np.int64, copy=False),
    )
    threads = _threads(x.size + out.size)
    p = program
    _run(
        x,
        perm is not None,
        p.perm,
        p.copy_to,
        p.extra_col,
        p.extra_to,
        p.block_end,
        p.block_ptr,
        p.sum_to,
        p.sum_start,
        p.sum_end,
        p.scan_end,
        threads,
        out,
    )
    return out


def log_range_sums(x: np.ndarray, column: np.ndarray, parent: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``(batch, len(wanted))`` log-sum-exps of the nodes ``wanted`` (see ``_log_kernel``), float64 inside,
    in ``x``'s dtype."""
    x = np.ascontiguousarray(x)
    out = np.empty((x.shape[0], wanted.shape[0]), dtype=x.dtype)
    if x.shape[0] == 0 or wanted.shape[0] == 0:
        return out
    threads = _threads(8 * (x.size + out.size))  # a log-sum-exp per node: several times a sum's work
    with _RUN_LOCK:
        _log_kernel(x, column, parent, wanted, threads, out)
    return out
