"""``hierclf probe PROTOCOL``: frozen-feature kNN and linear probes, each evaluated as a model is."""

from __future__ import annotations

import argparse
from typing import Any

from hierclf.cli.experiment_options import add_protocol_options, protocol_kwargs


def register(sub: Any) -> None:
    p = sub.add_parser(
        "probe",
        help="kNN and linear probes on frozen features, each with the protocol's clinical report",
        description="Extract the backbone's features once (cached, keyed by backbone, weights, data and "
        "preprocessing), fit cosine kNN probes and a logistic linear probe (C chosen on validation) over the "
        "leaves or the protocol's cut, write each probe's predictions to "
        "OUT/predictions/<probe>/{val,test}.npz and its report (hierclf evaluate) to OUT/reports/<probe>/.",
    )
    add_protocol_options(p, default_out="runs/probe")
    p.add_argument("--backbone", default=None, help="backbone name or timm/<model> (default: the protocol's)")
    p.add_argument(
        "--k", default="10,20,50", metavar="K,K,...", help="kNN neighbours, one probe each (default 10,20,50)"
    )
    p.add_argument("--no-knn", action="store_true", help="no kNN probes")
    p.add_argument("--no-linear", action="store_true", help="no linear probe")
    p.add_argument(
        "--class-weight", choices=["balanced"], default=None, help="class weights of the linear probe"
    )
    p.add_argument("--batch-size", type=int, default=None, help="images per forward pass of the extraction")
    p.add_argument("--no-evaluate", action="store_true", help="write the predictions only")
    p.set_defaults(func=run)


def _ks(text: str) -> tuple[int, ...]:
    from hierclf.errors import HierclfError

    try:
        ks = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise HierclfError(
            f"--k {text!r}: expected whole numbers separated by commas, e.g. 10,20,50"
        ) from None
    if any(k < 1 for k in ks):
        raise HierclfError(f"--k {text!r}: every k must be at least 1")
    return ks


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hierclf.evaluation.pipeline import evaluate
    from hierclf.evaluation.report import write_report
    from hierclf.experiments.setup import experiment_setup, with_settings
    from hierclf.probe.probing import ProbeOptions, run_probes

    kw = protocol_kwargs(args)
    out = Path(args.out).resolve()
    setup = experiment_setup(
        args.protocol,
        data=kw["data"],
        data_root=kw["data_root"],
        out_dir=out,
        taxonomy=kw["taxonomy"],
        device=kw["device"],
        workers=kw["workers"],
    )
    extra: dict[str, Any] = {} if args.backbone is None else {"backbone": args.backbone}
    if args.pretrained is not None:
        extra["pretrained"] = args.pretrained
    config = with_settings(setup.config, **extra) if extra else setup.config
    options = ProbeOptions(
        ks=() if args.no_knn else _ks(args.k),
        linear=not args.no_linear,
        class_weight=args.class_weight,
        cache_dir=Path(args.cache) if args.cache else None,
        batch_size=args.batch_size,
    )
    result = run_probes(config, out_dir=out, options=options)
    reused = all(f["reused"] for f in result.features.values())
    print(
        f"features of {config.backbone}: {'reused from the cache' if reused else 'extracted'} "
        f"({result.features['train']['n_features']} per image, {result.preprocessing['size']} px)"
    )
    for name, paths in result.predictions.items():
        line = f"{name}: {paths['val'].parent}/{{val,test}}.npz"
        if not args.no_evaluate:
            report = evaluate(
                setup.taxonomy, setup.protocol, [paths["val"]], [paths["test"]], synthetic=setup.synthetic
            )
            write_report(report, out / "reports" / name)
            primary = report.primary
            line += f"; {primary['metric']} on {primary['task'] or primary['partition']}: "
            line += _primary_text(primary) + f" (report: {out / 'reports' / name / 'report.md'})"
        print(line)
    if setup.synthetic:
        print("SYNTHETIC DATA — not a clinical result")
    return 0


def _primary_text(primary: dict[str, Any]) -> str:
    est = primary.get("estimate") or {}
    value, ci = est.get("value"), est.get("ci") or [None, None]
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if None not in ci else "")
