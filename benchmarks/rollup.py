"""Benchmark: hierclf's roll-up against the memory floor and the methods other libraries use.

Cases (issues 3 and 10): batch 20,000 over an Esteva-scale tree (2,032 leaves, depth <= 9, random fan-out)
and a 20,000-leaf tree, and batch 100,000 over the shipped trees (``taxonomy/*.yaml``: ISIC's 326 leaves
with its 19 single-child chains, Fitzpatrick17k, Esteva, DermaMNIST); all nodes and a single node; float32;
CPU (and CUDA when present). Every row is timed in the same process as its baselines:

* ``copy floor``: read ``batch x n_leaves`` and write ``batch x n_nodes`` (a flat copy of the input into the
  output buffer plus a fill of the rest): the memory-bandwidth floor of any all-node roll-up;
* ``dense``: ``probs @ A`` with the leaves x nodes ancestor matrix (jvlmdr/hiercls' method);
* ``sparse``: ``torch.sparse.mm`` with that matrix in CSR form;
* ``node loop``: a Python loop over nodes summing each node's columns (hierarchicalsoftmax's, HiClass's way);
* single node: ``slice copy`` (read the node's columns, write them once) is the floor.

Times are medians of ``--repeats`` runs after one warm-up. Each method is timed alternately with its floor
(method, floor, method, floor, ...) and its ratio is the median of its runs over the median of the floor's
runs in that same series, so a change in the machine's load during the run moves both alike (the machine
is shared). Baselines that would take more than a minute (the dense product over the 20,000-leaf tree) are
estimated from their FLOP count and marked skipped. ``--methods hierclf`` times only the floor and
hierclf's own rows (a quick way to repeat the comparison that matters).

    python benchmarks/rollup.py --threads 2 --out benchmarks/results/rollup.json
    python benchmarks/rollup.py --leaves --shipped isic --methods hierclf   # ISIC alone, hierclf rows
    python benchmarks/rollup.py --quick              # seconds: tiny sizes, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hierclf.functional import RollUpError, rollup
from hierclf.nn.rollup_modules import RollUp
from hierclf.rollup_engine import cpu_kernels as _rollup_kernel
from hierclf.taxonomy.shipped import shipped_taxonomy
from hierclf.taxonomy.synthetic import random_taxonomy
from hierclf.taxonomy.tree import Taxonomy

#: a function whose first run takes longer than this many seconds is timed by that run alone
SLOW_S = 20.0
#: dense matmul is skipped above this many floating-point operations (estimated time is reported)
DENSE_MAX_FLOP = 2e12
SHIPPED = ("isic", "fitzpatrick17k", "esteva", "dermamnist")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, int]:
    """Median seconds over ``repeats`` runs after one warm-up run (slow functions: fewer repeats)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t0
    if first > SLOW_S:  # one run is enough for a baseline this slow: report it as measured
        return first, 1
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), repeats


def timeit_paired(
    fn: Callable[[], Any], floor_fn: Callable[[], Any], device: torch.device, repeats: int
) -> tuple[float, float, int]:
    """Medians of ``fn`` and ``floor_fn`` over ``repeats`` alternating runs (each warmed up once).

    A function slower than ``SLOW_S`` is run once, against the floor's median over ``repeats`` runs.
    """
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t0
    if first > SLOW_S:
        floor, _ = timeit(floor_fn, device, repeats)
        return first, floor, 1
    floor_fn()
    times: list[float] = []
    floors: list[float] = []
    for _ in range(repeats):
        for f, into in ((fn, times), (floor_fn, floors)):
            _sync(device)
            t0 = time.perf_counter()
            f()
            _sync(device)
            into.append(time.perf_counter() - t0)
    return statistics.median(times), statistics.median(floors), repeats


HEADER = f"{'tree':>22} {'batch':>7} {'dev':>4}  {'case':<11} {'method':<37} {'ms':>10} {'x floor':>8}  note"


def print_row(r: dict) -> None:
    ms = "skipped" if r["seconds"] is None else f"{r['seconds'] * 1e3:.1f}"
    ratio = "" if r["ratio_to_floor"] is None else f"{r['ratio_to_floor']:.2f}"
    tree = f"{r['tree']} {r['tree_leaves']}/{r['tree_nodes']}"
    print(
        f"{tree:>22} {r['batch']:>7} {r['device']:>4}  {r['case']:<11} {r['method']:<37} {ms:>10} "
        f"{ratio:>8}  {r['note']}",
        flush=True,
    )


