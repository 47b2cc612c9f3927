"""Roll-up of leaf probabilities to any node of the tree: ``P(node) = sum of P(leaf)`` over its leaves.

Three functions (and :func:`rollup_nodes` to name their columns):

* :func:`rollup`: probabilities of named nodes (all nodes in pre-order by default);
* :func:`log_rollup`: ``log P(node)`` from log-probabilities, stable for very negative inputs;
* :func:`conditional`: ``P(pos) / (P(pos) + P(neg))``, the score of a clinical task (melanoma vs nevus).

How it works. In the taxonomy's pre-order the leaves under any node are one contiguous column range
(``taxonomy.index.leaf_start/leaf_end``; for inputs over a cut, with or without residual classes, the plan
of :mod:`hierclf.rollup_engine.request_plans`), so every node is a range sum: with the row prefix sum
``S[:, j] = sum(probs[:, :j])``, ``P(node) = S[:, end] - S[:, start]``. The prefix is accumulated in float64:
a float32 prefix would lose *relative* precision for small nodes late in the column order (a node of
probability 1e-9 after a prefix of 0.5 would come out as noise of about 6e-8), which breaks conditional
scores and ranking metrics for confident samples; in float64 the absolute error is about 1e-16. A single
node is a slice sum ``probs[:, s:e].sum(1)`` accumulated in float32 (or float64 for float64 input), which
keeps relative precision because every term is non-negative.

Inputs: ``(..., n_columns)`` tensors of any floating dtype on any device, or numpy arrays. **numpy in: no
torch needed** — numpy arrays go through :mod:`hierclf.rollup_engine.numpy_ops` (numpy out) and this module
never imports torch for them; tensors go through :mod:`hierclf.rollup_engine.torch_ops`, the compute the
modules (:class:`hierclf.nn.rollup_modules.RollUp`) share. Both give the same numbers, bit for bit. The
output has the input's dtype (float16 / bfloat16 results are rounded once, at the end) and device.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from hierclf.rollup_engine import numpy_ops
from hierclf.rollup_engine.request_plans import (
    RollUpError,
    check_input,
    check_out,
    conditional_columns,
    log_tree,
)
from hierclf.rollup_engine.request_plans import plan as _plan

if TYPE_CHECKING:
    from torch import Tensor

    from hierclf.taxonomy.tree import Taxonomy

    ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)
else:
    ArrayT = TypeVar("ArrayT")

logger = logging.getLogger(__name__)

__all__ = ["RollUpError", "conditional", "log_rollup", "rollup", "rollup_nodes"]


def _flat_numpy(values: np.ndarray, n_columns: int) -> np.ndarray:
    """``(..., n) -> (batch, n)``, C-contiguous (a copy only for other layouts)."""
    return np.ascontiguousarray(values.reshape(-1, n_columns))


def rollup(
    probs: ArrayT,
    taxonomy: Taxonomy,
    nodes: Sequence[str] | str | None = None,
    *,
    columns: Sequence[str] | None = None,
    out: ArrayT | None = None,
) -> ArrayT:
    """Probabilities of tree nodes: each node is the sum of its leaves' (or cut classes') probabilities.

    Args:
        probs: ``(..., n_columns)`` probabilities over ``taxonomy.leaves`` (``columns=None``) or over
            ``columns``; any float dtype, any device; a numpy array gives a numpy array back.
        taxonomy: the tree.
        nodes: node names (ids, aliases, display names) in the order wanted; a single name gives a
            ``(..., 1)`` result through the fast slice-sum path. ``None``: every node the input determines,
            in pre-order (all of ``taxonomy.nodes`` for leaf inputs; the nodes at or above the cut for a cut).
        columns: names of the input columns when they are a cut of the tree (e.g. training classes, with
            residual classes ``"<node>:residual"`` if any), in any order; ``None`` means ``taxonomy.leaves``
            in pre-order.
        out: a preallocated, contiguous result of the input's kind (numpy array or tensor), dtype and
            device to write into, for inference over many batches: a fresh result of millions of values
            costs the operating system more to hand out (page faults) than the roll-up costs to compute.
            Not with autograd.

    Returns:
        ``(..., len(nodes))`` in the input's dtype and device (``out`` when given). Accumulation is in
        float64 (float32 on MPS). On CPU, float32/float64 inputs without autograd run through a fused kernel
        (``hierclf.rollup_engine.cpu_kernels``, numba) whose results are bit-identical to the torch path.

    Raises:
        RollUpError: wrong shape or dtype, a bad ``out``, a node below the cut (the message names the cut
            node above it).
        UnknownNameError: a node or column name the taxonomy does not know (with "did you mean").

    Example:
        >>> import torch
        >>> from hierclf import Taxonomy
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> probs = torch.tensor([[0.1, 0.2, 0.3, 0.05, 0.05, 0.25, 0.05]])  # tax.leaves order
        >>> rollup(probs, tax, ["malignant", "benign", "skin_lesion"])
        tensor([[0.3500, 0.6500, 1.0000]])
        >>> rollup(probs.numpy(), tax, "mel")  # numpy in, numpy out; aliases resolve
        array([[0.05]], dtype=float32)
    """
    request = _plan(taxonomy, nodes, columns)
    check_input(probs, request)
    shape = (*probs.shape[:-1], len(request.nodes))
    if out is not None:
        check_out(out, probs, shape)
    if isinstance(probs, np.ndarray):
        flat_out = None if out is None else out.reshape(-1, len(request.nodes))
        result = numpy_ops.rollup(_flat_numpy(probs, request.n_columns), request, flat_out)
        return out if out is not None else result.reshape(shape)
    from hierclf.rollup_engine import torch_ops

    flat = probs.reshape(-1, request.n_columns)
    index = torch_ops.range_index(request, flat.device)
    flat_result = torch_ops.rollup(flat, index, None if out is None else out.view(-1, len(request.nodes)))
    return out if out is not None else flat_result.reshape(shape)


def rollup_nodes(
    taxonomy: Taxonomy, nodes: Sequence[str] | str | None = None, *, columns: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The node ids of :func:`rollup`'s output columns, in order (names resolved, ``None`` expanded).

    Same arguments and errors as :func:`rollup`, without the probabilities: use it to label a result, or
    to size an ``out=`` buffer before the first batch arrives.

    Example:
        >>> from hierclf import Taxonomy
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> rollup_nodes(tax, ["mel", "benign"])
        ('melanoma', 'benign')
        >>> len(rollup_nodes(tax)) == len(tax.nodes)
        True
    """
    return _plan(taxonomy, nodes, columns).nodes


