"""One pre-registered study, from protocol to report: train every seed, predict, evaluate, write the report.

``hierclf study PROTOCOL`` is the command a user meets first. The protocol names the tasks, the operating
point and the number of seeds; its ``training:`` mapping holds the training settings (any
:class:`~hierclf.train.config.TrainConfig` field, paths relative to the protocol file). The study:

1. trains seeds ``0 .. n-1`` into ``OUT/seeds/seed_<k>/`` (a finished seed is not retrained, a half-trained
   seed resumes from its checkpoint: :func:`hierclf.train.loop.fit` with ``resume=True``);
2. copies each seed's validation and test predictions to ``OUT/predictions/`` (files that
   ``hierclf rollup`` and ``hierclf evaluate`` read);
3. evaluates them under the protocol (:func:`hierclf.evaluation.pipeline.evaluate`) and writes ``report.md``,
   ``report.json`` and ``figures/`` into ``OUT`` (:func:`hierclf.evaluation.report.write_report`), and with
   two or more seeds the seed ensemble (their mean, evaluated as one model) into ``OUT/seed_mean/``;
4. saves the resolved settings of the whole study as ``OUT/study.yaml``, and when training starts
   ``OUT/preregistration.json`` (the SHA-256 of the protocol and the taxonomy, the time, the code's version,
   the command: :func:`hierclf.evaluation.provenance.write_preregistration`), which ``hierclf evaluate``
   checks the protocol against later; the report records the hashes of every input and checkpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hierclf.data.sources import DERMAMNIST_SPLIT_NOTICE, IMAGE_SPLIT_NOTICE
from hierclf.errors import HierclfError, Problem
from hierclf.io.atomic import atomic_write_bytes, atomic_write_text, output_folder

logger = logging.getLogger(__name__)

#: what ``--data`` names besides a path: DermaMNIST (its official, image-level split), generated data, and
#: the published layouts that hierclf splits by patient or lesion (``hierclf.data.sources.PRESETS``)
DATA_CHOICES = ("dermamnist", "synthetic", "ham10000", "isic2019", "isic2020", "generic")
#: the published layouts (their split file is shared by every seed of a study: ``OUT/split.csv``)
PRESET_CHOICES = DATA_CHOICES[2:]


class StudyError(HierclfError, ValueError):
    """A study cannot run as asked (bad protocol training settings, data, or folder)."""


@dataclass
class StudyResult:
    """What :func:`run_study` did.

    Attributes:
        out_dir: the study folder.
        report: the :class:`~hierclf.evaluation.pipeline.EvaluationReport` (``None`` on torchrun ranks other
        than 0). files: the report's files (``report.md``, ``report.json``, figures).
        predictions: ``{"val": [paths per seed], "test": [paths per seed]}``.
        trained: seeds trained (fully or partly) by this call.
        reused: seeds that had finished before and were not retrained.
        split_level: what the split is grouped by: ``patient``, ``lesion`` or ``image`` (DermaMNIST's
            official split), None when unknown (the user's own lists).
        notices: what the user must be told about the data (the image-level split of DermaMNIST).
        seed_mean: with two or more seeds, the seed ensemble (the mean of the seeds' probabilities)
            evaluated as one model (:func:`hierclf.evaluation.ensembles.evaluate_seed_mean`), its report in
            ``OUT/seed_mean/``; ``seed_mean_files`` its files.
    """

    out_dir: Path
    report: Any
    files: dict[str, Path] = field(default_factory=dict)
    predictions: dict[str, list[Path]] = field(default_factory=dict)
    trained: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    split_level: str | None = None
    notices: list[str] = field(default_factory=list)
    seed_mean: Any = None
    seed_mean_files: dict[str, Path] = field(default_factory=dict)


def _protocol_training(protocol_path: Path) -> dict[str, Any]:
    """The protocol's raw ``training:`` mapping (read before the protocol, which needs the taxonomy)."""
    from hierclf.io.yaml_files import load_located_file

    doc = load_located_file(protocol_path)
    if doc.problems:
        from hierclf.evaluation.protocol_format import ProtocolError

        raise ProtocolError(doc.problems)
    training = doc.data.get("training") if isinstance(doc.data, dict) else None
    if training is None:
        return {}
    if not isinstance(training, dict):
        line, column = doc.position(("training",))
        raise StudyError(
            str(
                Problem("training: expected a mapping of training settings", str(protocol_path), line, column)
            )
        )
    return dict(training)


def _data_settings(data: str, data_root: Path | None, out: Path, training: dict[str, Any]) -> dict[str, Any]:
    """The training ``data`` settings of ``--data``: a name, a DermaMNIST-layout npz or folder, or a folder
    holding a published layout (found by its table's usual name, e.g. ``HAM10000_metadata.csv``)."""
    settings = dict(training.get("data") or {})
    name = data.strip().lower()
    if name == "synthetic":
        settings["source"] = "synthetic"
        settings["root"] = str(data_root or out / "data")
    elif name == "dermamnist":
        settings["source"] = "dermamnist"
        settings.setdefault("download", True)
        if data_root is not None:
            settings["root"] = str(data_root)
    elif name in PRESET_CHOICES:
        _preset_settings(settings, name, data_root, out)
    else:
        _path_settings(settings, Path(data).expanduser(), out)
    return settings


def _preset_settings(settings: dict[str, Any], preset: str, root: Path | None, out: Path) -> None:
    """A published layout: its folder (``--data-root``, else the protocol's ``data.root``) and one split
    file for every seed of the study."""
    settings["source"] = preset
    if root is not None:
        settings["root"] = str(root)
    split = dict(settings.get("split") or {})
    split.setdefault("file", str(out / "split.csv"))
    settings["split"] = split


def _path_settings(settings: dict[str, Any], path: Path, out: Path) -> None:
    if path.suffix == ".npz" and path.is_file():
        settings.update(source="dermamnist", npz=str(path.resolve()), download=False)
        return
    if path.is_dir():
        preset = _layout_in(path)
        if preset is not None:
            _preset_settings(settings, preset, path.resolve(), out)
        else:
            settings.update(source="dermamnist", root=str(path.resolve()), download=False)
        return
    raise StudyError(
        f"--data {str(path)!r}: expected 'dermamnist', 'synthetic', a preset ({', '.join(PRESET_CHOICES)}), "
        "a DermaMNIST .npz file, or a folder holding one or a published layout; no such file or folder"
    )


def _layout_in(folder: Path) -> str | None:
    """The preset whose table lies in ``folder`` under its usual name, if any."""
    from hierclf.data.sources import PRESETS

    for name in PRESETS:
        if any((folder / f).is_file() for f in PRESETS.get(name).table_files):
            return name
    return None


def study_configs(
    protocol: str | Path,
    *,
    data: str = "dermamnist",
    data_root: str | Path | None = None,
    out_dir: str | Path = "runs/study",
    seeds: int | None = None,
    epochs: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    taxonomy: str | Path | None = None,
) -> tuple[Any, Any, list[Any]]:
    """Resolve a study's settings without running anything: ``(taxonomy, protocol, [TrainConfig per seed])``.

    The taxonomy is ``taxonomy`` when given, else the protocol's ``training.taxonomy``.
    """
    from hierclf.evaluation.protocol_format import load_protocol
    from hierclf.taxonomy.tree import Taxonomy
    from hierclf.train.config import TrainConfig

    protocol_path = Path(protocol)
    if not protocol_path.is_file():
        raise StudyError(f"protocol file {str(protocol_path)!r} not found")
    base = protocol_path.resolve().parent
    out = Path(out_dir).resolve()
    training = _protocol_training(protocol_path)
    tax_path = Path(taxonomy).resolve() if taxonomy is not None else None
    if tax_path is None:
        if "taxonomy" not in training:
            raise StudyError(
                f"{protocol_path}: the protocol's training: mapping names no taxonomy; add "
                "`taxonomy: <path relative to the protocol>` there or pass --taxonomy"
            )
        tax_path = (base / str(training["taxonomy"])).resolve()
    tax = Taxonomy.from_yaml(tax_path)
    proto = load_protocol(protocol_path, tax)
    n_seeds = seeds if seeds is not None else proto.min_seeds
    if n_seeds < 1:
        raise StudyError(f"--seeds must be at least 1, got {n_seeds}")
    settings = {k: v for k, v in training.items() if k not in ("taxonomy", "seed", "out_dir")}
    settings["taxonomy"] = str(tax_path)
    settings["data"] = _data_settings(data, Path(data_root).resolve() if data_root else None, out, training)
    settings.setdefault("protocol", str(protocol_path.resolve()))
    if epochs is not None:
        settings["epochs"] = epochs
    if device is not None:
        settings["device"] = device
    if workers is not None:
        settings["workers"] = workers
    configs = []
    for seed in range(n_seeds):
        try:
            seed_dir = str(out / "seeds" / f"seed_{seed}")
            cfg = TrainConfig.model_validate({**settings, "seed": seed, "out_dir": seed_dir})
        except Exception as exc:  # pydantic's ValidationError: point at the protocol's training mapping
            raise StudyError(f"{protocol_path}: training: {' '.join(str(exc).split())}") from None
        configs.append(cfg.resolved(base))
    return tax, proto, configs


def run_study(
    protocol: str | Path,
    *,
    data: str = "dermamnist",
    data_root: str | Path | None = None,
    out_dir: str | Path = "runs/study",
    seeds: int | None = None,
    epochs: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    taxonomy: str | Path | None = None,
    metadata: str | Path | None = None,
    readers: str | Path | None = None,
    on_start: Callable[[int], None] | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    argv: list[str] | None = None,
) -> StudyResult:
    """Run (or resume) a whole study and write its report; see the module docstring.

    Args:
        protocol: the protocol YAML file.
        data: ``"dermamnist"`` (downloaded through medmnist into ``data_root``; its official split is by
            image, which the CLI says), ``"synthetic"`` (a small learnable dataset in DermaMNIST's layout,
            generated offline; the report says SYNTHETIC on every section), a published layout split by
            patient or lesion (``"ham10000"``, ``"isic2019"``, ``"isic2020"``, ``"generic"``: the files in
            ``data_root`` or the protocol's ``training.data``; every seed shares ``OUT/split.csv``), or the
            path of a DermaMNIST-layout ``.npz``, of a folder holding one, or of a folder holding a
            published layout.
        data_root: where datasets live (default: ``OUT/data`` for synthetic, the training default otherwise).
        out_dir: the study folder.
        seeds: number of seeds (default: the protocol's ``min_seeds``).
        epochs, device, workers: override the protocol's training settings.
        taxonomy: the taxonomy file (default: the protocol's ``training.taxonomy``).
        metadata, readers: passed to :func:`hierclf.evaluation.pipeline.evaluate`.
        on_start: called once with the study's total number of epochs (seeds x epochs), once the settings
            are resolved and before any training (progress displays).
        on_epoch: called as ``on_epoch(seed, record)`` after every finished epoch (progress displays).
        argv: the command line the provenance records (default ``sys.argv``).

    Returns:
        A :class:`StudyResult`.
    """
    from hierclf.evaluation.report import write_report

    out = Path(out_dir).resolve()
    tax, proto, configs = study_configs(
        protocol,
        data=data,
        data_root=data_root,
        out_dir=out,
        seeds=seeds,
        epochs=epochs,
        device=device,
        workers=workers,
        taxonomy=taxonomy,
    )
    meta, reader_rows = _evaluation_inputs(metadata, readers)  # before any epoch: a bad file fails now
    if on_start is not None:
        on_start(sum(c.epochs for c in configs))
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if main_rank:
        _start(out, protocol, data, configs, argv)
    result = StudyResult(out_dir=out, report=None)
    predictions = _train_seeds(configs, result, on_epoch, out / "predictions" if main_rank else None)
    result.split_level, result.notices = _split_notices(configs[0].data)  # after training: the file exists
    if main_rank:
        result.predictions = predictions
        inputs = (protocol, configs[0].taxonomy, [Path(c.out_dir) / "checkpoint.pt" for c in configs], argv)
        options = {"metadata": meta, "readers": reader_rows, "synthetic": data == "synthetic"}
        result.report = _evaluate_study(tax, proto, predictions, inputs, **options)
        result.files = write_report(result.report, out)
        _evaluate_seed_mean(result, tax, proto, meta, reader_rows, synthetic=data == "synthetic")
    return result


def _train_seeds(
    configs: list[Any],
    result: StudyResult,
    on_epoch: Callable[[int, dict[str, Any]], None] | None,
    publish_to: Path | None,
) -> dict[str, list[Path]]:
    """Train (or reuse) every seed in turn; on rank 0 (``publish_to`` set) publish its predictions."""
    predictions: dict[str, list[Path]] = {"val": [], "test": []}
    for cfg in configs:
        fitted = _train_seed(cfg, on_epoch)
        (result.reused if fitted.already_done else result.trained).append(cfg.seed)
        if publish_to is not None:
            for split, path in _publish_predictions(fitted.predictions, cfg.seed, publish_to).items():
                predictions[split].append(path)
    return predictions


def _evaluate_seed_mean(
    result: StudyResult, tax: Any, proto: Any, meta: Any, readers: Any, *, synthetic: bool
) -> None:
    """With two or more seeds, their mean as one model (seed 003: the ensemble is what a clinic would
    deploy), reported like one in ``OUT/seed_mean/``."""
    from hierclf.evaluation.ensembles import evaluate_seed_mean
    from hierclf.evaluation.report import write_report

    if len(result.predictions["test"]) < 2:
        return
    result.seed_mean = evaluate_seed_mean(
        tax, proto, result.predictions["val"], result.predictions["test"], metadata=meta, readers=readers,
        synthetic=synthetic,
    )  # fmt: skip
    result.seed_mean_files = write_report(result.seed_mean, result.out_dir / "seed_mean")


def _evaluate_study(
    tax: Any, proto: Any, predictions: dict[str, list[Path]], inputs: tuple[Any, ...], **options: Any
) -> Any:
    """The study's evaluation (:func:`hierclf.evaluation.pipeline.evaluate`) with the run's provenance:
    ``inputs`` = (protocol file, taxonomy file, checkpoints, command line)."""
    from hierclf.evaluation.pipeline import evaluate
    from hierclf.evaluation.provenance import run_record

    protocol, taxonomy, checkpoints, argv = inputs
    record = run_record(
        protocol=protocol,
        taxonomy=taxonomy,
        val=predictions["val"],
        test=predictions["test"],
        checkpoints=checkpoints,
        argv=argv,
    )
    return evaluate(tax, proto, predictions["val"], predictions["test"], provenance=record, **options)


def _start(out: Path, protocol: str | Path, data: str, configs: list[Any], argv: list[str] | None) -> None:
    """``OUT/study.yaml`` and, when training starts, ``OUT/preregistration.json`` (rank 0)."""
    from hierclf.evaluation.provenance import write_preregistration

    _write_study_yaml(out, protocol, data, configs)
    write_preregistration(out, protocol=protocol, taxonomy=configs[0].taxonomy, argv=argv)


def _split_notices(data: Any) -> tuple[str | None, list[str]]:
    """The split's level and what the user must be told about it."""
    level = _split_level(data)
    if level != "image":
        return level, []
    return level, [DERMAMNIST_SPLIT_NOTICE if data.source == "dermamnist" else IMAGE_SPLIT_NOTICE]


def _split_level(data: Any) -> str | None:
    """What the study's split is grouped by: DermaMNIST's by image, the generated data's by lesion, a
    published layout's as its split file says (None before the file exists)."""
    if data.source == "dermamnist":
        return "image"
    if data.source == "synthetic":
        return "lesion"
    if data.source in PRESET_CHOICES and data.split.file is not None and Path(data.split.file).is_file():
        from hierclf.io.csv_files import read_csv_table

        table = read_csv_table(data.split.file, what="split file")
        levels = table.column("level") if table.find("level") is not None and len(table) else None
        return None if levels is None else str(levels[0])
    return None


def _evaluation_inputs(metadata: str | Path | None, readers: str | Path | None) -> tuple[Any, Any]:
    """The metadata table and the readers (operating points or case-level reads), read and checked before
    the first epoch trains."""
    from hierclf.evaluation.reader_studies import is_reads_file, read_reader_reads
    from hierclf.evaluation.readers import read_readers
    from hierclf.evaluation.sample_metadata import read_metadata

    meta = read_metadata(metadata) if metadata is not None else None
    if readers is None:
        return meta, None
    return meta, read_reader_reads(readers) if is_reads_file(readers) else read_readers(readers)


def _write_study_yaml(out: Path, protocol: str | Path, data: str, configs: list[Any]) -> None:
    """``OUT/study.yaml``: the resolved settings of the whole study."""
    output_folder(out)
    study = {
        "protocol": str(Path(protocol).resolve()),
        "taxonomy": str(configs[0].taxonomy),
        "data": data,
        "seeds": len(configs),
        "training": configs[0].model_dump(mode="json", exclude={"seed", "out_dir"}),
    }
    header = "# written by hierclf study: the resolved settings of this study\n"
    atomic_write_text(out / "study.yaml", header + yaml.safe_dump(study, sort_keys=False))


def _train_seed(cfg: Any, on_epoch: Callable[[int, dict[str, Any]], None] | None) -> Any:
    """Train (or resume, or reuse) one seed; ``on_epoch`` hears of every epoch, skipped ones included."""
    from hierclf.train.loop import fit

    reported = [0]

    def report_epoch(record: dict[str, Any]) -> None:
        reported[0] += 1
        if on_epoch is not None:
            on_epoch(cfg.seed, record)

    fitted = fit(cfg, resume=True, progress=False, on_epoch=report_epoch)
    if on_epoch is not None:  # epochs done before (resumed, finished) or skipped by early stopping
        for _ in range(cfg.epochs - reported[0]):
            on_epoch(cfg.seed, {"epoch": None, "skipped": True})
    return fitted


def _publish_predictions(files: dict[str, Path], seed: int, pred_dir: Path) -> dict[str, Path]:
    """Copy a seed's validation and test predictions to ``OUT/predictions/`` atomically (a reader never
    sees half a file)."""
    out = {}
    for split in ("val", "test"):
        source = Path(files[split])
        target = pred_dir / f"{split}_seed{seed}{source.suffix}"
        atomic_write_bytes(target, source.read_bytes())
        out[split] = target
    return out


def summary_rows(report: Any) -> list[dict[str, str]]:
    """One row per task for the end-of-study table: AUC with CI, sensitivity and specificity at the
    validation-chosen threshold, and the recall of each class at the protocol's partitions
    (:func:`hierclf.evaluation.report.summary_rows`, the same table ``hierclf evaluate`` prints)."""
    from hierclf.evaluation.report import summary_rows as rows

    return rows(report)
