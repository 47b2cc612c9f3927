"""``hierclf predict``: score images with a trained model, written as a prediction table.

``hierclf predict CHECKPOINT (IMAGES... | --folder DIR | --csv FILE) --out FILE``: the model's column
probabilities (leaves or training classes) for every image, plus ``node:<node>`` columns for ``--node`` and,
with ``--thresholds`` (stored in the checkpoint) or ``--thresholds-from report.json``, each task's score and
decision. CHECKPOINT is ``best.pt`` / ``checkpoint.pt``, a run folder, or a study folder (its seeds as an
ensemble; ``--member`` adds checkpoints). Exit codes: 0 done, 1 bad input (one line: the file, image, node
or tree at fault), 2 usage error.
"""

from __future__ import annotations

import argparse
from typing import Any


def node_list(values: list[str]) -> list[str]:
    """``--node a --node b,c`` -> ``[a, b, c]`` (repeated or comma-separated)."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options ``predict`` and ``export`` share: the tree, the thresholds and the ensemble rule."""
    p.add_argument(
        "--taxonomy",
        "-t",
        metavar="T",
        help="taxonomy YAML the model must have been trained on (refused, naming what changed, if not); "
        "default: the tree saved in the checkpoint",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--thresholds",
        action="store_true",
        help="add each task's decision at the validation thresholds stored in the checkpoint",
    )
    how.add_argument(
        "--thresholds-from",
        metavar="REPORT",
        help="take the tasks' validation thresholds from an evaluation's report.json instead",
    )
    p.add_argument("--seed", type=int, metavar="K", help="the report's seed whose thresholds to use")
    p.add_argument(
        "--task",
        action="append",
        default=None,
        metavar="TASK",
        help="decide only this task (repeat; default: every task with a threshold)",
    )
    p.add_argument(
        "--rule",
        choices=("mean", "or"),
        default="mean",
        help="ensembles: 'mean' averages the models' probabilities; 'or' flags a case when any model flags "
        "it at its own threshold",
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="score images with a trained model (CSV, Parquet or npz out)",
        description="Score images with a trained checkpoint: column probabilities, named nodes and, at the "
        "stored validation thresholds, task decisions, for every image; written atomically.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="best.pt, checkpoint.pt, a run or a study folder")
    p.add_argument("images", nargs="*", metavar="IMAGES", help="image files (or use --folder / --csv)")
    p.add_argument("--folder", metavar="DIR", help="score every image file under DIR (recursively)")
    p.add_argument("--csv", metavar="FILE", help="CSV with a path column (and an optional id column)")
    p.add_argument(
        "--out", "-o", required=True, metavar="FILE", help="output table (.csv, .parquet or .npz, by suffix)"
    )
    p.add_argument(
        "--node", "-n", action="append", default=None, metavar="NODE", help="node to add (repeat, or a,b,c)"
    )
    p.add_argument("--member", action="append", default=None, metavar="CKPT", help="another ensemble member")
    add_model_options(p)
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per batch (default 64)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="image decoding processes (default 0)")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out (listed) and go on")
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process; ray: Ray Data with one model actor per --actors (needs hierclf[ray])",
    )
    p.add_argument("--actors", type=int, default=1, metavar="N", help="model actors with --engine ray")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, _parser=p)


def _graph(args: argparse.Namespace, model: Any) -> Any:
    from hierclf.inference.scoring import scoring_graph

    return scoring_graph(
        model,
        nodes=node_list(args.node or []),
        stored=args.thresholds,
        report=args.thresholds_from,
        seed=args.seed,
        tasks=args.task,
        rule=args.rule,
    )


def _score(args: argparse.Namespace, graph: Any, images: Any, files: list[Any], device: Any) -> Any:
    """The table, from this process or from Ray."""
    if args.engine == "ray":
        from hierclf.inference.ray_engine import predict_with_ray

        return predict_with_ray(
            files,
            images,
            graph,
            batch_size=args.batch_size,
            actors=args.actors,
            num_gpus=1.0 if device.type == "cuda" else 0.0,
            skip_bad=args.skip_bad,
        )
    from hierclf.inference.prediction_loop import Predictor

    predictor = Predictor(
        graph,
        device=device,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.no_progress,
        skip_bad=args.skip_bad,
    )
    return predictor.predict(images)


def run(args: argparse.Namespace) -> int:
    from hierclf.inference.images import image_list
    from hierclf.inference.loading import checkpoint_files, load_models, resolve_device
    from hierclf.inference.tables import write_table

    if args.batch_size < 1:
        args._parser.error("--batch-size must be at least 1")
    if args.workers < 0 or args.actors < 1:
        args._parser.error("--workers must be 0 or more and --actors at least 1")
    images = image_list(args.images, folder=args.folder, csv=args.csv)
    files = [f for p in [args.checkpoint, *(args.member or [])] for f in checkpoint_files(p)]
    device = resolve_device(args.device)
    model = load_models(files, taxonomy=args.taxonomy, device="cpu")
    graph = _graph(args, model)
    table = _score(args, graph, images, files, device)
    inputs = [*files, *images.paths, *(p for p in (args.csv, args.thresholds_from) if p)]
    out = write_table(table, args.out, inputs=inputs)
    skipped = f"; {len(table.skipped)} unreadable image(s) left out" if table.skipped else ""
    print(f"wrote {len(table)} rows x {len(table.output_columns())} columns to {out}{skipped}")
    for bad in table.skipped[:20]:
        print(f"  skipped {bad.path}: {bad.reason}")
    return 0
