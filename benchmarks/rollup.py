"""Benchmark: hierclf's roll-up against the memory floor and the methods other libraries use.

Cases (issue 3): batch 20,000 over an Esteva-scale tree (2,032 leaves, depth <= 9, random fan-out) and a
20,000-leaf tree; all nodes and a single node; float32; CPU (and CUDA when present). Every row is timed in
the same process as its baselines:

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
estimated from their FLOP count and marked skipped.

    python benchmarks/rollup.py --threads 2 --out benchmarks/results/rollup.json
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

from hierclf.functional import rollup
from hierclf.nn.rollup_modules import RollUp
from hierclf.rollup_engine import cpu_kernels as _rollup_kernel
from hierclf.taxonomy.synthetic import random_taxonomy
from hierclf.taxonomy.tree import Taxonomy

#: a function whose first run takes longer than this many seconds is timed by that run alone
SLOW_S = 20.0
#: dense matmul is skipped above this many floating-point operations (estimated time is reported)
DENSE_MAX_FLOP = 2e12


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
    n = repeats
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), n


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


HEADER = f"{'tree':>13} {'dev':>4}  {'case':<11} {'method':<35} {'ms':>10} {'x floor':>8}  note"


def print_row(r: dict) -> None:
    ms = "skipped" if r["seconds"] is None else f"{r['seconds'] * 1e3:.1f}"
    ratio = "" if r["ratio_to_floor"] is None else f"{r['ratio_to_floor']:.2f}"
    tree = f"{r['tree_leaves']}/{r['tree_nodes']}"
    print(
        f"{tree:>13} {r['device']:>4}  {r['case']:<11} {r['method']:<35} {ms:>10} {ratio:>8}  {r['note']}",
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


def bench_tree(tax: Taxonomy, batch: int, device: torch.device, repeats: int, seed: int = 0) -> list[dict]:
    idx = tax.index
    n_leaves, n_nodes = idx.n_leaves, idx.n_nodes
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, n_leaves, generator=gen)
    x /= x.sum(1, keepdim=True)
    x = x.to(device)
    out = torch.empty(batch, n_nodes, device=device)
    results: list[dict] = []

    def row(case: str, method: str, seconds: float | None, floor: float, n: int, note: str = "") -> None:
        """One result; ``floor``: the floor's median in the series this method was timed against."""
        results.append(
            {
                "tree_leaves": n_leaves,
                "tree_nodes": n_nodes,
                "batch": batch,
                "device": device.type,
                "case": case,
                "method": method,
                "seconds": seconds,
                "repeats": n,
                "ratio_to_floor": None if seconds is None else seconds / floor,
                "note": note,
            }
        )
        print_row(results[-1])

    # --- all nodes ---
    flat_out, flat_x = out.view(-1), x.view(-1)

    def copy_floor() -> None:
        flat_out[: flat_x.numel()].copy_(flat_x)
        flat_out[flat_x.numel() :].fill_(0.0)

    floor, n = timeit(copy_floor, device, repeats)
    row("all nodes", "copy floor", floor, floor, n, "read batch x n_leaves, write batch x n_nodes")

    module = RollUp(tax).to(device)
    expected = rollup(x, tax)

    def paired(case: str, method: str, fn: Callable[[], Any], note: str = "") -> None:
        t, f, n = timeit_paired(fn, copy_floor, device, repeats)
        row(case, method, t, f, n, note)

    result = torch.empty(batch, n_nodes, device=device)
    paired(
        "all nodes",
        "hierclf rollup(out=preallocated)",
        lambda: rollup(x, tax, out=result),
        "the floor writes into a preallocated buffer too",
    )
    paired("all nodes", "hierclf rollup()", lambda: rollup(x, tax))
    paired("all nodes", "hierclf RollUp module", lambda: module(x))
    if device.type == "cpu" and _rollup_kernel.AVAILABLE:
        os.environ["HIERCLF_NO_NUMBA"] = "1"
        try:
            paired(
                "all nodes",
                "hierclf torch path (no numba), out=",
                lambda: rollup(x, tax, out=result),
                "cumsum + gather",
            )
        finally:
            del os.environ["HIERCLF_NO_NUMBA"]
    paired(
        "all nodes",
        "fresh output: torch.empty + copy",
        lambda: torch.empty(batch, n_nodes, device=device).copy_(expected),
        "what allocating a result costs before any arithmetic",
    )

    rows_, cols_ = ancestor_matrix(tax)
    values = torch.ones(len(rows_))
    flop = 2.0 * batch * n_leaves * n_nodes
    if flop <= DENSE_MAX_FLOP:
        dense = torch.zeros(n_leaves, n_nodes)
        dense[rows_, cols_] = 1.0
        dense = dense.to(device)
        got = x @ dense
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        paired("all nodes", "dense probs @ A", lambda: torch.matmul(x, dense, out=out))
        del dense
    else:
        row(
            "all nodes",
            "dense probs @ A",
            None,
            floor,
            0,
            f"skipped: {flop / 1e12:.1f} TFLOP and a {n_leaves * n_nodes * 4 / 1e9:.1f} GB matrix",
        )

    a_t = torch.sparse_coo_tensor(torch.stack([cols_, rows_]), values, (n_nodes, n_leaves)).coalesce()
    a_t = a_t.to_sparse_csr().to(device)
    got = torch.sparse.mm(a_t, x.t()).t()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    paired("all nodes", "torch.sparse A^T @ probs^T", lambda: torch.sparse.mm(a_t, x.t()).t())

    starts, ends = idx.leaf_start.tolist(), idx.leaf_end.tolist()

    def node_loop() -> None:
        for j in range(n_nodes):
            out[:, j] = x[:, starts[j] : ends[j]].sum(1)

    node_loop()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    t, f, n = timeit_paired(node_loop, copy_floor, device, max(1, repeats // 2))
    row("all nodes", "Python loop over nodes", t, f, n)

    # --- single node: the root's largest child (the "malignant" of a real tree) ---
    kids = [i for i in range(n_nodes) if idx.parent[i] == 0]
    j = max(kids, key=lambda i: ends[i] - starts[i])
    node = idx.nodes[j]
    s, e = starts[j], ends[j]
    buf = torch.empty(batch, e - s, device=device)

    def slice_floor() -> None:
        buf.copy_(x[:, s:e])

    floor1, n = timeit(slice_floor, device, repeats)
    note = f"node {node}: {e - s} of {n_leaves} leaves"
    row("single node", "slice copy floor", floor1, floor1, n, note)
    single = RollUp(tax, [node]).to(device)
    for method, fn in (
        ("hierclf rollup()", lambda: rollup(x, tax, [node])),
        ("hierclf RollUp module", lambda: single(x)),
        ("torch.sparse (all nodes, take one)", lambda: torch.sparse.mm(a_t, x.t()).t()[:, j]),
    ):
        t, f, n = timeit_paired(fn, slice_floor, device, repeats)
        row("single node", method, t, f, n, note)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=None, help="rows (default 20,000; --quick 256)")
    p.add_argument(
        "--leaves",
        type=int,
        nargs="+",
        default=None,
        help="tree sizes in leaves (default 2032 20000; --quick 50 300)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed runs per row (default 5; --quick 1)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the project machine has 2)")
    p.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda when present)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*[Ss]parse.*")  # beta-state notices of torch.sparse
    quick = {"batch": 256, "leaves": [50, 300], "repeats": 1}
    full = {"batch": 20_000, "leaves": [2032, 20_000], "repeats": 5}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"roll-up benchmark: batch {args.batch}, float32, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load_before}"
    )
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    results: list[dict] = []
    for leaves in args.leaves:
        tax = random_taxonomy(leaves, max_depth=9, seed=0)
        for dev in devices:
            results.extend(bench_tree(tax, args.batch, torch.device(dev), args.repeats))
    machine = {
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
    print(f"load average after: {machine['load_average_after']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "batch": args.batch,
                    "dtype": "float32",
                    "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
