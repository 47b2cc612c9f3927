"""pydantic's validation errors as positioned :class:`~hierclf.errors.Problem` records: the one translator.

Every hierclf file format (taxonomies, protocols, training configurations) is a pydantic model read from YAML
with positions (:mod:`hierclf.io.yaml_files`). :func:`problems_from_validation_error` turns each pydantic
error into one line ``where: what`` at the file, line and column of the offending value:

* ``where`` names the place: the dotted path of the value (``data.csv.train``, ``tasks[0].name``) or, for a
  missing or unknown field, of the mapping that holds it (``top level`` at the top). A format may describe
  places in its own words instead (a taxonomy says ``node 'melanoma'``) through ``describe``.
* ``what`` says what was expected and what was found, in the same words in every format; an unknown field
  lists the fields of the model at that place (read from the model itself, never from a copied table) and
  the closest one. A format may word particular errors itself through ``explain``.

Example:
    >>> from pydantic import BaseModel, ConfigDict, Field, ValidationError
    >>> class Inner(BaseModel):
    ...     model_config = ConfigDict(extra="forbid")
    ...     size: int = Field(1, ge=1)
    >>> class Outer(BaseModel):
    ...     model_config = ConfigDict(extra="forbid")
    ...     inner: Inner = Inner()
    >>> try:
    ...     Outer.model_validate({"inner": {"size": 0, "sise": 2}})
    ... except ValidationError as exc:
    ...     print(*problems_from_validation_error(exc, Outer, file="x.yaml"), sep="\\n")
    x.yaml: error: inner.size: must be >= 1, got 0
    x.yaml: error: inner: unknown field 'sise' (expected one of size); did you mean 'size'?
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from hierclf.errors import Problem, did_you_mean
from hierclf.io.yaml_files import LocatedYAML, PathKey

__all__ = [
    "ValidationIssue",
    "dotted",
    "fields_at",
    "kind_of",
    "model_at",
    "problems_from_validation_error",
]

#: a format's own words for a place: ``loc -> (where, rest of loc below the described place)``
Describe = Callable[[PathKey], tuple[str, PathKey]]
#: a format's own words for an error (``None``: the shared wording)
Explain = Callable[["ValidationIssue"], "str | None"]

_COMPARISONS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "path_type": "a file path (text)",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def dotted(path: PathKey) -> str:
    """A path as people write it: ``tasks[0].positive[1]``.

    >>> dotted(("tasks", 0, "positive", 1))
    'tasks[0].positive[1]'
    """
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def kind_of(value: Any) -> str:
    """A value's kind in a reader's words (``a mapping``, ``text``, ``a number``)."""
    names = {
        dict: "a mapping",
        list: "a list",
        str: "text",
        bool: "true/false",
        int: "a number",
        float: "a number",
        type(None): "nothing",
    }
    return names.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class ValidationIssue:
    """One pydantic error, read: where it is and what kind it is.

    Attributes:
        loc: path of the offending value (for an error about a mapping key: of the mapping).
        field_name: the name of the field the error is about (``""`` at the top).
        container: path of the mapping that holds ``field``.
        kind: pydantic's error type (``missing``, ``extra_forbidden``, ``greater_than``, ...).
        value: the offending input.
        key_error: the error is about a mapping key, not a value.
        ctx: pydantic's context (limits, expected literals).
        message: pydantic's own message.
    """

    loc: PathKey
    field_name: str
    container: PathKey
    kind: str
    value: Any
    key_error: bool = False
    ctx: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""

    @classmethod
    def read(cls, err: Mapping[str, Any]) -> ValidationIssue:
        loc: PathKey = tuple(err["loc"])
        key_error = bool(loc) and loc[-1] == "[key]"
        if key_error:
            loc = loc[:-1]
        names = [i for i, k in enumerate(loc) if isinstance(k, str)]
        last = names[-1] if names else None
        name = str(loc[last]) if last is not None else ""
        container = loc[:last] if last is not None else loc
        return cls(
            loc,
            name,
            container,
            str(err["type"]),
            err.get("input"),
            key_error,
            dict(err.get("ctx") or {}),
            str(err.get("msg", "")),
        )


def _unwrap(tp: Any) -> list[Any]:
    """The types a value of annotation ``tp`` can have (through ``Annotated`` and unions)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [t for arg in get_args(tp) for t in _unwrap(arg)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return get_origin(tp) is None and isinstance(tp, type) and issubclass(tp, BaseModel)


def _step(tp: Any, key: str | int) -> Any:
    """The annotation of the value at ``key`` inside a value of annotation ``tp`` (``None``: unknown)."""
    for option in _unwrap(tp):
        origin, args = get_origin(option), get_args(option)
        if origin in (list, tuple, Sequence):
            if isinstance(key, int) and args:
                return args[0]
        elif origin in (dict, Mapping):
            if args:
                return args[1]
        elif _is_model(option) and isinstance(key, str) and key in option.model_fields:
            return option.model_fields[key].annotation
    return None


def model_at(model: type[BaseModel], path: PathKey) -> type[BaseModel] | None:
    """The pydantic model of the value at ``path`` inside a ``model`` document, or ``None``.

    The path walks fields of models, items of lists and values of mappings, through optional and union
    annotations (``tasks[0]`` of a protocol is a ``TaskSpec``).
    """
    tp: Any = model
    for key in path:
        tp = _step(tp, key)
        if tp is None:
            return None
    models = [t for t in _unwrap(tp) if _is_model(t)]
    return models[0] if models else None


def fields_at(model: type[BaseModel], path: PathKey) -> tuple[str, ...]:
    """The field names of the model at ``path`` (``()`` where the place holds no model)."""
    found = model_at(model, path)
    return tuple(found.model_fields) if found is not None else ()


def _hint(name: str, options: Sequence[str]) -> str:
    close = did_you_mean(name, options)
    return f"; did you mean {close[0]!r}?" if close else ""


def shared_wording(err: ValidationIssue, model: type[BaseModel]) -> str:
    """What an error says in every format (the ``what`` of ``where: what``)."""
    kind, value = err.kind, err.value
    if kind == "missing":
        return f"missing required field {err.field_name!r}"
    if kind == "extra_forbidden":
        allowed = fields_at(model, err.container)
        hint = _hint(err.field_name, allowed)
        return f"unknown field {err.field_name!r} (expected one of {', '.join(allowed)}){hint}"
    if kind in _COMPARISONS:
        limit = next(iter(err.ctx.values()), "?")
        return f"must be {_COMPARISONS[kind]} {limit}, got {value!r}"
    if kind == "literal_error":
        expected = str(err.ctx.get("expected", ""))
        options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",") if o.strip()]
        hint = _hint(value, options) if isinstance(value, str) else ""
        return f"expected {expected}, got {value!r}{hint}"
    if kind == "value_error":
        return err.message.removeprefix("Value error, ")
    if kind == "finite_number":
        return f"expected a finite number, got {value!r}"
    if kind in ("list_type", "dict_type", "model_type", "model_attributes_type"):
        return f"expected {_TYPE_WORDS[kind]}, got {kind_of(value)}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {kind_of(value)} {value!r}"
    return f"{err.message} (got {value!r})"


