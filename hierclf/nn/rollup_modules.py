"""The ``nn.Module`` faces of the roll-up: :class:`RollUp` (probabilities), :class:`LogRollUp` (log-probs).

Both compute exactly what :func:`hierclf.functional.rollup` / :func:`~hierclf.functional.log_rollup` compute
on tensors, with the very same code (:mod:`hierclf.rollup_engine.torch_ops`), and the index computed once
in ``__init__`` and kept as buffers, so ``.to(device)``, ``torch.jit.script``, ``torch.export`` and
``torch.compile`` work and autograd flows through. In eager mode they check their input as every face of
the roll-up does (the same :class:`~hierclf.functional.RollUpError`, the same message) and dispatch as the
functions do (CPU kernel in inference); scripted or traced they run the whole-batch compute.

The buffers are *non-persistent*: the index is a pure function of the constructor's arguments (taxonomy,
nodes, columns), so it is rebuilt rather than stored, ``state_dict()`` is empty, and a checkpoint can never
carry an index that disagrees with the tree the module was built from. A module holding a ``RollUp``
(e.g. :class:`~hierclf.nn.head.LeafHead`) saves and loads exactly as without it.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from hierclf.rollup_engine import torch_ops
from hierclf.rollup_engine.request_plans import check_input, log_tree, pairs, plan

if TYPE_CHECKING:
    from hierclf.taxonomy.tree import Taxonomy

__all__ = ["LogRollUp", "RollUp"]


class _RollUpBase(nn.Module):
    """Shared construction: the plan as buffers and plain attributes."""

    # Python-side state of the eager path, never seen by TorchScript
    __jit_ignored_attributes__ = ["_plan", "_tree"]

    perm: Tensor
    start: Tensor
    end: Tensor
    sum_start: Tensor
    sum_end: Tensor
    take: Tensor

    def __init__(
        self,
        taxonomy: "Taxonomy",
        nodes: "Sequence[str] | str | None" = None,
        *,
        columns: "Sequence[str] | None" = None,
    ) -> None:
        super().__init__()
        request = plan(taxonomy, nodes, columns)
        self._plan = request
        #: node ids of the output columns, in order
        self.nodes: tuple[str, ...] = request.nodes
        #: node ids of the input columns, in order
        self.columns: tuple[str, ...] = request.columns
        self.taxonomy_name: str = taxonomy.name
        self.n_columns: int = request.n_columns
        self.n_out: int = len(request.nodes)
        self.has_perm: bool = request.perm is not None
        self.single: bool = self.n_out == 1
        self.first: int = int(request.start[0])
        self.stop: int = int(request.end[0])
        perm = torch.as_tensor(request.perm) if request.perm is not None else torch.arange(self.n_columns)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("start", torch.as_tensor(request.start), persistent=False)
        self.register_buffer("end", torch.as_tensor(request.end), persistent=False)
        sum_start, sum_end, take = torch_ops.split_ranges(self.start, self.end, self.n_columns)
        self.register_buffer("sum_start", sum_start, persistent=False)
        self.register_buffer("sum_end", sum_end, persistent=False)
        self.register_buffer("take", take, persistent=False)

    def extra_repr(self) -> str:
        shown = ", ".join(self.nodes[:4]) + (", ..." if self.n_out > 4 else "")
        return f"taxonomy={self.taxonomy_name!r}, nodes=[{shown}] ({self.n_out}), columns={self.n_columns}"

    @torch.jit.unused
    def _traced(self, x: Tensor) -> bool:
        """Traced (dynamo: ``torch.compile``, ``torch.export`` and the ONNX exporter; or ``torch.jit.trace``):
        checked, then the whole-batch compute.

        The check reads the dtype and the last dimension only, so a dynamic batch stays symbolic (a check of
        every dimension, as the eager path makes, would fix the batch size into the exported graph); a wrong
        input then gets the eager path's message from :func:`check_input`.
        """
        tracing = torch_ops.is_tracing() or torch.jit.is_tracing()
        if tracing and (x.dim() == 0 or not x.is_floating_point() or x.shape[-1] != self.n_columns):
            check_input(x, self._plan)
        return tracing

    @torch.jit.unused
    def _index(self) -> torch_ops.RangeIndex:
        perm = self.perm if self.has_perm else None
        return torch_ops.RangeIndex(perm, self.start, self.end, self.sum_start, self.sum_end, self.take)

    def _preorder(self, x: Tensor) -> Tensor:
        """``(..., n_columns) -> (batch, n_columns)`` in pre-order."""
        flat = x.reshape(-1, self.n_columns)
        if self.has_perm:
            flat = flat.index_select(1, self.perm)
        return flat

    def _out_shape(self, x: Tensor) -> list[int]:
        """The leading dimensions of ``x`` and ``n_out``, kept symbolic when traced (no ``int()``: that
        would turn a dynamic batch into a constant of the exported graph)."""
        shape = list(x.shape[:-1])
        shape.append(self.n_out)
        return shape

    def _shaped(self, out: Tensor, x: Tensor) -> Tensor:
        """``out`` ``(batch, n_out)`` in the leading shape of ``x`` (a 2-D input needs no reshape)."""
        if x.dim() == 2:
            return out
        return out.reshape(self._out_shape(x))


class RollUp(_RollUpBase):
    """Node probabilities from leaf (or cut-class) probabilities: ``(..., n_columns) -> (..., len(nodes))``.

    Args:
        taxonomy: the tree.
        nodes: node names wanted, in order (aliases resolve); ``None`` for every node the input determines,
            in pre-order (see :func:`hierclf.functional.rollup`).
        columns: input column names when the input is over a cut of the tree (any order, residual classes
            allowed); ``None`` for ``taxonomy.leaves``.

    Attributes:
        nodes: output node ids, in order. columns: input column node ids, in order.

    Example:
        >>> from hierclf import Taxonomy
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> head = RollUp(tax, ["malignant", "benign"])
        >>> head(torch.tensor([[0.1, 0.2, 0.3, 0.05, 0.05, 0.25, 0.05]]))
        tensor([[0.3500, 0.6500]])
    """

    def forward(self, probs: Tensor) -> Tensor:
        if not torch.jit.is_scripting() and not self._traced(probs):
            return self._eager(probs)
        x = self._preorder(probs)
        if self.single:
            out = torch_ops.slice_sum(x, self.first, self.stop)
        else:
            out = torch_ops.range_sums(x, self.sum_start, self.sum_end, self.take)
        return self._shaped(out, probs)

    @torch.jit.unused
    def _eager(self, probs: Tensor) -> Tensor:
        """What :func:`hierclf.functional.rollup` does on tensors, with this module's buffers."""
        check_input(probs, self._plan)
        out = torch_ops.rollup(probs.reshape(-1, self.n_columns), self._index())
        return out.reshape(self._out_shape(probs))


