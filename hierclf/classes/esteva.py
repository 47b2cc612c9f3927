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
   ``"drop"`` leaves those images out of training (they are reported in :attr:`TrainingClasses.dropped`),
   ``"error"`` refuses.

Two more cases: a leaf is a class even when it holds ``max_class_size`` images or more (it cannot be split;
see :attr:`TrainingClasses.oversized`), and a leaf or subtree with no images at all is a class of its own with
count 0 (see :attr:`TrainingClasses.empty`): the classes must cover every leaf for the roll-up to define every
node, and the only node that could absorb it is its parent, which was split for being too large.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from hierclf.classes.label_mapping import ClassMap, above_cut_error
from hierclf.classes.residual import RESIDUAL_SUFFIX, residual_class, residual_node
from hierclf.errors import HierclfError, UnknownNameError
from hierclf.options import look_up_option
from hierclf.taxonomy.tree import Taxonomy

logger = logging.getLogger(__name__)

__all__ = [
    "INTERNAL_LABEL_MODES",
    "RESIDUAL_SUFFIX",
    "TrainingClasses",
    "above_cut_error",
    "partition",
    "residual_class",
    "residual_node",
]

#: what :func:`partition` does with images labelled at a split internal node (``internal_labels``)
INTERNAL_LABEL_MODES: tuple[str, ...] = ("residual", "drop", "error")

_ABOVE_HINT = "relabel those images at a finer node, or choose a larger max_class_size"


@dataclass(frozen=True)
class TrainingClasses:
    """Training classes chosen by :func:`partition`.

    Attributes:
        taxonomy: the tree.
        classes: class names in pre-order: node ids of a cut of the tree, plus residual classes
            (``"<node>:residual"``) right before the classes under their node. Without residual classes
            ``classes`` passes :meth:`Taxonomy.cut`.
        counts: images per class, aligned with ``classes``.
        class_map: the class of every label (:class:`~hierclf.classes.label_mapping.ClassMap`).
        max_class_size, inclusive, internal_labels: the settings used.
        dropped: split internal node -> images left out of training (``internal_labels="drop"`` only).
    """

    taxonomy: Taxonomy
    classes: tuple[str, ...]
    counts: tuple[int, ...]
    class_map: ClassMap = field(repr=False)
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
    def label_map(self) -> dict[str, str]:
        """Every node at or below the cut -> the name of its training class (a split internal node with a
        residual class maps to that residual class)."""
        return self.class_map.label_map()

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
        small = _small(np.asarray(self.counts), self.max_class_size, self.inclusive)
        return tuple(c for c, ok in zip(self.classes, small.tolist(), strict=True) if not ok)

    def class_of(self, label: str) -> str:
        """The training class of a dataset label (a node id, alias or display name).

        Raises:
            UnknownNameError: the label is not a node of the taxonomy.
            HierclfError: the label lies above the training classes (the message names the classes it
                spans), or its images were dropped.
        """
        return self.class_map.class_of(label)

    def index_of(self, label: str) -> int:
        """The class index (column) of a dataset label; see :meth:`class_of`."""
        return int(self.class_map.class_index([label])[0])

    def class_index(self, labels: Iterable[str]) -> np.ndarray:
        """Class indices of many dataset labels, shape ``(n,)`` int64 (each distinct label resolved once);
        see :meth:`class_of` for the errors."""
        return self.class_map.class_index(labels)


def _small(count: np.ndarray, limit: int, inclusive: bool) -> np.ndarray:
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


def _check_limit(max_class_size: object) -> int:
    if (
        isinstance(max_class_size, bool)
        or not isinstance(max_class_size, (int, np.integer))
        or max_class_size < 1
    ):
        raise HierclfError(f"max_class_size must be an integer >= 1, got {max_class_size!r}")
    return int(max_class_size)