def _default_describe(path: PathKey) -> tuple[str, PathKey]:
    return dotted(path) or "top level", ()


def _line(err: ValidationIssue, model: type[BaseModel], describe: Describe, explain: Explain | None) -> str:
    place = err.container if err.kind in ("missing", "extra_forbidden") else err.loc
    where, rest = describe(place)
    own = explain(err) if explain is not None else None
    if own is not None:
        return f"{where}: {own}"
    what = shared_wording(err, model)
    return f"{where}: {dotted(rest)}: {what}" if rest else f"{where}: {what}"


def problems_from_validation_error(
    exc: ValidationError | Sequence[Mapping[str, Any]],
    model: type[BaseModel],
    doc: LocatedYAML | None = None,
    *,
    file: str | None = None,
    code: str = "schema",
    describe: Describe | None = None,
    explain: Explain | None = None,
    node: Callable[[PathKey], str | None] | None = None,
) -> list[Problem]:
    """Every error of ``exc`` as a :class:`Problem` at its position, sorted by position.

    Args:
        exc: the error of ``model.model_validate(doc.data)``, or its ``errors()`` (edited, e.g. locations
            without a union's tags).
        model: the model that was validated (unknown fields list the fields of the model at their place).
        doc: the located YAML document (positions); ``None`` gives problems without positions.
        file: the file name when there is no ``doc``.
        code: the problems' code.
        describe: a format's own words for a place (see :data:`Describe`); default: the dotted path.
        explain: a format's own words for some errors (see :data:`Explain`).
        node: the node id a problem concerns (taxonomies), from the error's path.
    """
    describe = describe or _default_describe
    problems = []
    for raw in exc.errors() if isinstance(exc, ValidationError) else exc:
        err = ValidationIssue.read(raw)
        message = _line(err, model, describe, explain)
        node_id = node(err.loc) if node is not None else None
        if doc is not None:
            problems.append(doc.problem(err.loc, message, code=code, node=node_id))
        else:
            problems.append(Problem(message, file, code=code, node=node_id))
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))
