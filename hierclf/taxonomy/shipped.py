"""The taxonomies and protocols shipped with hierclf (the repository's ``taxonomy/`` folder).

In a wheel they are installed as the data package ``hierclf.taxonomies``; in a source checkout (editable
install) they are read from ``taxonomy/`` beside the package. Either way::

    >>> shipped_taxonomy("dermamnist").name
    'dermamnist.yaml'
    >>> "dermamnist" in list_shipped()
    True
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from hierclf.errors import UnknownNameError

_CHECKOUT = Path(__file__).resolve().parents[2] / "taxonomy"


def shipped_dir() -> Path:
    """The folder holding the shipped taxonomy files (``protocols/`` inside it)."""
    try:
        installed = resources.files("hierclf.taxonomies")
        path = Path(str(installed))
        if (path / "dermamnist.yaml").is_file():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return _CHECKOUT


def list_shipped() -> list[str]:
    """Names of the shipped taxonomies (file stems)."""
    return sorted(p.stem for p in shipped_dir().glob("*.yaml"))


def shipped_taxonomy(name: str) -> Path:
    """Path of a shipped taxonomy by name (``dermamnist``, ``esteva``, ``isic``, ``fitzpatrick17k``)."""
    path = shipped_dir() / f"{name}.yaml"
    if not path.is_file():
        raise UnknownNameError("shipped taxonomy", name, list_shipped())
    return path


def shipped_protocol(name: str) -> Path:
    """Path of a shipped protocol by name (``dermamnist``)."""
    folder = shipped_dir() / "protocols"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise UnknownNameError("shipped protocol", name, sorted(p.stem for p in folder.glob("*.yaml")))
    return path