def _split_nodes(
    taxonomy: Taxonomy, total: np.ndarray, limit: int, inclusive: bool
) -> tuple[np.ndarray, ...]:
    """``(is_class, split, reached)`` per row: the recursion of PartitionDiseases, top-down over the levels.

    ``reached``: every proper ancestor was split (the recursion gets there); a reached node that is small
    enough (or a leaf) is a class, a reached node that is too large is split into its children. No
    recursion: one pass over the ancestor table.
    """
    idx = taxonomy.index
    split = ~(_small(total, limit, inclusive) | idx.is_leaf)
    reached = idx.all_proper_ancestors(split)
    return reached & ~split, split, reached


def _internal_images(
    taxonomy: Taxonomy,
    rows: np.ndarray,
    own: np.ndarray,
    total: np.ndarray,
    mode: str,
    limit: int,
    inclusive: bool,
) -> dict[str, int]:
    """What happens to images labelled at split internal nodes ``rows``: the dropped counts (``drop``), an
    error (``error``), or nothing here (``residual``: the caller gives them classes)."""
    nodes = taxonomy.index.nodes
    if rows.size and mode == "error":
        row = int(rows[0])
        more = f" (and {rows.size - 1} more such nodes)" if rows.size > 1 else ""
        raise HierclfError(
            f"{own[row]} images are labelled at internal node {nodes[row]!r}, which holds {total[row]} "
            f"images in all ({'>' if inclusive else '>='} max_class_size {limit}) and is split into its "
            f"children{more}; pass internal_labels='residual' to give them a class of their own or 'drop' "
            "to leave them out"
        )
    if mode != "drop":
        return {}
    dropped = {nodes[r]: int(own[r]) for r in rows.tolist()}
    for node, k in dropped.items():
        logger.warning("dropping %d images labelled at split internal node %r", k, node)
    return dropped


def _log_sizes(classes: tuple[str, ...], counts: np.ndarray, limit: int, inclusive: bool) -> None:
    empty = [classes[k] for k in np.flatnonzero(counts == 0).tolist()]
    if empty:
        logger.warning("%d training classes have no images: %s", len(empty), ", ".join(empty[:10]))
    over = np.flatnonzero(~_small(counts, limit, inclusive)).tolist()
    if over:
        logger.info(
            "%d training classes reach max_class_size %d (leaves and residual classes cannot be split): %s",
            len(over),
            limit,
            ", ".join(classes[k] for k in over[:10]),
        )


def partition(
    taxonomy: Taxonomy,
    counts: Mapping[str, int],
    max_class_size: int = 1000,
    *,
    inclusive: bool = False,
    internal_labels: str = "residual",
) -> TrainingClasses:
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
            ``"drop"`` (left out, see :attr:`TrainingClasses.dropped`) or ``"error"``.

    Returns:
        the :class:`TrainingClasses`.

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
    limit = _check_limit(max_class_size)
    mode = look_up_option(internal_labels, INTERNAL_LABEL_MODES, kind="internal_labels mode")
    idx = taxonomy.index
    own = _node_counts(taxonomy, counts)
    total = idx.subtree_sums(own)  # images in each subtree
    is_class, split, reached = _split_nodes(taxonomy, total, limit, inclusive)
    split_with_images = np.flatnonzero(reached & split & (own > 0))
    dropped = _internal_images(taxonomy, split_with_images, own, total, mode, limit, inclusive)
    has_residual = np.zeros(idx.n_nodes, dtype=bool)
    if mode == "residual":
        has_residual[split_with_images] = True
    # pre-order rows: a residual class (its split node's row) precedes its children's classes
    class_rows = np.flatnonzero(is_class | has_residual)
    classes = tuple(
        residual_class(idx.nodes[r]) if has_residual[r] else idx.nodes[r] for r in class_rows.tolist()
    )
    class_counts = np.where(has_residual[class_rows], own[class_rows], total[class_rows])
    _log_sizes(classes, class_counts, limit, inclusive)
    return TrainingClasses(
        taxonomy=taxonomy,
        classes=classes,
        counts=tuple(class_counts.tolist()),
        class_map=ClassMap.of(taxonomy, classes, dropped=dropped, hint=_ABOVE_HINT),
        max_class_size=limit,
        inclusive=bool(inclusive),
        internal_labels=mode,
        dropped=dropped,
    )
