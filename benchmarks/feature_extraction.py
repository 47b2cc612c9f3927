"""Feature extraction throughput: a ViT-S/14 (timm's DINOv2 architecture, random weights: nothing is
downloaded) over generated images, in images per second, on the GPU when there is one.

    python benchmarks/feature_extraction.py                       # 2,048 images at 224 px, batch 256
    python benchmarks/feature_extraction.py --images 64 --size 56 --batch 32 --device cpu   # a CPU smoke run

The extraction is hierclf's own (:class:`hierclf.probe.features.FeatureExtractor`: uint8 resize per image,
normalisation and the forward pass on the device, shards written to a temporary cache); the script prints
the device, the input size, the feature width and images/s, and writes
``benchmarks/results/feature_extraction.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from hierclf.io.atomic import atomic_write_text
from hierclf.probe.features import FeatureExtractor
from hierclf.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="timm/vit_small_patch14_dinov2")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--size", type=int, default=224, help="input side (a multiple of 14 for ViT-S/14)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "feature_extraction.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        n_val = max(7, args.images // 8)
        config = TrainConfig.model_validate(
            {
                "taxonomy": str(REPO / "taxonomy" / "dermamnist.yaml"),
                "backbone": args.backbone,
                "device": args.device,
                "workers": args.workers,
                "data": {
                    "source": "synthetic",
                    "root": tmp,
                    "size": 28,
                    "input_size": args.size,
                    "synthetic": {"n_train": args.images, "n_val": n_val, "n_test": n_val},
                },
            }
        )
        from hierclf.taxonomy.tree import Taxonomy
        from hierclf.train.distributed import init_process_group
        from hierclf.train.inputs import load_sources

        source = load_sources(
            config, Taxonomy.from_yaml(config.taxonomy), init_process_group(torch.device("cpu"))
        )["train"]
        extractor = FeatureExtractor(config, cache_dir=Path(tmp) / "cache", batch_size=args.batch)
        warm = extractor._forward(source, 0, min(len(source), args.batch))  # kernels, cuDNN autotune
        if extractor.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        features = extractor.features(source)
        if extractor.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    device = str(extractor.device)
    if extractor.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(extractor.device)})"
    rate = len(features) / seconds
    print(
        f"{args.backbone} (random weights) on {device}: {len(features)} images at {args.size} px, "
        f"{features.features.shape[1]} features, batch {args.batch}: {rate:,.1f} images/s"
    )
    meta = {
        "backbone": args.backbone,
        "device": device,
        "images": len(features),
        "size": args.size,
        "batch": args.batch,
        "n_features": int(features.features.shape[1]),
        "images_per_second": rate,
        "warmup_rows": int(warm.shape[0]),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
