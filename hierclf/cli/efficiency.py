"""``hierclf efficiency PROTOCOL --fractions ... [--backbones A,B]``: label-efficiency curves."""

from __future__ import annotations

import argparse
from typing import Any

from hierclf.cli.experiment_options import add_protocol_options, names, protocol_kwargs


def register(sub: Any) -> None:
    p = sub.add_parser(
        "efficiency",
        help="label-efficiency curves: the primary metric against the fraction of training labels",
        description="Keep a fraction of each training class (whole patients / lesions, nested across "
        "fractions), several seeds per fraction, probe frozen features or train, evaluate under the "
        "protocol; writes efficiency.md, .json, .csv and .png (the primary metric and each task's AUC with "
        "CIs) and the labels-saved factor of every backbone against the first (at equal metric, on the "
        "log-fraction axis).",
    )
    add_protocol_options(p, default_out="runs/efficiency")
    p.add_argument(
        "--fractions",
        default="0.01,0.02,0.05,0.1,0.25,0.5,1",
        metavar="F,F,...",
        help="fractions of each training class kept (default 0.01,0.02,0.05,0.1,0.25,0.5,1)",
    )
    p.add_argument("--backbones", default=None, metavar="A,B,...", help="backbones (default: the protocol's)")
    p.add_argument("--seeds", type=int, default=3, help="subsamples per fraction (default 3)")
    p.add_argument(
        "--method", choices=["probe", "train"], default="probe", help="probe frozen features or train"
    )
    p.add_argument("--probe", default="linear", metavar="linear|knn_k<k>", help="the probe (default linear)")
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's training epochs (train)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hierclf.experiments.efficiency import parse_fractions, run_label_efficiency

    result = run_label_efficiency(
        args.protocol,
        fractions=parse_fractions(args.fractions),
        backbones=names(args.backbones),
        seeds=args.seeds,
        method=args.method,
        probe=args.probe,
        epochs=args.epochs,
        **protocol_kwargs(args),
    )
    if result.synthetic:
        print("SYNTHETIC DATA — not a clinical result")
    for name, points in result.curves.items():
        cells = []
        for p in points:
            value = (p["primary"] or {}).get("value")
            cells.append(f"{p['fraction']:g}: {'n/a' if value is None else f'{value:.3f}'}")
        print(f"{name} ({result.metric}): " + ", ".join(cells))
    for s in result.saved:
        factor = "n/a" if s.factor is None else f"{s.factor:.2f}"
        print(f"labels saved by {s.backbone} against {s.reference}: x{factor}")
    print(f"wrote {', '.join(sorted(p.name for p in result.files.values()))} to {args.out}")
    return 0
