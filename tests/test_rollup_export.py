"""The roll-up modules keep a dynamic batch when exported: ``torch.export``, ``torch.jit.trace``, and ONNX
(the dynamo exporter and the older TorchScript-based one), checked with onnxruntime at batch 1, 7 and 64
against the eager module and a brute-force sum over ``nx.descendants``."""

from __future__ import annotations

import io
import warnings

import networkx as nx
import numpy as np
import pytest
import torch

from hierclf import Taxonomy
from hierclf.classes.esteva import residual_class
from hierclf.nn.head import LeafHead
from hierclf.nn.rollup_modules import LogRollUp, RollUp

BATCHES = (1, 7, 64)
COLUMNS = ("melanoma", "benign", "keratinocyte_carcinoma")


def _inputs(n_columns: int, batch: int, log: bool) -> torch.Tensor:
    p = np.random.default_rng(batch).dirichlet(np.ones(n_columns), size=batch).astype(np.float32)
    x = torch.from_numpy(p)
    return x.log() if log else x


def _brute(tax: Taxonomy, x: np.ndarray, nodes: tuple[str, ...], columns: tuple[str, ...]) -> np.ndarray:
    member = np.zeros((len(columns), len(nodes)))
    for k, node in enumerate(nodes):
        under = {node} | nx.descendants(tax.graph, node)
        member[[j for j, c in enumerate(columns) if c in under], k] = 1.0
    return x.astype(np.float64) @ member


MODULES = [
    pytest.param(RollUp, None, None, id="RollUp-all-leaves"),
    pytest.param(RollUp, ["malignant"], COLUMNS, id="RollUp-one-node-cut"),
    pytest.param(RollUp, ["skin_lesion", "malignant", "benign"], COLUMNS, id="RollUp-cut"),
    pytest.param(LogRollUp, None, None, id="LogRollUp-all-leaves"),
    pytest.param(LogRollUp, ["malignant"], COLUMNS, id="LogRollUp-one-node-cut"),
]


def _module(dermamnist: Taxonomy, cls: type, nodes: list[str] | None, columns: tuple[str, ...] | None):
    return cls(dermamnist, nodes, columns=columns).eval()


def _check(dermamnist: Taxonomy, module: torch.nn.Module, run, log: bool) -> None:
    for batch in BATCHES:
        x = _inputs(module.n_columns, batch, log)
        got = np.asarray(run(x))
        assert got.shape == (batch, module.n_out)
        np.testing.assert_allclose(got, module(x).numpy(), atol=1e-6, rtol=0)
        probs = np.exp(x.numpy()) if log else x.numpy()
        expected = _brute(dermamnist, probs, module.nodes, module.columns)
        np.testing.assert_allclose(np.exp(got) if log else got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("cls", "nodes", "columns"), MODULES)
def test_torch_export_with_a_dynamic_batch(dermamnist: Taxonomy, cls: type, nodes, columns) -> None:
    module = _module(dermamnist, cls, nodes, columns)
    batch = torch.export.Dim("batch", min=1)
    name = "probs" if cls is RollUp else "log_probs"
    program = torch.export.export(
        module, (_inputs(module.n_columns, 4, cls is LogRollUp),), dynamic_shapes={name: {0: batch}}
    )
    _check(dermamnist, module, lambda x: program.module()(x).numpy(), cls is LogRollUp)


@pytest.mark.parametrize(("cls", "nodes", "columns"), MODULES)
def test_jit_trace_keeps_the_batch_dynamic(dermamnist: Taxonomy, cls: type, nodes, columns) -> None:
    module = _module(dermamnist, cls, nodes, columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (_inputs(module.n_columns, 4, cls is LogRollUp),))
    _check(dermamnist, module, lambda x: traced(x).numpy(), cls is LogRollUp)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo-exporter", "torchscript-exporter"])
@pytest.mark.parametrize(("cls", "nodes", "columns"), MODULES)
def test_onnx_with_a_dynamic_batch_runs_in_onnxruntime(
    dermamnist: Taxonomy, cls: type, nodes, columns, dynamo: bool
) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (a dev dependency) runs the ONNX files")
    if dynamo:
        pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")
    module = _module(dermamnist, cls, nodes, columns)
    example = (_inputs(module.n_columns, 4, cls is LogRollUp),)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                verbose=False,
            )
            buffer.write(program.model_proto.SerializeToString())
        else:
            torch.onnx.export(
                module, example, buffer, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}}
            )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    _check(dermamnist, module, lambda x: session.run(None, {name: x.numpy()})[0], cls is LogRollUp)


class _HeadRollUp(torch.nn.Module):
    """Features -> node probabilities through :meth:`LeafHead.rollup` (its residual classes included)."""

    def __init__(self, head: LeafHead, nodes: list[str]) -> None:
        super().__init__()
        self.head, self.nodes = head, nodes

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head.rollup(self.head(features), self.nodes)


def test_leaf_head_rollup_exports_with_a_dynamic_batch(dermamnist: Taxonomy) -> None:
    classes = ["melanoma", "keratinocyte_carcinoma", residual_class("benign"), "melanocytic_nevus",
               "benign_keratosis", "benign_dermal"]  # fmt: skip
    module = _HeadRollUp(LeafHead(8, dermamnist, classes).eval(), ["malignant", "benign", "skin_lesion"])
    program = torch.export.export(
        module, (torch.randn(4, 8),), dynamic_shapes={"features": {0: torch.export.Dim("batch", min=1)}}
    )
    for batch in BATCHES:
        x = torch.randn(batch, 8, generator=torch.Generator().manual_seed(batch))
        got = program.module()(x)
        torch.testing.assert_close(got, module(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(got[:, 2], torch.ones(batch), atol=1e-6, rtol=0)
