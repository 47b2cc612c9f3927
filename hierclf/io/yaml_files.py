"""Safe YAML reading that keeps positions and refuses duplicate keys.

PyYAML's ``safe_load`` silently keeps the last of two equal mapping keys and forgets where every value
stood. Taxonomy and protocol validation need both: this module composes the document with a
``yaml.SafeLoader`` subclass (never the unsafe loader) and builds plain Python values while recording the
line and column of every value by its path from the document root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hierclf.errors import Problem

PathKey = tuple[str | int, ...]

_MAX_DEPTH = 500


class _SafeLoader(yaml.SafeLoader):
    """The safe loader; a subclass so that nothing we do changes PyYAML's global SafeLoader."""


_CSafeLoader = getattr(yaml, "CSafeLoader", None)
_FastLoader: type | None = (
    type("_FastLoader", (_CSafeLoader,), {"__doc__": "libyaml safe loader: same nodes and marks, faster"})
    if _CSafeLoader is not None
    else None
)


@dataclass
class LocatedYAML:
    """A YAML document as plain Python values, with the position of every value and the problems found."""

    data: Any
    file: str
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def position(self, path: PathKey) -> tuple[int | None, int | None]:
        """Line and column (1-based) of the value at ``path``, or of its nearest recorded ancestor."""
        path = tuple(path)
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (None, None))

    def problem(self, path: PathKey, message: str, **kw: Any) -> Problem:
        line, column = self.position(path)
        return Problem(message=message, file=self.file, line=line, column=column, **kw)


def _line_col(mark: yaml.Mark | None) -> tuple[int | None, int | None]:
    if mark is None:
        return None, None
    return mark.line + 1, mark.column + 1


def load_located(text: str, file: str = "<string>") -> LocatedYAML:
    """Parse ``text``; syntax errors and duplicate keys become problems instead of exceptions.

    >>> doc = load_located("a: 1\\nb:\\n  c: 2\\na: 3\\n", "x.yaml")
    >>> doc.data, doc.position(("b", "c"))
    ({'a': 3, 'b': {'c': 2}}, (3, 6))
    >>> print(doc.problems[0])
    x.yaml:4:1: error: duplicate key 'a' (first at line 1); YAML would silently keep only the last value
    """
    if _FastLoader is not None:
        doc = _load_with(_FastLoader, text, file)
        if not any(p.code == "yaml-syntax" for p in doc.problems):
            return doc
    # pure-Python parser: the reference, and the one whose syntax-error messages we report everywhere
    return _load_with(_SafeLoader, text, file)


def _load_with(loader_class: type, text: str, file: str) -> LocatedYAML:
    doc = LocatedYAML(data=None, file=file)
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            doc.data = _build(loader, root, (), doc, 0)
    except yaml.MarkedYAMLError as exc:
        line, column = _line_col(exc.problem_mark or exc.context_mark)
        what = str(exc.problem or exc.context or "cannot parse")
        if exc.context and exc.problem:
            context_line, context_column = _line_col(exc.context_mark)
            where = "" if context_line is None else f" at line {context_line}, column {context_column}"
            what += f" ({exc.context}{where})"
        doc.problems.append(Problem(f"malformed YAML: {what}", file, line, column, code="yaml-syntax"))
        doc.data = None
    except yaml.YAMLError as exc:  # pragma: no cover - reader errors without marks
        doc.problems.append(Problem(f"malformed YAML: {exc}", file, code="yaml-syntax"))
        doc.data = None
    finally:
        loader.dispose()
    return doc


def load_located_file(path: str | Path) -> LocatedYAML:
    """Read and parse a YAML file (UTF-8). A missing or unreadable file is reported as a problem."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return LocatedYAML(None, name, problems=[Problem("file not found", name, code="file")])
    except (OSError, UnicodeDecodeError) as exc:
        return LocatedYAML(None, name, problems=[Problem(f"cannot read file: {exc}", name, code="file")])
    return load_located(text, name)


def _build(loader: Any, node: yaml.Node, path: PathKey, doc: LocatedYAML, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise yaml.MarkedYAMLError(
            problem="document nested too deeply (recursive anchor?)", problem_mark=node.start_mark
        )
    doc.positions[path] = _line_col(node.start_mark)  # type: ignore[assignment]
    if isinstance(node, yaml.MappingNode):
        if not hasattr(node, "_n_merged"):  # an anchored node can be visited again through an alias
            explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
            loader.flatten_mapping(node)  # resolves '<<' merge keys the way safe_load does
            node._n_merged = len(node.value) - explicit  # type: ignore[attr-defined]
        n_merged = node._n_merged  # type: ignore[attr-defined]
        out: dict[Any, Any] = {}
        first_seen: dict[Any, int | None] = {}
        for i, (key_node, value_node) in enumerate(node.value):
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                line, column = _line_col(key_node.start_mark)
                doc.problems.append(
                    Problem("a mapping key must be a plain value", doc.file, line, column, code="yaml-key")
                )
                continue
            if i < n_merged:  # merged keys may repeat and be overridden by the mapping's own keys
                out[key] = _build(loader, value_node, (*path, key), doc, depth + 1)
                continue
            if key in first_seen:
                line, column = _line_col(key_node.start_mark)
                doc.problems.append(
                    Problem(
                        f"duplicate key {key!r} (first at line {first_seen[key]}); "
                        "YAML would silently keep only the last value",
                        doc.file,
                        line,
                        column,
                        code="duplicate-key",
                    )
                )
            first_seen[key] = _line_col(key_node.start_mark)[0]
            out[key] = _build(loader, value_node, (*path, key), doc, depth + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), doc, depth + 1) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
