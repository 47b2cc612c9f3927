"""What a checkpoint knows about its model, so that it can be used alone and never against another tree.

Every ``checkpoint.pt`` and ``best.pt`` carries a :class:`ModelIdentity` (under ``"identity"``):

* the **taxonomy**: its YAML text (the model is rebuilt from it, no taxonomy file needed) and a fingerprint,
  the SHA-256 of the node ids with their parents in pre-order (which fixes the leaf order); names, aliases,
  codes and descriptions are not part of it, so editing a display name changes nothing;
* the **head**: its classes in logit order (the taxonomy's leaves, or training classes), whether they are
  the leaves, and the width of its input;
* the **backbone**: what it takes to rebuild the network (:func:`hierclf.nn.backbones.backbone_recipe`);
* the **preprocessing**: the side the images are resized to and the mean and std they are normalised with;
* the **hierclf version** that wrote it.

A tree that differs from the checkpoint's is refused wherever the checkpoint is used (resuming, reusing a
finished run, :func:`hierclf.inference.load_model`, ``hierclf predict`` and ``hierclf export`` given
``--taxonomy``), with a message that says what changed: classes added, removed or reordered, by name, or
nodes added, removed or moved. Swapping two sibling leaves in a taxonomy file reorders the head's classes:
loading the weights would silently swap their probabilities, so it is refused.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hierclf.classes.residual import residual_node
from hierclf.taxonomy.tree import Taxonomy
from hierclf.train.errors import CheckpointError

__all__ = [
    "IDENTITY_FORMAT",
    "ModelIdentity",
    "TreeMismatchError",
    "check_same_model",
    "check_tree",
    "classes_in",
    "describe_tree_change",
    "hierclf_version",
    "tree_fingerprint",
]

#: version of the identity record; a newer one is refused with a message to upgrade hierclf
IDENTITY_FORMAT = 1
#: names listed in a message before "and N more"
_SHOWN = 6


class TreeMismatchError(CheckpointError, ValueError):
    """A checkpoint used with a taxonomy (or classes) other than the ones it was trained on."""


def hierclf_version() -> str:
    """The running hierclf's version (read from the loaded package, which library modules do not import)."""
    return str(getattr(sys.modules.get("hierclf"), "__version__", "unknown"))


def _tree_rows(taxonomy: Taxonomy) -> tuple[list[str], list[str | None]]:
    nodes = list(taxonomy.nodes)
    return nodes, [taxonomy.parent(n) for n in nodes]


