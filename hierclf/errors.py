"""Exceptions and the problem record shared by every hierclf file format.

Every error a user can cause is a :class:`HierclfError`; the CLI turns it into one line and a non-zero exit
code. Messages name the file, line, node or column and say what was expected.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


class HierclfError(Exception):
    """Base class of the errors hierclf raises on bad input."""


@dataclass(frozen=True)
class Problem:
    """One problem found in an input file, with its position when the file has one.

    ``line`` and ``column`` are 1-based, as editors show them.
    """

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    severity: Severity = "error"
    code: str = "invalid"
    node: str | None = None

    def location(self) -> str:
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        return f"{self.location()}: {self.severity}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FileFormatError(HierclfError, ValueError):
    """A file broke its format's rules; ``problems`` lists every problem found, not only the first."""

    def __init__(self, problems: Iterable[Problem], what: str = "file") -> None:
        self.problems = tuple(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        shown = errors or list(self.problems)
        head = str(shown[0]) if shown else f"invalid {what}"
        n_more = len(shown) - 1
        more = f" (and {n_more} more problem{'s' if n_more > 1 else ''})" if n_more else ""
        super().__init__(head + more)


class TaxonomyError(FileFormatError):
    """A taxonomy file or tree is invalid."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        super().__init__(problems, what="taxonomy")


class UnknownNameError(HierclfError, KeyError):
    """A name (node, alias, dataset, option) is not known; the message suggests the closest known names."""

    def __init__(self, kind: str, name: object, known: Iterable[str], context: str = "") -> None:
        self.kind = kind
        self.name = name
        self.suggestions = did_you_mean(str(name), known)
        msg = f"unknown {kind} {name!r}"
        if context:
            msg += f" {context}"
        if self.suggestions:
            alternatives = " or ".join(repr(s) for s in self.suggestions)
            msg += f"; did you mean {alternatives}?"
        self.message = msg
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


def did_you_mean(name: str, known: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The known names closest to ``name`` (case-insensitive), best first.

    >>> did_you_mean("malignat", ["benign", "malignant", "melanoma"])
    ['malignant']
    """
    known = list(dict.fromkeys(known))
    by_folded: dict[str, str] = {}
    for k in known:
        by_folded.setdefault(k.casefold(), k)
    matches = difflib.get_close_matches(name.casefold(), list(by_folded), n=n, cutoff=cutoff)
    return [by_folded[m] for m in matches]


#: the third-party packages that the core install leaves out, by the extra that brings them
#: (``pyproject.toml``: ``pip install 'hierclf[train]'``)
EXTRA_OF = {
    "torch": "train",
    "torchvision": "train",
    "timm": "train",
    "medmnist": "train",
    "sklearn": "train",
    "PIL": "train",
    "tqdm": "train",
    "huggingface_hub": "train",
    "safetensors": "train",
    "numba": "fast",
}
#: how a package is called in messages (the name people install it by)
_PACKAGE_NAMES = {"torch": "PyTorch", "sklearn": "scikit-learn", "PIL": "Pillow"}


class MissingExtraError(HierclfError, ImportError):
    """A name or command needs a package that the core install (``pip install hierclf``) leaves out; the
    message says which extra brings it."""


def missing_extra(exc: ModuleNotFoundError, what: str) -> MissingExtraError | None:
    """The one-line error for ``what`` (``"hierclf train"``, ``"hierclf.LeafHead"``) failing to import a
    package of an extra, or None when the missing module belongs to no extra (a bug, or hierclf itself).

    >>> print(missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch"), "hierclf train"))
    hierclf train needs PyTorch, which the core install leaves out: pip install 'hierclf[train]'
    """
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    package = _PACKAGE_NAMES.get(top, top)
    return MissingExtraError(
        f"{what} needs {package}, which the core install leaves out: pip install 'hierclf[{extra}]'"
    )
