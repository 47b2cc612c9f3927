"""Paired comparison benchmark: the paired, group-clustered bootstrap of two models (1,000 replicates, 100,000
predictions in 20,000 groups, every difference ``hierclf compare`` reports) against a loop over scikit-learn
on explicitly resampled data, same run; and DeLong's test at n = 1,000,000 against the O(n^2) placement-value
reference at n = 10,000.

    python benchmarks/compare.py                 # full size, writes benchmarks/results/compare.json
    python benchmarks/compare.py --quick         # small smoke run

The differences, per replicate: AUC, partial AUC above 95 % sensitivity, sensitivity and specificity at each
model's own threshold (one binary task), balanced accuracy and the recall of each of 3 classes (one
partition). hierclf draws each replicate's group counts once and measures both models on them
(``paired_bootstrap_binary`` with ``CurveQueries(partial_auc_above=0.95)``, and the partition's one pass for
each model on the same draws). The baseline is what a user would write: rebuild each replicate's data set by
repeating rows by their group's draw count (the same draws as hierclf's), then scikit-learn for every number
of both models (``roc_auc_score``; ``roc_curve`` and the area above 95 % sensitivity for the partial AUC;
``recall_score`` at the thresholds; ``balanced_accuracy_score`` and ``recall_score(average=None)``), and
subtract. It runs ``--baseline-replicates`` (default 20) replicates and is extrapolated per replicate to the
full count (reported as such). The run checks that hierclf's point differences equal scikit-learn's on the
full data, and that the timed baseline replicates equal hierclf's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score, roc_curve

from hierclf.evaluation import metrics as M
from hierclf.evaluation.metrics.resampling import _n_jobs
from hierclf.evaluation.partitions import _bootstrap_partition
from hierclf.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent
TARGET = 0.95


def make_data(n: int, n_groups: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Two models' scores for one binary task and their argmax over 3 classes, every group non-empty; float32
    scores (so some ties)."""
    rng = np.random.default_rng(seed)
    groups = np.r_[np.arange(n_groups), rng.integers(0, n_groups, n - n_groups)]
    rng.shuffle(groups)
    y3 = rng.choice(3, size=n, p=[0.6, 0.2, 0.2])
    y = (y3 > 0).astype(bool)
    out: dict[str, np.ndarray] = {"groups": groups, "y": y, "y3": y3}
    for name, signal in (("a", 1.6), ("b", 1.3)):
        logit = signal * y + rng.normal(size=n) - 1.0
        out[f"s_{name}"] = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32).astype(np.float64)
        right = rng.random(n) < (0.7 if name == "a" else 0.6)
        out[f"p_{name}"] = np.where(right, y3, rng.integers(0, 3, n))
    return out


def hierclf_paired(d: dict[str, np.ndarray], reps: int, jobs: int | None) -> dict[str, np.ndarray]:
    """Every difference's replicates, hierclf's way (one set of draws for both models)."""
    thr = [M.threshold_at_sensitivity(d["y"], d[f"s_{m}"], TARGET) for m in "ab"]
    a, b = M.paired_bootstrap_binary(
        d["y"],
        np.stack([d["s_a"], d["s_b"]]),
        d["groups"],
        n_replicates=reps,
        seed=0,
        target_sensitivity=TARGET,
        thresholds=thr,
        queries=M.CurveQueries(partial_auc_above=TARGET),
        n_jobs=jobs,
    )
    out = {
        key: a[key].replicates - b[key].replicates
        for key in ("auc", "partial_auc", "sensitivity", "specificity")
    }
    points = {key: a[key].point - b[key].point for key in out}
    parts = [
        _bootstrap_partition(d["y3"], d[f"p_{m}"], d["groups"], 3, cancer=None, replicates=reps, seed=0)
        for m in "ab"
    ]
    out["balanced_accuracy"] = parts[0]["balanced_accuracy"] - parts[1]["balanced_accuracy"]
    for c in range(3):
        out[f"recall_{c}"] = parts[0]["recall"][:, c] - parts[1]["recall"][:, c]
    return {"replicates": out, "points": points, "thresholds": thr}  # type: ignore[dict-item]


