"""Image sources as people download them: an image folder plus a metadata CSV, read into one table.

A :class:`Preset` knows a published layout; :func:`source_spec` fills in what a user leaves out (the files'
usual names under a folder, the preset's columns) and :func:`read_source` reads it into a
:class:`SourceTable`: sample ids, labels resolved to node ids, patient or lesion groups, image paths and
the metadata columns that travel into prediction files. Nothing here imports torch: the training view of a
table is :class:`hierclf.data.datasets.SourceImages`.

=========== ============================================ =============================================
preset      files (under the data folder)                columns
=========== ============================================ =============================================
ham10000    ``HAM10000_metadata.csv``, images anywhere   ``image_id``, ``dx``, ``lesion_id``, ``dx_type``
            below (``HAM10000_images_part_1/``, ...)     ``age``, ``sex``, ``localization``
isic2019    ``ISIC_2019_Training_GroundTruth.csv``       ``image``, one-hot ``MEL, NV, BCC, AK, ...``;
            (+ ``ISIC_2019_Training_Metadata.csv``)      metadata ``lesion_id``, ``age_approx``, ...
isic2020    ``ISIC_2020_Training_GroundTruth_v2.csv``    ``image_name``, ``patient_id``, ``lesion_id``,
            (or ``..._GroundTruth.csv``, ``train.csv``)  ``diagnosis``, ``sex``, ``age_approx``, ...
generic     your CSV                                     given: id, path, label, patient, lesion, ...
=========== ============================================ =============================================

Labels resolve through the taxonomy (ids, aliases, display names), in the source's alias scopes first
(``source_aliases`` of the taxonomy format, ``docs/taxonomy-format.md``); every unknown label is reported
once with its lines and "did you mean". Metadata columns get standard names (:data:`STANDARD_METADATA`), so
a protocol's subgroups read the same on every source.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hierclf.errors import FileFormatError, HierclfError, Problem, UnknownNameError
from hierclf.io.csv_files import CsvTable, read_csv_table
from hierclf.options import Registry, look_up_option
from hierclf.taxonomy.tree import SourceScopes, Taxonomy

logger = logging.getLogger(__name__)

__all__ = [
    "DATA_SOURCES",
    "GROUP_LEVELS",
    "IMAGE_SUFFIXES",
    "PRESETS",
    "STANDARD_METADATA",
    "Preset",
    "SourceColumns",
    "SourceSpec",
    "SourceTable",
    "read_source",
    "resolve_labels",
    "source_spec",
]

#: the names metadata columns get in a source table and in prediction files (HAM10000's ``localization``,
#: ISIC's ``anatom_site_general`` are both ``site``)
STANDARD_METADATA = ("sex", "age", "site", "dx_type", "fitzpatrick", "lesion_id", "patient_id")
#: what a split can be grouped by, coarsest first
GROUP_LEVELS = ("patient", "lesion", "image")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


#: what a prediction file made on an image-level split keeps (``Predictions.info["notice"]``), and what every
#: report on it repeats: no id check can see two images of one lesion in two splits
IMAGE_SPLIT_NOTICE = (
    "split by image: images of one lesion may be in training and test (DermaMNIST's official split has no "
    "lesion ids), which inflates test metrics; split by lesion with data.source: ham10000"
)
#: what a run or study on DermaMNIST's official split is told (the training log, ``hierclf study``)
DERMAMNIST_SPLIT_NOTICE = (
    "DermaMNIST's official split is by image: its files carry no lesion ids, so images of one lesion can be "
    "in training and test (HAM10000: 10,015 images of 7,470 lesions), which inflates every test metric. For "
    "a lesion-level split use data.source: ham10000 in a training config, or run the same study on HAM10000: "
    "hierclf study PROTOCOL --data ham10000 --data-root <folder with HAM10000_metadata.csv and the images> "
    "(docs/data.md)"
)


@dataclass(frozen=True)
class SourceColumns:
    """Where a source's table keeps each field (column names compare case-insensitively).

    Attributes:
        id: the unique sample id.
        label: the label column; ``None`` for one-hot label columns (ISIC 2019: one column per class).
        path: the image path relative to the image folder; ``None``: the file named ``<id><suffix>``
            anywhere below the image folder.
        patient, lesion: the group columns, when the source has them.
        metadata: standard name -> the columns that may hold it, the first present one used.
        suffix: the image file suffix for ids without a path column.
    """

    id: str
    label: str | None
    path: str | None = None
    patient: str | None = None
    lesion: str | None = None
    metadata: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    suffix: str = ".jpg"


@dataclass(frozen=True)
class Preset:
    """A published layout: its columns, the usual names of its files and its alias scopes.

    Attributes:
        columns: the columns of the table.
        table_files: usual names of the table (labels, ids, groups), first found wins.
        extra_files: usual names of a second table joined on the id (ISIC 2019's metadata).
        alias_scopes: the taxonomy's ``source_aliases`` scopes its labels see first.
        level_note: what the preset's groups are (for the docs and logs).
    """

    columns: SourceColumns
    table_files: tuple[str, ...] = ()
    extra_files: tuple[str, ...] = ()
    alias_scopes: tuple[str, ...] = ()
    level_note: str = ""


#: the presets of a training config's ``data.source`` and ``hierclf study --data``
PRESETS: Registry[Preset] = Registry("data source preset")
PRESETS.add(
    "ham10000",
    Preset(
        SourceColumns(
            id="image_id",
            label="dx",
            lesion="lesion_id",
            metadata={
                "sex": ("sex",),
                "age": ("age",),
                "site": ("localization",),
                "dx_type": ("dx_type",),
                "lesion_id": ("lesion_id",),
            },
        ),
        table_files=("HAM10000_metadata.csv", "HAM10000_metadata"),
        alias_scopes=("ham10000",),
        level_note="lesion (HAM10000 has no patient ids)",
    ),
    summary="HAM10000 (Tschandl et al. 2018): HAM10000_metadata.csv and its images",
)
PRESETS.add(
    "isic2019",
    Preset(
        SourceColumns(
            id="image",
            label=None,
            lesion="lesion_id",
            metadata={
                "sex": ("sex",),
                "age": ("age_approx",),
                "site": ("anatom_site_general",),
                "lesion_id": ("lesion_id",),
            },
        ),
        table_files=("ISIC_2019_Training_GroundTruth.csv",),
        extra_files=("ISIC_2019_Training_Metadata.csv",),
        alias_scopes=("isic2019", "isic"),
        level_note="lesion (images without a lesion id are their own group)",
    ),
    summary="ISIC 2019 challenge: one-hot ground truth + metadata with lesion_id",
)
PRESETS.add(
    "isic2020",
    Preset(
        SourceColumns(
            id="image_name",
            label="diagnosis",
            patient="patient_id",
            lesion="lesion_id",
            metadata={
                "sex": ("sex",),
                "age": ("age_approx",),
                "site": ("anatom_site_general_challenge", "anatom_site_general"),
                "lesion_id": ("lesion_id",),
                "patient_id": ("patient_id",),
            },
        ),
        table_files=(
            "ISIC_2020_Training_GroundTruth_v2.csv",
            "ISIC_2020_Training_GroundTruth.csv",
            "train.csv",
        ),
        alias_scopes=("isic2020", "isic"),
        level_note="patient",
    ),
    summary="SIIM-ISIC 2020 challenge: image_name, patient_id, diagnosis, target",
)
PRESETS.add(
    "generic",
    Preset(SourceColumns(id="id", label="label", path="path")),
    summary="any image folder + CSV: columns for id, path, label and optional groups and metadata",
)


#: every value of a training config's ``data.source``: what kind of source it is (``npz``: a DermaMNIST-layout
#: file with its own, image-level split; ``csv``: one list per split, the user's split; ``preset``: a
#: published layout that hierclf splits by patient or lesion)
DATA_SOURCES: Registry[str] = Registry("data source")
DATA_SOURCES.add("dermamnist", "npz", summary="DermaMNIST through medmnist: the official split, by image")
DATA_SOURCES.add("synthetic", "npz", summary="generated DermaMNIST-layout data, split by synthetic lesion")
DATA_SOURCES.add("csv", "csv", summary="one CSV per split (path, label, optional group): your own split")
for _name in PRESETS:
    DATA_SOURCES.add(_name, "preset", summary=PRESETS.entry(_name).summary)


@dataclass(frozen=True)
class SourceSpec:
    """What to read: a preset's layout with the user's files and overrides applied.

    Attributes:
        preset: the preset's name.
        table: the CSV with ids and labels (and groups and metadata, unless in ``extra``).
        images: the folder image paths are taken from (searched recursively for ``<id><suffix>``).
        extra: a second CSV joined on the id (ISIC 2019's metadata), or None.
        columns: the columns of the table (and of ``extra``).
        alias_scopes: the taxonomy scopes the labels see first.
    """

    preset: str
    table: Path
    images: Path
    columns: SourceColumns
    extra: Path | None = None
    alias_scopes: tuple[str, ...] = ()


def _first_file(root: Path, names: Sequence[str], what: str, preset: str) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    raise HierclfError(
        f"no {what} of the {preset} preset in {root} (looked for {', '.join(names)}); give its path "
        "(training config: data.metadata / data.labels; or put it in the data folder)"
    )


def source_spec(
    preset: str,
    *,
    root: str | Path | None = None,
    table: str | Path | None = None,
    images: str | Path | None = None,
    extra: str | Path | None = None,
    columns: Mapping[str, object] | None = None,
    alias_scopes: Sequence[str] | None = None,
) -> SourceSpec:
    """The :class:`SourceSpec` of ``preset`` with the files given, else found under ``root`` by their usual
    names (``HAM10000_metadata.csv``); the image folder defaults to ``root``, else the table's folder.

    Args:
        preset: ``ham10000``, ``isic2019``, ``isic2020`` or ``generic``.
        root: the folder the dataset was downloaded to.
        table, images, extra: explicit files (see :class:`SourceSpec`).
        columns: overrides of the preset's columns (the fields of :class:`SourceColumns`; ``metadata`` as
            ``{standard name: column}``).
        alias_scopes: the scopes labels see first (default: the preset's).

    Raises:
        UnknownNameError: an unknown preset or column field. HierclfError: a file that is not found.
    """
    name = PRESETS.resolve(preset)
    spec = PRESETS.get(name)
    base = Path(root) if root is not None else None
    if table is None:
        if base is None or not spec.table_files:
            raise HierclfError(f"data source {name!r} needs its CSV (data.metadata) or a data folder")
        table = _first_file(base, spec.table_files, "table", name)
    if extra is None and base is not None and spec.extra_files:
        found = [base / n for n in spec.extra_files if (base / n).is_file()]
        extra = found[0] if found else None
    folder = Path(images) if images is not None else (base if base is not None else Path(table).parent)
    scopes = tuple(alias_scopes) if alias_scopes is not None else spec.alias_scopes
    cols = _with_overrides(spec.columns, columns or {})
    return SourceSpec(name, Path(table), folder, cols, None if extra is None else Path(extra), scopes)


def _with_overrides(columns: SourceColumns, overrides: Mapping[str, object]) -> SourceColumns:
    known = [f for f in SourceColumns.__dataclass_fields__ if f != "metadata"] + ["metadata"]
    for key in overrides:
        if key not in known:
            raise UnknownNameError("column field", key, known, "in the data source's columns")
    values = {k: v for k, v in overrides.items() if k != "metadata"}
    meta = overrides.get("metadata")
    if isinstance(meta, Mapping):
        merged = dict(columns.metadata)
        merged.update({str(k): (str(v),) for k, v in meta.items()})
        values["metadata"] = merged
    return replace(columns, **values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SourceTable:
    """A source read whole: one row per image (see :func:`read_source`).

    Attributes:
        name: the preset.
        file: the table's file.
        ids: ``(n,)`` unique sample ids. labels: ``(n,)`` node ids.
        groups: ``(n,)`` patient / lesion ids (an image without one is its own group ``image:<id>``).
        level: what ``groups`` are: ``patient``, ``lesion`` or ``image`` (every image its own group).
        paths: the image file of each row.
        metadata: standard name -> ``(n,)`` str (empty cells stay ``""``).
    """

    name: str
    file: str
    ids: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    level: str
    paths: list[Path]
    metadata: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def read_source(
    spec: SourceSpec, taxonomy: Taxonomy, *, group_by: str = "auto", check_files: bool = True
) -> SourceTable:
    """Read a source: ids, labels (resolved in the source's alias scopes), groups, image paths, metadata.

    Args:
        spec: what to read (:func:`source_spec`).
        taxonomy: the tree the labels belong to.
        group_by: ``auto`` (patient ids if the source has them, else lesion ids, else each image alone),
            ``patient``, ``lesion`` or ``image``.
        check_files: find every image file now (one directory walk) and report the missing ones.

    Raises:
        FileFormatError: every problem of the files, positioned (unknown labels with "did you mean", empty
            ids, repeated ids, bad one-hot rows, missing images).
    """
    cols = spec.columns
    wanted = [c for c in (cols.id, cols.label, cols.path) if c is not None]
    table = read_csv_table(spec.table, what=f"{spec.preset} table", required=wanted)
    if not len(table):
        raise FileFormatError(
            [Problem("no rows below the header", table.file, 1)], what=f"{spec.preset} table"
        )
    ids = _ids(table, cols.id)
    raw, raw_problems = _raw_labels(table, cols)
    labels, problems = resolve_labels(raw, taxonomy, source=spec.alias_scopes, table=table, column=cols.label)
    extra = _join_extra(spec, ids)
    metadata = _metadata(table, extra, cols, len(ids))
    groups, level = _groups(ids, metadata, table, extra, cols, group_by)
    paths, path_problems = _image_paths(table, ids, spec, check_files)
    found = raw_problems + problems + path_problems
    if found:
        raise FileFormatError(found, what=f"{spec.preset} table")
    logger.info(
        "%s: %d images of %d %s groups from %s",
        spec.preset,
        len(ids),
        np.unique(groups).size,
        level,
        table.file,
    )
    return SourceTable(spec.preset, table.file, ids, labels, groups, level, paths, metadata)


def _ids(table: CsvTable, column: str) -> np.ndarray:
    problems = table.empty_cells(column)
    ids = table.column(column)
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    for k in np.flatnonzero(counts > 1)[:5].tolist():
        again = int(np.flatnonzero(ids == uniq[k])[1])
        message = f"sample id {str(uniq[k])!r} repeats (first at line {int(table.lines[first[k]])})"
        problems.append(table.problem(again, message, column=table.index_of(column), code="duplicate-id"))
    if problems:
        raise FileFormatError(problems, what=table.what)
    return ids


def _raw_labels(table: CsvTable, cols: SourceColumns) -> tuple[np.ndarray, list[Problem]]:
    """The label text of every row: the label column, or the header of the one-hot column set to 1."""
    if cols.label is not None:
        return table.column(cols.label), []
    skip = {c.casefold() for c in (cols.id, cols.path, cols.patient, cols.lesion) if c is not None}
    label_cols = [k for k, h in enumerate(table.header) if h.casefold() not in skip]
    cells = table.cells[:, label_cols]
    try:
        values = cells.astype(np.float64)
    except ValueError:
        r, c = next((r, c) for r, c in np.ndindex(cells.shape) if not _is_number(cells[r, c]))
        bad = table.problem(r, f"one-hot value {cells[r, c]!r} is not 0 or 1", column=label_cols[c])
        return np.full(len(table), "", dtype=object).astype(str), [bad]
    ones = values == 1.0
    bad_rows = np.flatnonzero((ones.sum(axis=1) != 1) | ~np.isin(values, (0.0, 1.0)).all(axis=1))
    problems = [
        table.problem(int(r), "one-hot row must hold exactly one 1 (and 0 elsewhere)", code="one-hot")
        for r in bad_rows[:20]
    ]
    names = np.asarray([table.header[k] for k in label_cols], dtype=str)
    return names[np.argmax(ones, axis=1)], problems


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def resolve_labels(
    raw: np.ndarray,
    taxonomy: Taxonomy,
    *,
    source: SourceScopes = None,
    table: CsvTable,
    column: str | None,
) -> tuple[np.ndarray, list[Problem]]:
    """Node ids of raw labels, each distinct label resolved once (in the ``source`` scopes first); one
    problem per unknown label naming its lines (the first five) and the closest names.

    ``column`` is the label column; ``None`` for one-hot labels, whose raw labels are column names (a
    problem then points at the column).

    Returns:
        ``(n,)`` str node ids (``""`` where unknown) and the problems, sorted by line.
    """
    distinct, inverse = np.unique(raw, return_inverse=True)
    resolved: list[str] = []
    problems: list[Problem] = []
    for k, name in enumerate(distinct.tolist()):  # a loop over distinct labels
        try:
            resolved.append(taxonomy.resolve(name, source=source))
        except UnknownNameError as err:
            resolved.append("")
            lines = table.lines[inverse.reshape(-1) == k].tolist()
            more = f" and {len(lines) - 5} more" if len(lines) > 5 else ""
            shown = ", ".join(str(x) for x in lines[:5]) + more
            where = f"column {column!r}" if column is not None else f"one-hot column {name!r}"
            msg = f"{err} ({where}, line{'s' if len(lines) > 1 else ''} {shown})"
            if not name:
                msg = f"empty label in column {column!r} (lines {shown})"
            col = table.find(column if column is not None else name)
            problems.append(
                Problem(msg, table.file, lines[0], None if col is None else col + 1, code="unknown-label")
            )
    problems.sort(key=lambda p: p.line or 0)
    return np.asarray(resolved, dtype=str)[inverse.reshape(-1)], problems


def _join_extra(spec: SourceSpec, ids: np.ndarray) -> CsvTable | None:
    """The second table (ISIC 2019's metadata) with its rows in the order of ``ids`` (missing ids: empty
    cells), or None."""
    if spec.extra is None:
        return None
    extra = read_csv_table(spec.extra, what=f"{spec.preset} metadata", required=[spec.columns.id])
    keys = extra.column(spec.columns.id)
    order = np.argsort(keys, kind="stable")
    pos = np.minimum(np.searchsorted(keys[order], ids), max(len(keys) - 1, 0))
    found = keys[order][pos] == ids if len(keys) else np.zeros(len(ids), bool)
    if not found.all():
        logger.warning(
            "%s: %d of %d images have no row in %s (their metadata is empty)",
            spec.preset,
            int((~found).sum()),
            len(ids),
            extra.file,
        )
    rows = np.where(found, order[pos], -1)
    cells = np.vstack([extra.cells, np.full((1, len(extra.header)), "", dtype=extra.cells.dtype)])[rows]
    return CsvTable(extra.file, extra.what, extra.header, cells, np.where(found, extra.lines[rows], 0))


def _column_of(tables: Sequence[CsvTable | None], names: Sequence[str]) -> np.ndarray | None:
    for name in names:
        for t in tables:
            if t is not None and t.find(name) is not None:
                return t.column(name)
    return None


def _metadata(table: CsvTable, extra: CsvTable | None, cols: SourceColumns, n: int) -> dict[str, np.ndarray]:
    """Standard name -> column, for the metadata columns the files have (absent ones are left out)."""
    out: dict[str, np.ndarray] = {}
    for name, candidates in cols.metadata.items():
        values = _column_of((table, extra), candidates)
        if values is not None:
            out[name] = np.asarray(values, dtype=str).reshape(n)
    return out


def _groups(
    ids: np.ndarray,
    metadata: Mapping[str, np.ndarray],
    table: CsvTable,
    extra: CsvTable | None,
    cols: SourceColumns,
    group_by: str,
) -> tuple[np.ndarray, str]:
    """The split groups and their level; images without a group id are groups of their own."""
    wanted = look_up_option(group_by, ("auto", *GROUP_LEVELS), kind="grouping")
    columns = {"patient": cols.patient, "lesion": cols.lesion}
    found = {
        level: values
        for level, name in columns.items()
        if name is not None and (values := _column_of((table, extra), (name,))) is not None
    }
    if wanted == "auto":
        usable = [lv for lv in ("patient", "lesion") if lv in found and (found[lv] != "").any()]
        wanted = usable[0] if usable else "image"
    if wanted == "image":
        logger.warning(
            "%s: split by image: no patient or lesion ids, so images of one lesion may fall in two splits",
            table.file,
        )
        return ids.astype(str), "image"
    if wanted not in found:
        raise HierclfError(
            f"{table.file}: cannot group by {wanted}: no {wanted} column "
            f"({columns[wanted] or 'the preset has none'}); set data.columns.{wanted} or data.split.by"
        )
    values = np.asarray(found[wanted], dtype=str)
    alone = values == ""
    if alone.any():
        logger.warning(
            "%s: %d images have no %s id; each is a group of its own", table.file, int(alone.sum()), wanted
        )
    return np.where(alone, np.char.add("image:", ids.astype(str)), values), wanted


def _index_images(folder: Path, suffixes: Sequence[str]) -> dict[str, list[Path]]:
    """File name -> paths of the image files below ``folder`` (one walk; a name found twice keeps both)."""
    found: dict[str, list[Path]] = {}
    wanted = tuple(s.lower() for s in suffixes)
    for top, _, files in os.walk(folder):
        for name in files:
            if name.lower().endswith(wanted):
                found.setdefault(name, []).append(Path(top) / name)
    return found


def _image_paths(
    table: CsvTable, ids: np.ndarray, spec: SourceSpec, check_files: bool
) -> tuple[list[Path], list[Problem]]:
    """The image of every row: ``images / path`` with a path column, else the file ``<id><suffix>`` below
    the image folder; a problem per missing or ambiguous image (the first 20, then a count)."""
    cols = spec.columns
    if not spec.images.is_dir():
        raise HierclfError(f"image folder {spec.images} not found")
    if cols.path is not None:
        paths = [p if p.is_absolute() else spec.images / p for p in map(Path, table.column(cols.path))]
        missing = [r for r, p in enumerate(paths) if check_files and not p.is_file()]
        return paths, _missing_images(table, missing, paths, table.index_of(cols.path))
    names = np.char.add(ids.astype(str), cols.suffix).tolist()
    index = _index_images(spec.images, (cols.suffix,)) if check_files else {}
    paths = [index.get(n, [spec.images / n])[0] for n in names]
    missing = [r for r, n in enumerate(names) if check_files and n not in index]
    problems = _missing_images(table, missing, paths, table.index_of(cols.id))
    twice = [r for r, n in enumerate(names) if len(index.get(n, ())) > 1]
    problems += [
        table.problem(
            r,
            f"image {names[r]} found twice below {spec.images}: " + ", ".join(map(str, index[names[r]])),
            code="ambiguous-file",
        )
        for r in twice[:5]
    ]
    return paths, problems


def _missing_images(table: CsvTable, rows: list[int], paths: list[Path], column: int) -> list[Problem]:
    problems = [
        table.problem(r, f"image file {paths[r]} not found", column=column, code="missing-file")
        for r in rows[:20]
    ]
    if len(rows) > 20:
        problems.append(Problem(f"... and {len(rows) - 20} more image files not found", table.file))
    return problems
