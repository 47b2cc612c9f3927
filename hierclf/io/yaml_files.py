"""Safe YAML reading that keeps positions and refuses duplicate keys.

PyYAML's ``safe_load`` silently keeps the last of two equal mapping keys and forgets where every value
stood. Taxonomy and protocol validation need both: this module composes the document with a
``yaml.SafeLoader`` subclass (never the unsafe loader) and builds plain Python values while recording the
line and column of every value by its path from the document root.

A small file must not exhaust memory or time, and no value may crash the loader: every problem becomes a
positioned :class:`~hierclf.errors.Problem`, never an exception. Aliases are expanded only up to
:data:`MAX_VALUES` values in all (a kilobyte "billion laughs" document would otherwise expand to billions),
nesting stops at :data:`_MAX_DEPTH` levels, and scalars that cannot be constructed (``!!int abc``, an invalid
date, an integer of thousands of digits) and control characters are reported where they stand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hierclf.errors import FileFormatError, Problem
from hierclf.io.text_files import read_text_file

PathKey = tuple[str | int, ...]

#: the largest YAML file hierclf reads (taxonomies, protocols and configurations are kilobytes)
MAX_YAML_BYTES = 32 * 1024 * 1024

_MAX_DEPTH = 500
#: the most values one document may build (aliases included): the shipped ISIC tree builds about 3,000
MAX_VALUES = 1_000_000


class _SafeLoader(yaml.SafeLoader):
    """The safe loader; a subclass so that nothing we do changes PyYAML's global SafeLoader."""


_CSafeLoader = getattr(yaml, "CSafeLoader", None)
_FastLoader: type | None = (
    type("_FastLoader", (_CSafeLoader,), {"__doc__": "libyaml safe loader: same nodes and marks, faster"})
    if _CSafeLoader is not None
    else None
)


_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _Refused(Exception):
    """A document refused while it is built (too many values): carries the problem's mark."""

    def __init__(self, message: str, mark: yaml.Mark | None) -> None:
        super().__init__(message)
        self.message, self.mark = message, mark


@dataclass
class LocatedYAML:
    """A YAML document as plain Python values, with the position of every value and the problems found."""

    data: Any
    file: str
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    budget: int = field(default=MAX_VALUES, repr=False)

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
    """Parse ``text``; syntax errors, duplicate keys and unreadable values become problems, not exceptions.

    >>> doc = load_located("a: 1\\nb:\\n  c: 2\\na: 3\\n", "x.yaml")
    >>> doc.data, doc.position(("b", "c"))
    ({'a': 3, 'b': {'c': 2}}, (3, 6))
    >>> print(doc.problems[0])
    x.yaml:4:1: error: duplicate key 'a' (first at line 1); YAML would silently keep only the last value
    >>> print(load_located("x: !!int abc", "y.yaml").problems[0])  # doctest: +ELLIPSIS
    y.yaml:1:4: error: malformed YAML: cannot read value 'abc' (tag !!int): invalid literal for int() with...
    """
    if _FastLoader is not None:
        doc = _load_with(_FastLoader, text, file)
        if not any(p.code == "yaml-syntax" for p in doc.problems) or _too_deep(doc):
            return doc
    # pure-Python parser: the reference, and the one whose syntax-error messages we report everywhere
    return _load_with(_SafeLoader, text, file)


def _too_deep(doc: LocatedYAML) -> bool:
    """libyaml refused the nesting: the pure-Python parser would only recurse until Python's limit."""
    return any("nesting depth" in p.message or "too deeply" in p.message for p in doc.problems)


def _syntax_problem(exc: yaml.MarkedYAMLError, file: str) -> Problem:
    line, column = _line_col(exc.problem_mark or exc.context_mark)
    what = str(exc.problem or exc.context or "cannot parse")
    if exc.context and exc.problem:
        context_line, context_column = _line_col(exc.context_mark)
        where = "" if context_line is None else f" at line {context_line}, column {context_column}"
        what += f" ({exc.context}{where})"
    return Problem(f"malformed YAML: {what}", file, line, column, code="yaml-syntax")


def _reader_problem(exc: yaml.YAMLError, text: str, file: str) -> Problem:
    """A reader error (a control character, a bad byte): its position is an offset into the text."""
    position = getattr(exc, "position", None)
    if position is None:
        return Problem(f"malformed YAML: {exc}", file, code="yaml-syntax")
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    char = getattr(exc, "character", None)  # the code point (an int; a str in some PyYAML versions)
    code = ord(char) if isinstance(char, str) and len(char) == 1 else char
    what = f"character {code:#06x} is not allowed in YAML" if isinstance(code, int) else str(exc)
    return Problem(f"malformed YAML: {what}", file, line, column, code="yaml-syntax")


