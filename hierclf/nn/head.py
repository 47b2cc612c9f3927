"""The classifier head: logits over the leaves of the tree or over training classes, and their roll-up.

:class:`LeafHead` is one linear layer from backbone features to one logit per training class. Its outputs
are named by :attr:`LeafHead.classes`, in tree pre-order; :meth:`LeafHead.rollup` turns logits into the
probability of any node at or above the classes (the softmax summed up the tree), and
:meth:`LeafHead.class_index` turns true dataset labels into training targets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hierclf.classes.esteva import _rows_by_depth, above_cut_error, residual_class, residual_node
from hierclf.errors import HierclfError, UnknownNameError
from hierclf.taxonomy.tree import Taxonomy

if TYPE_CHECKING:
    from hierclf.classes.esteva import Partition

__all__ = ["LeafHead"]


def _resolve_classes(tax: Taxonomy, classes: Iterable[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(classes in pre-order with residual classes placed, the node classes = a cut)``."""
    if classes is None:
        return tax.leaves, tax.leaves
    if isinstance(classes, str):
        raise HierclfError(f"classes must be a list of node ids, got the single string {classes!r}")
    given = list(classes)
    residual_bases = [b for c in given if (b := residual_node(str(c))) is not None]
    cut = tax.cut([c for c in given if residual_node(str(c)) is None])  # TaxonomyError on overlap / gap
    cut_set = set(cut)
    pos = tax.index.position
    for base in residual_bases:
        if base not in tax:
            raise UnknownNameError("node", base, tax.nodes, f"in residual class {residual_class(base)!r}")
        if base in cut_set or tax.cut_node_above(base, cut) is not None:
            raise HierclfError(
                f"residual class {residual_class(base)!r} needs node {base!r} to lie above "
                "the other classes (split into them), but it is one of them or below one"
            )
    if len(set(residual_bases)) != len(residual_bases):
        raise HierclfError("classes list a residual class more than once")
    rows = sorted([(pos[c], c) for c in cut] + [(pos[b], residual_class(b)) for b in residual_bases])
    return tuple(name for _, name in rows), cut


