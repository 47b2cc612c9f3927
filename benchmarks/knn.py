"""kNN probe benchmark: cosine k-nearest-neighbour classification of frozen features (queries per second),
hierclf's chunked matrix products against a naive loop over queries and scikit-learn's
``NearestNeighbors(metric="cosine", algorithm="brute")``, all in the same run.

    python benchmarks/knn.py                          # the issue's size: 100,000 x 100,000 x 768, k = 20
    python benchmarks/knn.py --bank 20000 --queries 20000 --dim 768      # a reduced size
    python benchmarks/knn.py --quick                  # smoke run

The naive loop is what a first version would write: for each query, one dot product with the normalised
bank, ``argpartition`` for the top k and a weighted vote, in numpy. It and scikit-learn run on
``--baseline-queries`` and ``--sklearn-queries`` queries (default 500 and 5,000) and are reported in queries
per second over those; every method's neighbours are checked against hierclf's on those queries. Features are
random float32 with a class structure (so neighbours are not ties).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from hierclf.io.atomic import atomic_write_text
from hierclf.probe.knn import knn_neighbours, knn_probabilities

ROOT = Path(__file__).resolve().parent


def make_features(n: int, dim: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    centres = rng.normal(size=(n_classes, dim)).astype(np.float32)
    x = centres[y] + rng.normal(scale=2.0, size=(n, dim)).astype(np.float32)
    return x, y


def naive(bank: np.ndarray, bank_y: np.ndarray, queries: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """One query at a time (the baseline)."""
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    out = np.zeros((len(queries), k), np.int64)
    for i, q in enumerate(queries):
        s = b @ (q / np.linalg.norm(q))
        top = np.argpartition(-s, k)[:k]
        out[i] = top[np.argsort(-s[top])]
        votes = np.bincount(bank_y[out[i]], weights=np.exp(s[out[i]] / 0.07), minlength=n_classes)
        votes /= votes.sum()
    return out


def timed(fn, *args, **kw):
    start = time.perf_counter()
    result = fn(*args, **kw)
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--baseline-queries", type=int, default=None, help="queries for the naive loop")
    ap.add_argument("--sklearn-queries", type=int, default=None, help="queries for scikit-learn")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="5,000 x 5,000 x 128")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "knn.json")
    args = ap.parse_args()
    if args.quick:
        args.bank, args.queries, args.dim = 5000, 5000, 128
    base_q = args.baseline_queries or min(500, args.queries)
    sk_q = args.sklearn_queries or min(5000, args.queries)
    bank, bank_y = make_features(args.bank, args.dim, args.classes, 0)
    queries, _ = make_features(args.queries, args.dim, args.classes, 1)

    t_hier, probs = timed(
        knn_probabilities, bank, bank_y, queries, n_classes=args.classes, k=args.k, device=args.device
    )
    _, (_, idx) = timed(knn_neighbours, bank, queries[:sk_q], args.k, device=args.device)
    t_naive, naive_idx = timed(naive, bank, bank_y, queries[:base_q], args.k, args.classes)
    from sklearn.neighbors import NearestNeighbors

    nn_ = NearestNeighbors(n_neighbors=args.k, metric="cosine", algorithm="brute")
    t_fit, _ = timed(nn_.fit, bank)
    t_sk, (_, sk_idx) = timed(nn_.kneighbors, queries[:sk_q])
    t_sk += t_fit
    same_naive = float((naive_idx == idx[:base_q]).all(axis=1).mean())
    same_sk = float((sk_idx == idx).all(axis=1).mean())
    rows = {
        "hierclf (chunked matmul + topk + scatter_add, all queries)": args.queries / t_hier,
        f"naive loop over queries ({base_q} queries)": base_q / t_naive,
        f"scikit-learn NearestNeighbors brute cosine ({sk_q} queries, fit included)": sk_q / t_sk,
    }
    print(
        f"kNN, bank {args.bank:,} x queries {args.queries:,} x dim {args.dim}, k {args.k}, "
        f"device {args.device}"
    )
    print(f"{'method':<78} {'queries/s':>12} {'hierclf is':>11}")
    for name, qps in rows.items():
        ratio = rows[next(iter(rows))] / qps
        print(f"{name:<78} {qps:>12,.0f} {ratio:>10.1f}x")
    print(f"same neighbours as hierclf: naive {same_naive:.4f}, scikit-learn {same_sk:.4f} of the queries")
    meta = {
        "bank": args.bank,
        "queries": args.queries,
        "dim": args.dim,
        "k": args.k,
        "device": args.device,
        "queries_per_second": rows,
        "hierclf_seconds": t_hier,
        "same_neighbours": {"naive": same_naive, "sklearn": same_sk},
        "probabilities_sum_to_one": bool(np.allclose(probs.sum(1), 1, atol=1e-5)),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
