"""Options shared by the commands that read a protocol's training settings (probe, efficiency, shift)."""

from __future__ import annotations

import argparse
from typing import Any


def add_protocol_options(p: Any, *, default_out: str) -> None:
    """PROTOCOL and the data, folder and device options, as ``hierclf study`` takes them."""
    p.add_argument(
        "protocol",
        metavar="PROTOCOL",
        help="protocol YAML file (its training: mapping gives the taxonomy, data, classes and backbone)",
    )
    p.add_argument(
        "--data",
        default="dermamnist",
        metavar="dermamnist|synthetic|PATH",
        help="dermamnist, synthetic (generated offline; reports are marked SYNTHETIC), or a "
        "DermaMNIST-layout .npz file or folder (default dermamnist)",
    )
    p.add_argument("--data-root", default=None, help="folder for datasets (default: OUT/data for synthetic)")
    p.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    p.add_argument(
        "--taxonomy", default=None, help="taxonomy file (default: the protocol's training.taxonomy)"
    )
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the protocol's, auto)")
    p.add_argument("--workers", type=int, default=None, help="data-loading worker processes")
    p.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="feature cache (default: $HIERCLF_CACHE/features or ~/.cache/hierclf/features)",
    )
    p.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="load pretrained weights (default: the protocol's training.pretrained)",
    )


def protocol_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The shared options as keyword arguments of the experiment functions."""
    return {
        "data": args.data,
        "data_root": args.data_root,
        "out_dir": args.out,
        "taxonomy": args.taxonomy,
        "device": args.device,
        "workers": args.workers,
        "cache_dir": args.cache,
        "pretrained": args.pretrained,
    }


def names(text: str | None) -> list[str] | None:
    """``"a,b"`` as ``["a", "b"]`` (None stays None)."""
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]
