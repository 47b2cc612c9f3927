"""From checkpoint to clinic: load a trained model, score images, export one artefact (torch).

One concept per module:

* :mod:`~hierclf.inference.loading`: :func:`load_model` (a checkpoint by itself, on any device; refuses
  another tree, saying what changed) and :func:`load_models` (several checkpoints, or a study folder, as an
  ensemble);
* :mod:`~hierclf.inference.models`: :class:`TrainedModel` and :class:`ModelEnsemble`, images to
  probabilities over the prediction files' columns;
* :mod:`~hierclf.inference.thresholds`: the operating points a model carries (stored in the checkpoint, or
  read from an evaluation's ``report.json``);
* :mod:`~hierclf.inference.scoring`: :class:`ScoringGraph`, the model with the named nodes, task scores
  and decisions (mean rule, or the or rule of an ensemble), shared by prediction and export;
* :mod:`~hierclf.inference.images`: which images (paths, a folder, a CSV) and how they are decoded;
* :mod:`~hierclf.inference.prediction_loop`: the batched loop (:class:`Predictor`) and its
  :class:`PredictionTable`; :mod:`~hierclf.inference.tables` writes it;
* :mod:`~hierclf.inference.export`: TorchScript, ``torch.export`` and ONNX artefacts with a dynamic batch;
* :mod:`~hierclf.inference.ray_engine`: the same predictor over Ray Data (optional ``hierclf[ray]``).

``docs/inference.md`` is the user's guide.
"""

from __future__ import annotations

from hierclf.inference.loading import load_model, load_models
from hierclf.inference.models import ModelEnsemble, TrainedModel
from hierclf.inference.prediction_loop import PredictionTable, Predictor
from hierclf.inference.scoring import ScoringGraph

__all__ = [
    "ModelEnsemble",
    "PredictionTable",
    "Predictor",
    "ScoringGraph",
    "TrainedModel",
    "load_model",
    "load_models",
]
