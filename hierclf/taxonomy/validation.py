"""Strict validation of taxonomy files: small named checks, each returning every problem it finds.

The checks run on the parsed YAML (positions kept), so that one run reports all problems of a file
together, each with file, line and column: the schema (types, unknown fields, id syntax, empty names), then
the tree rules the schema cannot express (unique ids, alias collisions, source-scoped alias collisions,
dataset codes, single-child nodes, a tree with no leaves).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hierclf.errors import Problem
from hierclf.io.problems import ValidationIssue, dotted, kind_of, problems_from_validation_error
from hierclf.io.yaml_files import LocatedYAML, PathKey, load_located, load_located_file
from hierclf.taxonomy.format import TaxonomyFile

_ID_RULE = (
    "expected snake_case: lowercase letters and digits in words joined by single '_', starting with a letter"
)


def normalise_name(name: str) -> str:
    """The form in which names are compared: case-folded, inner white space collapsed.

    >>> normalise_name("  Melanoma,   NOS ")
    'melanoma, nos'
    """
    return " ".join(name.split()).casefold()


@dataclass
class ValidationReport:
    """The outcome of validating one file: every problem, and the parsed file when it has no errors."""

    file: str
    problems: list[Problem] = field(default_factory=list)
    spec: TaxonomyFile | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_file(path: str | Path, strict: bool = False) -> ValidationReport:
    """Validate a taxonomy file; with ``strict``, warnings count as errors."""
    return validate_document(load_located_file(path), strict=strict)


def validate_text(text: str, file: str = "<string>", strict: bool = False) -> ValidationReport:
    """Validate taxonomy YAML given as text."""
    return validate_document(load_located(text, file), strict=strict)


def validate_document(doc: LocatedYAML, strict: bool = False) -> ValidationReport:
    report = ValidationReport(file=doc.file, problems=list(doc.problems))
    if any(p.code in ("yaml-syntax", "yaml-size", "file") for p in doc.problems):
        return report
    if doc.data is None or doc.data == {}:
        report.problems.append(
            doc.problem((), "the file is empty: expected a mapping with 'name' and 'root'", code="empty")
        )
        return report
    if not isinstance(doc.data, dict):
        report.problems.append(
            doc.problem(
                (),
                f"expected a mapping with 'name' and 'root' at the top, got {kind_of(doc.data)}",
                code="schema",
            )
        )
        return report
    report.problems += check_schema(doc)
    checks = (
        check_unique_ids,
        check_aliases,
        check_source_aliases,
        check_codes,
        check_has_leaves,
        check_single_child,
    )
    for check in checks:
        report.problems += check(doc)
    if strict:
        report.problems = [_as_error(p) for p in report.problems]
    report.problems.sort(key=lambda p: (p.line or 0, p.column or 0))
    if report.ok:
        report.spec = TaxonomyFile.model_validate(doc.data)
    return report


def _as_error(p: Problem) -> Problem:
    if p.severity == "error":
        return p
    return Problem(p.message + " (an error with --strict)", p.file, p.line, p.column, "error", p.code, p.node)


# --- walking the raw tree -------------------------------------------------------------------------------


def iter_raw_nodes(doc: LocatedYAML) -> Iterator[tuple[PathKey, dict[str, Any]]]:
    """Every node mapping under ``root`` (depth-first, pre-order) with its path; tolerant of bad shapes."""
    root = doc.data.get("root") if isinstance(doc.data, dict) else None
    stack: list[tuple[PathKey, Any]] = [(("root",), root)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield path, node
        children = node.get("children")
        if isinstance(children, list):
            stack.extend(((*path, "children", i), c) for i, c in reversed(list(enumerate(children))))


def _node_id(node: Any) -> str | None:
    """The id of a raw node, or ``None`` when it has none (or is not a mapping at all)."""
    value = node.get("id") if isinstance(node, dict) else None
    return value if isinstance(value, str) else None


def _node_path(loc: PathKey) -> PathKey:
    """The longest prefix of ``loc`` that is the path of a tree node: root, then ('children', i) pairs."""
    if not loc or loc[0] != "root":
        return ()
    end = 1
    while end + 1 < len(loc) and loc[end] == "children" and isinstance(loc[end + 1], int):
        end += 2
    return tuple(loc[:end])


def _get(data: Any, path: PathKey) -> Any:
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


# --- the checks ----------------------------------------------------------------------------------------


def check_schema(doc: LocatedYAML) -> list[Problem]:
    """Types, required and unknown fields, id syntax and empty names, from the pydantic model."""
    try:
        TaxonomyFile.model_validate(doc.data)
    except ValidationError as exc:

        def describe(loc: PathKey) -> tuple[str, PathKey]:
            node_path = _node_path(loc)
            node_id = _node_id(_get(doc.data, node_path) or {}) if node_path else None
            where = f"node {node_id!r}" if node_id else dotted(node_path) or "top level"
            return where, loc[len(node_path) :]

        def node(loc: PathKey) -> str | None:
            node_path = _node_path(loc)
            return _node_id(_get(doc.data, node_path) or {}) if node_path else None

        return problems_from_validation_error(
            exc, TaxonomyFile, doc, code="schema", describe=describe, explain=_explain, node=node
        )
    return []


def _explain(err: ValidationIssue) -> str | None:
    """The taxonomy format's own words for id syntax, empty names, dataset codes and the format version."""
    node_path = _node_path(err.loc)
    inner = err.loc[len(node_path) :]
    fieldname = str(inner[0]) if inner else ""
    value = err.value
    if err.kind == "string_pattern_mismatch":
        if err.key_error and fieldname == "codes":
            return f"invalid dataset name {value!r} in codes: {_ID_RULE}"
        if err.key_error and fieldname == "source_aliases":
            return f"invalid source name {value!r} in source_aliases: {_ID_RULE}"
        if not node_path and fieldname == "name":
            return f"invalid taxonomy name {value!r}: {_ID_RULE}"
        if fieldname == "id":
            return f"invalid id {value!r}: {_ID_RULE}"
        if fieldname == "name":
            return "empty name: every node needs a display name"
        if fieldname in ("aliases", "source_aliases"):
            return "empty alias: remove it or write the other name"
    if err.kind == "control_character" and fieldname in ("name", "aliases", "source_aliases"):
        what = "name" if fieldname == "name" else "alias"
        return f"{what} {value!r} {err.message}"
    if fieldname == "codes" and err.kind in ("int_type", "greater_than_equal"):
        dataset = inner[1] if len(inner) > 1 else "?"
        return f"code for dataset {dataset!r} must be a whole number >= 0, got {value!r}"
    if not node_path and fieldname == "format_version":
        return f"format_version: this hierclf reads format version 1, got {value!r}"
    return None