class LeafHead(nn.Module):
    """Linear head over the leaves of a taxonomy, or over training classes (a cut of the tree).

    Output order: logit ``j`` is :attr:`classes` ``[j]``. Without ``classes`` these are ``taxonomy.leaves``
    (pre-order, the leaf column order used everywhere in hierclf); with ``classes`` (e.g.
    :attr:`Partition.classes <hierclf.classes.esteva.Partition.classes>`) they are the given classes sorted
    into
    tree pre-order, a residual class ``"<node>:residual"`` right before the classes under its node. The order
    does not depend on the order ``classes`` was given in.

    Args:
        in_features: width of the backbone's features.
        taxonomy: the tree.
        classes: None (the leaves) or node ids / aliases forming a cut of the tree, optionally with residual
            classes of nodes above the cut (see :func:`hierclf.classes.esteva.partition`).
        bias: whether the linear layer has a bias.
        dropout: dropout probability on the features, in ``[0, 1)``.

    Raises:
        TaxonomyError: ``classes`` overlap or leave leaves uncovered.
        HierclfError: bad ``in_features`` / ``dropout``, or a misplaced residual class.

    Example:
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> head = LeafHead(16, tax, classes=["benign", "melanoma", "keratinocyte_carcinoma"])
        >>> head(torch.randn(4, 16)).shape
        torch.Size([4, 3])
        >>> head.class_index(["mel", "nv", "bcc"]).tolist()
        [1, 0, 2]
    """

    # properties TorchScript must not try to compile (they use Python-only structures)
    __jit_unused_properties__ = ["n_classes", "in_features", "nodes", "residual"]

    def __init__(
        self,
        in_features: int,
        taxonomy: Taxonomy,
        classes: Iterable[str] | None = None,
        *,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, (int, np.integer)) or in_features < 1:
            raise HierclfError(f"in_features must be a positive integer, got {in_features!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise HierclfError(f"dropout must be in [0, 1), got {dropout!r}")
        self.taxonomy = taxonomy
        names, cut = _resolve_classes(taxonomy, classes)
        self.classes: tuple[str, ...] = names
        self.cut: tuple[str, ...] = cut
        self.dropout = nn.Dropout(float(dropout))
        self.linear = nn.Linear(int(in_features), len(names), bias=bias)
        is_residual = [residual_node(c) is not None for c in names]
        self.register_buffer(
            "cut_columns",
            torch.tensor([i for i, r in enumerate(is_residual) if not r], dtype=torch.long),
            persistent=False,
        )
        self.register_buffer(
            "residual_columns",
            torch.tensor([i for i, r in enumerate(is_residual) if r], dtype=torch.long),
            persistent=False,
        )
        self._residual_nodes = tuple(n for c in names if (n := residual_node(c)) is not None)
        start, _ = taxonomy.column_ranges(cut)
        self._nodes = tuple(n for n, s in zip(taxonomy.nodes, start.tolist(), strict=True) if s >= 0)
        self._node_set = frozenset(self._nodes)
        self._class_of_row = self._class_rows()
        self._residual_cache: dict[tuple[str, ...], Tensor] = {}
        self._residual_spans = self._spans()

    @classmethod
    def from_partition(
        cls, in_features: int, partition: Partition, *, bias: bool = True, dropout: float = 0.0
    ) -> LeafHead:
        """A head over a :class:`~hierclf.classes.esteva.Partition`'s training classes (same order)."""
        return cls(in_features, partition.taxonomy, partition.classes, bias=bias, dropout=dropout)

    # --- structure --------------------------------------------------------------------------------------

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def residual(self) -> tuple[str, ...]:
        """The nodes that have a residual class."""
        return self._residual_nodes

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes whose probability the head gives: those at or above its classes, pre-order."""
        return self._nodes

    def _spans(self) -> tuple[tuple[int, int], ...]:
        """For each residual class column ``j`` (pre-order), ``(j, stop)``: the classes under its node are
        columns ``j + 1:stop`` (contiguous in pre-order)."""
        idx = self.taxonomy.index
        pos = idx.position
        lo = np.array([idx.leaf_start[pos[residual_node(c) or c]] for c in self.classes])
        hi = np.array([idx.leaf_end[pos[residual_node(c) or c]] for c in self.classes])
        spans = []
        for j, c in enumerate(self.classes):
            base = residual_node(c)
            if base is not None:
                inside = (lo[j + 1 :] >= lo[j]) & (hi[j + 1 :] <= hi[j])
                stop = j + 1 + (int(np.argmin(inside)) if not inside.all() else len(inside))
                spans.append((j, stop))
        return tuple(spans)

    def _class_rows(self) -> np.ndarray:
        """Class index of every tree row: the class at or above it, the residual class of its own node,
        else -1 (above the classes)."""
        tax = self.taxonomy
        idx = tax.index
        pos = idx.position
        class_of = np.full(len(idx.nodes), -1, dtype=np.int64)
        below = np.zeros(len(idx.nodes), dtype=bool)
        for j, c in enumerate(self.classes):
            base = residual_node(c)
            if base is None:
                class_of[pos[c]] = j
                below[pos[c]] = True
        for rows in _rows_by_depth(tax)[1:]:
            inherit = rows[~below[rows] & below[idx.parent[rows]]]
            below[inherit] = True
            class_of[inherit] = class_of[idx.parent[inherit]]
        for j, c in enumerate(self.classes):
            base = residual_node(c)
            if base is not None:
                class_of[pos[base]] = j
        return class_of

    # --- forward and probabilities ----------------------------------------------------------------------

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``(batch, n_classes)`` from features ``(batch, in_features)``."""
        return self.linear(self.dropout(features))

    def log_probs(self, logits: Tensor) -> Tensor:
        """``log_softmax`` over the classes in float32, ``(batch, n_classes)``."""
        return F.log_softmax(logits.float(), dim=-1)

    def probs(self, logits: Tensor) -> Tensor:
        """``softmax`` over the classes in float32, ``(batch, n_classes)``; rows sum to 1."""
        return F.softmax(logits.float(), dim=-1)

    def rollup(self, logits: Tensor, nodes: Sequence[str] | None = None) -> Tensor:
        """Node probabilities from logits: the class softmax summed up the tree.

        Args:
            logits: ``(batch, n_classes)``, any float dtype (computed in float32).
            nodes: node ids / aliases at or above the classes; None for :attr:`nodes` (all of them,
                pre-order).

        Returns:
            float32 tensor ``(batch, len(nodes))`` on the logits' device: ``P(node)`` = the sum of the
            probabilities of the classes under it (a residual class counts for its node and the node's
            ancestors).
        """
        from hierclf.functional import rollup

        if logits.ndim != 2 or logits.shape[-1] != self.n_classes:
            raise HierclfError(f"logits must have shape (batch, {self.n_classes}), got {tuple(logits.shape)}")
        if nodes is None:
            wanted = self.nodes
        elif isinstance(nodes, str):
            raise HierclfError(f"nodes must be a list of node names, got the single string {nodes!r}")
        else:
            wanted = tuple(self.taxonomy.resolve(n) for n in nodes)
            answerable = self._node_set
            for n in wanted:
                if n not in answerable:
                    above = self.taxonomy.cut_node_above(n, self.cut)
                    raise HierclfError(
                        f"node {n!r} lies below the head's class {above!r}: its probability "
                        "is not separated from its siblings'; ask for nodes at or above the "
                        "classes"
                    )
        p = self.probs(logits)
        if not self.residual:
            return rollup(p, self.taxonomy, list(wanted), columns=self.classes)
        out = rollup(p[:, cast(Tensor, self.cut_columns)], self.taxonomy, list(wanted), columns=self.cut)
        to_nodes = self._residual_matrix(wanted).to(device=p.device, dtype=p.dtype)
        return out + p[:, cast(Tensor, self.residual_columns)] @ to_nodes

    def cut_probs(self, logits: Tensor) -> Tensor:
        """Probabilities over :attr:`cut` (the classes that are tree nodes), ``(batch, len(cut))`` float32.

        Equal to :meth:`probs` when the head has no residual classes. Otherwise each residual class's
        probability is shared among the classes under its node in proportion to their probabilities (evenly
        if they are all 0): "an image of node X, not otherwise specified, is one of X's diseases in the
        proportions the model believes". The probability of X and of every node above or beside it is
        unchanged, and so is every ratio between classes under X (hence every conditional task within X);
        only nodes strictly under X gain mass. Use it where every column must be a tree node, as in
        prediction files.
        """
        p = self.probs(logits)
        if not self._residual_spans:
            return p
        for j, stop in self._residual_spans:  # pre-order: an outer residual reaches inner ones first
            block = p[:, j + 1 : stop]
            total = block.sum(dim=1, keepdim=True)
            share = torch.where(
                total > 0,
                block / total.clamp_min(torch.finfo(p.dtype).tiny),
                torch.full_like(block, 1.0 / block.shape[1]),
            )
            added = torch.zeros_like(p)
            added[:, j + 1 : stop] = share * p[:, j : j + 1]
            p = p + added
        return p[:, cast(Tensor, self.cut_columns)]

    def _residual_matrix(self, wanted: tuple[str, ...]) -> Tensor:
        """``(n_residual, len(wanted))``: 1 where the wanted node is the residual's node or an ancestor."""
        cached = self._residual_cache.get(wanted)
        if cached is None:
            column: dict[str, list[int]] = {}
            for j, n in enumerate(wanted):
                column.setdefault(n, []).append(j)
            cached = torch.zeros(len(self.residual), len(wanted))
            for k, base in enumerate(self.residual):
                for a in (base, *self.taxonomy.ancestors(base)):
                    for j in column.get(a, ()):
                        cached[k, j] = 1.0
            if len(self._residual_cache) < 64:
                self._residual_cache[wanted] = cached
        return cached

    # --- targets ----------------------------------------------------------------------------------------

    def class_index(self, labels: Iterable[str] | str) -> Tensor:
        """Class indices of true labels (node ids, aliases or display names), a CPU ``LongTensor`` ``(n,)``
        (a single string gives a 0-d tensor).

        A label at or below a class maps to that class; a split node's own label maps to its residual class.

        Raises:
            UnknownNameError: a label is not a node of the taxonomy.
            HierclfError: a label lies above the classes (the message names the classes it spans).
        """
        if isinstance(labels, str):
            return self.class_index([labels])[0]
        arr = np.asarray(labels if isinstance(labels, np.ndarray) else list(labels), dtype=object)
        if arr.size == 0:
            return torch.zeros(0, dtype=torch.long)
        distinct, inverse = np.unique(arr.astype(str), return_inverse=True)
        pos = self.taxonomy.index.position
        table = np.empty(len(distinct), dtype=np.int64)
        for i, label in enumerate(distinct.tolist()):
            node = self.taxonomy.resolve(label)
            k = int(self._class_of_row[pos[node]])
            if k < 0:
                raise above_cut_error(
                    self.taxonomy,
                    self.classes,
                    label,
                    node,
                    "train on classes at or above it, or relabel those images",
                )
            table[i] = k
        return torch.from_numpy(table[inverse.reshape(-1)])

    def extra_repr(self) -> str:
        residual = f", residual={len(self.residual)}" if self.residual else ""
        return f"taxonomy={self.taxonomy.name!r}, n_classes={self.n_classes}{residual}"
