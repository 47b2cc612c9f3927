"""Cosine k-nearest-neighbour classification of frozen features, vectorised as chunked matrix products.

Features are L2-normalised once; each chunk of queries is one ``(chunk, d) @ (d, n_bank)`` product, its
``k`` largest similarities one ``topk``, and the votes one ``scatter_add`` into ``(chunk, n_classes)``: no
Python loop over samples. The chunk is sized so that the similarity block stays within ``memory_bytes``.

Votes are weighted by ``exp(similarity / temperature)`` (the weighted kNN of Wu et al. 2018 that DINO's
evaluation uses, temperature 0.07), or count 1 each (``weighting="uniform"``); each row of votes, divided by
its sum, is the probability vector written to prediction files.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from hierclf.errors import HierclfError

__all__ = ["DEFAULT_TEMPERATURE", "knn_neighbours", "knn_probabilities"]

DEFAULT_TEMPERATURE = 0.07
_MEMORY = 256 * 2**20  # bytes of one similarity block


def _normalised(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(x, device=device, dtype=torch.float32)
    return torch.nn.functional.normalize(t, dim=1, eps=1e-12)


def _chunk(n_bank: int, memory_bytes: int) -> int:
    return max(1, memory_bytes // (4 * max(1, n_bank)))


def knn_neighbours(
    bank: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    device: str | torch.device | None = None,
    memory_bytes: int = _MEMORY,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar bank rows of every query.

    Args:
        bank: ``(n_bank, d)`` features.
        queries: ``(n_queries, d)`` features.
        k: neighbours per query (at most ``n_bank``).
        device: where the products run (default: CUDA when available).
        memory_bytes: bound of one ``(chunk, n_bank)`` similarity block.

    Returns:
        ``(similarities, indices)``, both ``(n_queries, k)``, most similar first.

    Example:
        >>> bank = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> sims, idx = knn_neighbours(bank, np.array([[2.0, 0.1]]), k=2, device="cpu")
        >>> idx.tolist()
        [[0, 2]]
    """
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise HierclfError(
            f"kNN needs (n, d) bank and queries of one width; got {bank.shape}, {queries.shape}"
        )
    if not 1 <= k <= bank.shape[0]:
        raise HierclfError(f"k must be in 1..{bank.shape[0]} (the bank's size), got {k}")
    dev = torch.device(device) if device is not None else _default_device()
    b = _normalised(bank, dev)
    step = _chunk(b.shape[0], memory_bytes)
    sims, idx = [], []
    with torch.no_grad():
        for start in range(0, queries.shape[0], step):  # a loop over chunks of queries, not samples
            q = _normalised(queries[start : start + step], dev)
            top = torch.topk(q @ b.T, k, dim=1)
            sims.append(top.values.cpu().numpy())
            idx.append(top.indices.cpu().numpy())
    if not sims:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(sims), np.concatenate(idx).astype(np.int64)


def knn_probabilities(
    bank: np.ndarray,
    bank_classes: np.ndarray,
    queries: np.ndarray,
    *,
    n_classes: int,
    k: int,
    temperature: float = DEFAULT_TEMPERATURE,
    weighting: Literal["distance", "uniform"] = "distance",
    device: str | torch.device | None = None,
    memory_bytes: int = _MEMORY,
) -> np.ndarray:
    """Class probabilities ``(n_queries, n_classes)`` float32 from the votes of the ``k`` nearest bank rows.

    Args:
        bank: ``(n_bank, d)`` training features.
        bank_classes: ``(n_bank,)`` class index of each bank row (0 .. n_classes - 1).
        queries: ``(n_queries, d)`` features to classify.
        n_classes: number of classes (columns of the result).
        k: neighbours that vote.
        temperature: of the ``exp(similarity / temperature)`` weights (``weighting="distance"``).
        weighting: ``distance`` (weighted votes) or ``uniform`` (one vote each).
        device, memory_bytes: as :func:`knn_neighbours`.

    Example:
        >>> bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> p = knn_probabilities(bank, np.array([0, 0, 1]), np.array([[1.0, 0.05]]), n_classes=2, k=2,
        ...                       weighting="uniform", device="cpu")
        >>> p.tolist()
        [[1.0, 0.0]]
    """
    classes = np.asarray(bank_classes, dtype=np.int64)
    if classes.shape != (bank.shape[0],) or (
        classes.size and (classes.min() < 0 or classes.max() >= n_classes)
    ):
        raise HierclfError(f"bank_classes must be ({bank.shape[0]},) indices in 0..{n_classes - 1}")
    if weighting not in ("distance", "uniform") or temperature <= 0:
        raise HierclfError(
            f"weighting must be distance or uniform and temperature > 0; got {weighting}, {temperature}"
        )
    dev = torch.device(device) if device is not None else _default_device()
    b, labels = _normalised(bank, dev), torch.as_tensor(classes, device=dev)
    step = _chunk(b.shape[0], memory_bytes)
    out = []
    with torch.no_grad():
        for start in range(0, queries.shape[0], step):
            q = _normalised(queries[start : start + step], dev)
            top = torch.topk(q @ b.T, k, dim=1)
            weights = (
                torch.exp(top.values / temperature)
                if weighting == "distance"
                else torch.ones_like(top.values)
            )
            votes = torch.zeros(q.shape[0], n_classes, device=dev, dtype=torch.float64)
            votes.scatter_add_(1, labels[top.indices], weights.double())
            out.append((votes / votes.sum(dim=1, keepdim=True)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, n_classes), np.float32)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