def ancestor_matrix(tax: Taxonomy) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the leaves x nodes 0/1 matrix: leaf j is under node i."""
    idx = tax.index
    lengths = idx.leaf_end - idx.leaf_start
    cols = np.repeat(np.arange(idx.n_nodes), lengths)
    offsets = np.repeat(idx.leaf_start - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    rows = np.arange(int(lengths.sum())) + offsets
    return torch.as_tensor(rows), torch.as_tensor(cols)


class Bench:
    """One tree on one device: its input, output buffer and floor, and the rows measured so far."""

    def __init__(
        self,
        label: str,
        tax: Taxonomy,
        x: torch.Tensor,
        out: torch.Tensor,
        device: torch.device,
        repeats: int,
    ) -> None:
        self.label, self.tax, self.x, self.out, self.device, self.repeats = (
            label,
            tax,
            x,
            out,
            device,
            repeats,
        )
        self.results: list[dict] = []

    def copy_floor(self) -> None:
        flat_out, flat_x = self.out.view(-1), self.x.view(-1)
        flat_out[: flat_x.numel()].copy_(flat_x)
        flat_out[flat_x.numel() :].fill_(0.0)

    def row(
        self, case: str, method: str, seconds: float | None, floor: float, n: int, note: str = ""
    ) -> None:
        """One result; ``floor``: the floor's median in the series this method was timed against."""
        self.results.append(
            {
                "tree": self.label,
                "tree_leaves": self.tax.index.n_leaves,
                "tree_nodes": self.tax.index.n_nodes,
                "batch": int(self.x.shape[0]),
                "device": self.device.type,
                "case": case,
                "method": method,
                "seconds": seconds,
                "repeats": n,
                "ratio_to_floor": None if seconds is None else seconds / floor,
                "note": note,
            }
        )
        print_row(self.results[-1])

    def paired(self, method: str, fn: Callable[[], Any], note: str = "", repeats: int | None = None) -> None:
        t, f, n = timeit_paired(fn, self.copy_floor, self.device, repeats or self.repeats)
        self.row("all nodes", method, t, f, n, note)


def _hierclf_rows(b: Bench) -> None:
    """The floor and hierclf's own all-node rows: the kernel into a buffer, fresh results, the module."""
    x, tax = b.x, b.tax
    floor, n = timeit(b.copy_floor, b.device, b.repeats)
    b.row("all nodes", "copy floor", floor, floor, n, "read batch x n_leaves, write batch x n_nodes")
    result = torch.empty_like(b.out)
    b.paired(
        "hierclf rollup(out=preallocated)", lambda: rollup(x, tax, out=result), "buffer reused, as the floor"
    )
    if b.device.type == "cpu":
        x_np, result_np = x.numpy(), result.numpy()
        try:
            rollup(x_np, tax, out=result_np)
            b.paired(
                "hierclf rollup(numpy, out=numpy)", lambda: rollup(x_np, tax, out=result_np), "numpy core"
            )
        except (RollUpError, TypeError) as exc:  # an engine without numpy out=
            b.row("all nodes", "hierclf rollup(numpy, out=numpy)", None, floor, 0, f"skipped: {exc}")
    b.paired("hierclf rollup()", lambda: rollup(x, tax))
    module = RollUp(tax).to(b.device)
    b.paired("hierclf RollUp module", lambda: module(x))
    if b.device.type == "cpu" and _rollup_kernel.AVAILABLE:
        os.environ["HIERCLF_NO_NUMBA"] = "1"
        try:
            b.paired(
                "hierclf torch path (no numba), out=", lambda: rollup(x, tax, out=result), "cumsum + gather"
            )
        finally:
            del os.environ["HIERCLF_NO_NUMBA"]
    shape = tuple(b.out.shape)
    b.paired(
        "fresh output: torch.empty + copy",
        lambda: torch.empty(shape, device=b.device).copy_(result),
        "what allocating a result costs before any arithmetic",
    )