def log_rollup(
    log_probs: ArrayT,
    taxonomy: Taxonomy,
    nodes: Sequence[str] | str | None = None,
    *,
    columns: Sequence[str] | None = None,
) -> ArrayT:
    """``log P(node)`` from leaf (or cut-class) log-probabilities: a log-sum-exp over each node's columns.

    Every node is shifted by its own maximum before exponentiating and sums are accumulated in float64, so
    nodes whose log-probability is far below the row's maximum (say -1000) come out exactly instead of
    ``-inf``; gradients are those of log-sum-exp (softmax weights within the node). Arguments, result
    shape and errors as in :func:`rollup`. Columns at ``-inf`` are fine; a node whose columns are all
    ``-inf`` gets ``-inf``.

    Example:
        >>> import torch
        >>> from hierclf import Taxonomy
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> lp = torch.full((1, 7), -1000.0, dtype=torch.float64)
        >>> log_rollup(lp, tax, ["malignant", "skin_lesion"]) + 1000  # log 3 and log 7
        tensor([[1.0986, 1.9459]], dtype=torch.float64)
    """
    request = _plan(taxonomy, nodes, columns)
    check_input(log_probs, request)
    shape = (*log_probs.shape[:-1], len(request.nodes))
    tree = log_tree(taxonomy, request, columns)
    if isinstance(log_probs, np.ndarray):
        result = numpy_ops.log_rollup(_flat_numpy(log_probs, request.n_columns), request, tree)
        return result.reshape(shape)
    from hierclf.rollup_engine import torch_ops

    flat = log_probs.reshape(-1, request.n_columns)
    index = torch_ops.range_index(request, flat.device)
    pair_col, pair_node = torch_ops.pair_tensors(request, flat.device)
    return torch_ops.log_rollup(flat, index, pair_col, pair_node, tree).reshape(shape)


def conditional(
    probs: ArrayT,
    taxonomy: Taxonomy,
    positive: Sequence[str] | str,
    negative: Sequence[str] | str,
    *,
    columns: Sequence[str] | None = None,
    undefined: float = 0.5,
) -> ArrayT:
    """The score of a binary clinical task: ``P(pos) / (P(pos) + P(neg))``.

    ``P(pos)`` is the probability of the union of the ``positive`` nodes' leaves (a leaf under two positive
    nodes counts once), likewise ``P(neg)``. Sums are accumulated in float64.

    Args:
        probs: ``(..., n_columns)`` as in :func:`rollup`.
        taxonomy: the tree.
        positive, negative: node names (ids or aliases); their leaf sets must be disjoint.
        columns: input columns when they are a cut (see :func:`rollup`).
        undefined: the score of rows where ``P(pos) + P(neg) == 0`` (the model puts all its mass elsewhere
            and has no opinion on this task). Default 0.5, the uninformative score, so ranking metrics stay
            defined; pass ``float("nan")`` to mark such rows instead.

    Returns:
        ``(...,)`` scores in the input's dtype.

    Raises:
        RollUpError: overlapping positive and negative sets (the message names the shared leaves or
            classes), empty sets, nodes below the cut, a wrong input as in :func:`rollup`.

    Example:
        >>> import torch
        >>> from hierclf import Taxonomy
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> probs = torch.tensor([[0.1, 0.2, 0.3, 0.05, 0.05, 0.25, 0.05]], dtype=torch.float64)
        >>> tax.leaves[0], tax.leaves[4]
        ('melanocytic_nevus', 'melanoma')
        >>> conditional(probs, tax, ["mel"], ["nv"])  # 0.05 / (0.05 + 0.1)
        tensor([0.3333], dtype=torch.float64)
    """
    request, pos_cols, neg_cols = conditional_columns(taxonomy, positive, negative, columns)
    check_input(probs, request)
    shape = tuple(probs.shape[:-1])
    if isinstance(probs, np.ndarray):
        flat = _flat_numpy(probs, request.n_columns)
        return numpy_ops.conditional(flat, pos_cols, neg_cols, undefined=undefined).reshape(shape)
    from hierclf.rollup_engine import torch_ops

    flat_t = probs.reshape(-1, request.n_columns)
    return torch_ops.conditional(flat_t, pos_cols, neg_cols, undefined=undefined).reshape(shape)
