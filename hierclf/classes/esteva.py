"""Training classes from a disease tree: Esteva et al.'s recursive PartitionDiseases.

The network's softmax runs over *training classes*, nodes of the tree small enough to learn as one class;
evaluation sums their probabilities up the tree. :func:`partition` chooses them from the image counts::

    PartitionDiseases(node):
        if NumImages(subtree of node) < max_class_size: node is a training class
        else: PartitionDiseases(child) for each child

The paper leaves two cases open; hierclf decides them explicitly (``docs/training-classes.md``):

1. **Boundary.** ``inclusive=False`` (default) follows the paper's text, ``count < max_class_size``;
   ``inclusive=True`` gives ``count <= max_class_size``, which is what the authors' code did.
2. **Images labelled at an internal node that gets split** (e.g. "melanocytic lesion, not otherwise
   specified" when "melanocytic" is too large to be one class). ``internal_labels="residual"`` (default,
   as the authors' code) gives them a *residual class* of their own, named ``"<node>:residual"``
   (:data:`RESIDUAL_SUFFIX`; node ids cannot contain ``:``). In pre-order it sits right before the classes
   of the node's children, so every node's probability is still a contiguous range of columns.
   ``"drop"`` leaves those images out of training (they are reported in :attr:`Partition.dropped`),
   ``"error"`` refuses.

Two more cases: a leaf is a class even when it holds ``max_class_size`` images or more (it cannot be split;
see :attr:`Partition.oversized`), and a leaf or subtree with no images at all is a class of its own with
count 0 (see :attr:`Partition.empty`): the classes must cover every leaf for the roll-up to define every
node, and the only node that could absorb it is its parent, which was split for being too large.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from hierclf.errors import HierclfError, UnknownNameError
from hierclf.options import look_up_option
from hierclf.taxonomy.tree import Taxonomy

logger = logging.getLogger(__name__)

__all__ = ["RESIDUAL_SUFFIX", "Partition", "above_cut_error", "partition", "residual_class", "residual_node"]

#: suffix of the name of a residual class: the images labelled exactly at a split internal node
RESIDUAL_SUFFIX = ":residual"

#: what :func:`partition` does with images labelled at a split internal node (``internal_labels``)
INTERNAL_LABEL_MODES: tuple[str, ...] = ("residual", "drop", "error")


def residual_class(node: str) -> str:
    """The name of the residual class of internal node ``node``.

    >>> residual_class("melanocytic")
    'melanocytic:residual'
    """
    return f"{node}{RESIDUAL_SUFFIX}"


def residual_node(name: str) -> str | None:
    """The node whose residual class ``name`` is, or None when ``name`` is not a residual class name.

    >>> residual_node("melanocytic:residual"), residual_node("melanoma")
    ('melanocytic', None)
    """
    return name[: -len(RESIDUAL_SUFFIX)] if name.endswith(RESIDUAL_SUFFIX) else None


def _rows_by_depth(tax: Taxonomy) -> list[np.ndarray]:
    """Rows of the nodes at each depth (root first), each in pre-order: the levels that the vectorised
    passes below walk, so no Python loop runs over nodes."""
    depth = tax.index.depth
    order = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[order], np.arange(int(depth.max()) + 2))
    return [order[bounds[d] : bounds[d + 1]] for d in range(len(bounds) - 1)]


def above_cut_error(
    taxonomy: Taxonomy,
    classes: Iterable[str],
    label: str,
    node: str,
    hint: str = "relabel those images at a finer node",
) -> HierclfError:
    """The error for a dataset label whose node lies above the training classes, naming the classes it
    spans (shared by :class:`Partition` and :class:`~hierclf.nn.head.LeafHead`)."""
    spanned = []
    for c in classes:
        c_node = residual_node(c) or c
        if c_node == node or node in taxonomy.ancestors(c_node):
            spanned.append(c)
    shown = ", ".join(map(repr, spanned[:10]))
    if len(spanned) > 10:
        shown += f" and {len(spanned) - 10} more"
    return HierclfError(
        f"label {label!r} (node {node!r}) lies above the training classes: it spans "
        f"{len(spanned)} classes ({shown}); {hint}"
    )


@dataclass(frozen=True)
class Partition:
    """Training classes chosen by :func:`partition`.

    Attributes:
        taxonomy: the tree.
        classes: class names in pre-order: node ids of a cut of the tree, plus residual classes
            (``"<node>:residual"``) right before the classes under their node. Without residual classes
            ``classes`` passes :meth:`Taxonomy.cut`.
        counts: images per class, aligned with ``classes``.
        label_map: every node at or below the cut -> the name of its training class (a split internal node
            with a residual class maps to that residual class).
        max_class_size, inclusive, internal_labels: the settings used.
        dropped: split internal node -> images left out of training (``internal_labels="drop"`` only).
    """

    taxonomy: Taxonomy
    classes: tuple[str, ...]
    counts: tuple[int, ...]
    label_map: Mapping[str, str] = field(repr=False)
    max_class_size: int
    inclusive: bool
    internal_labels: str
    dropped: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def cut(self) -> tuple[str, ...]:
        """The classes that are tree nodes (all but residual classes): a cut of the tree, pre-order."""
        return tuple(c for c in self.classes if residual_node(c) is None)

    @property
    def residual(self) -> tuple[str, ...]:
        """The internal nodes that have a residual class."""
        return tuple(n for c in self.classes if (n := residual_node(c)) is not None)

    @property
    def empty(self) -> tuple[str, ...]:
        """Classes with no images."""
        return tuple(c for c, n in zip(self.classes, self.counts, strict=True) if n == 0)

    @property
    def oversized(self) -> tuple[str, ...]:
        """Classes at or over the size limit: leaves (which cannot be split) and residual classes."""
        return tuple(
            c
            for c, n in zip(self.classes, self.counts, strict=True)
            if not _small(n, self.max_class_size, self.inclusive)
        )

    def class_of(self, label: str) -> str:
        """The training class of a dataset label (a node id, alias or display name).

        Raises:
            UnknownNameError: the label is not a node of the taxonomy.
            HierclfError: the label lies above the training classes (the message names the classes it
                spans), or its images were dropped.
        """
        node = self.taxonomy.resolve(label)
        cls = self.label_map.get(node)
        if cls is None:
            raise self._above_cut_error(label, node)
        return cls

    def index_of(self, label: str) -> int:
        """The class index (column) of a dataset label; see :meth:`class_of`."""
        return self._positions[self.class_of(label)]

    def class_index(self, labels: Iterable[str]) -> np.ndarray:
        """Class indices of many dataset labels, shape ``(n,)`` int64 (each distinct label resolved once);
        see :meth:`class_of` for the errors."""
        labels = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels, dtype=object)
        if labels.size == 0:
            return np.zeros(0, dtype=np.int64)
        distinct, inverse = np.unique(labels.astype(str), return_inverse=True)
        table = np.array([self.index_of(str(lab)) for lab in distinct], dtype=np.int64)
        return table[inverse.reshape(-1)]

    def _above_cut_error(self, label: str, node: str) -> HierclfError:
        if node in self.dropped:
            return HierclfError(
                f"label {label!r} (node {node!r}) lies above the training classes; its "
                f"{self.dropped[node]} images were dropped (internal_labels='drop')"
            )
        return above_cut_error(
            self.taxonomy,
            self.classes,
            label,
            node,
            "relabel those images at a finer node, or choose a larger max_class_size",
        )

    @property
    def _positions(self) -> dict[str, int]:
        cached = self.__dict__.get("_positions_cache")
        if cached is None:
            cached = {c: i for i, c in enumerate(self.classes)}
            object.__setattr__(self, "_positions_cache", cached)
        return cached


def _small(count: int, limit: int, inclusive: bool) -> bool:
    return count <= limit if inclusive else count < limit


def _node_counts(tax: Taxonomy, counts: Mapping[str, int]) -> np.ndarray:
    """Images labelled exactly at each node, pre-order rows; keys may be ids, aliases or display names."""
    if not isinstance(counts, Mapping):
        raise HierclfError(f"counts must be a mapping node -> number of images, got {type(counts).__name__}")
    pos = tax.index.position
    keys = list(counts)
    rows = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        row = pos.get(key)
        if row is None:
            try:
                row = pos[tax.resolve(key)]
            except UnknownNameError as exc:
                raise UnknownNameError(
                    "node", key, tax.names(), f"in the counts (taxonomy {tax.name!r})"
                ) from exc
        rows[i] = row
    values = np.asarray(list(counts.values()))
    ok = values.ndim == 1 and (
        values.dtype.kind in "iu"
        or (
            values.dtype.kind == "f"
            and bool(np.isfinite(values).all() and (values == np.round(values)).all())
        )
    )
    if not ok or (values < 0).any():
        for key, value in counts.items():  # find the culprit for the message
            good = (
                isinstance(value, (int, np.integer, float, np.floating))
                and not isinstance(value, bool)
                and float(value).is_integer()
                and value >= 0
            )
            if not good:
                raise HierclfError(f"count of {key!r} must be a non-negative integer, got {value!r}")
        raise HierclfError("counts must be non-negative integers")  # pragma: no cover
    own = np.zeros(len(tax.nodes), dtype=np.int64)
    np.add.at(own, rows, values.astype(np.int64))
    return own


def partition(
    taxonomy: Taxonomy,
    counts: Mapping[str, int],
    max_class_size: int = 1000,
    *,
    inclusive: bool = False,
    internal_labels: str = "residual",
) -> Partition:
    """Esteva et al.'s training-class partition of ``taxonomy`` given image counts.

    A node whose subtree holds fewer than ``max_class_size`` images (images labelled at the node or anywhere
    below it) becomes a training class; otherwise its children are partitioned the same way. Leaves are
    always classes. Vectorised over the levels of the tree: no recursion, no Python loop over nodes.

    Args:
        taxonomy: the tree.
        counts: images labelled at each node (ids, aliases or display names as keys; several keys for the
            same node add up; missing nodes have 0).
        max_class_size: the size limit, ``>= 1`` (Esteva et al.: 1,000, giving 757 classes from 2,032 leaves).
        inclusive: ``False``: a class needs ``count < max_class_size`` (the paper's text); ``True``:
            ``count <= max_class_size`` (the authors' code).
        internal_labels: what happens to images labelled exactly at an internal node that gets split:
            ``"residual"`` (a class ``"<node>:residual"`` of their own, placed before the node's children),
            ``"drop"`` (left out, see :attr:`Partition.dropped`) or ``"error"``.

    Returns:
        the :class:`Partition`.

    Raises:
        UnknownNameError: a count names a node the taxonomy does not have, or an unknown ``internal_labels``.
        HierclfError: negative counts, ``max_class_size < 1``, or images at a split internal node with
            ``internal_labels="error"``.

    Example:
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> part = partition(tax, {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327,
        ...                        "vasc": 142, "df": 115})
        >>> part.classes
        ('melanocytic_nevus', 'benign_keratosis', 'benign_dermal', 'melanoma', 'keratinocyte_carcinoma')
        >>> part.counts
        (6705, 1099, 257, 1113, 841)
        >>> part.class_of("vasc"), part.class_index(["akiec", "nv", "malignant_melanocytic"]).tolist()
        ('benign_dermal', [4, 0, 3])
    """
    if (
        isinstance(max_class_size, bool)
        or not isinstance(max_class_size, (int, np.integer))
        or max_class_size < 1
    ):
        raise HierclfError(f"max_class_size must be an integer >= 1, got {max_class_size!r}")
    mode = look_up_option(internal_labels, INTERNAL_LABEL_MODES, kind="internal_labels mode")
    limit = int(max_class_size)
    idx = taxonomy.index
    parent = idx.parent
    n = len(idx.nodes)
    own = _node_counts(taxonomy, counts)
    levels = _rows_by_depth(taxonomy)

    total = own.copy()  # images in each subtree: fold the levels bottom-up
    for rows in reversed(levels[1:]):
        np.add.at(total, parent[rows], total[rows])
    is_leaf = np.zeros(n, dtype=bool)
    is_leaf[idx.leaf_rows] = True
    small = total <= limit if inclusive else total < limit
    split = ~(small | is_leaf)
    # reached: every proper ancestor was split (the recursion gets here); top-down over the levels
    reached = np.zeros(n, dtype=bool)
    reached[0] = True
    for rows in levels[1:]:
        reached[rows] = reached[parent[rows]] & split[parent[rows]]
    is_class = reached & ~split
    split_with_images = np.flatnonzero(reached & split & (own > 0))
    if split_with_images.size and mode == "error":
        row = int(split_with_images[0])
        more = f" (and {split_with_images.size - 1} more such nodes)" if split_with_images.size > 1 else ""
        raise HierclfError(
            f"{own[row]} images are labelled at internal node {idx.nodes[row]!r}, which holds {total[row]} "
            f"images in all ({'>' if inclusive else '>='} max_class_size {limit}) and is split into its "
            f"children{more}; pass internal_labels='residual' to give them a class of their own or 'drop' "
            "to leave them out"
        )
    has_residual = np.zeros(n, dtype=bool)
    dropped: dict[str, int] = {}
    if mode == "residual":
        has_residual[split_with_images] = True
    else:
        dropped = {idx.nodes[r]: int(own[r]) for r in split_with_images.tolist()}
        for node, k in dropped.items():
            logger.warning("dropping %d images labelled at split internal node %r", k, node)

    # pre-order rows: a residual class (its split node's row) precedes its children's classes
    class_rows = np.flatnonzero(is_class | has_residual)
    nodes = idx.nodes
    classes = tuple(residual_class(nodes[r]) if has_residual[r] else nodes[r] for r in class_rows.tolist())
    class_counts = np.where(has_residual[class_rows], own[class_rows], total[class_rows])
    # class of every node at or below the cut: its own, or its parent's (top-down over the levels)
    class_of_row = np.full(n, -1, dtype=np.int64)
    class_of_row[class_rows] = np.arange(len(class_rows))
    for rows in levels[1:]:
        inherit = ~reached[rows]
        class_of_row[rows[inherit]] = class_of_row[parent[rows[inherit]]]
    label_map = {nodes[r]: classes[k] for r, k in enumerate(class_of_row.tolist()) if k >= 0}

    part = Partition(
        taxonomy=taxonomy,
        classes=classes,
        counts=tuple(class_counts.tolist()),
        label_map=label_map,
        max_class_size=limit,
        inclusive=bool(inclusive),
        internal_labels=mode,
        dropped=dropped,
    )
    empty = [classes[k] for k in np.flatnonzero(class_counts == 0).tolist()]
    if empty:
        logger.warning("%d training classes have no images: %s", len(empty), ", ".join(empty[:10]))
    over = np.flatnonzero(~(class_counts <= limit if inclusive else class_counts < limit)).tolist()
    if over:
        logger.info(
            "%d training classes reach max_class_size %d (leaves and residual classes cannot be split): %s",
            len(over),
            limit,
            ", ".join(classes[k] for k in over[:10]),
        )
    return part
