"""The disease tree: :class:`Taxonomy`, loaded from a validated YAML file, queried by id or alias.

Names resolve through one lookup (:meth:`Taxonomy.resolve`): ids, global aliases, display names, and aliases
scoped to a source (``source_aliases``), which a source's own labels see first.

Leaves are kept in a fixed depth-first (pre-order) order, the column order of every probability matrix
hierclf reads or writes. In that order the leaves under any node form one contiguous range, which is what
makes the roll-up a range sum (see :attr:`Taxonomy.index`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from hierclf.errors import Problem, TaxonomyError, UnknownNameError, did_you_mean
from hierclf.io.yaml_files import LocatedYAML
from hierclf.taxonomy.format import FORMAT_VERSION, NodeSpec, TaxonomyFile
from hierclf.taxonomy.index import TaxonomyIndex, build_index
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

__all__ = ["AmbiguousNameError", "SourceScopes", "Taxonomy", "TaxonomyIndex"]

#: the alias scopes a lookup sees first: one source name, several (searched in order), or none
SourceScopes = str | Sequence[str] | None


class AmbiguousNameError(UnknownNameError):
    """A name that is no global name but a source alias of different nodes in different sources.

    Attributes:
        owners: source -> the node the name means there.
    """

    def __init__(self, name: str, owners: Mapping[str, str], context: str) -> None:
        super().__init__("node", name, (), context)
        self.owners = dict(owners)
        listed = ", ".join(f"{node!r} in source {src!r}" for src, node in self.owners.items())
        self.message = (
            f"name {name!r} {context} is a source alias of different nodes ({listed}); resolve it in its "
            "source's scope (the data source's alias_scopes, or resolve(name, source=...))"
        )
        self.args = (self.message,)


def _scopes(source: SourceScopes) -> tuple[str, ...]:
    if source is None:
        return ()
    return (source,) if isinstance(source, str) else tuple(source)


class _Dumper(yaml.SafeDumper):
    """The safe dumper, but strings holding a Unicode line break are double-quoted (escaped).

    With ``allow_unicode`` PyYAML writes U+0085 (NEL) raw inside a single-quoted scalar, and reading it back
    folds it into a space; double quotes escape it as ``\\N``.
    """


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if any(ch in value for ch in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


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
        ``source_aliases``, ``codes`` and ``metadata`` are used when present; children keep the graph's
        successor order."""
        import networkx as nx

        if not nx.is_arborescence(graph):
            raise TaxonomyError([Problem("graph is not a rooted tree (arborescence)", "<networkx>")])
        root = next(n for n, d in graph.in_degree() if d == 0)

        def build(n: Any) -> dict[str, Any]:
            attrs = graph.nodes[n]
            out: dict[str, Any] = {"id": n, "name": attrs.get("name", str(n))}
            for key in ("aliases", "source_aliases", "codes", "metadata"):
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
            if n.source_aliases:
                out["source_aliases"] = {k: list(v) for k, v in n.source_aliases.items()}
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
        """The node's spec (name, aliases, codes, metadata, children); ``node`` is an id, alias or name."""
        return self._specs[self.resolve(node)]

    def display_name(self, node: str) -> str:
        return self.node(node).name

    def is_leaf(self, node: str) -> bool:
        return not self.node(node).children

    def children(self, node: str) -> tuple[str, ...]:
        return tuple(c.id for c in self.node(node).children)

    def parent(self, node: str) -> str | None:
        """The parent's id, ``None`` for the root."""
        return self._parent[self.resolve(node)]

    def _row(self, node: str) -> int:
        return self.index.position[self.resolve(node)]

    def ancestors(self, node: str) -> tuple[str, ...]:
        """Proper ancestors, nearest first (parent, grandparent, ..., root)."""
        i = self._row(node)
        up = self.index.ancestor_table[i, : self.index.depth[i]]
        return tuple(self.nodes[r] for r in up[::-1].tolist())

    def descendants(self, node: str) -> tuple[str, ...]:
        """Proper descendants in pre-order."""
        i = self._row(node)
        return self.nodes[i + 1 : int(self.index.subtree_end[i])]

    def leaves_under(self, node: str) -> tuple[str, ...]:
        """Leaves of the subtree at ``node`` (``(node,)`` for a leaf), in leaf order."""
        i = self._row(node)
        return self.leaves[self.index.leaf_start[i] : self.index.leaf_end[i]]

    def is_under(self, node: str, ancestor: str) -> bool:
        """Whether ``node`` is ``ancestor`` or lies below it."""
        return bool(self.index.is_under(self._row(node), self._row(ancestor)))

    def depth(self, node: str) -> int:
        """Edges from the root (root is 0)."""
        return int(self.index.depth[self._row(node)])

    @property
    def height(self) -> int:
        return int(self.index.depth.max())

    def lca(self, a: str, b: str) -> str:
        """Lowest common ancestor (a node is its own ancestor here, as in networkx)."""
        return self.nodes[int(self.index.lca(self._row(a), self._row(b)))]

    def path(self, a: str, b: str | None = None) -> tuple[str, ...]:
        """Root -> ``a`` when ``b`` is None, else the unique tree path ``a -> ... -> lca -> ... -> b``."""
        if b is None:
            return (*reversed(self.ancestors(a)), self.resolve(a))
        top = self.lca(a, b)
        up = (self.resolve(a), *self.ancestors(a))
        down = (self.resolve(b), *self.ancestors(b))
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

    @cached_property
    def _scoped_names(self) -> dict[str, dict[str, str]]:
        """Source -> normalised source alias -> node id (validation keeps each scope free of clashes)."""
        table: dict[str, dict[str, str]] = {}
        for n, s in self._specs.items():
            for source, aliases in s.source_aliases.items():
                scope = table.setdefault(source, {})
                for alias in aliases:
                    scope[normalise_name(alias)] = n
        return table

    @cached_property
    def _unscoped_source_names(self) -> dict[str, dict[str, str]]:
        """Normalised source alias that is no global name -> {source: node} over every scope that has it
        (one node: it resolves without a source too; several: :class:`AmbiguousNameError`)."""
        found: dict[str, dict[str, str]] = {}
        for source, scope in sorted(self._scoped_names.items()):
            for key, node in scope.items():
                if key not in self._names:
                    found.setdefault(key, {})[source] = node
        return found

    @cached_property
    def source_scopes(self) -> tuple[str, ...]:
        """The sources that have scoped aliases (``source_aliases`` keys), sorted."""
        return tuple(sorted(self._scoped_names))

    def names(self, *, source: SourceScopes = None) -> tuple[str, ...]:
        """Every name that :meth:`resolve` accepts (ids, aliases, unambiguous display names, the source
        aliases of ``source`` and those that name one node in every source)."""
        scoped = [k for scope in _scopes(source) for k in self._scoped_names.get(scope, {})]
        anywhere = [k for k, owners in self._unscoped_source_names.items() if len(set(owners.values())) == 1]
        return tuple(dict.fromkeys([*self._names, *scoped, *anywhere]))

    def resolve(self, name: str, *, source: SourceScopes = None) -> str:
        """The id of the node that ``name`` means: an id, an alias (e.g. a HAM10000 code) or a display name,
        compared case-insensitively. Unknown names raise :class:`UnknownNameError` with suggestions.

        With ``source`` (a source name such as ``"isic2019"``, or several searched in order) the source's
        own aliases (``source_aliases``) are looked up first, then the global names. Without it, a source
        alias still resolves when it is no global name and means one node in every source that has it; one
        meaning different nodes in different sources raises :class:`AmbiguousNameError`.

        >>> tax = Taxonomy.from_text("name: t\\nroot: {id: r, name: R, children: [{id: ak, name: AK lesion, "
        ...     "source_aliases: {isic: [X]}}, {id: sk, name: SK lesion, source_aliases: {derm: [X]}}]}")
        >>> tax.resolve("x", source="isic"), tax.resolve("x", source=["derm", "isic"])
        ('ak', 'sk')
        """
        if name in self._specs:
            return name
        key = normalise_name(str(name))
        scopes = _scopes(source)
        for scope in scopes:
            found = self._scoped_names.get(scope, {}).get(key)
            if found is not None:
                return found
        found = self._names.get(key)
        if found is not None:
            return found
        owners = self._unscoped_source_names.get(key, {})
        if len(set(owners.values())) == 1:
            return next(iter(owners.values()))
        context = f"in taxonomy {self.name!r}" + (f" (source {', '.join(scopes)})" if scopes else "")
        if owners:
            raise AmbiguousNameError(name, owners, context)
        raise UnknownNameError("node", name, self._suggestion_pool(name), context)

    @cached_property
    def _suggestion_owners(self) -> dict[str, str]:
        """Every name worth suggesting -> its node (ids first, then aliases, then display names)."""
        owners = {n: n for n in self._specs}
        for n, s in self._specs.items():
            for alias in s.aliases:
                owners.setdefault(alias, n)
        for n, s in self._specs.items():
            for aliases in s.source_aliases.values():
                for alias in aliases:
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
        overlapping nodes, repeated nodes and the leaves left uncovered.
        """
        ids = [self.resolve(n) for n in nodes]
        problems = self.cut_problems(ids)
        if problems:
            raise TaxonomyError([Problem(p, f"<cut of {self.name}>", code=c) for c, p in problems])
        pos = self.index.position
        return tuple(sorted(dict.fromkeys(ids), key=pos.__getitem__))

    def cut_problems(
        self, ids: Sequence[str], *, what: str = "cut nodes", shown: Mapping[str, str] | None = None
    ) -> list[tuple[str, str]]:
        """``(code, message)`` of every reason why node ids ``ids`` are not a cut (``[]`` for a cut).

        Args:
            ids: node ids (resolved).
            what: what the listed things are called in the messages (``"columns"`` for a file header).
            shown: how to show each id in the messages (e.g. the column name as the file writes it).
        """
        if not ids:
            return [("cut", "a cut needs at least one node")]
        idx = self.index
        name = (
            (lambda row: repr(shown.get(idx.nodes[row], idx.nodes[row])))
            if shown
            else (lambda row: repr(idx.nodes[row]))
        )
        check = idx.check_cut(idx.rows(ids))
        out = []
        for a, b in check.overlaps[:8]:
            leaf = idx.leaves[int(idx.leaf_start[b])]
            out.append(
                ("cut-overlap", f"{what} {name(a)} and {name(b)} overlap (leaf {leaf!r} lies under both)")
            )
        if len(check.overlaps) > 8:
            out.append(("cut-overlap", f"{len(check.overlaps) - 8} more overlapping pairs"))
        if check.repeated:
            out.append(
                (
                    "cut-overlap",
                    f"{what} list {', '.join(name(r) for r in check.repeated[:8])} more than once",
                )
            )
        missing = check.uncovered
        if missing.size:
            listed = ", ".join(repr(idx.leaves[k]) for k in missing[:8].tolist())
            listed += f" and {missing.size - 8} more" if missing.size > 8 else ""
            leaves = "leaf" if missing.size == 1 else "leaves"
            message = f"{what} leave {missing.size} {leaves} uncovered: {listed}"
            out.append(("cut-gap", message + " (every leaf must lie under exactly one)"))
        return out

    def column_ranges(self, columns: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """For probabilities over ``columns`` (a cut, see :meth:`cut`), the column range of every node.

        Returns ``(start, end)`` of shape ``(n_nodes,)`` in pre-order: node ``i`` is the sum of columns
        ``start[i]:end[i]``. Nodes strictly below the cut get ``start = end = -1``.
        """
        return self.index.cut_ranges(self.index.rows(self.cut(columns)))

    def cut_node_above(self, node: str, cut: Iterable[str]) -> str | None:
        """The cut node that contains ``node`` when ``node`` lies strictly below the cut, else ``None``."""
        nodes = self.cut(cut)
        row = self._row(node)
        owner = int(self.index.cut_of(self.index.rows(nodes))[row])
        if owner < 0 or nodes[owner] == self.nodes[row]:
            return None
        return nodes[owner]

    # --- index and graph -------------------------------------------------------------------------------

    @cached_property
    def index(self) -> TaxonomyIndex:
        """The integer structure of the tree, computed once (see :class:`TaxonomyIndex`)."""
        return build_index(self.nodes, self._parent, [not self._specs[n].children for n in self.nodes])

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The tree as a networkx DiGraph (edges parent -> child) with node attributes ``name``,
        ``aliases``, ``source_aliases``, ``codes`` and ``metadata``. Treat it as read-only."""
        import networkx as nx

        g = nx.DiGraph(name=self.name)
        for n, s in self._specs.items():
            g.add_node(
                n,
                name=s.name,
                aliases=list(s.aliases),
                source_aliases={k: list(v) for k, v in s.source_aliases.items()},
                codes=dict(s.codes),
                metadata=dict(s.metadata),
            )
        g.add_edges_from((p, n) for n, p in self._parent.items() if p is not None)
        return g