def check_unique_ids(doc: LocatedYAML) -> list[Problem]:
    """Each node id appears once in the whole tree."""
    first: dict[str, PathKey] = {}
    problems = []
    for path, node in iter_raw_nodes(doc):
        node_id = _node_id(node)
        if node_id is None:
            continue
        if node_id in first:
            line = doc.position(first[node_id])[0]
            problems.append(
                doc.problem(
                    (*path, "id"),
                    f"duplicate node id {node_id!r} (first defined at "
                    f"line {line}); ids must be unique in the whole tree",
                    code="duplicate-id",
                    node=node_id,
                )
            )
        else:
            first[node_id] = path
    return problems


def check_aliases(doc: LocatedYAML) -> list[Problem]:
    """An alias names one node only and never shadows another node's id (compared case-insensitively); an
    alias equal to another node's display name is a warning (``resolve`` would pick the alias's node)."""
    nodes = list(iter_raw_nodes(doc))
    owner_of_id = {normalise_name(ident): ident for _, n in nodes if (ident := _node_id(n))}
    named: dict[str, list[str]] = {}
    for _, n in nodes:
        if isinstance(n.get("name"), str) and (ident := _node_id(n)):
            named.setdefault(normalise_name(n["name"]), []).append(ident)
    seen: dict[str, tuple[str, int | None]] = {}
    problems = []
    for path, node in nodes:
        node_id = _node_id(node)
        aliases = node.get("aliases")
        if node_id is None or not isinstance(aliases, list):
            continue
        for i, alias in enumerate(aliases):
            if not isinstance(alias, str) or not alias.strip():
                continue  # reported by the schema check
            key = normalise_name(alias)
            alias_path = (*path, "aliases", i)
            shadowed = owner_of_id.get(key)
            if shadowed is not None and shadowed != node_id:
                problems.append(
                    doc.problem(
                        alias_path,
                        f"alias {alias!r} of node {node_id!r} shadows the id of node {shadowed!r}",
                        code="alias-shadows-id",
                        node=node_id,
                    )
                )
            elif key in seen and seen[key][0] != node_id:
                other, line = seen[key]
                problems.append(
                    doc.problem(
                        alias_path,
                        f"alias {alias!r} names two nodes: {other!r} (line {line}) and {node_id!r}",
                        code="alias-conflict",
                        node=node_id,
                    )
                )
            else:
                seen.setdefault(key, (node_id, doc.position(alias_path)[0]))
                others = [o for o in named.get(key, []) if o != node_id]
                if others:
                    problems.append(
                        doc.problem(
                            alias_path,
                            f"alias {alias!r} of node {node_id!r} is the display name of node "
                            f"{others[0]!r}; resolving {alias!r} gives {node_id!r}, not {others[0]!r}",
                            severity="warning",
                            code="alias-shadows-name",
                            node=node_id,
                        )
                    )
    return problems


