"""What ``hierclf predict``'s loop costs over a bare PyTorch inference loop.

Both loops score the same decoded images (uint8 ``(n, 3, size, size)`` in memory), in the same batches, with
the same model weights, under ``torch.inference_mode`` on the CPU:

* ``bare``: ``softmax(head(backbone((x / 255 - mean) / std)))`` per batch, copied into a preallocated numpy
  array -- the loop anyone would write by hand;
* ``hierclf``: :meth:`hierclf.inference.prediction_loop.Predictor.run` over the same batches, with the
  :class:`~hierclf.inference.scoring.ScoringGraph` of a ``hierclf predict`` call: the column probabilities,
  three named nodes (the roll-up), and with ``+tasks`` three task scores and decisions.

The target is ``hierclf / bare <= 1.1``. Variants are interleaved (bare, hierclf, hierclf+tasks, bare, ...)
and each round's ratio ``hierclf / bare`` is taken from loops that ran back to back; the median over rounds is
reported (with the median times and the ratio of the fastest runs), so a shared machine's drifts hit all of
them alike. Decoding is
left out on purpose (it is the same PIL work in both; ``--workers`` spreads it over processes).

Usage::

    python benchmarks/predict.py              # table + benchmarks/results/predict.json
    python benchmarks/predict.py --quick      # fewer images and repeats
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

import numpy as np
import torch

from hierclf import Taxonomy
from hierclf.inference.models import TrainedModel
from hierclf.inference.prediction_loop import Predictor
from hierclf.inference.scoring import ScoringGraph
from hierclf.inference.thresholds import TaskThreshold
from hierclf.io.atomic import atomic_write_text
from hierclf.nn.backbones import backbone_recipe, create_backbone
from hierclf.nn.head import LeafHead
from hierclf.train.identity import ModelIdentity

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NODES = ["malignant", "benign", "keratinocyte_carcinoma"]
TASKS = [
    TaskThreshold("melanoma_vs_nevus", ("melanoma",), ("melanocytic_nevus",), 0.3),
    TaskThreshold("carcinoma_vs_keratosis", ("keratinocyte_carcinoma",), ("benign_keratosis",), 0.4),
    TaskThreshold("malignant_vs_benign", ("malignant",), ("benign",), 0.5),
]
#: (backbone, image side, batch, images) per configuration
CONFIGS = [("small_cnn", 28, 256, 2048), ("resnet18", 64, 64, 128), ("resnet18", 224, 32, 64)]


def _model(backbone: str, size: int) -> TrainedModel:
    tax = Taxonomy.from_yaml(REPO / "taxonomy" / "dermamnist.yaml")
    torch.manual_seed(0)
    net, width = create_backbone(backbone, in_size=size)
    head = LeafHead(width, tax)
    identity = ModelIdentity.of(
        tax,
        head,
        backbone=backbone_recipe(backbone, pretrained=False, in_size=size),
        preprocessing={"size": size, "mean": list(MEAN), "std": list(STD)},
    )
    return TrainedModel(net, head, identity).eval()


def _bare(model: TrainedModel, images: torch.Tensor, batch: int) -> np.ndarray:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    out = np.empty((len(images), len(model.columns)), np.float32)
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = (images[start : start + batch].float() / 255.0 - mean) / std
            out[start : start + batch] = torch.softmax(model.head(model.backbone(x)), dim=-1).numpy()
    return out


def _hierclf(predictor: Predictor, images: torch.Tensor, batch: int) -> np.ndarray:
    n = len(images)
    batches = ((np.arange(s, min(n, s + batch)), images[s : s + batch], []) for s in range(0, n, batch))
    return predictor.run(batches, n, ids=np.arange(n).astype(str)).probs


def _time(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(backbone: str, size: int, batch: int, n: int, repeats: int) -> dict[str, Any]:
    """Median seconds of each loop over ``repeats`` interleaved rounds, and the ratios to ``bare``."""
    model = _model(backbone, size)
    images = torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    plain = Predictor(ScoringGraph(model, nodes=NODES), batch_size=batch)
    tasks = Predictor(ScoringGraph(model, nodes=NODES, tasks=TASKS), batch_size=batch)
    reference = _bare(model, images[:batch], batch)
    np.testing.assert_allclose(
        _hierclf(plain, images[:batch], batch), reference, atol=1e-6
    )  # the same numbers
    loops = {
        "bare": lambda: _bare(model, images, batch),
        "hierclf": lambda: _hierclf(plain, images, batch),
        "hierclf+tasks": lambda: _hierclf(tasks, images, batch),
    }
    for fn in loops.values():  # warm-up
        fn()
    seconds: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(repeats):
        for name, fn in loops.items():
            seconds[name].append(_time(fn))
    median = {k: statistics.median(v) for k, v in seconds.items()}
    # each round's own ratio (its loops ran back to back): robust to the drifts of a shared machine
    ratios = {k: statistics.median(a / b for a, b in zip(seconds[k], seconds["bare"])) for k in loops}
    return {
        "backbone": backbone,
        "size": size,
        "batch": batch,
        "images": n,
        "repeats": repeats,
        "seconds": median,
        "all_seconds": seconds,
        "images_per_second": {k: n / v for k, v in median.items()},
        "ratio": ratios["hierclf"],
        "ratio_with_tasks": ratios["hierclf+tasks"],
        "ratio_of_fastest": min(seconds["hierclf"]) / min(seconds["bare"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "predict.json"))
    parser.add_argument(
        "--quick", action="store_true", help="a quarter of the images (a batch at least), 3 repeats"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"{'backbone':>10} {'px':>4} {'batch':>5} {'images':>6} {'bare img/s':>11} {'hierclf img/s':>14} "
          f"{'ratio':>6} {'+tasks':>7}")  # fmt: skip
    for backbone, size, batch, n in CONFIGS:
        row = measure(backbone, size, batch, max(batch, n // 4) if args.quick else n, repeats)
        rows.append(row)
        ips = row["images_per_second"]
        line = f"{backbone:>10} {size:>4} {batch:>5} {row['images']:>6} {ips['bare']:>11.1f} "
        print(
            line + f"{ips['hierclf']:>14.1f} {row['ratio']:>6.3f} {row['ratio_with_tasks']:>7.3f}", flush=True
        )
    meta = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "target": "hierclf / bare <= 1.1",
    }
    out = Path(args.out)
    atomic_write_text(out, json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")  # folders made too
    print(f"wrote {out}")
    return 0 if all(r["ratio"] <= 1.1 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
