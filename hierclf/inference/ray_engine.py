"""Scoring past one machine: the same model over Ray Data (``hierclf predict --engine ray``).

Millions of images belong on an existing distributed engine, not a home-made one. :func:`predict_with_ray`
builds a Ray dataset of ``(row, path)`` items and maps a **stateful model actor** over it with
``Dataset.map_batches``: each actor loads the checkpoint(s) once (:func:`hierclf.inference.load_models`),
then decodes and scores the batches it is given with the very
:class:`~hierclf.inference.prediction_loop.Predictor` of the single-process path; rows come back with their
input position and are put in input order, so the table is the single-process table
(``tests/test_inference.py`` checks it, value for value).

Ray is an optional extra (``pip install hierclf[ray]``, i.e. ``ray[data]``). Without a running cluster a
local Ray instance is started for the call (and stopped after); on a cluster, ``ray.init(address=...)``
before calling (or ``RAY_ADDRESS``) and each actor gets a GPU when ``num_gpus`` says so. The checkpoint
and the images must be readable at the same paths on every node (a shared file system or object store
mount).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.errors import HierclfError
from hierclf.inference.images import BadImage, ImageList, decode, failure_reason
from hierclf.inference.prediction_loop import PredictionTable, UnreadableImageError
from hierclf.inference.scoring import ScoringGraph

logger = logging.getLogger(__name__)

__all__ = ["RayUnavailableError", "predict_with_ray"]


class RayUnavailableError(HierclfError):
    """``--engine ray`` without Ray installed."""


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part used
    except ImportError:
        raise RayUnavailableError(
            "--engine ray needs Ray Data: pip install 'hierclf[ray]' (or 'ray[data]')"
        ) from None
    return ray


class ModelActor:
    """A Ray Data batch mapper that holds one loaded model (built once per actor, used for every batch).

    Called with a batch ``{"row": (n,), "path": (n,)}``, it returns ``row``, ``ok``, ``reason`` and the
    graph's four outputs (``probs``, ``nodes``, ``scores``, ``decisions``; NaN / False for bad images).
    """

    def __init__(self, checkpoints: Sequence[str], request: dict[str, Any], device: str) -> None:
        from hierclf.data.transforms import to_uint8
        from hierclf.inference.loading import load_models
        from hierclf.inference.prediction_loop import Predictor
        from hierclf.inference.scoring import ScoringGraph

        graph = ScoringGraph.from_request(load_models(list(checkpoints), device="cpu"), request)
        self.predictor = Predictor(graph, device=device)
        self.to_tensor = to_uint8(graph.size)
        self.widths = (len(graph.columns), len(graph.nodes), len(graph.tasks), len(graph.tasks))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        n = len(batch["row"])
        images, reasons = [], np.full(n, "", dtype=object)
        for k, path in enumerate(batch["path"].tolist()):  # one decode per image, as the DataLoader does
            try:
                images.append(decode(Path(path), self.to_tensor))
            except Exception as exc:  # noqa: BLE001 - reported with the path by the driver
                reasons[k] = failure_reason(exc)
        ok = reasons == ""
        out: dict[str, np.ndarray] = {"row": batch["row"], "ok": ok, "reason": reasons.astype(str)}
        dtypes = (np.float32, np.float32, np.float64, bool)
        filled = [np.full((n, w), np.nan if d is not bool else False, d) for w, d in zip(self.widths, dtypes)]
        if images:
            values = self.predictor.score(torch.stack(images))
            for target, value in zip(filled, values):
                target[ok] = value.cpu().numpy()
        out.update(zip(("probs", "nodes", "scores", "decisions"), filled))
        return out


def _start_ray(ray: Any) -> bool:
    """Start a local Ray instance unless one is running (or ``RAY_ADDRESS`` names a cluster); True when
    this call started it."""
    if ray.is_initialized():
        return False
    import os

    if os.environ.get("RAY_ADDRESS"):
        ray.init(ignore_reinit_error=True, log_to_driver=False)
        return True
    ray.init(
        include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, logging_level=logging.WARNING
    )
    return True


def _quiet(ray: Any) -> None:
    """No Ray Data progress lines unless hierclf logs at INFO (``hierclf -v``)."""
    if logger.isEnabledFor(logging.INFO):
        return
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def predict_with_ray(
    checkpoints: Sequence[str | Path],
    images: ImageList,
    graph: ScoringGraph,
    *,
    batch_size: int = 64,
    actors: int = 1,
    num_gpus: float = 0.0,
    skip_bad: bool = False,
) -> PredictionTable:
    """Score ``images`` over Ray Data with the model of ``checkpoints`` and the readout of ``graph`` (built
    around that model in this process); the table equals the single-process
    :meth:`Predictor.predict <hierclf.inference.prediction_loop.Predictor.predict>` table.

    Args:
        checkpoints: checkpoint files (one model, or the members of an ensemble), readable by every actor.
        images: what to score.
        graph: the nodes, operating points and rule (:meth:`ScoringGraph.request` is sent to the actors).
        batch_size: images per batch handed to an actor.
        actors: model actors (each holds one copy of the model).
        num_gpus: GPUs per actor (1 on a GPU cluster; 0 scores on the CPU).
        skip_bad: leave unreadable images out (listed in ``skipped``) instead of stopping.

    Raises:
        RayUnavailableError: Ray Data is not installed.
        UnreadableImageError: an unreadable image without ``skip_bad``.
    """
    ray = _import_ray()
    started = _start_ray(ray)
    _quiet(ray)
    try:
        items = [{"row": i, "path": str(p)} for i, p in enumerate(images.paths)]
        mapped = ray.data.from_items(items).map_batches(
            ModelActor,
            fn_constructor_kwargs={
                "checkpoints": [str(c) for c in checkpoints],
                "request": graph.request(),
                "device": "cuda" if num_gpus > 0 else "cpu",
            },
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=max(1, int(actors))),
            num_gpus=num_gpus or None,
        )
        parts = list(mapped.iter_batches(batch_size=None, batch_format="numpy"))
    finally:
        if started:
            ray.shutdown()
    return _assemble(parts, images, graph, skip_bad)


def _assemble(
    parts: list[dict[str, np.ndarray]], images: ImageList, graph: ScoringGraph, skip_bad: bool
) -> PredictionTable:
    """The actors' batches, in input order, as one table (bad images left out or refused)."""
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    order = np.argsort(merged["row"], kind="stable") if parts else np.zeros(0, np.int64)
    if len(order) != len(images):
        raise HierclfError(f"Ray returned {len(order)} rows for {len(images)} images")
    got = {k: v[order] for k, v in merged.items()}
    bad = [
        BadImage(int(r), str(images.paths[int(r)]), str(why))
        for r, why in zip(got["row"][~got["ok"]], got["reason"][~got["ok"]])
    ]
    if bad and not skip_bad:
        raise UnreadableImageError(f"{bad[0].message()}; use --skip-bad to leave unreadable images out")
    for image in bad:
        logger.warning("%s (left out)", image.message())
    keep = got["ok"]
    return PredictionTable(
        ids=images.ids[got["row"][keep]],
        columns=graph.columns,
        probs=got["probs"][keep],
        nodes=graph.nodes,
        node_probs=got["nodes"][keep],
        tasks=graph.tasks,
        scores=got["scores"][keep],
        decisions=got["decisions"][keep].astype(bool),
        score_kind=graph.score_kind,
        skipped=bad,
    )
