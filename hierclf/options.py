"""Named options: one lookup with "did you mean", and registries of named things.

Every place where a user names something from a fixed set (a backbone, a loss, a sampler, a class-weight
scheme, a CLI command) goes through :func:`look_up_option` (MONAI's ``look_up_option`` idea): names compare
case-insensitively with ``-`` and ``_`` alike, and an unknown name raises
:class:`~hierclf.errors.UnknownNameError` listing the known names and the closest ones. A :class:`Registry`
holds the things themselves (timm's registry idea); configuration validators read the registry, so a name
accepted in a file is always one the code can build.

Example:
    >>> look_up_option("Balanced", ("uniform", "balanced", "effective"), kind="sampler")
    'balanced'
    >>> try:
    ...     look_up_option("balancd", ("uniform", "balanced"), kind="sampler")
    ... except UnknownNameError as exc:
    ...     print(exc)
    unknown sampler 'balancd' (known samplers: balanced, uniform); did you mean 'balanced'?
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from hierclf.errors import UnknownNameError

__all__ = ["Registry", "RegistryEntry", "look_up_option", "normalise_option", "option_validator"]

T = TypeVar("T")


def normalise_option(name: object) -> str:
    """The form in which option names compare: stripped, lower case, ``-`` read as ``_``.

    >>> normalise_option(" Weighted-CE ")
    'weighted_ce'
    """
    return str(name).strip().lower().replace("-", "_")


def _plural(kind: str) -> str:
    if kind.endswith(("s", "x", "sh", "ch")):
        return kind + "es"
    return kind[:-1] + "ies" if kind.endswith("y") and kind[-2:-1] not in "aeiou" else kind + "s"


def look_up_option(value: object, options: Iterable[str], *, kind: str, context: str = "") -> str:
    """The option of ``options`` that ``value`` names (see :func:`normalise_option`).

    Args:
        value: the name a user gave.
        options: the known names, in their canonical spelling.
        kind: what is named (``"backbone"``, ``"loss"``), for the message.
        context: where it was named (``"for loss 'focal'"``), appended to the message.

    Returns:
        the canonical spelling of the option.

    Raises:
        UnknownNameError: ``value`` names none of them; the message lists the known names (sorted) and the
            closest ones.
    """
    known = list(options)
    wanted = normalise_option(value)
    for option in known:
        if normalise_option(option) == wanted:
            return option
    listed = f"(known {_plural(kind)}: {', '.join(sorted(known)) or 'none'})"
    raise UnknownNameError(kind, value, known, f"{context} {listed}" if context else listed)


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    """One registered thing: its canonical name, the thing, and a one-line summary."""

    name: str
    value: T
    summary: str


class Registry(Generic[T]):
    """Named things of one kind, looked up through :func:`look_up_option`.

    Args:
        kind: what the registry holds, for messages (``"backbone"``).

    Example:
        >>> losses = Registry[int]("loss")
        >>> losses.add("focal", 2, summary="focal loss")
        >>> losses.get("FOCAL"), losses.names(), "focal" in losses
        (2, ('focal',), True)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, RegistryEntry[T]] = {}

    def add(self, name: str, value: T, *, summary: str = "") -> None:
        """Register ``value`` as ``name``; a name already taken (in any spelling) is a programming error."""
        key = normalise_option(name)
        if any(normalise_option(n) == key for n in self._entries):
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = RegistryEntry(name, value, summary)

    def register(self, name: str, *, summary: str = "") -> Callable[[T], T]:
        """Decorator form of :meth:`add`; the summary defaults to the first docstring line."""

        def decorate(value: T) -> T:
            doc = (getattr(value, "__doc__", None) or "").strip().splitlines()
            self.add(name, value, summary=summary or (doc[0] if doc else ""))
            return value

        return decorate

    def resolve(self, name: object, *, context: str = "") -> str:
        """The canonical name that ``name`` means; :class:`UnknownNameError` with suggestions otherwise."""
        return look_up_option(name, self._entries, kind=self.kind, context=context)

    def entry(self, name: object, *, context: str = "") -> RegistryEntry[T]:
        return self._entries[self.resolve(name, context=context)]

    def get(self, name: object, *, context: str = "") -> T:
        """The thing registered as ``name`` (any spelling :func:`normalise_option` accepts)."""
        return self.entry(name, context=context).value

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        key = normalise_option(name)
        return any(normalise_option(n) == key for n in self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"


def option_validator(kind: str, names: Callable[[], Iterable[str]]) -> Callable[[str], str]:
    """A pydantic ``AfterValidator``: text must name one of ``names()``; it becomes the canonical spelling.

    ``names`` is called at validation time, so a configuration accepts exactly what a registry holds then
    (``option_validator("backbone", BACKBONES.names)``); an unknown name is a positioned validation error
    with "did you mean"::

        backbone: Annotated[str, AfterValidator(option_validator("backbone", BACKBONES.names))]
    """

    def check(value: str) -> str:
        try:
            return look_up_option(value, names(), kind=kind)
        except UnknownNameError as exc:  # pydantic reports ValueErrors as positioned validation errors
            raise ValueError(str(exc)) from None

    return check
