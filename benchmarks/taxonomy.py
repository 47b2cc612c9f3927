"""What loading and querying a taxonomy costs, on the shipped ISIC tree and an Esteva-size random tree.

Timed in one process, median of ``--repeats`` runs each:

* ``load``: ``Taxonomy.from_text`` (positions kept, every validation rule, the tree built) with hierclf's
  libyaml fast path, against the same call forced onto PyYAML's pure-Python parser (what hierclf did before),
  and against a bare ``yaml.safe_load`` (the floor: parsing only, no validation; libyaml when available);
* ``index``: building ``Taxonomy.index`` (the integer structure the roll-up uses) on a fresh taxonomy;
* ``column_ranges``: ``Taxonomy.column_ranges`` for a random cut, against a brute-force answer from
  ``nx.descendants`` (the way the tests check it); the two answers are compared.

    python benchmarks/taxonomy.py            # table + benchmarks/results/taxonomy.json
    python benchmarks/taxonomy.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import numpy as np
import yaml

from hierclf import Taxonomy
from hierclf.io import yaml_files as _yaml
from hierclf.io.atomic import atomic_write_text
from hierclf.taxonomy.synthetic import random_cut, random_taxonomy

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pure_python_load(text: str) -> Taxonomy:
    saved = _yaml._FastLoader
    _yaml._FastLoader = None
    try:
        return Taxonomy.from_text(text)
    finally:
        _yaml._FastLoader = saved


def brute_force_ranges(tax: Taxonomy, cut: list[str]) -> tuple[np.ndarray, np.ndarray]:
    g = tax.graph
    ordered = [n for n in tax.nodes if n in set(cut)]
    start, end = np.full(len(tax.nodes), -1), np.full(len(tax.nodes), -1)
    for i, n in enumerate(tax.nodes):
        if any(a in cut for a in nx.ancestors(g, n)):
            continue
        below = nx.descendants(g, n) | {n}
        under = [k for k, c in enumerate(ordered) if c in below]
        start[i], end[i] = min(under), max(under) + 1
    return start, end


def bench(name: str, text: str, repeats: int) -> dict[str, object]:
    tax = Taxonomy.from_text(text)
    row: dict[str, object] = {
        "tree": name,
        "nodes": len(tax.nodes),
        "leaves": len(tax.leaves),
        "yaml_kib": round(len(text.encode()) / 1024, 1),
    }
    row["load_s"] = median_time(lambda: Taxonomy.from_text(text), repeats)
    row["load_pure_python_s"] = median_time(lambda: pure_python_load(text), max(1, repeats // 2))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    row["safe_load_only_s"] = median_time(lambda: yaml.load(text, Loader=loader), repeats)
    row["index_s"] = median_time(lambda: Taxonomy(tax.spec, check=False).index, repeats)
    cut = random_cut(tax, np.random.default_rng(0), stop=0.3)
    row["cut_size"] = len(cut)
    row["column_ranges_s"] = median_time(lambda: tax.column_ranges(cut), repeats)
    start = time.perf_counter()
    expected = brute_force_ranges(tax, cut)
    row["column_ranges_networkx_s"] = time.perf_counter() - start
    got = tax.column_ranges(cut)
    row["column_ranges_match"] = all(np.array_equal(a, b) for a, b in zip(got, expected))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "taxonomy.json")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    trees = {
        "isic.yaml": (REPO / "taxonomy" / "isic.yaml").read_text(encoding="utf-8"),
        "random 2032 leaves": random_taxonomy(2032, max_depth=9, seed=0).to_yaml(),
    }
    rows = [bench(name, text, repeats) for name, text in trees.items()]
    header = (
        f"{'tree':<20} {'nodes':>6} {'leaves':>6} {'KiB':>6} {'load':>8} {'pure-py':>8} {'x':>5} "
        f"{'parse':>8} {'index':>8} {'ranges':>9} {'networkx':>9} {'x':>6}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['tree']:<20} {r['nodes']:>6} {r['leaves']:>6} {r['yaml_kib']:>6} "
            f"{r['load_s']:>7.3f}s {r['load_pure_python_s']:>7.3f}s "
            f"{r['load_pure_python_s'] / r['load_s']:>5.1f} {r['safe_load_only_s']:>7.3f}s "
            f"{r['index_s'] * 1e3:>6.1f}ms {r['column_ranges_s'] * 1e3:>7.2f}ms "
            f"{r['column_ranges_networkx_s']:>8.3f}s "
            f"{r['column_ranges_networkx_s'] / r['column_ranges_s']:>6.0f}"
            + ("" if r["column_ranges_match"] else "  MISMATCH")
        )
    result = {
        "benchmark": "taxonomy",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libyaml": hasattr(yaml, "CSafeLoader"),
        "repeats": repeats,
        "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r["column_ranges_match"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
