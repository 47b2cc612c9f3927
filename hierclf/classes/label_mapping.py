"""Which class a true label belongs to: :class:`ClassMap`, the one label-to-class mapping of hierclf.

A set of classes is a cut of the tree (node ids, every leaf under exactly one), optionally with residual
classes of split internal nodes (:mod:`hierclf.classes.residual`). A dataset label (an id, alias or display
name) belongs to:

* the class at or above its node (a label below a class is that class: a ``melanoma_in_situ`` image is a
  ``melanoma`` image when ``melanoma`` is a class);
* the residual class of its node, when its node is a split internal node with one;
* no class, when its node lies above the classes (a ``melanocytic`` image when the classes split
  ``melanocytic``): an error naming the classes it spans, or ``-1`` where the caller can leave such samples
  out (evaluation at a coarser cut).

Training targets (:class:`~hierclf.nn.head.LeafHead`, :func:`~hierclf.classes.esteva.partition`), the
datasets' class indices and the evaluation's per-cut labels all come from here.

Example:
    >>> from hierclf import Taxonomy
    >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
    >>> cmap = ClassMap.of(tax, ["benign", "melanoma", "keratinocyte_carcinoma"])
    >>> cmap.class_index(["mel", "nv", "bcc", "melanoma"]).tolist()
    [1, 0, 2, 1]
    >>> cmap.class_index(["malignant", "nv"], above="ignore").tolist()
    [-1, 0]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from hierclf.classes.residual import residual_class, residual_node
from hierclf.errors import HierclfError, UnknownNameError

if TYPE_CHECKING:
    from hierclf.taxonomy.tree import Taxonomy

__all__ = ["ClassMap", "above_cut_error"]


def above_cut_error(
    taxonomy: Taxonomy,
    classes: Iterable[str],
    label: str,
    node: str,
    hint: str = "relabel those images at a finer node",
) -> HierclfError:
    """The error for a dataset label whose node lies above the classes, naming the classes it spans."""
    idx = taxonomy.index
    names = list(classes)
    rows = idx.rows(residual_node(c) or c for c in names)
    spanned = [c for c, inside in zip(names, idx.is_under(rows, idx.position[node])) if inside]
    shown = ", ".join(map(repr, spanned[:10]))
    if len(spanned) > 10:
        shown += f" and {len(spanned) - 10} more"
    return HierclfError(
        f"label {label!r} (node {node!r}) lies above the training classes: it spans "
        f"{len(spanned)} classes ({shown}); {hint}"
    )


@dataclass(frozen=True, eq=False)
class ClassMap:
    """The class of every tree node for one list of classes (see the module docstring).

    Attributes:
        taxonomy: the tree.
        classes: the class names in column order (node ids and ``"<node>:residual"`` names).
        class_of_row: ``(n_nodes,)`` int64 column of each node row, ``-1`` for nodes above the classes.
        dropped: nodes whose images were left out of training (``internal_labels="drop"``) -> how many; a
            label there is refused with that reason.
        hint: the advice of the error for a label above the classes.
    """

    taxonomy: Taxonomy
    classes: tuple[str, ...]
    class_of_row: np.ndarray = field(repr=False)
    dropped: Mapping[str, int] = field(default_factory=dict)
    hint: str = "relabel those images at a finer node"

    @classmethod
    def of(
        cls,
        taxonomy: Taxonomy,
        classes: Sequence[str],
        *,
        dropped: Mapping[str, int] | None = None,
        hint: str = "relabel those images at a finer node",
    ) -> ClassMap:
        """The map of ``classes`` (node ids or aliases of a cut, plus residual classes), in the order given.

        Raises:
            TaxonomyError: the node classes are not a cut.
            HierclfError: a residual class whose node does not lie above the other classes, or one listed
                twice.
        """
        names = tuple(classes)
        residual_of = {i: base for i, c in enumerate(names) if (base := residual_node(c)) is not None}
        node_cols = [i for i in range(len(names)) if i not in residual_of]
        cut = [taxonomy.resolve(names[i]) for i in node_cols]
        taxonomy.cut(cut)  # TaxonomyError naming overlaps and uncovered leaves
        idx = taxonomy.index
        owner = idx.cut_of(idx.rows(cut))
        class_of_row = np.where(owner >= 0, np.asarray(node_cols, dtype=np.int64)[np.maximum(owner, 0)], -1)
        _place_residuals(taxonomy, residual_of, class_of_row, owner)
        names = tuple(cut[node_cols.index(i)] if i in node_cols else names[i] for i in range(len(names)))
        class_of_row.setflags(write=False)
        return cls(taxonomy, names, class_of_row, dict(dropped or {}), hint)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def label_map(self) -> dict[str, str]:
        """Every node at or below the classes -> the name of its class."""
        nodes = self.taxonomy.nodes
        return {nodes[r]: self.classes[k] for r, k in enumerate(self.class_of_row.tolist()) if k >= 0}

    def class_of(self, label: str) -> str:
        """The class name of one label (errors as :meth:`class_index`)."""
        return self.classes[int(self.class_index([label])[0])]

    def class_index(
        self, labels: Iterable[str] | np.ndarray, *, above: Literal["error", "ignore"] = "error"
    ) -> np.ndarray:
        """Class columns ``(n,)`` int64 of many labels (ids, aliases, display names), each distinct label
        resolved once.

        Args:
            labels: the true labels.
            above: a label above the classes raises (``"error"``) or gets ``-1`` (``"ignore"``).

        Raises:
            UnknownNameError: a label is not a node of the taxonomy.
            HierclfError: a label lies above the classes (``above="error"``): the message names the classes
                it spans, or says its images were dropped.
        """
        arr = np.asarray(labels if isinstance(labels, np.ndarray) else list(labels), dtype=object)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        distinct, inverse = np.unique(arr.astype(str), return_inverse=True)
        ids = [self.taxonomy.resolve(label) for label in distinct.tolist()]
        table = self.class_of_row[self.taxonomy.index.rows(ids)]
        if above == "error" and (table < 0).any():
            k = int(np.flatnonzero(table < 0)[0])
            raise self._above_error(str(distinct[k]), ids[k])
        return table[inverse.reshape(-1)]

    def _above_error(self, label: str, node: str) -> HierclfError:
        if node in self.dropped:
            return HierclfError(
                f"label {label!r} (node {node!r}) lies above the training classes; its "
                f"{self.dropped[node]} images were dropped (internal_labels='drop')"
            )
        return above_cut_error(self.taxonomy, self.classes, label, node, self.hint)


def _place_residuals(
    taxonomy: Taxonomy, residual_of: Mapping[int, str], class_of_row: np.ndarray, owner: np.ndarray
) -> None:
    """Give each residual class's node its column; the node must lie above the node classes."""
    bases = list(residual_of.values())
    if len(set(bases)) != len(bases):
        raise HierclfError("classes list a residual class more than once")
    for col, base in residual_of.items():  # a loop over residual classes (a handful)
        if base not in taxonomy:
            raise UnknownNameError(
                "node", base, taxonomy.nodes, f"in residual class {residual_class(base)!r}"
            )
        row = taxonomy.index.position[base]
        if owner[row] >= 0:
            raise HierclfError(
                f"residual class {residual_class(base)!r} needs node {base!r} to lie above the other classes "
                "(split into them), but it is one of them or below one"
            )
        class_of_row[row] = col
