"""Frozen features, extracted once per (backbone, weights, data, preprocessing) and cached on disk.

:class:`FeatureExtractor` builds the configuration's backbone once (the same :func:`create_backbone` and the
same preprocessing as training: :func:`hierclf.train.preprocessing.resolve_preprocessing`), and maps each
split's images to ``(n, n_features)`` float32 features in batches, on the configuration's device (CUDA when
``device: auto`` finds one).

The cache key is the SHA-256 of everything the features depend on: the backbone's description, the bytes of
every weight and buffer and the module's structure (so pretrained weights, a seed's random weights and a
factory's code all count), the preprocessing (side, mean, std) and the data fingerprint of the split (ids,
labels, groups and pixels, :func:`hierclf.train.fingerprint.data_fingerprint`). Change any of them and the
features are extracted again; keep them and every later run (another probe, another fraction of labels,
another seed of the probe) reads them back.

Layout of ``<cache>/<key>/``: ``part-<first row>.npy`` shards while extracting, each written atomically
(:mod:`hierclf.io.atomic`), so an interrupted extraction resumes after its last whole shard; then
``features.npy``, ``rows.npz`` (ids, labels, groups) and, last, ``meta.json``, whose presence marks the
entry complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hierclf.io.atomic import atomic_open, atomic_write_text, output_folder
from hierclf.nn.backbones import Backbone, backbone_description, create_backbone
from hierclf.train.preprocessing import InputSettings, input_size_of, resolve_preprocessing

logger = logging.getLogger(__name__)

__all__ = ["CACHE_VERSION", "FeatureExtractor", "FeatureSet", "default_cache_dir", "weights_digest"]

#: bumped when the way features are computed changes (old entries are then not read)
CACHE_VERSION = 1
_SHARD = 4096


def default_cache_dir() -> Path:
    """``HIERCLF_CACHE/features``, else ``~/.cache/hierclf/features``."""
    base = os.environ.get("HIERCLF_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "hierclf") / "features"


@dataclass
class FeatureSet:
    """The features of one split, row by row with its ids, labels and groups.

    Attributes:
        features: ``(n, n_features)`` float32.
        ids, labels, groups: ``(n,)`` str (groups None when the data has none).
        key: the cache key they are stored under.
        reused: True when they were read from the cache.
    """

    features: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None
    key: str
    reused: bool = False

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def select(self, rows: np.ndarray) -> FeatureSet:
        """The rows ``rows`` (indices or a mask)."""
        groups = None if self.groups is None else self.groups[rows]
        return FeatureSet(
            self.features[rows], self.ids[rows], self.labels[rows], groups, self.key, self.reused
        )


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's structure and of every parameter and buffer (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(repr(module).encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\x1f{t.dtype}\x1f{tuple(t.shape)}\x1e".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class _Images(torch.utils.data.Dataset):
    """The images of a source as ``(3, size, size)`` uint8 tensors (normalised later, on the device)."""

    def __init__(self, source: Any, size: int) -> None:
        from hierclf.data.transforms import to_uint8

        self.source, self.to_tensor = source, to_uint8(size)
        self.arrays = hasattr(source, "load_array")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.source.load_array(index) if self.arrays else self.source.load_image(index)
        return self.to_tensor(image)


class FeatureExtractor:
    """The features of a configuration's backbone, extracted batched and cached (module docstring).

    Args:
        config: a :class:`~hierclf.train.config.TrainConfig` (backbone, pretrained, data sizes, device,
            seed, workers, batch sizes are read).
        cache_dir: the cache (default :func:`default_cache_dir`); None with ``cache=False`` keeps nothing.
        batch_size: images per forward pass (default: the config's ``eval_batch_size`` or ``batch_size``).
        shard_size: rows per cached shard (an interrupted extraction loses at most one shard's work).
    """

    def __init__(
        self,
        config: Any,
        *,
        cache_dir: str | Path | None = None,
        batch_size: int | None = None,
        shard_size: int = _SHARD,
    ) -> None:
        from hierclf.train.distributed import pick_device
        from hierclf.train.seeding import set_determinism

        self.config = config
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.batch_size = int(batch_size or config.eval_batch_size or config.batch_size)
        self.shard_size = int(shard_size)
        self.device = pick_device(config.device)
        set_determinism(config.seed)  # random-weight backbones are the seed's
        size, _ = input_size_of(config)
        self.backbone: Backbone = create_backbone(
            config.backbone, pretrained=config.pretrained, in_size=size
        )[0]
        self.backbone.to(self.device).eval()
        self.preprocessing: InputSettings = resolve_preprocessing(config, self.backbone.pretrained_input)
        self._weights = weights_digest(self.backbone)
        self.extracted_rows = (
            0  # rows passed through the backbone by this extractor (not read from the cache)
        )

    def key(self, source: Any) -> str:
        """The cache key of a split's features."""
        from hierclf.train.fingerprint import data_fingerprint

        parts = {
            "version": CACHE_VERSION,
            "backbone": backbone_description(self.config.backbone),
            "pretrained": bool(self.config.pretrained),
            "weights": self._weights,
            "preprocessing": {
                k: v for k, v in self.preprocessing.to_dict().items() if not k.endswith("_from")
            },
            "data": data_fingerprint({"split": source}),
            "dtype": "float32",
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def features(self, source: Any) -> FeatureSet:
        """The features of ``source``'s images (read from the cache when they are there)."""
        key = self.key(source)
        folder = self.cache_dir / key
        rows = _rows_of(source)
        if (folder / "meta.json").is_file():
            features = np.load(folder / "features.npy")
            if features.shape[0] == len(source):
                logger.info("features of %d images reused from %s", len(source), folder)
                return FeatureSet(features, *rows, key=key, reused=True)
        features = self._extract(source, folder)
        return FeatureSet(features, *rows, key=key)

    def _extract(self, source: Any, folder: Path) -> np.ndarray:
        """Extract shard by shard (finished shards are reused), then publish the entry."""
        output_folder(folder)
        started, shards = time.perf_counter(), []
        for first in range(0, len(source), self.shard_size):  # a loop over shards of thousands of images
            shard = folder / f"part-{first:09d}.npy"
            if not shard.is_file():
                block = self._forward(source, first, min(len(source), first + self.shard_size))
                with atomic_open(shard, "wb", encoding=None) as fh:
                    np.save(fh, block)
            shards.append(shard)
        features = np.concatenate([np.load(s) for s in shards]) if shards else np.zeros((0, 0), np.float32)
        _publish(folder, features, source, self.preprocessing, self.config, time.perf_counter() - started)
        for shard in shards:
            shard.unlink(missing_ok=True)
        return features

    @torch.no_grad()
    def _forward(self, source: Any, start: int, stop: int) -> np.ndarray:
        from torch.utils.data import DataLoader, Subset

        from hierclf.data.transforms import BatchTransform

        prep = self.preprocessing
        normalise = BatchTransform(prep.size, augment=False, mean=prep.mean, std=prep.std).to(self.device)
        loader = DataLoader(
            Subset(_Images(source, prep.size), list(range(start, stop))),
            batch_size=self.batch_size,
            num_workers=self.config.workers,
            pin_memory=self.device.type == "cuda",
        )
        out = []
        for images in loader:
            x = normalise(images.to(self.device, non_blocking=True))
            out.append(self.backbone(x).float().cpu().numpy())
        self.extracted_rows += stop - start
        return np.concatenate(out).astype(np.float32)


def _rows_of(source: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    groups = None if source.groups is None else np.asarray(source.groups).astype(str)
    return np.asarray(source.ids).astype(str), np.asarray(source.labels).astype(str), groups


def _publish(
    folder: Path, features: np.ndarray, source: Any, prep: InputSettings, config: Any, took: float
) -> None:
    """``features.npy`` and ``rows.npz``, then ``meta.json`` (the entry is complete when it exists)."""
    with atomic_open(folder / "features.npy", "wb", encoding=None) as fh:
        np.save(fh, features)
    ids, labels, groups = _rows_of(source)
    with atomic_open(folder / "rows.npz", "wb", encoding=None) as fh:
        arrays: dict[str, Any] = {"ids": ids, "labels": labels}
        if groups is not None:
            arrays["groups"] = groups
        np.savez(fh, **arrays)
    meta = {
        "n": int(features.shape[0]),
        "n_features": int(features.shape[1]) if features.ndim == 2 else 0,
        "backbone": backbone_description(config.backbone),
        "pretrained": bool(config.pretrained),
        "preprocessing": prep.to_dict(),
        "seconds": round(took, 3),
    }
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2) + "\n")
    logger.info("features of %d images extracted in %.1f s into %s", meta["n"], took, folder)
