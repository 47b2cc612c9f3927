"""One deployable artefact from a model: TorchScript, a ``torch.export`` program, or ONNX.

:func:`export_model` wraps a model (one checkpoint or an ensemble) and its readout
(:class:`~hierclf.inference.scoring.ScoringGraph`) into :class:`DeployedModel`, whose contract is the
artefact's:

* **input** ``images`` ``(batch, 3, size, size)`` RGB, channels first, already resized to the model's side
  (``size`` in the sidecar JSON; resize as training did: the whole image, bilinear with antialiasing, as
  PIL does). ``input_dtype="uint8"`` (default): uint8 in ``[0, 255]``, straight from a decoder;
  ``"float"``: float32 in ``[0, 1]``. The normalisation with the checkpoint's mean and std is inside;
* **outputs** ``probabilities`` ``(batch, n_nodes)`` float32, ``P(node)`` of the nodes asked for, in that
  order; with thresholds also ``decisions`` ``(batch, n_tasks)`` bool, the tasks' decisions at the stored
  validation thresholds (for an ensemble: the mean rule at the ensemble's thresholds, or the or rule at each
  member's own);
* the **batch size is dynamic** in every format: any batch from 1 up runs through one artefact.

Formats: ``torchscript`` (``torch.jit.trace``, loaded with ``torch.jit.load``), ``exported-program``
(``torch.export.export`` then ``torch.export.save``, a ``.pt2`` loaded with
``torch.export.load(path).module()``), ``onnx`` (the ``torch.onnx`` dynamo exporter, opset 18; needs
``onnx`` and ``onnxscript``; checked with ``onnxruntime``). Every export is compared with the eager model
on random inputs at several batch sizes before it is kept (:func:`check_parity`, ``atol`` 1e-5), and a
sidecar ``<artefact>.json`` records the input contract, the output names, the thresholds and the model's
tree fingerprint.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hierclf.errors import HierclfError, UnknownNameError
from hierclf.inference.models import ModelEnsemble, TrainedModel
from hierclf.inference.scoring import ScoringGraph
from hierclf.inference.thresholds import TaskThreshold
from hierclf.io.atomic import atomic_open, atomic_write_text, check_output

logger = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "INPUT_DTYPES",
    "DeployedModel",
    "ExportError",
    "ExportResult",
    "check_parity",
    "export_model",
    "run_artefact",
]

#: artefact formats and their usual suffix
FORMATS = {"torchscript": ".pt", "exported-program": ".pt2", "onnx": ".onnx"}
#: input dtypes of an artefact
INPUT_DTYPES = {"uint8": torch.uint8, "float": torch.float32}
#: batch sizes every export is checked at (the tests check 1, 7 and 64)
CHECK_BATCHES = (1, 7)
TOLERANCE = 1e-5


class ExportError(HierclfError, ValueError):
    """A model that cannot be exported as asked: an unknown format, a missing exporter, or an artefact that
    does not reproduce the eager model."""


class DeployedModel(nn.Module):
    """``forward(images) -> probabilities`` or ``(probabilities, decisions)``: the artefact's contract
    (module docstring), built on :class:`~hierclf.inference.scoring.ScoringGraph`."""

    def __init__(self, scoring: ScoringGraph) -> None:
        super().__init__()
        self.scoring = scoring  # not "graph": torch.fx's GraphModule has its own attribute of that name
        self.with_decisions = bool(scoring.tasks)

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        _, nodes, _, decisions = self.scoring(images)
        if self.with_decisions:
            return nodes, decisions
        return nodes


@dataclass(frozen=True)
class ExportResult:
    """Where the artefact went and how closely it reproduces the eager model.

    Attributes:
        path: the artefact. sidecar: its JSON description.
        format: the format. max_difference: the largest absolute difference of the probabilities over the
            checked batches. checked_batches: the batch sizes compared.
    """

    path: Path
    sidecar: Path
    format: str
    max_difference: float
    checked_batches: tuple[int, ...]


def _example(size: int, batch: int, dtype: torch.dtype, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8)
    return torch.rand((batch, 3, size, size), generator=g, dtype=dtype)


def _save_torchscript(module: DeployedModel, example: Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; still widely run
        traced = torch.jit.trace(module, (example,), check_trace=False)
        with atomic_open(path, "wb") as fh:
            torch.jit.save(traced, fh)


def _dynamic_batch() -> dict[str, Any]:
    return {"images": {0: torch.export.Dim("batch", min=1, max=65536)}}


def _save_exported_program(module: DeployedModel, example: Tensor, path: Path) -> None:
    program = torch.export.export(module, (example,), dynamic_shapes=_dynamic_batch())
    with atomic_open(path, "wb") as fh:
        torch.export.save(program, fh)


def _save_onnx(module: DeployedModel, example: Tensor, path: Path) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError("--format onnx needs onnx and onnxscript: pip install 'hierclf[onnx]'") from None
    outputs = ["probabilities", "decisions"] if module.with_decisions else ["probabilities"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            dynamic_shapes=_dynamic_batch(),
            input_names=["images"],
            output_names=outputs,
            opset_version=18,
            verbose=False,
        )
    if program is None:  # pragma: no cover - the dynamo exporter always returns its program
        raise ExportError("the ONNX exporter returned nothing")
    with atomic_open(path, "wb") as fh:
        fh.write(program.model_proto.SerializeToString())


_SAVERS = {
    "torchscript": _save_torchscript,
    "exported-program": _save_exported_program,
    "onnx": _save_onnx,
}


def run_artefact(path: str | Path, fmt: str, images: Tensor) -> tuple[np.ndarray, ...]:
    """Run an artefact of format ``fmt`` on ``images`` (CPU; onnxruntime for ONNX): its outputs as arrays."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError(
                "checking an ONNX artefact needs onnxruntime: pip install onnxruntime"
            ) from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return tuple(np.asarray(v) for v in session.run(None, {session.get_inputs()[0].name: images.numpy()}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
    with torch.inference_mode():
        out = module(images)
    return tuple(t.numpy() for t in (out if isinstance(out, tuple) else (out,)))


def check_parity(
    module: DeployedModel,
    path: Path,
    fmt: str,
    *,
    size: int,
    dtype: torch.dtype,
    batches: Sequence[int] = CHECK_BATCHES,
    atol: float = TOLERANCE,
) -> float:
    """The largest ``|artefact - eager|`` of the probabilities over random batches of each size (decisions
    must agree exactly where the eager score is not within ``atol`` of its threshold).

    Raises:
        ExportError: a difference above ``atol``, or other decisions.
    """
    worst = 0.0
    for k, batch in enumerate(batches):
        images = _example(size, batch, dtype, seed=100 + k)
        with torch.inference_mode():
            _, nodes, scores, decisions = module.scoring(images)
        got = run_artefact(path, fmt, images)
        worst = max(worst, float(np.abs(got[0] - nodes.numpy()).max(initial=0.0)))
        if got[0].shape != tuple(nodes.shape) or worst > atol:
            raise ExportError(
                f"the {fmt} artefact differs from the model at batch {batch}: shape {got[0].shape} vs "
                f"{tuple(nodes.shape)}, max difference {worst:.3g} (tolerance {atol:g})"
            )
        if module.with_decisions:
            margin = (
                (scores - module.scoring.readout.threshold).abs().numpy()
                if module.scoring.rule == "mean"
                else scores.abs().numpy()
            )
            clear = margin > atol
            if not np.array_equal(got[1].astype(bool)[clear], decisions.numpy()[clear]):
                raise ExportError(f"the {fmt} artefact decides otherwise than the model at batch {batch}")
    return worst


def _sidecar(
    module: DeployedModel, fmt: str, dtype_name: str, model: TrainedModel | ModelEnsemble
) -> dict[str, Any]:
    graph = module.scoring
    identity = model.identity
    return {
        "format": fmt,
        "input": {
            "name": "images",
            "shape": ["batch", 3, graph.size, graph.size],
            "dtype": dtype_name,
            "range": "[0, 255]" if dtype_name == "uint8" else "[0, 1]",
            "channels": "RGB",
            "resize": f"whole image to {graph.size}x{graph.size}, bilinear with antialiasing (as PIL)",
        },
        "outputs": {
            "probabilities": {"shape": ["batch", len(graph.nodes)], "columns": list(graph.nodes)},
            **(
                {
                    "decisions": {
                        "shape": ["batch", len(graph.tasks)],
                        "columns": list(graph.tasks),
                        "rule": graph.rule,
                    }
                }
                if module.with_decisions
                else {}
            ),
        },
        "thresholds": _thresholds_of(graph, model),
        "model": {
            "sources": model.source.split(", "),
            "members": len(getattr(model, "members", [model])),
            "taxonomy": model.taxonomy.name,
            "tree_fingerprint": identity.fingerprint,
            "columns": list(model.columns),
            "preprocessing": {k: identity.preprocessing.get(k) for k in ("size", "mean", "std")},
            "hierclf_version": identity.version,
        },
    }


def _thresholds_of(graph: ScoringGraph, model: TrainedModel | ModelEnsemble) -> Any:
    if graph.rule == "mean":
        return [t.to_dict() for t in graph.readout.tasks]
    members = getattr(model, "members", [])
    return [[m.thresholds[t].to_dict() for t in graph.tasks] for m in members]


def export_model(
    model: TrainedModel | ModelEnsemble,
    path: str | Path,
    *,
    nodes: Sequence[str],
    fmt: str = "onnx",
    tasks: Sequence[TaskThreshold] = (),
    rule: str = "mean",
    input_dtype: str = "uint8",
    check_batches: Sequence[int] = CHECK_BATCHES,
    inputs: Sequence[str | Path] = (),
) -> ExportResult:
    """Export ``model`` as one artefact at ``path`` (module docstring), checked against the eager model.

    Args:
        model: a loaded model or ensemble (CPU).
        path: the artefact file (written atomically, never over one of ``inputs``).
        nodes: the nodes whose probabilities the artefact returns.
        fmt: ``torchscript``, ``exported-program`` or ``onnx``.
        tasks: operating points; the artefact then also returns decisions.
        rule: for an ensemble, ``mean`` or ``or`` (:class:`~hierclf.inference.scoring.ScoringGraph`).
        input_dtype: ``uint8`` or ``float``.
        check_batches: batch sizes compared with the eager model (empty: no check).

    Raises:
        UnknownNameError: an unknown format, input dtype, node or rule.
        ExportError: no node, a missing exporter, or an artefact that differs from the model.
    """
    if fmt not in FORMATS:
        raise UnknownNameError("export format", fmt, list(FORMATS))
    if input_dtype not in INPUT_DTYPES:
        raise UnknownNameError("input dtype", input_dtype, list(INPUT_DTYPES))
    if not nodes:
        raise ExportError("name the nodes the artefact returns (--nodes malignant,melanoma)")
    out = Path(path)
    if fmt == "exported-program" and out.suffix != ".pt2":
        raise ExportError(
            f"{out}: an exported program is a .pt2 file (torch.export.load reads no other name)"
        )
    check_output(out, inputs)
    module = DeployedModel(ScoringGraph(model.cpu().eval(), nodes=nodes, tasks=tasks, rule=rule)).eval()
    dtype = INPUT_DTYPES[input_dtype]
    with torch.no_grad():
        _SAVERS[fmt](module, _example(module.scoring.size, 2, dtype), out)
    worst = check_parity(module, out, fmt, size=module.scoring.size, dtype=dtype, batches=check_batches)
    sidecar = out.with_name(out.name + ".json")
    atomic_write_text(sidecar, json.dumps(_sidecar(module, fmt, input_dtype, model), indent=2) + "\n")
    logger.info("exported %s (%s); max difference from the model %.2e", out, fmt, worst)
    return ExportResult(out, sidecar, fmt, worst, tuple(check_batches))