def _source_alias_entries(doc: LocatedYAML) -> Iterator[tuple[str, str, str, PathKey]]:
    """``(source, alias, node id, path of the alias)`` of every well-formed source alias, in file order."""
    for path, node in iter_raw_nodes(doc):
        node_id = _node_id(node)
        scoped = node.get("source_aliases")
        if node_id is None or not isinstance(scoped, dict):
            continue
        for source, aliases in scoped.items():
            if not isinstance(source, str) or not isinstance(aliases, list):
                continue  # reported by the schema check
            for i, alias in enumerate(aliases):
                if isinstance(alias, str) and alias.strip():
                    yield source, alias, node_id, (*path, "source_aliases", source, i)


def check_source_aliases(doc: LocatedYAML) -> list[Problem]:
    """Inside one source's scope an alias names one node only, and no source alias shadows another node's
    id (compared case-insensitively). A source alias may repeat a global alias or display name of another
    node: in its source it wins, which is what the scope is for (docs/taxonomy-format.md)."""
    owner_of_id = {normalise_name(ident): ident for _, n in iter_raw_nodes(doc) if (ident := _node_id(n))}
    seen: dict[tuple[str, str], tuple[str, int | None]] = {}
    problems = []
    for source, alias, node_id, alias_path in _source_alias_entries(doc):
        key = normalise_name(alias)
        shadowed = owner_of_id.get(key)
        if shadowed is not None and shadowed != node_id:
            problems.append(
                doc.problem(
                    alias_path,
                    f"source alias {alias!r} (source {source!r}) of node {node_id!r} shadows the id of node "
                    f"{shadowed!r}",
                    code="alias-shadows-id",
                    node=node_id,
                )
            )
        elif (source, key) in seen and seen[(source, key)][0] != node_id:
            other, line = seen[(source, key)]
            problems.append(
                doc.problem(
                    alias_path,
                    f"source alias {alias!r} names two nodes in source {source!r}: {other!r} (line {line}) "
                    f"and {node_id!r}",
                    code="source-alias-conflict",
                    node=node_id,
                )
            )
        else:
            seen.setdefault((source, key), (node_id, doc.position(alias_path)[0]))
    return problems


