"""Input pipeline benchmark: images per second from a DermaMNIST-layout dataset to a normalised, augmented
batch, per-sample torchvision v2 pipeline (in DataLoader workers) vs hierclf's BatchTransform (one batch at a
time, on the batch's device), same run.

    python benchmarks/data_pipeline.py            # writes benchmarks/results/data_pipeline.json
    python benchmarks/data_pipeline.py --quick    # small smoke run

Both paths read the same generated npz through ``load_dermamnist`` and ``TaxonomyImageDataset``:

* per-sample (baseline): ``transform=train_transform(size)`` (resp. ``eval_transform``); each image goes
  through PIL + torchvision v2 in the loader;
* batched: ``transform=to_uint8(size)`` in the loader, then ``BatchTransform(size)`` on the collated batch.

Timings are for the main process (``num_workers=0``) with one torch thread, so the numbers are per CPU core;
workers multiply both paths alike. Each figure is the best of ``--repeats`` passes over ``--batches`` batches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from hierclf import Taxonomy
from hierclf.data.datasets import TaxonomyImageDataset, load_dermamnist, make_synthetic_dermamnist
from hierclf.data.transforms import BatchTransform, eval_transform, to_uint8, train_transform
from hierclf.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent
TAXONOMY = ROOT.parent / "taxonomy" / "dermamnist.yaml"


def images_per_second(loader: DataLoader, batch_fn, batches: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        n = 0
        for i, (x, _) in enumerate(loader):
            if i == batches:
                break
            out = batch_fn(x)
            n += out.shape[0]
        best = min(best, time.perf_counter() - start)
    return n / best


def run(size: int, batch: int, batches: int, repeats: int, root: Path) -> list[dict]:
    tax = Taxonomy.from_yaml(TAXONOMY)
    n = batch * batches
    make_synthetic_dermamnist(root, size=size, n_train=n, n_val=7, n_test=7, seed=0)
    source = load_dermamnist(root, "train", size=size, taxonomy=tax)
    mapping = {leaf: i for i, leaf in enumerate(tax.leaves)}
    rows = []
    for mode in ("train", "eval"):
        per_sample_tf = train_transform(size) if mode == "train" else eval_transform(size)
        per_sample = DataLoader(
            TaxonomyImageDataset(source, mapping, transform=per_sample_tf), batch_size=batch, shuffle=False
        )
        raw = DataLoader(
            TaxonomyImageDataset(source, mapping, transform=to_uint8(size)), batch_size=batch, shuffle=False
        )
        bt = BatchTransform(size, augment=mode == "train")
        gen = torch.Generator().manual_seed(0)
        base = images_per_second(per_sample, lambda x: x, batches, repeats)
        ours = images_per_second(raw, lambda x, bt=bt, gen=gen: bt(x, generator=gen), batches, repeats)
        loader_only = images_per_second(raw, lambda x: x, batches, repeats)
        rows.append(
            {
                "size": size,
                "mode": mode,
                "batch": batch,
                "images": n,
                "per_sample_img_s": round(base, 1),
                "batched_img_s": round(ours, 1),
                "uint8_loader_only_img_s": round(loader_only, 1),
                "speedup": round(ours / base, 2),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "data_pipeline.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    batches = args.batches or (4 if args.quick else 16)
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = (28,) if args.quick else (28, 64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            rows.extend(run(size, args.batch, batches, repeats, Path(tmp) / str(size)))
    print(
        f"{'size':>4} {'mode':>5} {'per-sample img/s':>17} {'batched img/s':>14} {'loader only':>12} {'x':>6}"
    )
    for r in rows:
        print(
            f"{r['size']:>4} {r['mode']:>5} {r['per_sample_img_s']:>17.0f} {r['batched_img_s']:>14.0f} "
            f"{r['uint8_loader_only_img_s']:>12.0f} {r['speedup']:>6.1f}"
        )
    result = {
        "benchmark": "data_pipeline",
        "rows": rows,
        "torch_threads": 1,
        "num_workers": 0,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