def sk_partial_auc(y: np.ndarray, s: np.ndarray, m: float) -> float:
    """The area under scikit-learn's ROC curve (points joined by straight lines) above sensitivity ``m``, over
    ``1 - m``: the trapezoid of each segment above ``m`` (hierclf's partial AUC, on scikit-learn's curve)."""
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    f0, f1, t0, t1 = fpr[:-1], fpr[1:], tpr[:-1], tpr[1:]
    lo = np.maximum(t0, m)
    rising = t1 > t0
    frac = np.where(rising, (lo - t0) / np.where(rising, t1 - t0, 1.0), 0.0)
    f_lo = f0 + frac * (f1 - f0)
    height = np.where(t1 > lo, t1 - lo, 0.0)
    return float(np.sum(height * (1.0 - 0.5 * (f1 + f_lo))) / (1.0 - m))


def sklearn_numbers(y: np.ndarray, s: np.ndarray, thr: float, y3: np.ndarray, p3: np.ndarray) -> np.ndarray:
    return np.r_[
        roc_auc_score(y, s),
        sk_partial_auc(y, s, TARGET),
        recall_score(y, s >= thr),
        recall_score(~y, s < thr),
        balanced_accuracy_score(y3, p3),
        recall_score(y3, p3, average=None, labels=[0, 1, 2]),
    ]


def sklearn_loop(d: dict[str, np.ndarray], thr: list[float], base_reps: int) -> tuple[float, np.ndarray]:
    """The loop a user would write, on the first ``base_reps`` replicates' explicit data sets."""
    counts = next(M.grouped_bootstrap_counts(d["groups"], base_reps, seed=0, chunk_size=base_reps))
    n = d["y"].size
    out = np.empty((base_reps, 8))
    t0 = time.perf_counter()
    for k in range(base_reps):  # a loop over replicates: the baseline
        idx = np.repeat(np.arange(n), counts[k])
        y, y3 = d["y"][idx], d["y3"][idx]
        a = sklearn_numbers(y, d["s_a"][idx], thr[0], y3, d["p_a"][idx])
        b = sklearn_numbers(y, d["s_b"][idx], thr[1], y3, d["p_b"][idx])
        out[k] = a - b
    return time.perf_counter() - t0, out


def run_bootstrap(n: int, n_groups: int, reps: int, base_reps: int, repeats: int) -> dict:
    d = make_data(n, n_groups)
    hierclf_paired(make_data(2000, 500), 10, None)  # warm-up (imports, caches)
    times, cpu, res = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = hierclf_paired(d, reps, None)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    t0 = time.perf_counter()
    one = hierclf_paired(d, reps, 1)
    one_thread = time.perf_counter() - t0
    assert res is not None
    for key, r in res["replicates"].items():
        assert np.array_equal(r, one["replicates"][key], equal_nan=True), key
    t_base, base = sklearn_loop(d, res["thresholds"], base_reps)
    keys = list(res["replicates"])
    ours = np.stack([res["replicates"][k][:base_reps] for k in keys], axis=1)
    max_rep_diff = float(np.nanmax(np.abs(ours - base)))
    full = sklearn_numbers(d["y"], d["s_a"], res["thresholds"][0], d["y3"], d["p_a"]) - sklearn_numbers(
        d["y"], d["s_b"], res["thresholds"][1], d["y3"], d["p_b"]
    )
    points = res["points"]
    point_diff = max(
        abs(points[k] - full[i]) for i, k in enumerate(("auc", "partial_auc", "sensitivity", "specificity"))
    )
    sk_pauc = sk_partial_auc(d["y"], d["s_a"], TARGET) - sk_partial_auc(d["y"], d["s_b"], TARGET)
    per_rep = t_base / base_reps
    best = min(times)
    return {
        "n": n,
        "n_groups": n_groups,
        "replicates": reps,
        "differences": keys,
        "hierclf_s": best,
        "hierclf_s_all_repeats": times,
        "hierclf_cpu_s_all_repeats": cpu,
        "hierclf_threads": _n_jobs(None),
        "hierclf_one_thread_s": one_thread,
        "baseline_replicates_timed": base_reps,
        "sklearn_ms_per_replicate": 1000 * per_rep,
        "sklearn_s_extrapolated": per_rep * reps,
        "speedup": per_rep * reps / best,
        "speedup_one_thread": per_rep * reps / one_thread,
        "points_max_abs_diff_vs_sklearn": float(point_diff),
        "partial_auc_vs_sklearn_curve_abs_diff": abs(points["partial_auc"] - sk_pauc),
        "replicates_max_abs_diff_vs_sklearn": max_rep_diff,
        "auc_difference": points["auc"],
        "auc_difference_ci": list(M.percentile_ci(res["replicates"]["auc"], 0.95)),
    }


