"""Grouped bootstrap benchmark: 1,000 replicates of ROC AUC and specificity at 95% sensitivity on 100,000
predictions in 20,000 groups (patients), against a loop over scikit-learn on resampled data, same run; and the
whole ``evaluate`` of one seed against the bootstrap kernels it cannot avoid, same run.

    python benchmarks/evaluate.py                 # full size, writes benchmarks/results/evaluate.json
    python benchmarks/evaluate.py --quick         # small smoke run

The scikit-learn loop is what a user would write: rebuild each replicate's data set by repeating rows by
their group's draw count (the same draws as hierclf's), then call ``roc_auc_score`` (baseline 1), or
``roc_auc_score`` plus ``roc_curve`` for the specificity at the target sensitivity (baseline 2). At full size
it runs ``--baseline-replicates`` (default 20) replicates and is extrapolated per replicate to the full count
(reported as such). The benchmark also checks that the point estimates and the timed baseline replicates
equal hierclf's.

The end-to-end case runs ``hierclf.evaluation.pipeline.evaluate`` under the shipped DermaMNIST protocol (its
three tasks and two partitions, 1,000 replicates, no subgroups) on one seed of 100,000 test and 20,000
validation predictions in 20,000 lesions, and times, in the same process, ``bootstrap_binary`` on each
task's test samples at the report's thresholds: the ratio says what the evaluation costs beyond those kernels
(every other number's interval: partial AUC, calibration, the chosen threshold, the partitions' macro AUC and
accuracy, the hierarchical metrics, the calibration nodes).
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
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from hierclf.evaluation.metrics import (
    bootstrap_binary,
    grouped_bootstrap_counts,
    roc_auc,
    specificity_at_sensitivity,
)
from hierclf.evaluation.metrics.resampling import _n_jobs
from hierclf.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent


def make_data(n: int, n_groups: int, prevalence: float, seed: int = 0):
    """Predictions of a decent classifier: float32 probabilities (so some ties), every group non-empty."""
    rng = np.random.default_rng(seed)
    groups = np.r_[np.arange(n_groups), rng.integers(0, n_groups, n - n_groups)]
    rng.shuffle(groups)
    y = rng.random(n) < prevalence
    logit = 1.5 * y + rng.normal(size=n) - 1.0
    scores = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32).astype(np.float64)
    return y, scores, groups


def sk_spec_at_sens(y: np.ndarray, s: np.ndarray, target: float) -> float:
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    return float(np.max(1.0 - fpr[tpr >= target]))


def run_case(
    n: int, n_groups: int, prevalence: float, reps: int, base_reps: int, repeats: int, target: float
) -> dict:
    y, s, groups = make_data(n, n_groups, prevalence)
    bootstrap_binary(y[:2000], s[:2000], groups[:2000], n_replicates=10, seed=0)  # warm-up (imports, caches)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = bootstrap_binary(y, s, groups, n_replicates=reps, seed=0, target_sensitivity=target)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    ours = min(times)
    single = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        one = bootstrap_binary(y, s, groups, n_replicates=reps, seed=0, target_sensitivity=target, n_jobs=1)
        single.append(time.perf_counter() - t0)
    assert np.array_equal(one["auc"].replicates, res["auc"].replicates)

    # baselines on the same replicates (the first base_reps)
    counts = next(grouped_bootstrap_counts(groups, base_reps, seed=0, chunk_size=base_reps))
    t_auc = t_both = 0.0
    max_diff = 0.0
    for k in range(base_reps):
        t0 = time.perf_counter()
        idx = np.repeat(np.arange(n), counts[k])
        yk, sk = y[idx], s[idx]
        auc = roc_auc_score(yk, sk)
        t1 = time.perf_counter()
        spec = sk_spec_at_sens(yk, sk, target)
        t2 = time.perf_counter()
        t_auc += t1 - t0
        t_both += t2 - t0
        max_diff = max(
            max_diff,
            abs(auc - res["auc"].replicates[k]),
            abs(spec - res["specificity_at_sensitivity"].replicates[k]),
        )
    per_auc = t_auc / base_reps
    per_both = t_both / base_reps
    sk_point_auc = roc_auc_score(y, s)
    point_spec = (res["specificity_at_sensitivity"].point, res["threshold_at_sensitivity"].point)
    sk_point_spec = sk_spec_at_sens(y, s, target)
    return {
        "n": n,
        "n_groups": int(len(np.unique(groups))),
        "prevalence": prevalence,
        "replicates": reps,
        "target_sensitivity": target,
        "hierclf_s": ours,
        "hierclf_s_all_repeats": times,
        "hierclf_ms_per_replicate": 1000 * ours / reps,
        "hierclf_cpu_s_all_repeats": cpu,
        "hierclf_threads": _n_jobs(None),
        "hierclf_one_thread_s": min(single),
        "baseline_replicates_timed": base_reps,
        "sklearn_auc_ms_per_replicate": 1000 * per_auc,
        "sklearn_auc_s_extrapolated": per_auc * reps,
        "sklearn_auc_spec_ms_per_replicate": 1000 * per_both,
        "sklearn_auc_spec_s_extrapolated": per_both * reps,
        "speedup_vs_sklearn_auc": per_auc * reps / ours,
        "speedup_vs_sklearn_auc_spec": per_both * reps / ours,
        "point_auc": res["auc"].point,
        "sklearn_point_auc": sk_point_auc,
        "point_auc_identical": res["auc"].point == roc_auc(y, s),
        "point_auc_abs_diff_vs_sklearn": abs(res["auc"].point - sk_point_auc),
        "point_spec": res["specificity_at_sensitivity"].point,
        "sklearn_point_spec": sk_point_spec,
        "point_spec_identical": point_spec == specificity_at_sensitivity(y, s, target),
        "point_spec_abs_diff_vs_sklearn": abs(res["specificity_at_sensitivity"].point - sk_point_spec),
        "replicates_max_abs_diff_vs_sklearn": max_diff,
        "auc_ci": [res["auc"].low, res["auc"].high],
        "spec_ci": [res["specificity_at_sensitivity"].low, res["specificity_at_sensitivity"].high],
    }


def _evaluate_predictions(tax, n: int, n_groups: int, seed: int, prefix: str):
    """Leaf probabilities with a signal towards the true leaf; every lesion non-empty."""
    from hierclf.evaluation.prediction_files import Predictions

    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(tax.leaves), n)
    logits = rng.normal(size=(n, len(tax.leaves)))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits)
    probs /= probs.sum(1, keepdims=True)
    lesions = np.r_[np.arange(n_groups), rng.integers(0, n_groups, n - n_groups)]
    ids = np.array([f"{prefix}{i}" for i in range(n)])
    groups = np.char.add(f"{prefix}L", lesions.astype(str))
    return Predictions(probs, tax.leaves, ids, np.asarray(tax.leaves)[y], groups)


def run_evaluate_case(n_test: int, n_val: int, n_groups: int, reps: int, repeats: int) -> dict:
    """One seed through ``evaluate`` (best of ``repeats``) against its bootstrap kernels alone."""
    from hierclf import Taxonomy, load_protocol
    from hierclf.evaluation.pipeline import evaluate, task_scores

    repo = ROOT.parent
    tax = Taxonomy.from_yaml(repo / "taxonomy" / "dermamnist.yaml")
    proto = load_protocol(repo / "taxonomy" / "protocols" / "dermamnist.yaml", tax)
    boot = proto.bootstrap.model_copy(update={"replicates": reps})
    proto = proto.model_copy(update={"bootstrap": boot, "subgroups": [], "min_seeds": 1})
    val = _evaluate_predictions(tax, n_val, max(1, n_groups // 5), 1, "v")
    test = _evaluate_predictions(tax, n_test, n_groups, 2, "t")
    evaluate(tax, proto, [val.select(np.arange(2000))], [test.select(np.arange(2000))])  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        report = evaluate(tax, proto, [val], [test])
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    kernels = []
    for _ in range(repeats):
        total = 0.0
        for task in proto.tasks:
            rows, y, s = task_scores(tax, task, test)
            thr = report.tasks[task.name].thresholds.per_seed[0]
            t0 = time.perf_counter()
            bootstrap_binary(
                y,
                s,
                test.groups[rows],
                n_replicates=reps,
                seed=boot.seed,
                target_sensitivity=proto.target_sensitivity,
                threshold=thr,
            )
            total += time.perf_counter() - t0
        kernels.append(total)
    mel = report.tasks["melanoma_vs_nevus"].metrics["specificity"]
    return {
        "n_test": n_test,
        "n_val": n_val,
        "n_groups": n_groups,
        "replicates": reps,
        "tasks": len(proto.tasks),
        "partitions": len(proto.partitions),
        "evaluate_s": min(times),
        "evaluate_s_all_repeats": times,
        "evaluate_cpu_s_all_repeats": cpu,
        "task_bootstrap_kernels_s": min(kernels),
        "evaluate_over_kernels": min(times) / min(kernels),
        "melanoma_specificity": mel.value,
        "melanoma_specificity_ci": list(mel.ci),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="small smoke run (10,000 predictions, 100 replicates)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "evaluate.json")
    ap.add_argument("--replicates", type=int, default=None)
    ap.add_argument("--baseline-replicates", type=int, default=None)
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed repeats of the hierclf run (best is reported)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        cases = [(10_000, 2_000, 0.2)]
        reps, base = args.replicates or 100, args.baseline_replicates or 5
    else:
        cases = [(100_000, 20_000, 0.2), (100_000, 20_000, 0.5)]
        reps, base = args.replicates or 1000, args.baseline_replicates or 20
    rows = [run_case(n, g, p, reps, base, args.repeats, 0.95) for n, g, p in cases]
    e2e = run_evaluate_case(
        *((10_000, 2_000, 2_000) if args.quick else (100_000, 20_000, 20_000)), reps, args.repeats
    )

    head = (
        f"{'n':>8} {'groups':>7} {'prev':>5} {'reps':>5} | {'hierclf s':>9} {'1 thread':>8} | "
        f"{'sk AUC ms/rep':>13} {'sk AUC s (extrap.)':>18} {'speedup':>8} | {'sk AUC+spec s':>13} "
        f"{'speedup':>8} | {'point ==':>8} {'max |diff|':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        same = r["point_auc_identical"] and r["point_spec_identical"]
        print(
            f"{r['n']:>8} {r['n_groups']:>7} {r['prevalence']:>5} {r['replicates']:>5} | "
            f"{r['hierclf_s']:>9.3f} {r['hierclf_one_thread_s']:>8.3f} | "
            f"{r['sklearn_auc_ms_per_replicate']:>13.2f} {r['sklearn_auc_s_extrapolated']:>18.2f} "
            f"{r['speedup_vs_sklearn_auc']:>7.1f}x | {r['sklearn_auc_spec_s_extrapolated']:>13.2f} "
            f"{r['speedup_vs_sklearn_auc_spec']:>7.1f}x | {str(same):>8} "
            f"{max(r['replicates_max_abs_diff_vs_sklearn'], r['point_auc_abs_diff_vs_sklearn']):>10.1e}"
        )
    print(
        f"(scikit-learn timed on {rows[0]['baseline_replicates_timed']} replicates and extrapolated to "
        f"{reps}; hierclf: best of {args.repeats} full runs with {rows[0]['hierclf_threads']} threads, and "
        f"with 1; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    print(
        f"evaluate, one seed: {e2e['n_test']} test + {e2e['n_val']} validation predictions, "
        f"{e2e['n_groups']} lesions, {e2e['tasks']} tasks + {e2e['partitions']} partitions,"
        f" {reps} replicates: "
        f"{e2e['evaluate_s']:.3f} s (CPU {min(e2e['evaluate_cpu_s_all_repeats']):.1f} s); "
        f"the 3 task bootstraps alone {e2e['task_bootstrap_kernels_s']:.3f} s "
        f"(ratio {e2e['evaluate_over_kernels']:.2f}); melanoma specificity {e2e['melanoma_specificity']:.6f}"
    )
    meta = {
        "benchmark": "evaluate",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "quick": args.quick,
        "rows": rows,
        "evaluate_one_seed": e2e,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
