"""What the taxonomy head costs in a training step.

Backbone + LeafHead + hierclf loss vs backbone + nn.Linear + cross-entropy, at 7 classes (DermaMNIST tree)
and 2,032 classes (an Esteva-size random tree).

Timed, per configuration, on the same backbone weights and the same batch:

* ``flat``: ``F.cross_entropy(linear(backbone(x)), y).backward()`` -- the baseline;
* ``hier``: ``build_loss("ce")(LeafHead(backbone(x)), y).backward()`` -- what ``hierclf.train.loop.fit`` runs;
* ``hier+rollup``: ``hier`` plus ``head.rollup(logits, 5 nodes)`` in the step (logging or an auxiliary
  node-level term; the rolled-up probabilities enter the loss with weight 0 so the backward includes them).

Each step is forward + loss + backward (+ ``zero_grad``), no optimiser update. Variants are interleaved
(flat, hier, hier+rollup, flat, ...) and the median over repeats is reported, so slow drifts of a shared
machine hit all of them alike. Because the heads differ only in a few microseconds and a full step is
milliseconds, the head-only step (features fixed: the backbone's output is a leaf tensor) is timed the same
way and gives the isolated overhead ``(head_hier - head_flat) / full_flat``, the number the target
(< 2 % of a step) refers to; the direct full-step difference is reported too.

Usage::

    python benchmarks/train_step.py                # full run; table + benchmarks/results/train_step.json
    python benchmarks/train_step.py --quick        # fewer repeats
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hierclf import Taxonomy
from hierclf.nn.backbones import create_backbone
from hierclf.nn.head import LeafHead
from hierclf.nn.losses import build_loss
from hierclf.taxonomy.synthetic import random_taxonomy

REPO = Path(__file__).resolve().parents[1]
try:  # the roll-up engine (hierclf.functional) may not be installed in a partial checkout
    import hierclf.functional  # noqa: F401

    _HAVE_ROLLUP = True
except ModuleNotFoundError:
    _HAVE_ROLLUP = False


def _fmt(value: float | None, width: int) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'n/a':>{width}}"


def _taxonomy(n_classes: int) -> Taxonomy:
    if n_classes == 7:
        return Taxonomy.from_yaml(REPO / "taxonomy" / "dermamnist.yaml")
    return random_taxonomy(n_classes, max_depth=9, max_fan_out=8, seed=0)


def _rollup_nodes(tax: Taxonomy, k: int = 5) -> list[str]:
    internal = [n for n in tax.nodes if not tax.is_leaf(n) and n != tax.root]
    return (internal[:: max(1, len(internal) // k)] + [tax.root])[:k]


def _time(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(fns: dict[str, Any], repeats: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_time(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def bench(
    backbone_name: str, size: int, batch: int, n_classes: int, repeats: int, warmup: int
) -> dict[str, Any]:
    torch.manual_seed(0)
    tax = _taxonomy(n_classes)
    backbone, width = create_backbone(backbone_name, in_size=size)
    backbone.train()
    flat_head = nn.Linear(width, n_classes)
    head = LeafHead(width, tax)
    head.linear.load_state_dict(flat_head.state_dict())  # same weights: only the code path differs
    loss = build_loss("ce")
    nodes = _rollup_nodes(tax)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, n_classes, (batch,))

    def full(kind: str) -> Any:
        def step() -> None:
            backbone.zero_grad(set_to_none=True)
            head.zero_grad(set_to_none=True)
            flat_head.zero_grad(set_to_none=True)
            f = backbone(x)
            if kind == "flat":
                out = F.cross_entropy(flat_head(f), y)
            else:
                logits = head(f)
                out = loss(logits, y)
                if kind == "hier+rollup":
                    out = out + 0.0 * head.rollup(logits, nodes).sum()
            out.backward()

        return step

    with torch.no_grad():
        features = backbone(x)

    def head_only(kind: str) -> Any:
        feats = features.clone().requires_grad_(True)

        def step() -> None:
            feats.grad = None
            head.zero_grad(set_to_none=True)
            flat_head.zero_grad(set_to_none=True)
            if kind == "flat":
                out = F.cross_entropy(flat_head(feats), y)
            else:
                logits = head(feats)
                out = loss(logits, y)
                if kind == "hier+rollup":
                    out = out + 0.0 * head.rollup(logits, nodes).sum()
            out.backward()

        return step

    kinds = ("flat", "hier", "hier+rollup") if _HAVE_ROLLUP else ("flat", "hier")
    full_t = _interleaved({k: full(k) for k in kinds}, repeats, warmup)
    head_t = _interleaved({k: head_only(k) for k in kinds}, repeats * 20, warmup * 5)
    row: dict[str, Any] = {
        "backbone": backbone_name,
        "size": size,
        "batch": batch,
        "classes": n_classes,
        "rollup_nodes": len(nodes),
    }
    for k in kinds:
        row[f"step_ms_{k}"] = 1e3 * full_t[k]
        row[f"head_us_{k}"] = 1e6 * head_t[k]
    row["images_per_s_flat"] = batch / full_t["flat"]
    row["images_per_s_hier"] = batch / full_t["hier"]
    for k in kinds[1:]:
        row[f"overhead_pct_{k}_isolated"] = 100 * (head_t[k] - head_t["flat"]) / full_t["flat"]
        row[f"overhead_pct_{k}_direct"] = 100 * (full_t[k] - full_t["flat"]) / full_t["flat"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_step.json"))
    parser.add_argument("--quick", action="store_true", help="fewer repeats (noisier)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats, warmup = (3, 1) if args.quick else (9, 2)
    configs = [("small_cnn", 28, 64), ("resnet18", 28, 16)]
    load_before = os.getloadavg()[0]
    rows = []
    for name, size, batch in configs:
        for n_classes in (7, 2032):
            row = bench(name, size, batch, n_classes, repeats, warmup)
            rows.append(row)
            print(f"  measured {name} {size}px batch {batch}, {n_classes} classes", file=sys.stderr)
    header = (
        f"{'backbone':<10} {'px':>3} {'batch':>5} {'classes':>7} {'flat ms':>8} {'hier ms':>8} "
        f"{'+rollup ms':>10} {'img/s':>7} {'head flat us':>12} {'head hier us':>12} "
        f"{'overhead % (isolated)':>21} {'(+rollup)':>9} {'direct %':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['backbone']:<10} {r['size']:>3} {r['batch']:>5} {r['classes']:>7} "
            f"{r['step_ms_flat']:>8.2f} {r['step_ms_hier']:>8.2f} {_fmt(r.get('step_ms_hier+rollup'), 10)} "
            f"{r['images_per_s_flat']:>7.0f} {r['head_us_flat']:>12.1f} {r['head_us_hier']:>12.1f} "
            f"{r['overhead_pct_hier_isolated']:>21.2f} "
            f"{_fmt(r.get('overhead_pct_hier+rollup_isolated'), 9)} "
            f"{r['overhead_pct_hier_direct']:>8.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "quick": args.quick,
        "repeats": repeats,
        "rollup_timed": _HAVE_ROLLUP,
        "loadavg_1min_before_after": [load_before, os.getloadavg()[0]],
        "cpu_count": os.cpu_count(),
        "command": " ".join(["python", "benchmarks/train_step.py", *(argv or sys.argv[1:])]),
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
