"""Scoring many images with a model: :class:`Predictor` and the table it fills, :class:`PredictionTable`.

The loop is the bare PyTorch inference loop, nothing more: a ``DataLoader`` decodes images in ``workers``
processes (:class:`~hierclf.inference.images.DecodedImages`), each uint8 batch goes to the device (pinned
memory and a non-blocking copy on CUDA), one call of :class:`~hierclf.inference.scoring.ScoringGraph` under
``torch.inference_mode`` gives probabilities, nodes, scores and decisions, and the batch's rows are copied
into preallocated arrays. ``benchmarks/predict.py`` measures it against a hand-written loop over the same
model, batches and decoded images.

An image that cannot be read stops the run with its path (:class:`UnreadableImageError`), or, with
``skip_bad``, is left out of the table and listed in :attr:`PredictionTable.skipped` (and logged).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hierclf.errors import HierclfError
from hierclf.inference.images import BadImage, DecodedImages, ImageList, collate
from hierclf.inference.scoring import ScoringGraph

logger = logging.getLogger(__name__)

__all__ = ["PredictionTable", "Predictor", "UnreadableImageError"]


class UnreadableImageError(HierclfError, ValueError):
    """An image file that cannot be decoded (named, with the reason)."""


@dataclass
class PredictionTable:
    """What a prediction run produced, one row per image that could be read, in input order.

    Attributes:
        ids: ``(n,)`` image ids.
        columns: names of ``probs``' columns (the model's columns, tree nodes).
        probs: ``(n, n_columns)`` float32.
        nodes: names of ``node_probs``' columns.
        node_probs: ``(n, n_nodes)`` float32.
        tasks: task names of ``scores`` and ``decisions``.
        scores: ``(n, n_tasks)`` float64 (scores, or margins under the or rule: ``score_kind``).
        decisions: ``(n, n_tasks)`` bool.
        score_kind: ``"score"`` or ``"margin"``.
        skipped: the images left out (``skip_bad``).
    """

    ids: np.ndarray
    columns: tuple[str, ...]
    probs: np.ndarray
    nodes: tuple[str, ...] = ()
    node_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    tasks: tuple[str, ...] = ()
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    decisions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    score_kind: str = "score"
    skipped: list[BadImage] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def output_columns(self) -> list[str]:
        """Column names of the written table after ``id``: the columns, ``node:<n>``, ``<kind>:<task>``,
        ``decision:<task>``."""
        return [
            *self.columns,
            *(f"node:{n}" for n in self.nodes),
            *(f"{self.score_kind}:{t}" for t in self.tasks),
            *(f"decision:{t}" for t in self.tasks),
        ]

    def values(self) -> np.ndarray:
        """``(n, len(output_columns()))`` float64: every value of the table, decisions as 0 / 1."""
        parts = [self.probs.astype(np.float64), self.node_probs.astype(np.float64)]
        parts += [self.scores.astype(np.float64), self.decisions.astype(np.float64)]
        return np.concatenate([p.reshape(len(self), -1) for p in parts], axis=1)


class Predictor:
    """Batched prediction with a :class:`~hierclf.inference.scoring.ScoringGraph` on one device.

    Args:
        graph: the model and its readout.
        device: where the model runs (it is moved there).
        batch_size: images per batch.
        workers: ``DataLoader`` processes that decode images (0: in this process).
        progress: show a progress bar (on a terminal only).
        skip_bad: leave unreadable images out instead of stopping.
    """

    def __init__(
        self,
        graph: ScoringGraph,
        *,
        device: torch.device | str = "cpu",
        batch_size: int = 64,
        workers: int = 0,
        progress: bool = False,
        skip_bad: bool = False,
    ) -> None:
        if batch_size < 1:
            raise HierclfError(f"batch size must be at least 1, got {batch_size}")
        if workers < 0:
            raise HierclfError(f"workers must be 0 or more, got {workers}")
        self.device = torch.device(device)
        self.graph = graph.to(self.device).eval()
        self.batch_size, self.workers = int(batch_size), int(workers)
        self.progress, self.skip_bad = progress, skip_bad

    @torch.inference_mode()
    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One batch ``(batch, 3, size, size)`` uint8 (or float in [0, 1]) through the graph, on the device:
        ``(probs, nodes, scores, decisions)``."""
        x = images.to(self.device, non_blocking=True)
        return self.graph(x)

    def _loader(self, images: ImageList) -> Iterable[Any]:
        from torch.utils.data import DataLoader

        return DataLoader(
            DecodedImages(images, self.graph.size),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
        )

    def predict(self, images: ImageList) -> PredictionTable:
        """Score every image of ``images`` (decoded as training decoded them).

        Raises:
            UnreadableImageError: an image that cannot be read, without ``skip_bad`` (named).
        """
        return self.run(self._batches(images), len(images), ids=images.ids, paths=images.paths)

    def _batches(self, images: ImageList) -> Iterator[tuple[np.ndarray, torch.Tensor, list[tuple[int, str]]]]:
        yield from self._loader(images)

    def run(
        self,
        batches: Iterable[tuple[np.ndarray, torch.Tensor, list[tuple[int, str]]]],
        n: int,
        *,
        ids: np.ndarray,
        paths: Any = None,
    ) -> PredictionTable:
        """Score decoded batches ``(rows, images, bad)`` covering rows ``0 .. n - 1`` into one table."""
        g = self.graph
        probs = np.empty((n, len(g.columns)), np.float32)
        nodes = np.empty((n, len(g.nodes)), np.float32)
        scores = np.empty((n, len(g.tasks)), np.float64)
        decisions = np.empty((n, len(g.tasks)), bool)
        ok = np.zeros(n, bool)
        skipped: list[BadImage] = []
        with _progress_bar(n, self.progress) as bar:
            for rows, images, bad in batches:
                skipped += self._bad(bad, paths, ids)
                if len(rows):
                    outputs = [t.cpu().numpy() for t in self.score(images)]
                    targets: tuple[np.ndarray, ...] = (probs, nodes, scores, decisions)
                    for target, value in zip(targets, outputs):
                        target[rows] = value
                    ok[rows] = True
                bar.update(len(rows) + len(bad))
        keep = np.flatnonzero(ok)
        return PredictionTable(
            ids=np.asarray(ids)[keep],
            columns=g.columns,
            probs=probs[keep],
            nodes=g.nodes,
            node_probs=nodes[keep],
            tasks=g.tasks,
            scores=scores[keep],
            decisions=decisions[keep],
            score_kind=g.score_kind,
            skipped=skipped,
        )

    def _bad(self, bad: list[tuple[int, str]], paths: Any, ids: np.ndarray) -> list[BadImage]:
        found = [BadImage(i, str(paths[i] if paths is not None else ids[i]), why) for i, why in bad]
        if found and not self.skip_bad:
            raise UnreadableImageError(f"{found[0].message()}; use --skip-bad to leave unreadable images out")
        for image in found:
            logger.warning("%s (left out)", image.message())
        return found


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress_bar(total: int, show: bool) -> Any:
    """A tqdm bar on standard error when asked for and on a terminal; a silent stand-in otherwise."""
    if not (show and sys.stderr.isatty()):
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="predict", file=sys.stderr, leave=False)