def tree_fingerprint(taxonomy: Taxonomy) -> str:
    """SHA-256 of the tree's ``(id, parent)`` pairs in pre-order and of its leaves in order (canonical JSON).

    Example:
        >>> text = "name: t\\nroot: {{id: r, name: R, children: [{{id: {}, name: X}}, {{id: {}, name: Y}}]}}"
        >>> a, b = Taxonomy.from_text(text.format("a", "b")), Taxonomy.from_text(text.format("b", "a"))
        >>> tree_fingerprint(a) == tree_fingerprint(b)  # siblings swapped: another leaf order
        False
    """
    nodes, parents = _tree_rows(taxonomy)
    canonical = json.dumps(
        {"nodes": [[n, p] for n, p in zip(nodes, parents)], "leaves": list(taxonomy.leaves)}
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ModelIdentity:
    """The record a checkpoint keeps of its model (module docstring); plain data, saved as a dict.

    Attributes:
        taxonomy_yaml: the tree as YAML text (``Taxonomy.to_yaml``).
        fingerprint: :func:`tree_fingerprint` of that tree.
        nodes, parents: the tree's node ids in pre-order and each one's parent (for messages).
        classes: the head's classes, in logit order.
        leaf_head: True when the classes are the taxonomy's leaves (the head was built without classes).
        columns: the prediction files' columns (``head.cut``: the classes, residual classes folded in).
        in_features: the head's input width (the backbone's feature width).
        backbone: :func:`~hierclf.nn.backbones.backbone_recipe` of the backbone.
        preprocessing: ``size``, ``mean``, ``std`` (and where they came from).
        version: the hierclf version that wrote the checkpoint.
        format: :data:`IDENTITY_FORMAT` of the record.
    """

    taxonomy_yaml: str
    fingerprint: str
    nodes: tuple[str, ...]
    parents: tuple[str | None, ...]
    classes: tuple[str, ...]
    leaf_head: bool
    columns: tuple[str, ...]
    in_features: int
    backbone: dict[str, Any]
    preprocessing: dict[str, Any]
    version: str = field(default_factory=hierclf_version)
    format: int = IDENTITY_FORMAT

    @classmethod
    def of(
        cls,
        taxonomy: Taxonomy,
        head: Any,
        *,
        backbone: Mapping[str, Any],
        preprocessing: Mapping[str, Any],
    ) -> ModelIdentity:
        """The identity of a model: ``head`` a :class:`~hierclf.nn.head.LeafHead` over ``taxonomy``."""
        nodes, parents = _tree_rows(taxonomy)
        return cls(
            taxonomy_yaml=taxonomy.to_yaml(),
            fingerprint=tree_fingerprint(taxonomy),
            nodes=tuple(nodes),
            parents=tuple(parents),
            classes=tuple(head.classes),
            leaf_head=getattr(head, "_columns", None) is None,
            columns=tuple(head.cut),
            in_features=int(head.in_features),
            backbone=dict(backbone),
            preprocessing=dict(preprocessing),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, strings and numbers (what ``torch.load(weights_only=True)`` reads back)."""
        out = asdict(self)
        for key in ("nodes", "parents", "classes", "columns"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str | Path) -> ModelIdentity:
        """The identity saved in checkpoint ``path``.

        Raises:
            CheckpointError: a record of a newer hierclf, or one that lacks fields.
        """
        fmt = int(data.get("format", 0))
        if fmt > IDENTITY_FORMAT:
            raise CheckpointError(
                f"{path} was written by hierclf {data.get('version', '?')} (model record format {fmt}); this "
                f"hierclf {hierclf_version()} reads format {IDENTITY_FORMAT}: upgrade hierclf"
            )
        names = [f.name for f in cls.__dataclass_fields__.values()]
        missing = [n for n in names if n not in data]
        if missing:
            raise CheckpointError(f"{path}: its model record lacks {', '.join(missing)}; it cannot be used")
        values = {n: data[n] for n in names}
        for key in ("nodes", "parents", "classes", "columns"):
            values[key] = tuple(values[key])
        return cls(**values)

    def taxonomy(self) -> Taxonomy:
        """The tree the model was trained on, rebuilt from the saved YAML."""
        return Taxonomy.from_text(self.taxonomy_yaml, file="<checkpoint taxonomy>")

    @property
    def size(self) -> int:
        """The side, in pixels, of the images the model is fed."""
        return int(self.preprocessing["size"])


# --- what changed --------------------------------------------------------------------------------------


def _shown(names: Sequence[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def classes_in(taxonomy: Taxonomy, identity: ModelIdentity) -> tuple[str, ...]:
    """The classes a head like the checkpoint's has over ``taxonomy``: its leaves for a leaf head; else the
    saved classes that still exist, with the leaves they no longer cover, in the tree's pre-order."""
    if identity.leaf_head:
        return tuple(taxonomy.leaves)
    kept = [c for c in identity.classes if (residual_node(c) or c) in taxonomy]
    covered = {leaf for c in kept if residual_node(c) is None for leaf in taxonomy.leaves_under(c)}
    kept += [leaf for leaf in taxonomy.leaves if leaf not in covered]
    row = {n: i for i, n in enumerate(taxonomy.nodes)}
    # a residual class sits at its node, before the classes under it (LeafHead's order)
    return tuple(sorted(kept, key=lambda c: (row[residual_node(c) or c], residual_node(c) is None)))


def _class_changes(before: Sequence[str], after: Sequence[str]) -> list[str]:
    old, new = set(before), set(after)
    parts = []
    added = [c for c in after if c not in old]
    removed = [c for c in before if c not in new]
    if added:
        parts.append(f"classes added: {_shown(added)}")
    if removed:
        parts.append(f"classes removed: {_shown(removed)}")
    kept_before = [c for c in before if c in new]
    kept_after = [c for c in after if c in old]
    where = {c: i for i, c in enumerate(before)}
    now = {c: i for i, c in enumerate(after)}
    moved = sorted((c for c, d in zip(kept_after, kept_before) if c != d), key=where.__getitem__)
    if moved:
        if len(moved) == 2 and now[moved[0]] == where[moved[1]] and now[moved[1]] == where[moved[0]]:
            parts.append(f"classes reordered: {moved[0]} and {moved[1]} swapped")
        else:
            shown = [f"{c} ({where[c]} -> {now[c]})" for c in moved]
            parts.append(f"classes reordered (logit position then -> now): {_shown(shown)}")
    return parts


def _node_changes(before: ModelIdentity, taxonomy: Taxonomy) -> list[str]:
    parent_then = dict(zip(before.nodes, before.parents))
    nodes_now = list(taxonomy.nodes)
    parts = []
    added = [n for n in nodes_now if n not in parent_then]
    removed = [n for n in before.nodes if n not in set(nodes_now)]
    moved = [
        f"{n} (under {taxonomy.parent(n)}, was under {parent_then[n]})"
        for n in nodes_now
        if n in parent_then and parent_then[n] != taxonomy.parent(n)
    ]
    if added:
        parts.append(f"nodes added: {_shown(added)}")
    if removed:
        parts.append(f"nodes removed: {_shown(removed)}")
    if moved:
        parts.append(f"nodes moved: {_shown(moved)}")
    if not parts:
        kept = [n for n in before.nodes if n in set(nodes_now)]
        reordered = [n for n, m in zip(kept, [n for n in nodes_now if n in parent_then]) if n != m]
        if reordered:
            parts.append(
                f"children reordered under {_shown(sorted({str(parent_then[n]) for n in reordered}))}"
            )
        else:
            parts.append(
                f"tree fingerprint {before.fingerprint[:12]} there, {tree_fingerprint(taxonomy)[:12]} now"
            )
    return parts


def describe_tree_change(before: ModelIdentity, taxonomy: Taxonomy) -> str:
    """What differs between the checkpoint's tree and ``taxonomy``: the head's classes first (added,
    removed, reordered, by name), else the nodes (added, removed, moved, siblings reordered)."""
    parts = _class_changes(before.classes, classes_in(taxonomy, before))
    return "; ".join(parts or _node_changes(before, taxonomy))


def check_tree(identity: ModelIdentity, taxonomy: Taxonomy, path: str | Path, *, verb: str = "load") -> None:
    """Refuse ``taxonomy`` unless it is the tree ``identity`` was trained on (same fingerprint).

    Raises:
        TreeMismatchError: naming what changed (:func:`describe_tree_change`).
    """
    if tree_fingerprint(taxonomy) == identity.fingerprint:
        return
    raise TreeMismatchError(
        f"cannot {verb} {path}: it was trained on another tree than {taxonomy.source or taxonomy.name!r} "
        f"({describe_tree_change(identity, taxonomy)}); use the taxonomy it was trained on (saved in the "
        "checkpoint), or train again"
    )


def check_same_model(saved: ModelIdentity, current: ModelIdentity, path: str | Path, *, verb: str) -> None:
    """Refuse to continue a run whose model would differ from the checkpoint's: another tree, other head
    classes, another backbone or preprocessing.

    Raises:
        TreeMismatchError: the tree or the classes differ (what changed, by name).
        CheckpointError: the backbone or the preprocessing differ (old -> new).
    """
    if saved.fingerprint != current.fingerprint or saved.classes != current.classes:
        change = "; ".join(_class_changes(saved.classes, current.classes)) or describe_tree_change(
            saved, Taxonomy.from_text(current.taxonomy_yaml, file="<current taxonomy>")
        )
        raise TreeMismatchError(
            f"cannot {verb} {path}: the taxonomy changed since it was written ({change}); restore the "
            "taxonomy file, or use --no-resume to start over"
        )
    for what, then, now in (
        ("backbone", saved.backbone, current.backbone),
        ("preprocessing", _stats(saved.preprocessing), _stats(current.preprocessing)),
    ):
        if then != now:
            raise CheckpointError(
                f"cannot {verb} {path}: its {what} was {then}, now {now}; use --no-resume to start over"
            )


def _stats(preprocessing: Mapping[str, Any]) -> dict[str, Any]:
    return {k: preprocessing.get(k) for k in ("size", "mean", "std")}
