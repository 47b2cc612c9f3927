"""hierclf: hierarchical taxonomy classification for medical images.

Importing hierclf is light: the taxonomy tools need no torch. The torch-based parts (roll-up, head, losses,
training, evaluation) are imported on first use, so ``hierclf validate`` stays quick in other projects' CI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hierclf.errors import FileFormatError, HierclfError, Problem, TaxonomyError, UnknownNameError
from hierclf.taxonomy.tree import Taxonomy, TaxonomyIndex

__version__ = "0.1.0"

# public name -> module that defines it; imported lazily (these modules import torch). Functions named like
# their module (hierclf.classes.esteva.partition, hierclf.evaluation.pipeline.evaluate) are not re-exported
# here: once the submodule is imported, Python binds its name on the package and would shadow the function.
_LAZY = {
    "RollUp": "hierclf.nn.rollup_modules",
    "LogRollUp": "hierclf.nn.rollup_modules",
    "LeafHead": "hierclf.nn.head",
    "TrainingClasses": "hierclf.classes.esteva",
    "create_backbone": "hierclf.nn.backbones",
    "fit": "hierclf.train.loop",
    "TrainConfig": "hierclf.train.loop",
    "Protocol": "hierclf.evaluation.protocol_format",
    "load_protocol": "hierclf.evaluation.protocol_format",
    "set_determinism": "hierclf.train.seeding",
    "load_model": "hierclf.inference.loading",
}

__all__ = [
    "FileFormatError",
    "HierclfError",
    "Problem",
    "Taxonomy",
    "TaxonomyError",
    "TaxonomyIndex",
    "UnknownNameError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hierclf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs; the names above are imported lazily
    from hierclf.classes.esteva import TrainingClasses as TrainingClasses
    from hierclf.evaluation.protocol_format import Protocol as Protocol
    from hierclf.evaluation.protocol_format import load_protocol as load_protocol
    from hierclf.inference.loading import load_model as load_model
    from hierclf.nn.backbones import create_backbone as create_backbone
    from hierclf.nn.head import LeafHead as LeafHead
    from hierclf.nn.rollup_modules import LogRollUp as LogRollUp
    from hierclf.nn.rollup_modules import RollUp as RollUp
    from hierclf.train.loop import TrainConfig as TrainConfig
    from hierclf.train.loop import fit as fit
    from hierclf.train.seeding import set_determinism as set_determinism
