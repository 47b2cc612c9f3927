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

from hierclf.classes.label_mapping import ClassMap
from hierclf.classes.residual import residual_node
from hierclf.errors import HierclfError
from hierclf.nn.rollup_modules import RollUp
from hierclf.rollup_engine import torch_ops
from hierclf.rollup_engine.request_plans import Plan, check_input, plan
from hierclf.taxonomy.tree import Taxonomy

if TYPE_CHECKING:
    from hierclf.classes.esteva import TrainingClasses

__all__ = ["LeafHead"]


def _resolve_classes(tax: Taxonomy, classes: Iterable[str] | None) -> Plan:
    """The roll-up plan of all nodes over ``classes``: its columns, sorted into pre-order (a residual class
    at its node, before the classes under it), are the head's classes.

    Raises:
        TaxonomyError: the classes (less residual classes) overlap or leave leaves uncovered.
        UnknownNameError: an unknown class or residual node (with "did you mean").
        HierclfError: a misplaced or repeated residual class, or ``classes`` given as one string.
    """
    if classes is None:
        return plan(tax, None, None)
    if isinstance(classes, str):
        raise HierclfError(f"classes must be a list of node ids, got the single string {classes!r}")
    given = plan(tax, None, [str(c) for c in classes])
    if given.perm is None:
        return given
    return plan(tax, None, [given.columns[k] for k in given.perm])


