"""``hierclf train --config run.yaml``: train a backbone and a taxonomy head; resumable; DDP under torchrun.

Command-line options override the file and go into ``config.resolved.yaml``. Under
``torchrun --nproc_per_node=N -m hierclf train ...`` every process runs this command; rank 0 prints and
writes the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a model over a taxonomy (resumable; DDP under torchrun)",
        description="Train backbone + LeafHead as a YAML config says; see docs/training.md for every field. "
        "Outputs (checkpoint, predictions/val.npz, predictions/test.npz, history.json, DONE) go "
        "to out_dir. Run under `torchrun --nproc_per_node=N -m hierclf train ...` for DDP.",
    )
    p.add_argument("--config", required=True, metavar="YAML", help="training configuration file")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from out_dir/checkpoint.pt when present (default); --no-resume starts over",
    )
    p.add_argument("--out", metavar="DIR", help="output folder (overrides out_dir)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (overrides seed)")
    p.add_argument("--device", metavar="D", help="auto, cpu, cuda or cuda:<index> (overrides device)")
    p.add_argument("--workers", type=int, metavar="N", help="DataLoader worker processes (overrides workers)")
    p.add_argument("--epochs", type=int, metavar="N", help="number of epochs (overrides epochs)")
    p.add_argument("--data-root", metavar="DIR", help="data folder (overrides data.root)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--allow-leakage",
        action="store_true",
        help="train on CSV lists whose splits share groups (refused otherwise; sets data.allow_leakage, and "
        "every evaluation of the predictions then says LEAKAGE)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="check the configuration, taxonomy, data and classes, then stop without training",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hierclf.train.config import load_train_config
    from hierclf.train.loop import fit

    overrides: dict[str, Any] = {}
    for option, key in (
        ("out", "out_dir"),
        ("seed", "seed"),
        ("device", "device"),
        ("workers", "workers"),
        ("epochs", "epochs"),
        ("data_root", "data.root"),
    ):
        value = getattr(args, option)
        if value is not None:
            overrides[key] = str(Path(value).resolve()) if key in ("out_dir", "data.root") else value
    if args.allow_leakage:
        overrides["data.allow_leakage"] = True
    config = load_train_config(args.config, overrides=overrides)
    if args.check:
        from hierclf.train.precheck import check_inputs

        print(check_inputs(config).line())
        return 0
    result = fit(config, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif result.already_done:
        print(
            f"{result.out_dir}: already finished (best epoch {result.best_epoch}, {result.metric} "
            f"{result.best_metric:.4f}); --no-resume to train again"
        )
    else:
        stop = ", stopped early" if result.stopped_early else ""
        print(
            f"{result.out_dir}: {result.epochs_run} epoch(s){stop}; best epoch {result.best_epoch} "
            f"({result.metric} {result.best_metric:.4f}); predictions in {result.out_dir / 'predictions'}"
        )
    return 0