def _quadratic_delong(y: np.ndarray, s: np.ndarray) -> float:
    """DeLong's variance of AUC_a - AUC_b from the O(n^2) placement values (every positive-negative pair)."""
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    v10, v01 = [], []
    for row in s:  # two models; each psi matrix is (positives, negatives)
        psi = (row[pos][:, None] > row[neg][None, :]) + 0.5 * (row[pos][:, None] == row[neg][None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    cov = np.cov(np.array(v10)) / pos.size + np.cov(np.array(v01)) / neg.size
    return float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])


def run_delong(n_fast: int, n_slow: int) -> dict:
    out = {}
    for n in (n_slow, n_fast):
        d = make_data(n, max(1, n // 5), seed=1)
        s = np.stack([d["s_a"], d["s_b"]])
        t0 = time.perf_counter()
        r = M.delong_test(d["y"], s)
        out[f"fast_s_at_{n}"] = time.perf_counter() - t0
        out[f"fast_variance_at_{n}"] = r.std_error**2
        if n == n_slow:
            t0 = time.perf_counter()
            var = _quadratic_delong(d["y"], s)
            out[f"quadratic_s_at_{n}"] = time.perf_counter() - t0
            out["variance_rel_diff_vs_quadratic"] = abs(var - r.std_error**2) / var
    out["n_fast"], out["n_slow"] = n_fast, n_slow
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "compare.json")
    ap.add_argument("--replicates", type=int, default=None)
    ap.add_argument("--baseline-replicates", type=int, default=None)
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed repeats of the hierclf run (best is reported)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        n, g, reps, base, fast, slow = (
            10_000,
            2_000,
            args.replicates or 100,
            args.baseline_replicates or 5,
            100_000,
            2_000,
        )
    else:
        n, g, reps, base, fast, slow = (
            100_000,
            20_000,
            args.replicates or 1000,
            args.baseline_replicates or 20,
            1_000_000,
            10_000,
        )
    row = run_bootstrap(n, g, reps, base, args.repeats)
    delong = run_delong(fast, slow)
    print(
        f"paired bootstrap, {row['n']} predictions in {row['n_groups']} groups, {row['replicates']} "
        f"replicates, {len(row['differences'])} differences of 2 models ({', '.join(row['differences'])}):"
    )
    print(
        f"  hierclf {row['hierclf_s']:.2f} s (best of {args.repeats}, {row['hierclf_threads']} threads; "
        f"1 thread {row['hierclf_one_thread_s']:.2f} s; CPU {min(row['hierclf_cpu_s_all_repeats']):.2f} s)"
    )
    print(
        f"  scikit-learn loop {row['sklearn_ms_per_replicate']:.1f} ms/replicate (timed on {base}) -> "
        f"{row['sklearn_s_extrapolated']:.1f} s extrapolated: {row['speedup']:.1f}x "
        f"({row['speedup_one_thread']:.1f}x against hierclf on 1 thread)"
    )
    print(
        f"  point differences vs scikit-learn: max |diff| {row['points_max_abs_diff_vs_sklearn']:.1e}; timed "
        f"replicates vs scikit-learn: max |diff| {row['replicates_max_abs_diff_vs_sklearn']:.1e}"
    )
    print(
        f"DeLong: n = {fast:,} in {delong[f'fast_s_at_{fast}']:.2f} s; n = {slow:,}: O(n log n) "
        f"{delong[f'fast_s_at_{slow}'] * 1000:.1f} ms, O(n^2) placement values "
        f"{delong[f'quadratic_s_at_{slow}']:.2f} s "
        f"(variance rel. diff {delong['variance_rel_diff_vs_quadratic']:.1e})"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"(load average {load:.1f} on {os.cpu_count()} CPUs)")
    meta = {
        "benchmark": "compare",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "quick": args.quick,
        "paired_bootstrap": row,
        "delong": delong,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