class LeafHead(nn.Module):
    """Linear head over the leaves of a taxonomy, or over training classes (a cut of the tree).

    Output order: logit ``j`` is :attr:`classes` ``[j]``. Without ``classes`` these are ``taxonomy.leaves``
    (pre-order, the leaf column order used everywhere in hierclf); with ``classes`` (e.g.
    :attr:`TrainingClasses.classes <hierclf.classes.esteva.TrainingClasses.classes>`) they are the given
    classes sorted into tree pre-order, a residual class ``"<node>:residual"`` right before the classes under
    its node. The order does not depend on the order ``classes`` was given in.

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
    __jit_ignored_attributes__ = ["_columns", "_fold_levels", "_node_columns"]

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
        request = _resolve_classes(taxonomy, classes)
        names = request.columns
        self.classes: tuple[str, ...] = names
        self.cut: tuple[str, ...] = tuple(c for c in names if residual_node(c) is None)
        self.dropout = nn.Dropout(float(dropout))
        self.linear = nn.Linear(int(in_features), len(names), bias=bias)
        #: the roll-up of the class probabilities to every node at or above the classes (index buffers,
        #: non-persistent: ``state_dict()`` holds the linear layer only)
        self._columns = None if classes is None else names
        self.roll = RollUp(taxonomy, None, columns=self._columns)
        is_residual = [residual_node(c) is not None for c in names]
        self.register_buffer(
            "cut_columns",
            torch.tensor([i for i, r in enumerate(is_residual) if not r], dtype=torch.long),
            persistent=False,
        )
        self._residual_nodes = tuple(n for c in names if (n := residual_node(c)) is not None)
        self._register_folds(request)
        #: which class each true label belongs to (the one label -> class mapping of hierclf)
        self.class_map = ClassMap.of(
            taxonomy, names, hint="train on classes at or above it, or relabel those images"
        )
        self._node_columns: dict[tuple[tuple[str, ...], str], Tensor] = {}

    @classmethod
    def from_partition(
        cls, in_features: int, partition: TrainingClasses, *, bias: bool = True, dropout: float = 0.0
    ) -> LeafHead:
        """A head over :class:`~hierclf.classes.esteva.TrainingClasses` (same classes, same order)."""
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
        return self.roll.nodes

    def _register_folds(self, request: Plan) -> None:
        """Index buffers of :meth:`cut_probs`, one group per nesting level of the residual classes.

        A residual class of node X at column ``j`` shares its mass among the classes under X, columns
        ``j + 1:end`` (X's column range is ``j:end``, its residual class first). Residual classes of the same
        level have disjoint ranges and are folded at once; inner levels after outer ones.
        """
        ranges = {n: (int(s), int(e)) for n, s, e in zip(request.nodes, request.start, request.end)}
        residual = set(self._residual_nodes)
        level = {b: sum(a in residual for a in self.taxonomy.ancestors(b)) for b in self._residual_nodes}
        groups: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for base in self._residual_nodes:
            groups[level[base]].append(base)
        cols: list[int] = []  # the columns each residual class is shared among, level after level
        segs: list[int] = []  # for each of those columns, its residual class's index within the level
        res: list[int] = []  # the residual classes' columns
        width: list[int] = []
        bounds = [(0, 0)]  # (columns, residual classes) before each level
        for group in groups:
            for base in group:
                start, end = ranges[base]
                cols += range(start + 1, end)
                segs += [len(res) - bounds[-1][1]] * (end - start - 1)
                res.append(start)
                width.append(end - start - 1)
            bounds.append((len(cols), len(res)))
        for name, values in (("fold_columns", cols), ("fold_segment", segs), ("fold_residual", res)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.long), persistent=False)
        self.register_buffer("fold_width", torch.tensor(width, dtype=torch.float32), persistent=False)
        self._fold_levels = tuple(zip(bounds[:-1], bounds[1:]))

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
            logits: ``(..., n_classes)``, any float dtype (computed in float32).
            nodes: node ids / aliases at or above the classes; None for :attr:`nodes` (all of them,
                pre-order).

        Returns:
            float32 tensor ``(..., len(nodes))`` on the logits' device: ``P(node)`` = the sum of the
            probabilities of the classes under it (a residual class counts for its node and the node's
            ancestors: in pre-order the classes under a node, its residual class included, are one column
            range, so this is the roll-up's range sum, :attr:`roll`, built once).

        Raises:
            RollUpError: a wrong input (the message every face of the roll-up gives), a node below the
                classes (naming the class above it).
            UnknownNameError: an unknown node (with "did you mean").
        """
        if not self.roll._traced(logits):  # traced: the light check that keeps a dynamic batch symbolic
            check_input(logits, self.roll._plan)
        every = self.roll(self.probs(logits))
        if nodes is None:
            return every
        if isinstance(nodes, str):
            raise HierclfError(f"nodes must be a list of node names, got the single string {nodes!r}")
        return every.index_select(-1, self._columns_of(tuple(nodes), every.device))

    def _columns_of(self, nodes: tuple[str, ...], device: torch.device) -> Tensor:
        """The positions of ``nodes`` in :attr:`nodes`, resolved and checked by the roll-up's plan (the
        errors of every face), cached per request and device."""
        key = (nodes, str(device))
        found = self._node_columns.get(key)
        if found is None:
            wanted = plan(self.taxonomy, list(nodes), self._columns)
            position = {n: k for k, n in enumerate(self.nodes)}
            found = torch.tensor([position[n] for n in wanted.nodes], dtype=torch.long, device=device)
            tracing = torch_ops.is_tracing() or torch.jit.is_tracing()  # an export keeps no module state
            if len(self._node_columns) < 64 and not tracing:
                self._node_columns[key] = found
        return found

    def cut_probs(self, logits: Tensor) -> Tensor:
        """Probabilities over :attr:`cut` (the classes that are tree nodes), ``(batch, len(cut))`` float32.

        Equal to :meth:`probs` when the head has no residual classes. Otherwise each residual class's
        probability is shared among the classes under its node in proportion to their probabilities (evenly
        if they are all 0): "an image of node X, not otherwise specified, is one of X's diseases in the
        proportions the model believes". The probability of X and of every node above or beside it is
        unchanged, and so is every ratio between classes under X (hence every conditional task within X);
        only nodes strictly under X gain mass. Use it where every column must be a tree node, as in
        prediction files.

        Residual classes are folded outer before inner (an outer one reaches the inner ones first), all
        residual classes of one nesting level at once: a loop over levels, not over classes.
        """
        p = self.probs(logits)
        if not self._fold_levels:
            return p
        columns, segment, residual, width = (
            cast(Tensor, b)
            for b in (self.fold_columns, self.fold_segment, self.fold_residual, self.fold_width)
        )
        for (c0, r0), (c1, r1) in self._fold_levels:
            cols, seg = columns[c0:c1], segment[c0:c1]
            block = p.index_select(1, cols)
            total = torch.zeros(p.shape[0], r1 - r0, dtype=p.dtype, device=p.device).index_add(1, seg, block)
            total = total.index_select(1, seg)
            even = (1.0 / width[r0:r1].to(p.dtype)).index_select(0, seg).expand_as(block)
            share = torch.where(total > 0, block / total.clamp_min(torch.finfo(p.dtype).tiny), even)
            mass = p.index_select(1, residual[r0:r1]).index_select(1, seg)
            p = p.index_add(1, cols, share * mass)
        return p[:, cast(Tensor, self.cut_columns)]

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
        return torch.from_numpy(self.class_map.class_index(labels))

    def extra_repr(self) -> str:
        residual = f", residual={len(self.residual)}" if self.residual else ""
        return f"taxonomy={self.taxonomy.name!r}, n_classes={self.n_classes}{residual}"
