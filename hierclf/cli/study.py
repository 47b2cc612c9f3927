"""``hierclf study PROTOCOL``: train the protocol's seeds, predict, evaluate, write the report."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "study",
        help="run a whole pre-registered study: train seeds, predict, evaluate, report",
        description="Train the protocol's number of seeds, predict validation and test, evaluate under the "
        "protocol and write report.md, report.json, figures/ and predictions/ into --out. An interrupted "
        "study resumes: finished seeds are not retrained, a half-trained seed continues from its checkpoint.",
    )
    p.add_argument(
        "protocol",
        metavar="PROTOCOL",
        help="protocol YAML file (its training: mapping holds the training settings and the taxonomy path)",
    )
    p.add_argument(
        "--data",
        default="dermamnist",
        metavar="SOURCE|PATH",
        help="dermamnist (downloaded through medmnist into --data-root; its official split is by image), "
        "synthetic (a small learnable dataset generated offline; the report is marked SYNTHETIC), "
        "ham10000, isic2019, isic2020 or generic (a published layout in --data-root, split by patient or "
        "lesion into OUT/split.csv, which every seed shares), or a DermaMNIST-layout .npz file, or a "
        "folder holding one or a published layout (default dermamnist)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="folder of the dataset: the download folder of a published layout (e.g. the one holding "
        "HAM10000_metadata.csv and the images), DermaMNIST's npz folder (default: OUT/data for synthetic)",
    )
    p.add_argument("--out", default="runs/study", help="study folder (default runs/study)")
    p.add_argument(
        "--taxonomy", default=None, help="taxonomy file (default: the protocol's training.taxonomy)"
    )
    p.add_argument(
        "--seeds", type=int, default=None, help="number of seeds (default: the protocol's min_seeds)"
    )
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's training epochs")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the protocol's, auto)")
    p.add_argument("--workers", type=int, default=None, help="data-loading worker processes")
    p.add_argument("--metadata", default=None, help="metadata CSV keyed by sample id (groups, subgroups)")
    p.add_argument(
        "--readers", default=None, help="reader operating points CSV (reader,sensitivity,specificity)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--strict",
        action="store_true",
        help="every warning of the report makes the exit status 3, after the report is written",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hierclf.study import run_study, summary_rows

    bar = tqdm(
        total=0,
        desc="study",
        unit="epoch",
        disable=args.no_progress or not sys.stderr.isatty(),
        file=sys.stderr,
    )

    def on_start(total: int) -> None:  # the settings are resolved once, inside run_study
        bar.total = total
        bar.refresh()

    def on_epoch(seed: int, record: dict[str, Any]) -> None:
        bar.set_postfix_str(f"seed {seed} epoch {record.get('epoch', '?')}")
        bar.update(1)

    try:
        result = run_study(
            args.protocol,
            data=args.data,
            data_root=args.data_root,
            out_dir=args.out,
            seeds=args.seeds,
            epochs=args.epochs,
            device=args.device,
            workers=args.workers,
            taxonomy=args.taxonomy,
            metadata=args.metadata,
            readers=args.readers,
            on_start=on_start,
            on_epoch=on_epoch,
            argv=list(args.argv) if getattr(args, "argv", None) else None,
        )
    finally:
        bar.close()
    if result.report is None:  # a torchrun rank other than 0
        return 0
    rows = summary_rows(result.report)
    if result.report.synthetic:
        print("SYNTHETIC DATA: these numbers test the pipeline; they are not a clinical result.")
    for notice in result.notices:  # DermaMNIST's image-level split
        print(f"IMAGE-LEVEL SPLIT: {notice}")
    print(
        f"study: {len(result.trained)} seed(s) trained, {len(result.reused)} reused; "
        f"report: {result.files.get('report.md', result.out_dir / 'report.md')}"
    )
    if result.seed_mean_files:
        print(f"seed ensemble (the seeds' mean as one model): {result.seed_mean_files.get('report.md')}")
    if rows:
        headers = list(rows[0])
        widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
        for r in rows:
            print("  ".join(r[h].ljust(w) for h, w in zip(headers, widths)))
    for warning in result.report.warnings:
        print(f"warning: {warning}")
    if result.report.alerts:
        print("ALERTS: " + " · ".join(result.report.alerts))
    from hierclf.cli.evaluate import strict_exit

    return strict_exit(result.report.warnings, strict=args.strict)
