"""hierclf: hierarchical taxonomy classification for medical images.

The public face of the library: ``from hierclf import Taxonomy, LeafHead, rollup, evaluate, fit, ...``.
Importing hierclf is light: the taxonomy and the errors come at once; every other name is imported from the
module that defines it on first use, so ``import hierclf`` and ``hierclf validate`` never import torch, and
the names of the torch-free core (the roll-up on numpy arrays, prediction files, protocols, the evaluation
and its report) do not import it either. ``docs/api.md`` maps every name to its module;
``docs/architecture.md`` shows the layers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hierclf.errors import (
    FileFormatError,
    HierclfError,
    MissingExtraError,
    Problem,
    TaxonomyError,
    UnknownNameError,
    missing_extra,
)
from hierclf.taxonomy.index import TaxonomyIndex
from hierclf.taxonomy.tree import Taxonomy

__version__ = "0.1.0"

#: public name -> the module that defines it, imported on first use. Rule zero (tests/test_house.py) keeps
#: any module from being named like a name here, so ``hierclf.rollup`` is the function, never a module.
_LAZY = {
    # the roll-up (numpy in: no torch; tensors in: torch)
    "rollup": "hierclf.functional",
    "log_rollup": "hierclf.functional",
    "conditional": "hierclf.functional",
    "rollup_nodes": "hierclf.functional",
    "RollUpError": "hierclf.rollup_engine.request_plans",
    # training classes (no torch)
    "partition": "hierclf.classes.esteva",
    "TrainingClasses": "hierclf.classes.esteva",
    "ClassMap": "hierclf.classes.label_mapping",
    # the model (torch)
    "RollUp": "hierclf.nn.rollup_modules",
    "LogRollUp": "hierclf.nn.rollup_modules",
    "LeafHead": "hierclf.nn.head",
    "build_loss": "hierclf.nn.losses",
    "class_weights": "hierclf.nn.losses",
    "create_backbone": "hierclf.nn.backbones",
    "register_backbone": "hierclf.nn.backbones",
    "BackboneError": "hierclf.nn.backbones",
    "WeightsNotCachedError": "hierclf.nn.weights_cache",
    "TensorFileError": "hierclf.nn.serialization",
    # evaluation (no torch)
    "Protocol": "hierclf.evaluation.protocol_format",
    "load_protocol": "hierclf.evaluation.protocol_format",
    "ProtocolError": "hierclf.evaluation.protocol_format",
    "Predictions": "hierclf.evaluation.prediction_files",
    "read_predictions": "hierclf.evaluation.prediction_files",
    "write_predictions": "hierclf.evaluation.prediction_files",
    "PredictionsError": "hierclf.evaluation.prediction_files",
    "evaluate": "hierclf.evaluation.pipeline",
    "Evaluator": "hierclf.evaluation.pipeline",
    "compare": "hierclf.evaluation.comparison",
    "write_comparison": "hierclf.evaluation.comparison_report",
    "EvaluationReport": "hierclf.evaluation.records",
    "EvaluationError": "hierclf.evaluation.notices",
    "MetricError": "hierclf.evaluation.metrics.checks",
    "write_report": "hierclf.evaluation.report",
    # data
    "LeakageError": "hierclf.data.splits",
    # training (torch)
    "TrainConfig": "hierclf.train.config",
    "load_train_config": "hierclf.train.config",
    "ConfigError": "hierclf.train.config",
    "fit": "hierclf.train.loop",
    "FitResult": "hierclf.train.outputs",
    "set_determinism": "hierclf.train.seeding",
    "TrainingError": "hierclf.train.errors",
    "TrainSettingError": "hierclf.train.errors",
    "TrainingDataError": "hierclf.train.errors",
    "CheckpointError": "hierclf.train.errors",
    "DistributedError": "hierclf.train.errors",
    # studies
    "run_study": "hierclf.study",
    "StudyError": "hierclf.study",
    # files, names and synthetic trees
    "AmbiguousNameError": "hierclf.taxonomy.tree",
    "SyntheticTreeError": "hierclf.taxonomy.synthetic",
    "OutputPathError": "hierclf.io.atomic",
    "OutputIsInputError": "hierclf.io.atomic",
    # inference (torch)
    "load_model": "hierclf.inference.loading",
    "load_models": "hierclf.inference.loading",
    "CheckpointFileError": "hierclf.inference.loading",
    "TreeMismatchError": "hierclf.train.identity",
    "ThresholdError": "hierclf.inference.thresholds",
    "ImageListError": "hierclf.inference.images",
    "UnreadableImageError": "hierclf.inference.prediction_loop",
    "ExportError": "hierclf.inference.export",
    "RayUnavailableError": "hierclf.inference.ray_engine",
}

__all__ = [
    "FileFormatError",
    "HierclfError",
    "MissingExtraError",
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
    try:
        value = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:  # a torch-backed name in the core install: say which extra
        found = missing_extra(exc, f"hierclf.{name}")
        if found is None:
            raise
        raise found from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs; the names above are imported lazily
    from hierclf.classes.esteva import TrainingClasses as TrainingClasses
    from hierclf.classes.esteva import partition as partition
    from hierclf.classes.label_mapping import ClassMap as ClassMap
    from hierclf.data.splits import LeakageError as LeakageError
    from hierclf.evaluation.comparison import compare as compare
    from hierclf.evaluation.comparison_report import write_comparison as write_comparison
    from hierclf.evaluation.metrics.checks import MetricError as MetricError
    from hierclf.evaluation.notices import EvaluationError as EvaluationError
    from hierclf.evaluation.pipeline import Evaluator as Evaluator
    from hierclf.evaluation.pipeline import evaluate as evaluate
    from hierclf.evaluation.prediction_files import Predictions as Predictions
    from hierclf.evaluation.prediction_files import PredictionsError as PredictionsError
    from hierclf.evaluation.prediction_files import read_predictions as read_predictions
    from hierclf.evaluation.prediction_files import write_predictions as write_predictions
    from hierclf.evaluation.protocol_format import Protocol as Protocol
    from hierclf.evaluation.protocol_format import ProtocolError as ProtocolError
    from hierclf.evaluation.protocol_format import load_protocol as load_protocol
    from hierclf.evaluation.records import EvaluationReport as EvaluationReport
    from hierclf.evaluation.report import write_report as write_report
    from hierclf.functional import conditional as conditional
    from hierclf.functional import log_rollup as log_rollup
    from hierclf.functional import rollup as rollup
    from hierclf.functional import rollup_nodes as rollup_nodes
    from hierclf.inference.export import ExportError as ExportError
    from hierclf.inference.images import ImageListError as ImageListError
    from hierclf.inference.loading import CheckpointFileError as CheckpointFileError
    from hierclf.inference.loading import load_model as load_model
    from hierclf.inference.loading import load_models as load_models
    from hierclf.inference.prediction_loop import UnreadableImageError as UnreadableImageError
    from hierclf.inference.ray_engine import RayUnavailableError as RayUnavailableError
    from hierclf.inference.thresholds import ThresholdError as ThresholdError
    from hierclf.io.atomic import OutputIsInputError as OutputIsInputError
    from hierclf.io.atomic import OutputPathError as OutputPathError
    from hierclf.nn.backbones import BackboneError as BackboneError
    from hierclf.nn.backbones import create_backbone as create_backbone
    from hierclf.nn.backbones import register_backbone as register_backbone
    from hierclf.nn.head import LeafHead as LeafHead
    from hierclf.nn.losses import build_loss as build_loss
    from hierclf.nn.losses import class_weights as class_weights
    from hierclf.nn.rollup_modules import LogRollUp as LogRollUp
    from hierclf.nn.rollup_modules import RollUp as RollUp
    from hierclf.nn.serialization import TensorFileError as TensorFileError
    from hierclf.nn.weights_cache import WeightsNotCachedError as WeightsNotCachedError
    from hierclf.rollup_engine.request_plans import RollUpError as RollUpError
    from hierclf.study import StudyError as StudyError
    from hierclf.study import run_study as run_study
    from hierclf.taxonomy.synthetic import SyntheticTreeError as SyntheticTreeError
    from hierclf.taxonomy.tree import AmbiguousNameError as AmbiguousNameError
    from hierclf.train.config import ConfigError as ConfigError
    from hierclf.train.config import TrainConfig as TrainConfig
    from hierclf.train.config import load_train_config as load_train_config
    from hierclf.train.errors import CheckpointError as CheckpointError
    from hierclf.train.errors import DistributedError as DistributedError
    from hierclf.train.errors import TrainingDataError as TrainingDataError
    from hierclf.train.errors import TrainingError as TrainingError
    from hierclf.train.errors import TrainSettingError as TrainSettingError
    from hierclf.train.identity import TreeMismatchError as TreeMismatchError
    from hierclf.train.loop import fit as fit
    from hierclf.train.outputs import FitResult as FitResult
    from hierclf.train.seeding import set_determinism as set_determinism
