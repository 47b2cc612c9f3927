"""The disease tree: :class:`Taxonomy`, loaded from a validated YAML file, queried by id or alias.

Leaves are kept in a fixed depth-first (pre-order) order, the column order of every probability matrix
hierclf reads or writes. In that order the leaves under any node form one contiguous range, which is what
makes the roll-up a range sum (see :attr:`Taxonomy.index`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from hierclf.errors import Problem, TaxonomyError, UnknownNameError, did_you_mean
from hierclf.io.located_yaml import LocatedYAML
from hierclf.taxonomy.format import FORMAT_VERSION, NodeSpec, TaxonomyFile
from hierclf.taxonomy.validation import (
    ValidationReport,
    normalise_name,
    validate_document,
    validate_file,
    validate_text,
)

if TYPE_CHECKING:
    import networkx as nx

logger = logging.getLogger(__name__)


class _Dumper(yaml.SafeDumper):
    """The safe dumper, but strings holding a Unicode line break are double-quoted (escaped).

    With ``allow_unicode`` PyYAML writes U+0085 (NEL) raw inside a single-quoted scalar, and reading it back
    folds it into a space; double quotes escape it as ``\\N``.
    """


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if any(ch in value for ch in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


@dataclass(frozen=True)
class TaxonomyIndex:
    """Integer structure of a tree, computed once per taxonomy (what the roll-up needs).

    Rows are the nodes in depth-first pre-order; columns are the leaves in the same order.

    Attributes:
        nodes: node ids, pre-order, shape ``(n_nodes,)``.
        leaves: leaf ids, pre-order, shape ``(n_leaves,)``.
        parent: row of each node's parent, ``-1`` for the root, shape ``(n_nodes,)``.
        depth: depth of each node (root 0), shape ``(n_nodes,)``.
        leaf_start, leaf_end: the leaves under node ``i`` are columns ``leaf_start[i]:leaf_end[i]``.
        leaf_rows: row of each leaf, shape ``(n_leaves,)``.
        position: node id -> row.
    """

    nodes: tuple[str, ...]
    leaves: tuple[str, ...]
    parent: np.ndarray
    depth: np.ndarray
    leaf_start: np.ndarray
    leaf_end: np.ndarray
    leaf_rows: np.ndarray
    position: Mapping[str, int]

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_leaves(self) -> int:
        return len(self.leaves)


class Taxonomy:
    """A validated disease tree.

    Build one with :meth:`from_yaml` (a file), :meth:`from_text`, :meth:`from_dict` or :meth:`from_networkx`.

    Example:
        >>> tax = Taxonomy.from_text('''
        ... name: demo
        ... root:
        ...   id: lesion
        ...   name: Skin lesion
        ...   children:
        ...     - {id: benign, name: Benign, children: [{id: nevus, name: Nevus, aliases: [nv]},
        ...                                             {id: seb_k, name: Seborrheic keratosis}]}
        ...     - {id: malignant, name: Malignant, children: [{id: melanoma, name: Melanoma, aliases: [mel]},
        ...                                                   {id: bcc, name: Basal cell carcinoma}]}
        ... ''')
        >>> tax.leaves
        ('nevus', 'seb_k', 'melanoma', 'bcc')
        >>> tax.resolve("MEL"), tax.leaves_under("malignant"), tax.lca("nevus", "melanoma")
        ('melanoma', ('melanoma', 'bcc'), 'lesion')
    """

    def __init__(self, spec: TaxonomyFile, *, check: bool = True, source: str | None = None) -> None:
        if check:
            report = validate_document(LocatedYAML(spec.model_dump(), source or f"<taxonomy {spec.name}>"))
            if not report.ok:
                raise TaxonomyError(report.problems)
        self.spec = spec
        self.source = source
        specs: dict[str, NodeSpec] = {}
        parent: dict[str, str | None] = {}
        stack: list[tuple[NodeSpec, str | None]] = [(spec.root, None)]
        while stack:  # iterative pre-order: deep trees do not hit the recursion limit
            node, up = stack.pop()
            specs[node.id] = node
            parent[node.id] = up
            stack.extend((c, node.id) for c in reversed(node.children))
        self._specs = specs
        self._parent = parent

    # --- construction ----------------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path, *, strict: bool = False) -> Taxonomy:
        """Load and validate a taxonomy file; raises :class:`TaxonomyError` listing every problem."""
        return cls._from_report(validate_file(path, strict=strict))

    @classmethod
    def from_text(cls, text: str, *, file: str = "<string>", strict: bool = False) -> Taxonomy:
        """Load and validate taxonomy YAML given as a string."""
        return cls._from_report(validate_text(text, file=file, strict=strict))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, strict: bool = False) -> Taxonomy:
        """Validate a taxonomy given as plain Python data (the parsed YAML)."""
        return cls._from_report(validate_document(LocatedYAML(dict(data), "<dict>"), strict=strict))

    @classmethod
    def _from_report(cls, report: ValidationReport) -> Taxonomy:
        if not report.ok or report.spec is None:
            raise TaxonomyError(report.problems)
        for warning in report.warnings:
            logger.warning("%s", warning)
        return cls(report.spec, check=False, source=report.file)

    @classmethod
    def from_networkx(cls, graph: nx.DiGraph, *, name: str = "taxonomy") -> Taxonomy:
        """Build from a directed tree (edges parent -> child). Node attributes ``name``, ``aliases``,
        ``codes`` and ``metadata`` are used when present; children keep the graph's successor order."""
        import networkx as nx

        if not nx.is_arborescence(graph):
            raise TaxonomyError([Problem("graph is not a rooted tree (arborescence)", "<networkx>")])
        root = next(n for n, d in graph.in_degree() if d == 0)

        def build(n: Any) -> dict[str, Any]:
            attrs = graph.nodes[n]
            out: dict[str, Any] = {"id": n, "name": attrs.get("name", str(n))}
            for key in ("aliases", "codes", "metadata"):
                if attrs.get(key):
                    out[key] = attrs[key]
            out["children"] = [build(c) for c in graph.successors(n)]
            return out

        return cls.from_dict({"name": name, "root": build(root)})

    # --- serialisation ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data in file order; fields left at their defaults are omitted."""

        def node(n: NodeSpec) -> dict[str, Any]:
            out: dict[str, Any] = {"id": n.id, "name": n.name}
            if n.aliases:
                out["aliases"] = list(n.aliases)
            if n.codes:
                out["codes"] = dict(n.codes)
            if n.metadata:
                out["metadata"] = dict(n.metadata)
            if n.children:
                out["children"] = [node(c) for c in n.children]
            return out

        out: dict[str, Any] = {"format_version": FORMAT_VERSION, "name": self.spec.name}
        if self.spec.description:
            out["description"] = self.spec.description
        if self.spec.metadata:
            out["metadata"] = dict(self.spec.metadata)
        out["root"] = node(self.spec.root)
        return out

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The taxonomy as YAML text (comments of the source file are not kept); written atomically to
        ``path`` when given. ``Taxonomy.from_text(t.to_yaml()) == t`` for every taxonomy."""
        text = yaml.dump(
            self.to_dict(),
            Dumper=_Dumper,
            sort_keys=False,
            allow_unicode=True,
            width=10_000,
            default_flow_style=False,
        )
        if path is not None:
            from hierclf.io.atomic import atomic_write_text

            atomic_write_text(path, text)
        return text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Taxonomy) and self.spec == other.spec

    def __hash__(self) -> int:
        return hash((self.spec.name, self.nodes))

    def __repr__(self) -> str:
        return f"Taxonomy({self.name!r}, {len(self.nodes)} nodes, {len(self.leaves)} leaves)"

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, node: object) -> bool:
        return node in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    # --- basic structure -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def root(self) -> str:
        return self.spec.root.id

    @cached_property
    def nodes(self) -> tuple[str, ...]:
        """All node ids in depth-first pre-order."""
        return tuple(self._specs)

    @cached_property
    def leaves(self) -> tuple[str, ...]:
        """Leaf ids in depth-first pre-order: the column order of leaf probabilities."""
        return tuple(n for n, s in self._specs.items() if not s.children)

    def node(self, node: str) -> NodeSpec:
        """The node's spec (name, aliases, codes, metadata, children)."""
        return self._specs[self._check(node)]

    def display_name(self, node: str) -> str:
        return self.node(node).name

    def is_leaf(self, node: str) -> bool:
        return not self.node(node).children

    def children(self, node: str) -> tuple[str, ...]:
        return tuple(c.id for c in self.node(node).children)

    def parent(self, node: str) -> str | None:
        """The parent's id, ``None`` for the root."""
        return self._parent[self._check(node)]

    def ancestors(self, node: str) -> tuple[str, ...]:
        """Proper ancestors, nearest first (parent, grandparent, ..., root)."""
        out = []
        up = self._parent[self._check(node)]
        while up is not None:
            out.append(up)
            up = self._parent[up]
        return tuple(out)

    def descendants(self, node: str) -> tuple[str, ...]:
        """Proper descendants in pre-order."""
        i = self.index.position[self._check(node)]
        end = i + 1
        depth = self.index.depth
        while end < len(depth) and depth[end] > depth[i]:
            end += 1
        return self.nodes[i + 1 : end]

    def leaves_under(self, node: str) -> tuple[str, ...]:
        """Leaves of the subtree at ``node`` (``(node,)`` for a leaf), in leaf order."""
        i = self.index.position[self._check(node)]
        return self.leaves[self.index.leaf_start[i] : self.index.leaf_end[i]]

    def depth(self, node: str) -> int:
        """Edges from the root (root is 0)."""
        return int(self.index.depth[self.index.position[self._check(node)]])

    @property
    def height(self) -> int:
        return int(self.index.depth.max())

    def lca(self, a: str, b: str) -> str:
        """Lowest common ancestor (a node is its own ancestor here, as in networkx)."""
        up_a = {self._check(a), *self.ancestors(a)}
        for n in (self._check(b), *self.ancestors(b)):
            if n in up_a:
                return n
        raise AssertionError("a tree always has a common ancestor")  # pragma: no cover

    def path(self, a: str, b: str | None = None) -> tuple[str, ...]:
        """Root -> ``a`` when ``b`` is None, else the unique tree path ``a -> ... -> lca -> ... -> b``."""
        if b is None:
            return (*reversed(self.ancestors(a)), self._check(a))
        top = self.lca(a, b)
        up = (self._check(a), *self.ancestors(a))
        down = (self._check(b), *self.ancestors(b))
        return (*up[: up.index(top) + 1], *reversed(down[: down.index(top)]))

    def distance(self, a: str, b: str) -> int:
        """Number of edges on the tree path between ``a`` and ``b``."""
        top = self.depth(self.lca(a, b))
        return self.depth(a) + self.depth(b) - 2 * top

    def subtree(self, node: str) -> Taxonomy:
        """The tree under ``node`` as a taxonomy of its own (codes are kept as they are, possibly partial)."""
        spec = TaxonomyFile(
            name=self.name,
            description=self.spec.description,
            metadata=self.spec.metadata,
            root=self.node(node),
        )
        return Taxonomy(spec, check=False, source=self.source)

    # --- names -----------------------------------------------------------------------------------------

    @cached_property
    def _names(self) -> dict[str, str]:
        """Normalised id / alias / unambiguous display name -> node id (ids win, then aliases)."""
        table: dict[str, str] = {}
        display: dict[str, set[str]] = {}
        for n, s in self._specs.items():
            display.setdefault(normalise_name(s.name), set()).add(n)
        for key, owners in display.items():
            if len(owners) == 1:
                table[key] = next(iter(owners))
        for n, s in self._specs.items():
            for alias in s.aliases:
                table[normalise_name(alias)] = n
        for n in self._specs:
            table[n] = n
        return table

    def names(self) -> tuple[str, ...]:
        """Every name that :meth:`resolve` accepts (ids, aliases, unambiguous display names)."""
        return tuple(self._names)

    def resolve(self, name: str) -> str:
        """The id of the node that ``name`` means: an id, an alias (e.g. a HAM10000 code) or a display name,
        compared case-insensitively. Unknown names raise :class:`UnknownNameError` with suggestions."""
        if name in self._specs:
            return name
        found = self._names.get(normalise_name(str(name)))
        if found is None:
            raise UnknownNameError("node", name, self._suggestion_pool(name), f"in taxonomy {self.name!r}")
        return found

    @cached_property
    def _suggestion_owners(self) -> dict[str, str]:
        """Every name worth suggesting -> its node (ids first, then aliases, then display names)."""
        owners = {n: n for n in self._specs}
        for n, s in self._specs.items():
            for alias in s.aliases:
                owners.setdefault(alias, n)
        for n, s in self._specs.items():
            owners.setdefault(s.name, n)
        return owners

    def _suggestion_pool(self, name: object) -> list[str]:
        """The closest names to ``name``, at most one per node (so 'malignant' is not suggested twice as
        'malignant' and 'Malignant lesion')."""
        owners = self._suggestion_owners
        picked: dict[str, str] = {}
        for candidate in did_you_mean(str(name), owners, n=12):
            picked.setdefault(owners[candidate], candidate)
        return list(picked.values())

    def _check(self, node: str) -> str:
        if node not in self._specs:
            raise UnknownNameError("node", node, self._suggestion_pool(node), f"in taxonomy {self.name!r}")
        return node

    # --- datasets --------------------------------------------------------------------------------------

    @cached_property
    def datasets(self) -> tuple[str, ...]:
        """Names of the datasets that have codes in this tree."""
        return tuple(sorted({d for s in self._specs.values() for d in s.codes}))

    def codes(self, dataset: str) -> dict[int, str]:
        """A dataset's integer labels -> node ids, sorted by code.

        >>> tax = Taxonomy.from_text("name: d\\nroot: {id: r, name: R, children: [{id: mel, name: Melanoma, "
        ...                          "codes: {ham: 1}}, {id: nv, name: Nevus, codes: {ham: 0}}]}")
        >>> tax.codes("ham")
        {0: 'nv', 1: 'mel'}
        """
        if dataset not in self.datasets:
            raise UnknownNameError(
                "dataset",
                dataset,
                self.datasets,
                f"in taxonomy {self.name!r} (datasets with codes: {', '.join(self.datasets) or 'none'})",
            )
        found = {s.codes[dataset]: n for n, s in self._specs.items() if dataset in s.codes}
        return dict(sorted(found.items()))

    # --- partitions ------------------------------------------------------------------------------------

    def cut(self, nodes: Iterable[str]) -> tuple[str, ...]:
        """Check that ``nodes`` (ids or aliases) partition the leaves: every leaf lies under exactly one.

        Returns the resolved ids in tree (pre-order) order. Raises :class:`TaxonomyError` naming the
        overlapping nodes and the leaves left uncovered.
        """
        ids = [self.resolve(n) for n in nodes]
        problems = []
        if not ids:
            problems.append(Problem("a cut needs at least one node", node=None, code="cut"))
        owner: dict[str, str] = {}
        for n in dict.fromkeys(ids):
            for leaf in self.leaves_under(n):
                if leaf in owner:
                    problems.append(
                        Problem(
                            f"cut nodes {owner[leaf]!r} and {n!r} overlap (leaf {leaf!r} lies under both)",
                            node=n,
                            code="cut-overlap",
                        )
                    )
                    break
                owner[leaf] = n
        if len(ids) != len(set(ids)):
            dup = sorted({n for n in ids if ids.count(n) > 1})
            problems.append(
                Problem(f"cut lists {', '.join(map(repr, dup))} more than once", code="cut-overlap")
            )
        missing = [leaf for leaf in self.leaves if leaf not in owner]
        if ids and missing:
            shown = ", ".join(map(repr, missing[:8]))
            if len(missing) > 8:
                shown += f" and {len(missing) - 8} more"
            problems.append(Problem(f"cut leaves {len(missing)} leaves uncovered: {shown}", code="cut-gap"))
        if problems:
            raise TaxonomyError(
                [Problem(p.message, f"<cut of {self.name}>", code=p.code, node=p.node) for p in problems]
            )
        pos = self.index.position
        return tuple(sorted(dict.fromkeys(ids), key=pos.__getitem__))

    def column_ranges(self, columns: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """For probabilities over ``columns`` (a cut, see :meth:`cut`), the column range of every node.

        Returns ``(start, end)`` of shape ``(n_nodes,)`` in pre-order: node ``i`` is the sum of columns
        ``start[i]:end[i]``. Nodes strictly below the cut get ``start = end = -1``.
        """
        cut = self.cut(columns)
        idx = self.index
        rows = np.array([idx.position[c] for c in cut])
        col_start, col_end = idx.leaf_start[rows], idx.leaf_end[rows]
        # The cut node holding a node's first leaf; the node lies strictly below the cut exactly when it is
        # deeper than that cut node (leaf ranges alone cannot tell a single child from its parent).
        holder = np.searchsorted(col_start, idx.leaf_start, side="right") - 1
        below = idx.depth > idx.depth[rows[holder]]
        start = np.searchsorted(col_start, idx.leaf_start, side="left")
        end = np.searchsorted(col_end, idx.leaf_end, side="right")
        return np.where(below, -1, start), np.where(below, -1, end)

    def cut_node_above(self, node: str, cut: Iterable[str]) -> str | None:
        """The cut node that contains ``node`` when ``node`` lies strictly below the cut, else ``None``."""
        cut_set = set(self.cut(cut))
        node = self._check(node)
        if node in cut_set:
            return None
        return next((a for a in self.ancestors(node) if a in cut_set), None)

    # --- index and graph -------------------------------------------------------------------------------

    @cached_property
    def index(self) -> TaxonomyIndex:
        """The integer structure of the tree, computed once (see :class:`TaxonomyIndex`)."""
        nodes = self.nodes
        position = {n: i for i, n in enumerate(nodes)}
        parent = np.array(
            [
                -1 if self._parent[n] is None else position[self._parent[n]]  # type: ignore[index]
                for n in nodes
            ],
            dtype=np.int64,
        )
        depth = np.zeros(len(nodes), dtype=np.int64)
        for i in range(1, len(nodes)):  # pre-order: a parent's row precedes its children's
            depth[i] = depth[parent[i]] + 1
        is_leaf = np.array([not self._specs[n].children for n in nodes])
        leaf_rank = np.cumsum(is_leaf) - is_leaf  # leaves before row i
        leaf_start = leaf_rank.copy()
        leaf_end = leaf_rank + is_leaf
        for i in range(len(nodes) - 1, 0, -1):  # children after parents: fold ends upward
            p = parent[i]
            leaf_end[p] = max(leaf_end[p], leaf_end[i])
        for arr in (parent, depth, leaf_start, leaf_end):
            arr.setflags(write=False)
        leaf_rows = np.flatnonzero(is_leaf)
        leaf_rows.setflags(write=False)
        return TaxonomyIndex(
            nodes=nodes,
            leaves=self.leaves,
            parent=parent,
            depth=depth,
            leaf_start=leaf_start,
            leaf_end=leaf_end,
            leaf_rows=leaf_rows,
            position=position,
        )

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The tree as a networkx DiGraph (edges parent -> child) with node attributes ``name``,
        ``aliases``, ``codes`` and ``metadata``. Treat it as read-only."""
        import networkx as nx

        g = nx.DiGraph(name=self.name)
        for n, s in self._specs.items():
            g.add_node(
                n, name=s.name, aliases=list(s.aliases), codes=dict(s.codes), metadata=dict(s.metadata)
            )
        g.add_edges_from((p, n) for n, p in self._parent.items() if p is not None)
        return g
