"""``hierclf shift PROTOCOL --metadata CSV [--column C --train-levels A,B]``: distribution shift (the column
and levels default to the protocol's pre-registered ``shift:`` block)."""

from __future__ import annotations

import argparse
from typing import Any

from hierclf.cli.experiment_options import add_protocol_options, names, protocol_kwargs


def register(sub: Any) -> None:
    p = sub.add_parser(
        "shift",
        help="distribution shift: train on some levels of a metadata column, test in and out of distribution",
        description="Fit a frozen-feature probe on the images whose metadata column takes one of "
        "--train-levels, choose operating points on their validation rows, and report the protocol on the "
        "in-distribution test rows and on the other levels (every split), with the gap per task (AUC, "
        "sensitivity, specificity) and a grouped-bootstrap CI; writes shift.md, shift.json and both reports.",
    )
    add_protocol_options(p, default_out="runs/shift")
    p.add_argument("--metadata", required=True, metavar="CSV", help="metadata CSV keyed by id/image_id")
    p.add_argument(
        "--column",
        default=None,
        help="the metadata column that shifts (e.g. dataset, site); default: the protocol's shift block",
    )
    p.add_argument(
        "--train-levels",
        default=None,
        metavar="A,B,...",
        help="levels trained on (in distribution); default: the protocol's shift block",
    )
    p.add_argument(
        "--test-levels", default=None, metavar="C,...", help="out-of-distribution levels (default: the rest)"
    )
    p.add_argument("--backbone", default=None, help="backbone name or timm/<model> (default: the protocol's)")
    p.add_argument("--probe", default="linear", metavar="linear|knn_k<k>", help="the probe (default linear)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hierclf.experiments.shift import run_shift

    result = run_shift(
        args.protocol,
        metadata=args.metadata,
        column=args.column,
        train_levels=names(args.train_levels),
        test_levels=names(args.test_levels),
        backbone=args.backbone,
        probe=args.probe,
        **protocol_kwargs(args),
    )
    if result.synthetic:
        print("SYNTHETIC DATA — not a clinical result")
    print("images: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()))
    for task, metrics in result.gaps.items():
        parts = [
            f"{m} {g['id']:.3f} -> {g['ood']:.3f} (gap {g['gap']:+.3f} "
            f"[{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}])"
            for m, g in metrics.items()
        ]
        print(f"{task}: " + "; ".join(parts))
    print(f"wrote shift.md, shift.json, in_distribution/ and out_of_distribution/ to {args.out}")
    return 0
