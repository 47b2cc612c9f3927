"""``hierclf export``: one deployable artefact (TorchScript, ``torch.export`` program, ONNX) from a model.

``hierclf export CHECKPOINT [CHECKPOINT ...] --nodes malignant,melanoma [--thresholds] --format FORMAT
--out FILE``: the artefact takes ``(batch, 3, size, size)`` images (uint8 in [0, 255] by default, or float32
in [0, 1] with ``--input float``) and returns the nodes' probabilities (and the tasks' decisions); the batch
size is dynamic. Several checkpoints (or a study folder) export as one ensemble artefact. The artefact is
checked against the model before it is kept, and described in ``FILE.json``. Exit codes: 0 done, 1 bad
input or an artefact that differs from the model (one line), 2 usage error.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    from hierclf.cli.predict import add_model_options

    p = sub.add_parser(
        "export",
        help="export a model as TorchScript, a torch.export program or ONNX",
        description="Export a trained model (or an ensemble) as one artefact that maps an image batch to "
        "the named nodes' probabilities (and decisions at the stored thresholds), with a dynamic batch.",
    )
    p.add_argument(
        "checkpoints",
        nargs="+",
        metavar="CHECKPOINT",
        help="best.pt, a run or a study folder (several: one ensemble)",
    )
    p.add_argument(
        "--nodes", "-n", action="append", required=True, metavar="N,N", help="nodes to return (a,b or repeat)"
    )
    p.add_argument(
        "--format",
        "-f",
        required=True,
        choices=("torchscript", "exported-program", "onnx"),
        help="torchscript (.pt), exported-program (.pt2) or onnx (.onnx)",
    )
    p.add_argument(
        "--input",
        choices=("uint8", "float"),
        default="uint8",
        help="input images: uint8 in [0, 255] (default) or float32 in [0, 1]",
    )
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="the artefact (written atomically)")
    add_model_options(p)
    p.add_argument("--no-check", action="store_true", help="skip the comparison with the eager model")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from hierclf.cli.predict import node_list
    from hierclf.inference.export import CHECK_BATCHES, export_model
    from hierclf.inference.loading import checkpoint_files, load_models
    from hierclf.inference.scoring import scoring_graph

    files = [f for p in args.checkpoints for f in checkpoint_files(p)]
    model = load_models(files, taxonomy=args.taxonomy, device="cpu")
    nodes = node_list(args.nodes)
    graph = scoring_graph(
        model,
        nodes=nodes,
        stored=args.thresholds,
        report=args.thresholds_from,
        seed=args.seed,
        tasks=args.task,
        rule=args.rule,
    )
    result = export_model(
        model,
        args.out,
        nodes=graph.nodes,
        fmt=args.format,
        tasks=graph.request()["tasks"],
        rule=graph.rule,
        input_dtype=args.input,
        check_batches=() if args.no_check else CHECK_BATCHES,
        inputs=[*files, *(p for p in (args.thresholds_from,) if p)],
    )
    members = f"{len(files)} models ({graph.rule} rule)" if len(files) > 1 else "1 model"
    decisions = f", decisions for {len(graph.tasks)} task(s)" if graph.tasks else ""
    checked = (
        f"; max difference from the model {result.max_difference:.1e} at batch sizes "
        f"{', '.join(map(str, result.checked_batches))}"
        if result.checked_batches
        else "; not checked"
    )
    print(f"wrote {result.path} ({args.format}, {members}, {len(graph.nodes)} node(s){decisions}){checked}")
    print(f"wrote {result.sidecar} (input contract and outputs)")
    return 0