def _load_with(loader_class: type, text: str, file: str) -> LocatedYAML:
    doc = LocatedYAML(data=None, file=file, budget=MAX_VALUES)
    loader = None
    try:
        loader = loader_class(text)  # the pure-Python reader checks the characters here
        root = loader.get_single_node()
        if root is not None:
            _check_expansion(root)
            doc.data = _build(loader, root, (), doc, 0)
    except yaml.MarkedYAMLError as exc:
        doc.problems.append(_syntax_problem(exc, file))
        doc.data = None
    except yaml.YAMLError as exc:  # reader errors: positions are offsets
        doc.problems.append(_reader_problem(exc, text, file))
        doc.data = None
    except RecursionError:
        message = "malformed YAML: the document is nested too deeply for the parser"
        doc.problems.append(Problem(message, file, code="yaml-syntax"))
        doc.data = None
    except _Refused as exc:
        line, column = _line_col(exc.mark)
        doc.problems.append(Problem(exc.message, file, line, column, code="yaml-size"))
        doc.data = None
    finally:
        if loader is not None:
            loader.dispose()
    return doc


def _node_children(node: yaml.Node) -> list[yaml.Node]:
    """The values inside a collection node (a mapping's keys are plain scalars, not counted as values)."""
    if isinstance(node, yaml.MappingNode):
        return [value for _, value in node.value]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse, before building anything, a document whose aliases expand it past :data:`MAX_VALUES`.

    The composed document is a graph: an alias is the very node of its anchor, so the expanded size of every
    node is counted once (memoised), in time proportional to the text. A recursive alias is refused too.
    The position given is that of the repeated value that expands the most.
    """
    size: dict[int, int] = {}
    repeated: dict[int, tuple[int, yaml.Node]] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, closing = stack.pop()
        key = id(node)
        if closing:
            open_nodes.discard(key)
            size[key] = min(MAX_VALUES + 1, 1 + sum(size[id(c)] for c in _node_children(node)))
            continue
        if key in size:
            refs, _ = repeated.get(key, (1, node))
            repeated[key] = (refs + 1, node)
            continue
        if key in open_nodes:
            raise _Refused(
                "the document refers to itself through an alias (a recursive anchor)", node.start_mark
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(_node_children(node)))
    if size[id(root)] > MAX_VALUES:
        worst = max(repeated.values(), key=lambda r: r[0] * size[id(r[1])], default=(1, root))[1]
        held = size[id(worst)]
        held_text = f"more than {MAX_VALUES:,}" if held > MAX_VALUES else f"{held:,}"
        raise _Refused(
            f"the document expands to more than {MAX_VALUES:,} values through aliases (the value here is "
            f"repeated and holds {held_text} values by itself)",
            worst.start_mark,
        )


def load_located_file(path: str | Path, *, what: str = "YAML") -> LocatedYAML:
    """Read and parse a YAML file (UTF-8). A missing, special, huge or non-UTF-8 file is a problem."""
    try:
        text = read_text_file(path, what=what, encoding="utf-8", max_bytes=MAX_YAML_BYTES)
    except FileFormatError as exc:
        return LocatedYAML(None, str(path), problems=list(exc.problems))
    return load_located(text, str(path))


def _scalar(loader: Any, node: yaml.Node) -> Any:
    """A scalar (or other plain value) constructed by the safe loader; a value its constructor refuses
    (``!!int abc``, the 30th of February, thousands of digits) raises a positioned YAML error."""
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, OverflowError, TypeError) as exc:
        shown = node.value if isinstance(node.value, str) else "value"
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
        raise yaml.MarkedYAMLError(
            problem=f"cannot read value {shown!r} (tag {tag}): {exc}", problem_mark=node.start_mark
        ) from None


def _build(loader: Any, node: yaml.Node, path: PathKey, doc: LocatedYAML, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise yaml.MarkedYAMLError(
            problem="document nested too deeply (recursive anchor?)", problem_mark=node.start_mark
        )
    doc.budget -= 1
    if doc.budget < 0:  # an alias repeats its anchor's whole value: a few lines can mean billions
        raise _Refused(
            f"the document expands to more than {MAX_VALUES:,} values (aliases repeating large values?)",
            node.start_mark,
        )
    doc.positions[path] = _line_col(node.start_mark)  # type: ignore[assignment]
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _COLLECTION_TAGS:
        # a safe loader builds only plain mappings and lists: an explicit tag would be silently dropped
        raise yaml.MarkedYAMLError(
            problem=f"unsupported tag {node.tag!r} on a collection", problem_mark=node.start_mark
        )
    if isinstance(node, yaml.MappingNode):
        if not hasattr(node, "_n_merged"):  # an anchored node can be visited again through an alias
            explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
            loader.flatten_mapping(node)  # resolves '<<' merge keys the way safe_load does
            node._n_merged = len(node.value) - explicit  # type: ignore[attr-defined]
        n_merged = node._n_merged  # type: ignore[attr-defined]
        out: dict[Any, Any] = {}
        first_seen: dict[Any, int | None] = {}
        for i, (key_node, value_node) in enumerate(node.value):
            key = _scalar(loader, key_node)
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
    return _scalar(loader, node)