def _baseline_rows(b: Bench) -> None:
    """The other libraries' methods: dense matmul, torch.sparse, a Python loop over nodes."""
    x, tax, out = b.x, b.tax, b.out
    idx = tax.index
    batch, n_leaves, n_nodes = x.shape[0], idx.n_leaves, idx.n_nodes
    expected = rollup(x, tax)
    rows_, cols_ = ancestor_matrix(tax)
    flop = 2.0 * batch * n_leaves * n_nodes
    if flop <= DENSE_MAX_FLOP:
        dense = torch.zeros(n_leaves, n_nodes)
        dense[rows_, cols_] = 1.0
        dense = dense.to(b.device)
        torch.testing.assert_close(x @ dense, expected, atol=1e-5, rtol=1e-5)
        b.paired("dense probs @ A", lambda: torch.matmul(x, dense, out=out))
        del dense
    else:
        size = n_leaves * n_nodes * 4 / 1e9
        b.row(
            "all nodes",
            "dense probs @ A",
            None,
            1.0,
            0,
            f"skipped: {flop / 1e12:.1f} TFLOP, a {size:.1f} GB matrix",
        )
    values = torch.ones(len(rows_))
    a_t = torch.sparse_coo_tensor(torch.stack([cols_, rows_]), values, (n_nodes, n_leaves)).coalesce()
    a_t = a_t.to_sparse_csr().to(b.device)
    torch.testing.assert_close(torch.sparse.mm(a_t, x.t()).t(), expected, atol=1e-5, rtol=1e-5)
    b.paired("torch.sparse A^T @ probs^T", lambda: torch.sparse.mm(a_t, x.t()).t())
    starts, ends = idx.leaf_start.tolist(), idx.leaf_end.tolist()

    def node_loop() -> None:
        for j in range(n_nodes):
            out[:, j] = x[:, starts[j] : ends[j]].sum(1)

    node_loop()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    b.paired("Python loop over nodes", node_loop, repeats=max(1, b.repeats // 2))


def _single_node_rows(b: Bench, *, baselines: bool) -> None:
    """One node, the root's largest child (the "malignant" of a real tree), against copying its slice."""
    x, tax = b.x, b.tax
    idx = tax.index
    starts, ends = idx.leaf_start.tolist(), idx.leaf_end.tolist()
    kids = [i for i in range(idx.n_nodes) if idx.parent[i] == 0]
    j = max(kids, key=lambda i: ends[i] - starts[i])
    node = idx.nodes[j]
    s, e = starts[j], ends[j]
    buf = torch.empty(x.shape[0], e - s, device=b.device)

    def slice_floor() -> None:
        buf.copy_(x[:, s:e])

    floor1, n = timeit(slice_floor, b.device, b.repeats)
    note = f"node {node}: {e - s} of {idx.n_leaves} leaves"
    b.row("single node", "slice copy floor", floor1, floor1, n, note)
    single = RollUp(tax, [node]).to(b.device)
    methods: list[tuple[str, Callable[[], Any]]] = [
        ("hierclf rollup()", lambda: rollup(x, tax, [node])),
        ("hierclf RollUp module", lambda: single(x)),
    ]
    if b.device.type == "cpu":
        x_np = x.numpy()
        methods.append(("hierclf rollup(numpy)", lambda: rollup(x_np, tax, [node])))
    if baselines:
        idx_t = torch.tensor([j], device=b.device)
        rows_, cols_ = ancestor_matrix(tax)
        values = torch.ones(len(rows_))
        shape = (idx.n_nodes, idx.n_leaves)
        a_t = torch.sparse_coo_tensor(torch.stack([cols_, rows_]), values, shape).coalesce().to_sparse_csr()
        a_t = a_t.to(b.device)
        methods.append(
            (
                "torch.sparse (all nodes, take one)",
                lambda: torch.sparse.mm(a_t, x.t()).t().index_select(1, idx_t),
            )
        )
    for method, fn in methods:
        t, f, n = timeit_paired(fn, slice_floor, b.device, b.repeats)
        b.row("single node", method, t, f, n, note)


def bench_tree(
    label: str, tax: Taxonomy, batch: int, device: torch.device, repeats: int, *, baselines: bool = True
) -> list[dict]:
    """Every row for one tree on one device (``baselines=False``: the floor and hierclf's rows only)."""
    idx = tax.index
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, idx.n_leaves, generator=gen)
    x /= x.sum(1, keepdim=True)
    x = x.to(device)
    out = torch.empty(batch, idx.n_nodes, device=device)
    b = Bench(label, tax, x, out, device, repeats)
    _hierclf_rows(b)
    if baselines:
        _baseline_rows(b)
    _single_node_rows(b, baselines=baselines)
    return b.results


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=None, help="rows for the random trees (default 20,000)")
    p.add_argument(
        "--leaves",
        type=int,
        nargs="*",
        default=None,
        help="random tree sizes in leaves (default 2032 20000; --quick 50 300; none: no random tree)",
    )
    p.add_argument(
        "--shipped",
        nargs="*",
        default=None,
        choices=SHIPPED,
        help=f"shipped trees (default {' '.join(SHIPPED)}; --quick isic; none: no shipped tree)",
    )
    p.add_argument(
        "--shipped-batch", type=int, default=None, help="rows for the shipped trees (default 100,000)"
    )
    p.add_argument(
        "--methods", choices=("all", "hierclf"), default="all", help="hierclf: floor and hierclf rows"
    )
    p.add_argument("--repeats", type=int, default=None, help="timed runs per row (default 5; --quick 1)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the project machine has 2)")
    p.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda when present)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    quick = {"batch": 256, "leaves": [50, 300], "shipped": ["isic"], "shipped_batch": 256, "repeats": 1}
    full = {
        "batch": 20_000,
        "leaves": [2032, 20_000],
        "shipped": list(SHIPPED),
        "shipped_batch": 100_000,
        "repeats": 5,
    }
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _machine(load_before: Any) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    warnings.filterwarnings("ignore", message=".*[Ss]parse.*")  # beta-state notices of torch.sparse
    torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"roll-up benchmark: float32, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load_before}"
    )
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    trees = [(f"random {n}", random_taxonomy(n, max_depth=9, seed=0), args.batch) for n in args.leaves]
    trees += [(name, Taxonomy.from_yaml(shipped_taxonomy(name)), args.shipped_batch) for name in args.shipped]
    results: list[dict] = []
    for label, tax, batch in trees:
        for dev in devices:
            results.extend(
                bench_tree(
                    label, tax, batch, torch.device(dev), args.repeats, baselines=args.methods == "all"
                )
            )
    machine = _machine(load_before)
    print(f"load average after: {machine['load_average_after']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": machine,
            "dtype": "float32",
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "results": results,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