def check_codes(doc: LocatedYAML) -> list[Problem]:
    """Per dataset, codes are 0..n-1 and no two nodes share a code."""
    by_dataset: dict[str, dict[int, list[tuple[str, PathKey]]]] = {}
    for path, node in iter_raw_nodes(doc):
        codes = node.get("codes")
        if not isinstance(codes, dict):
            continue
        for dataset, code in codes.items():
            valid_code = isinstance(code, int) and not isinstance(code, bool) and code >= 0
            if isinstance(dataset, str) and valid_code:
                by_dataset.setdefault(dataset, {}).setdefault(code, []).append(
                    (_node_id(node) or dotted(path), (*path, "codes", dataset))
                )
    problems = []
    for dataset, table in by_dataset.items():
        for code, owners in sorted(table.items()):
            if len(owners) > 1:
                names = ", ".join(repr(o[0]) for o in owners)
                problems.append(
                    doc.problem(
                        owners[1][1],
                        f"dataset {dataset!r}: code {code} maps "
                        f"{len(owners)} nodes ({names}); each code must name one node",
                        code="code-conflict",
                        node=owners[1][0],
                    )
                )
        problems += _code_gaps(doc, dataset, table)
    return problems


def _code_gaps(doc: LocatedYAML, dataset: str, table: dict[int, list[tuple[str, PathKey]]]) -> list[Problem]:
    """Codes 0..max that no node holds: the first ten, found without building a range of ``max`` numbers
    (one code of 100000000000 would otherwise build a set that size)."""
    top = max(table)
    if top < len(table):
        return []
    present = sorted(table)
    missing: list[int] = []
    expected = 0
    for code in present:  # walk the gaps between the codes present (a loop over nodes with codes)
        missing += range(expected, min(code, expected + 10 - len(missing)))
        expected = code + 1
        if len(missing) >= 10:
            break
    shown = ", ".join(map(str, missing[:10])) + (", ..." if top + 1 - len(table) > 10 else "")
    message = f"dataset {dataset!r}: codes must be contiguous from 0 to {top}; missing {shown}"
    return [doc.problem(table[min(table)][0][1], message, code="code-gap")]


def check_has_leaves(doc: LocatedYAML) -> list[Problem]:
    """A classifier needs a tree with at least two leaves: the root must have children."""
    root = doc.data.get("root") if isinstance(doc.data, dict) else None
    if isinstance(root, dict) and not root.get("children"):
        rid = _node_id(root)
        return [
            doc.problem(
                ("root",),
                f"the tree has no leaves: root {rid!r} has no children (a classifier "
                "needs at least two conditions)",
                code="no-leaves",
                node=rid,
            )
        ]
    return []


#: Node metadata key acknowledging a deliberate single-child node (e.g. a diagnosis with one named subtype in
#: a source taxonomy that must be kept exactly); ``true`` silences the single-child warning for that node.
SINGLE_CHILD_OK = "single_child_ok"


def check_single_child(doc: LocatedYAML) -> list[Problem]:
    """An internal node with a single child adds a level the roll-up cannot distinguish (warning).

    Nodes whose metadata says ``single_child_ok: true`` are acknowledged and not reported.
    """
    problems = []
    for path, node in iter_raw_nodes(doc):
        children = node.get("children")
        metadata = node.get("metadata")
        if isinstance(metadata, dict) and metadata.get(SINGLE_CHILD_OK) is True:
            continue
        if isinstance(children, list) and len(children) == 1:
            node_id = _node_id(node)
            child = _node_id(children[0]) if isinstance(children[0], dict) else None
            problems.append(
                doc.problem(
                    path,
                    f"node {node_id!r} has a single child{f' {child!r}' if child else ''}: both always "
                    "get the same probability; merge them, add the missing siblings, or "
                    f"acknowledge it with 'metadata: {{{SINGLE_CHILD_OK}: true}}'",
                    severity="warning",
                    code="single-child",
                    node=node_id,
                )
            )
    return problems
