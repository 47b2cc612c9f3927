"""The ``nn.Module`` faces of the roll-up: :class:`RollUp` (probabilities), :class:`LogRollUp` (log-probs).

Both compute the same thing as :func:`hierclf.functional.rollup` / :func:`~hierclf.functional.log_rollup` with
the index computed once in ``__init__`` and kept as buffers, so ``.to(device)``, ``torch.jit.script``,
``torch.export`` and ``torch.compile`` work and autograd flows through.

The buffers are *non-persistent*: the index is a pure function of the constructor's arguments (taxonomy,
nodes, columns), so it is rebuilt rather than stored, ``state_dict()`` is empty, and a checkpoint can never
carry an index that disagrees with the tree the module was built from. A module holding a ``RollUp``
(e.g. a head) saves and loads exactly as without it.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from hierclf.functional import _is_tracing, _log_tree, _pairs, _plan, _range_sums_blocked, _split

if TYPE_CHECKING:
    from hierclf.taxonomy.tree import Taxonomy

__all__ = ["LogRollUp", "RollUp"]


class _RollUpBase(nn.Module):
    """Shared construction: the plan as buffers and plain attributes."""

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
        plan = _plan(taxonomy, nodes, columns)
        #: node ids of the output columns, in order
        self.nodes: tuple[str, ...] = plan.nodes
        #: node ids of the input columns, in order
        self.columns: tuple[str, ...] = plan.columns
        self.taxonomy_name: str = taxonomy.name
        self.n_columns: int = len(plan.columns)
        self.n_out: int = len(plan.nodes)
        self.has_perm: bool = plan.perm is not None
        self.single: bool = len(plan.nodes) == 1
        self.first: int = int(plan.start[0])
        self.stop: int = int(plan.end[0])
        perm = torch.as_tensor(plan.perm) if plan.perm is not None else torch.arange(self.n_columns)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("start", torch.as_tensor(plan.start), persistent=False)
        self.register_buffer("end", torch.as_tensor(plan.end), persistent=False)
        sum_start, sum_end, take = _split(self.start, self.end, self.n_columns)
        self.register_buffer("sum_start", sum_start, persistent=False)
        self.register_buffer("sum_end", sum_end, persistent=False)
        self.register_buffer("take", take, persistent=False)

    def extra_repr(self) -> str:
        shown = ", ".join(self.nodes[:4]) + (", ..." if self.n_out > 4 else "")
        cut = f", columns={self.n_columns}"
        return f"taxonomy={self.taxonomy_name!r}, nodes=[{shown}] ({self.n_out}){cut}"

    def _check(self, x: Tensor) -> Tensor:
        if x.dim() == 0 or x.shape[-1] != self.n_columns:
            raise ValueError(f"expected input of shape (..., {self.n_columns}), got {list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected a floating-point input, got {x.dtype}")
        flat = x.reshape(-1, self.n_columns)
        if self.has_perm:
            flat = flat.index_select(1, self.perm)
        return flat

    @torch.jit.unused
    def _eager_inference(self, x: Tensor) -> bool:
        """Eager (not traced by dynamo / export) and without autograd: the blocked and CPU-kernel paths."""
        return not _is_tracing() and not (x.requires_grad and torch.is_grad_enabled())

    def _out_shape(self, x: Tensor) -> list[int]:
        shape = [int(s) for s in x.shape[:-1]]
        shape.append(self.n_out)
        return shape


class RollUp(_RollUpBase):
    """Node probabilities from leaf (or cut-class) probabilities: ``(..., n_columns) -> (..., len(nodes))``.

    Args:
        taxonomy: the tree.
        nodes: node names wanted, in order (aliases resolve); ``None`` for every node the input determines,
            in pre-order (see :func:`hierclf.functional.rollup`).
        columns: input column names when the input is over a cut of the tree (any order); ``None`` for
            ``taxonomy.leaves``.

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
        x = self._check(probs)
        if self.single:
            acc = torch.float64 if x.dtype == torch.float64 else torch.float32
            out = x[:, self.first : self.stop].sum(1, keepdim=True, dtype=acc).to(x.dtype)
        elif not torch.jit.is_scripting() and self._eager_inference(x):
            out = self._blocked(x)
        else:
            acc = torch.float32 if x.device.type == "mps" else torch.float64
            prefix = torch.nn.functional.pad(torch.cumsum(x, 1, dtype=acc), [1, 0])
            sums = (prefix.index_select(1, self.sum_end) - prefix.index_select(1, self.sum_start)).to(x.dtype)
            out = torch.cat([x, sums], 1).index_select(1, self.take)
        return out.reshape(self._out_shape(probs))

    @torch.jit.unused
    def _blocked(self, x: Tensor) -> Tensor:
        return _range_sums_blocked(x, None, self.start, self.end)


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
    tree_column: Tensor
    tree_parent: Tensor
    tree_wanted: Tensor

    def __init__(
        self,
        taxonomy: "Taxonomy",
        nodes: "Sequence[str] | str | None" = None,
        *,
        columns: "Sequence[str] | None" = None,
    ) -> None:
        super().__init__(taxonomy, nodes, columns=columns)
        plan = _plan(taxonomy, nodes, columns)
        pair_col, pair_node = _pairs(plan)
        self.register_buffer("pair_col", torch.as_tensor(pair_col), persistent=False)
        self.register_buffer("pair_node", torch.as_tensor(pair_node), persistent=False)
        # the CPU kernel's tree (eager, no autograd): see hierclf.functional.log_rollup
        tree = _log_tree(taxonomy, plan, columns, permuted=False)  # _check puts the input in pre-order
        for name, array in zip(("tree_column", "tree_parent", "tree_wanted"), tree):
            self.register_buffer(name, torch.as_tensor(array), persistent=False)

    def forward(self, log_probs: Tensor) -> Tensor:
        x = self._check(log_probs)
        acc = torch.float32 if x.device.type == "mps" else torch.float64
        if self.single:
            out = torch.logsumexp(x[:, self.first : self.stop].to(acc), dim=1, keepdim=True)
        elif not torch.jit.is_scripting() and self._eager_cpu_kernel(x):
            out = self._cpu_kernel(x)
        else:
            vals = x.index_select(1, self.pair_col).to(acc)
            index = self.pair_node.expand(x.shape[0], self.pair_node.shape[0])
            with torch.no_grad():
                shift = torch.full([x.shape[0], self.n_out], float("-inf"), dtype=acc, device=x.device)
                shift = shift.scatter_reduce(1, index, vals.detach(), reduce="amax", include_self=True)
                shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
            terms = torch.exp(vals - shift.index_select(1, self.pair_node))
            sums = torch.zeros([x.shape[0], self.n_out], dtype=acc, device=x.device)
            out = torch.log(sums.index_add(1, self.pair_node, terms)) + shift
        return out.to(x.dtype).reshape(self._out_shape(log_probs))

    @torch.jit.unused
    def _eager_cpu_kernel(self, x: Tensor) -> bool:
        from hierclf.rollup_engine import cpu_kernels as _rollup_kernel

        return self._eager_inference(x) and _rollup_kernel.usable(x) and self.tree_column.device.type == "cpu"

    @torch.jit.unused
    def _cpu_kernel(self, x: Tensor) -> Tensor:
        from hierclf.rollup_engine import cpu_kernels as _rollup_kernel

        return _rollup_kernel.log_range_sums(
            x, self.tree_column.numpy(), self.tree_parent.numpy(), self.tree_wanted.numpy()
        )