class LogRollUp(_RollUpBase):
    """``log P(node)`` from leaf (or cut-class) log-probabilities, stable for very negative inputs.

    Same arguments as :class:`RollUp`; see :func:`hierclf.functional.log_rollup` for the numerics (each node
    shifted by its own maximum, float64 accumulation).

    Example:
        >>> from hierclf import Taxonomy
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> lp = torch.log(torch.full((1, 7), 1 / 7, dtype=torch.float64))
        >>> LogRollUp(tax, ["skin_lesion", "malignant"])(lp).exp()  # 7/7 and 3/7
        tensor([[1.0000, 0.4286]], dtype=torch.float64)
    """

    pair_col: Tensor
    pair_node: Tensor

    def __init__(
        self,
        taxonomy: "Taxonomy",
        nodes: "Sequence[str] | str | None" = None,
        *,
        columns: "Sequence[str] | None" = None,
    ) -> None:
        super().__init__(taxonomy, nodes, columns=columns)
        pair_col, pair_node = pairs(self._plan)
        self.register_buffer("pair_col", torch.as_tensor(pair_col), persistent=False)
        self.register_buffer("pair_node", torch.as_tensor(pair_node), persistent=False)
        #: the CPU log kernel's tree over the input columns as given (numpy: the kernel runs on CPU only)
        self._tree = log_tree(taxonomy, self._plan, columns)

    def forward(self, log_probs: Tensor) -> Tensor:
        if not torch.jit.is_scripting() and not self._traced(log_probs):
            return self._eager(log_probs)
        x = self._preorder(log_probs)
        if self.single:
            out = torch_ops.log_slice_sum(x, self.first, self.stop)
        elif not torch.jit.is_scripting() and self._legacy_onnx():
            out = self._dense_log_sums(x)
        else:
            out = torch_ops.log_range_sums(x, self.pair_col, self.pair_node, self.n_out)
        return self._shaped(out, log_probs)

    @torch.jit.unused
    def _legacy_onnx(self) -> bool:
        """Whether the TorchScript-based ONNX exporter (``torch.onnx.export(dynamo=False)``) is tracing: it
        writes ``scatter_reduce(amax)`` as a plain scatter, so the per-node maxima would be wrong."""
        return bool(torch.onnx.is_in_onnx_export()) and not torch_ops.is_tracing()

    @torch.jit.unused
    def _dense_log_sums(self, x: Tensor) -> Tensor:
        """:func:`~hierclf.rollup_engine.torch_ops.log_range_sums` without a scatter: each node's maximum over
        a dense ``(batch, n_out, n_columns)`` mask (only for the older ONNX exporter; the same numbers)."""
        acc = torch.float64
        member = torch.zeros(self.n_out, self.n_columns, dtype=torch.bool, device=x.device)
        member = member.index_put(
            (self.pair_node, self.pair_col), torch.ones_like(self.pair_col, dtype=torch.bool)
        )
        values = torch.where(
            member, x.to(acc).unsqueeze(1), torch.full_like(member, float("-inf"), dtype=acc)
        )
        shift = values.amax(-1, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        sums = torch.exp(values - shift).sum(-1)
        return (torch.log(sums) + shift.squeeze(-1)).to(x.dtype)

    @torch.jit.unused
    def _eager(self, log_probs: Tensor) -> Tensor:
        """What :func:`hierclf.functional.log_rollup` does on tensors, with this module's buffers."""
        check_input(log_probs, self._plan)
        flat = log_probs.reshape(-1, self.n_columns)
        out = torch_ops.log_rollup(flat, self._index(), self.pair_col, self.pair_node, self._tree)
        return out.reshape(self._out_shape(log_probs))
