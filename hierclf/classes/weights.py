"""Class weights from class sizes: inverse frequency and effective number of samples (Cui et al. 2019).

Shared by the weighted losses (:func:`hierclf.nn.losses.class_weights` wraps :func:`class_weight_array` in a
tensor) and the class-aware samplers (:mod:`hierclf.data.sampling`), so a loss and a sampler with the same
scheme weigh the classes alike. numpy only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hierclf.errors import HierclfError
from hierclf.options import look_up_option

logger = logging.getLogger(__name__)

__all__ = ["WEIGHT_SCHEMES", "check_beta", "class_counts_array", "class_weight_array"]

#: the class-weight schemes: ``inverse`` (1 / n_c), ``effective`` ((1 - beta) / (1 - beta^n_c)), ``none``
WEIGHT_SCHEMES = ("inverse", "effective", "none")


def check_beta(beta: object) -> float:
    """``beta`` of the effective number, strictly between 0 and 1."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 < float(beta) < 1.0:
        raise HierclfError(f"beta must be a number strictly between 0 and 1 (e.g. 0.999), got {beta!r}")
    return float(beta)


def class_counts_array(counts: Sequence[float] | np.ndarray | Any) -> np.ndarray:
    """Images per class as a float64 ``(n_classes,)`` array: finite, ``>= 0``, at least one class.

    Anything ``np.asarray`` reads is accepted (lists, arrays, CPU tensors).
    """
    try:
        arr = np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise HierclfError(f"class counts must be numbers, got {counts!r}") from exc
    if arr.ndim != 1 or arr.size == 0:
        raise HierclfError(
            f"class counts must be a non-empty 1-D sequence (one per class), got shape {arr.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
    if bad.size:
        i = int(bad[0])
        value = float(arr[i])
        shown = int(value) if value.is_integer() else value
        raise HierclfError(f"class counts must be finite and >= 0; class {i} has count {shown}")
    return arr


def class_weight_array(
    counts: Sequence[float] | np.ndarray | Any, scheme: str = "inverse", beta: float = 0.999
) -> np.ndarray:
    """Per-class weights ``(n_classes,)`` float64 from the number of training images per class.

    - ``"inverse"``: ``w_c ∝ 1 / n_c``.
    - ``"effective"``: ``w_c ∝ (1 - beta) / (1 - beta^n_c)``, the inverse effective number of samples
      (Cui et al. 2019); ``beta -> 0`` gives uniform weights, ``beta -> 1`` inverse frequency.
    - ``"none"``: ``w_c = 1``.

    The weights of the non-empty classes are normalised to sum to their number (a balanced dataset gets all
    ones). An empty class gets weight 0 and is left out of the normalisation (logged as a warning).

    Raises:
        HierclfError: negative or non-finite counts, every class empty, ``beta`` outside ``(0, 1)``.
        UnknownNameError: an unknown scheme.

    Example:
        >>> class_weight_array([10, 30, 0], "inverse").tolist()
        [1.5, 0.5, 0.0]
    """
    scheme = look_up_option(scheme, WEIGHT_SCHEMES, kind="class weight scheme")
    beta = check_beta(beta)
    n = class_counts_array(counts)
    present = n > 0
    if not present.any():
        raise HierclfError(f"every one of the {n.size} classes has zero images; cannot compute class weights")
    if not present.all():
        empty = np.flatnonzero(~present).tolist()
        logger.warning(
            "%d of %d classes have no images (class indices %s); they get weight 0",
            len(empty),
            n.size,
            empty[:20] if len(empty) <= 20 else f"{empty[:20]} ...",
        )
    raw = np.zeros_like(n)
    if scheme == "inverse":
        raw[present] = 1.0 / n[present]
    elif scheme == "effective":
        # 1 - beta^n computed as -expm1(n log beta): exact for small (1 - beta) and large n alike
        raw[present] = (1.0 - beta) / -np.expm1(n[present] * math.log(beta))
    else:
        raw[present] = 1.0
    raw *= present.sum() / raw[present].sum()
    return raw
