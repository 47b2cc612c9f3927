"""Prediction files: per-sample probabilities over named columns, with ids, true labels, patient groups, the
split and seed they come from, and the samples' metadata.

Training writes them, ``hierclf rollup`` and ``hierclf evaluate`` read them. Three formats, chosen by suffix:

``.npz`` (NumPy archive, written uncompressed)
    ``probs`` ``(n, n_columns)`` float; ``leaves`` ``(n_columns,)`` str, the node ids naming the columns
    (taxonomy leaves, or a cut of the tree such as the training classes); optional ``ids``, ``labels``,
    ``groups``, ``split`` (each ``(n,)`` str), ``seed`` ``(n,)`` int, ``metadata.<name>`` ``(n,)`` str per
    metadata column and ``info`` (a JSON object of text: the file's ``split_level``, ``source``, notices).
    Arrays are stored without pickles. Reading streams ``probs`` row block by row block from the archive
    (compressed members too), so a large file is never held twice.

``.csv``
    A header row, then one row per sample. The first column holds the sample id when it is named ``id``,
    ``image`` or ``image_id`` (the ISIC challenge format ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` reads as is);
    optional ``label``, ``group``, ``split`` and ``seed`` columns; metadata columns named ``sex``, ``age``,
    ``site``, ``dx_type``, ``fitzpatrick``, ``lesion_id``, ``patient_id`` or ``meta:<name>``; every other
    column is a probability column named by a node id or alias. Read by pyarrow when it is installed
    (falling back to Python's reader, which says where a problem is), written with the shortest text that
    reads back exactly.

``.parquet``
    The same columns as CSV, typed (probabilities float32 or float64, ``seed`` int64, the rest text), read
    and written by row groups so that memory stays flat; the schema metadata (key ``hierclf``) names the
    probability and metadata columns and holds ``info``.

With a taxonomy, column names and labels are resolved (ids, aliases, display names) and the columns must
partition the leaves (a cut); every problem is reported with the file, the line or row, and what was
expected.

Example:
    >>> import numpy as np, tempfile, os
    >>> p = Predictions(np.array([[0.2, 0.8], [0.5, 0.5]]), ("nevus", "melanoma"), ids=np.array(["a", "b"]),
    ...                 metadata={"sex": np.array(["f", "m"])})
    >>> path = os.path.join(tempfile.mkdtemp(), "val.csv")
    >>> write_predictions(path, p)
    >>> q = read_predictions(path)
    >>> q.columns, q.ids.tolist(), q.metadata["sex"].tolist(), bool(np.array_equal(q.probs, p.probs))
    (('nevus', 'melanoma'), ['a', 'b'], ['f', 'm'], True)
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hierclf.errors import HierclfError, Problem
from hierclf.evaluation.prediction_formats import (
    ID_COLUMNS,
    METADATA_COLUMNS,
    NPZ_META,
    SUFFIXES,
    ColumnWriter,
    PredictionsError,
    error,
    header_name,
    open_format,
    parquet_description,
    round_significant,
    unsupported,
)
from hierclf.io.atomic import atomic_open

if TYPE_CHECKING:
    from hierclf.taxonomy.tree import Taxonomy

logger = logging.getLogger(__name__)

__all__ = [
    "ID_COLUMNS",
    "METADATA_COLUMNS",
    "PredictionReader",
    "Predictions",
    "PredictionsError",
    "TableWriter",
    "check_probabilities",
    "metadata_from_predictions",
    "open_predictions",
    "read_predictions",
    "resolve_columns",
    "write_predictions",
]

LABEL_COLUMN, GROUP_COLUMN = "label", "group"
DEFAULT_CHUNK = 65_536
#: names no metadata column may take (they are the files' own fields)
_RESERVED = {"id", "image", "image_id", "label", "group", "split", "seed"}

_error = error


@dataclass
class Predictions:
    """Per-sample scores over named columns.

    Attributes:
        probs: ``(n, n_columns)`` float probabilities; rows sum to 1.
        columns: node ids naming the columns (taxonomy leaves, or a cut such as the training classes).
        ids: ``(n,)`` str unique sample ids, or ``None``.
        labels: ``(n,)`` str true node ids (usually leaves), or ``None``.
        groups: ``(n,)`` str patient / lesion ids (for grouped statistics), or ``None``.
        split: ``(n,)`` str the split each sample belongs to (``train``, ``val``, ``test``), or ``None``.
        seed: ``(n,)`` int64 the training seed of the model that made each row, or ``None``.
        metadata: name -> ``(n,)`` str per-sample metadata (``sex``, ``age``, ``site``, ``dx_type``,
            ``fitzpatrick``, ...): what subgroups and the reference-standard mix are read from.
        info: facts about the whole file (``split_level``: ``patient``, ``lesion`` or ``image``;
            ``source``; ``notice``), text to text.
    """

    probs: np.ndarray
    columns: tuple[str, ...]
    ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None
    split: np.ndarray | None = None
    seed: np.ndarray | None = None
    metadata: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    _checked_ids: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.probs = np.asarray(self.probs)
        self.columns = tuple(str(c) for c in self.columns)
        if self.probs.ndim != 2:
            raise _error(f"probs must be 2-D (n, n_columns), got shape {self.probs.shape}")
        if not np.issubdtype(self.probs.dtype, np.floating):
            raise _error(f"probs must be floating point, got dtype {self.probs.dtype}")
        if self.probs.shape[1] != len(self.columns):
            raise _error(
                f"probs has {self.probs.shape[1]} columns but {len(self.columns)} column names were given"
            )
        if len(set(self.columns)) != len(self.columns):
            dup = sorted({c for c in self.columns if self.columns.count(c) > 1})
            raise _error(f"column names repeat: {', '.join(map(repr, dup))}")
        n = self.probs.shape[0]
        for name in ("ids", "labels", "groups", "split", "seed"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _row_array(value, name, n))
        self.metadata = {str(k): _row_array(v, f"metadata {k!r}", n) for k, v in dict(self.metadata).items()}
        self._check_metadata_names()
        self.info = {str(k): str(v) for k, v in dict(self.info).items()}
        if self.ids is not None and not self._checked_ids:
            _check_unique_ids(self.ids, None, 0)

    def _check_metadata_names(self) -> None:
        columns = {c.casefold() for c in self.columns}
        for name in self.metadata:
            if not name or name.casefold() in _RESERVED or name.casefold() in columns:
                raise _error(
                    f"metadata column {name!r} clashes with a field or probability column of prediction files"
                )

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    def select(self, rows: np.ndarray | slice) -> Predictions:
        """The predictions of some rows (an index array, boolean mask or slice)."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return Predictions(
            self.probs[rows],
            self.columns,
            pick(self.ids),
            pick(self.labels),
            pick(self.groups),
            pick(self.split),
            pick(self.seed),
            {k: v[rows] for k, v in self.metadata.items()},
            dict(self.info),
            _checked_ids=True,
        )

    def fields(self) -> dict[str, np.ndarray]:
        """The per-row fields it carries by their file names (``ids``, ..., ``metadata.<name>``)."""
        found = {
            name: value
            for name in ("ids", "labels", "groups", "split", "seed")
            if (value := getattr(self, name)) is not None
        }
        found.update({NPZ_META + k: v for k, v in self.metadata.items()})
        return found


def _row_array(value: Any, name: str, n: int) -> np.ndarray:
    arr = np.asarray(value)
    arr = arr.astype(np.int64) if name == "seed" else arr.astype(str)
    if arr.shape != (n,):
        raise _error(f"{name} must have shape ({n},) to match probs, got {arr.shape}")
    return arr


class _IdLedger:
    """The sample ids seen in earlier blocks, for the duplicate check across a file.

    Ids are kept as UTF-8 bytes in sorted arrays of doubling sizes (a log-structured merge: each block is
    checked against a few sorted arrays, and each id is merged a logarithmic number of times), about 12
    bytes an ISIC id where a Python set would hold a 100-byte object: memory stays small for millions of
    rows.
    """

    def __init__(self) -> None:
        self._levels: list[np.ndarray] = []

    def __bool__(self) -> bool:
        return bool(self._levels)

    def clashes(self, uniq: np.ndarray) -> np.ndarray:
        """The ids of ``uniq`` (sorted, unique) seen before."""
        key = _id_bytes(uniq)
        seen = np.zeros(len(key), dtype=bool)
        for level in self._levels:
            pos = np.minimum(np.searchsorted(level, key), len(level) - 1)
            seen |= level[pos] == key
        return uniq[seen]

    def add(self, uniq: np.ndarray) -> None:
        self._levels.append(np.sort(_id_bytes(uniq)))
        while len(self._levels) > 1 and len(self._levels[-2]) <= 2 * len(self._levels[-1]):
            top = self._levels.pop()
            self._levels[-1] = np.union1d(self._levels[-1], top)


def _id_bytes(ids: np.ndarray) -> np.ndarray:
    return np.char.encode(ids.astype(str), "utf-8") if ids.size else np.zeros(0, dtype="S1")


def _check_unique_ids(
    ids: np.ndarray,
    file: str | None,
    offset: int,
    seen: _IdLedger | None = None,
    lines: np.ndarray | None = None,
) -> None:
    """Raise naming the first repeated id; ``seen`` carries ids across chunks."""
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    dup = uniq[counts > 1]
    if seen:
        clash = seen.clashes(uniq)
        if clash.size:
            dup = np.union1d(dup, clash)
    if len(dup):
        name = str(dup[0])
        rows = np.flatnonzero(ids == name)
        where = "" if lines is not None else f" at row {int(rows[-1]) + offset}"
        more = f" ({len(dup)} ids repeat in all)" if len(dup) > 1 else ""
        line = None if lines is None else int(lines[rows[-1]])
        raise PredictionsError(
            [
                Problem(
                    f"duplicate sample id {name!r}{where}{more}; ids must be unique",
                    file,
                    line,
                    code="duplicate-id",
                )
            ]
        )
    if seen is not None:
        seen.add(uniq)


def resolve_columns(
    taxonomy: Taxonomy,
    names: Sequence[str],
    file: str | None = None,
    *,
    positions: Sequence[int] | None = None,
) -> tuple[str, ...]:
    """Resolve column names (ids, aliases, display names) to node ids that partition the leaves.

    ``positions`` are the 1-based file columns of ``names`` (for the message). Raises one
    :class:`PredictionsError` whose message lists every unknown column (with "did you mean"), columns that
    overlap (name the same node or nested subtrees), and the leaves that no column covers.
    """
    from hierclf.errors import UnknownNameError

    positions = list(positions) if positions is not None else list(range(1, len(names) + 1))
    parts: list[str] = []
    ids: list[str] = []
    unknown: list[str] = []
    for k, name in zip(positions, names):
        try:
            ids.append(taxonomy.resolve(name))
        except UnknownNameError as exc:
            hint = " or ".join(map(repr, exc.suggestions))
            unknown.append(f"{name!r} (column {k}" + (f"; did you mean {hint}?)" if hint else ")"))
            ids.append("")
    if unknown:
        parts.append(
            f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: not "
            f"{'nodes' if len(unknown) > 1 else 'a node'} of taxonomy {taxonomy.name!r}"
        )
    first: dict[str, str] = {}
    for name, node in zip(names, ids):
        if node and node in first:
            parts.append(f"columns {first[node]!r} and {name!r} overlap (both name node {node!r})")
        first.setdefault(node, name)
    known = [node for node in first if node]
    if known:
        parts += [message for _, message in taxonomy.cut_problems(known, what="columns", shown=first)]
    if parts:
        line = 1 if file and file.lower().endswith(".csv") else None
        raise PredictionsError([Problem("; ".join(parts), file, line, code="columns")])
    return tuple(ids)


def check_probabilities(
    probs: np.ndarray,
    *,
    file: str | None = None,
    offset: int = 0,
    lines: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    tol: float | None = 1e-3,
    negative: bool = True,
    columns: Sequence[str] | None = None,
) -> None:
    """Raise :class:`PredictionsError` on NaN/inf, negative values, or rows not summing to 1 within ``tol``.

    ``tol=None`` skips the row-sum check, ``negative=False`` the sign check (for logits). ``offset`` is the
    row number of ``probs[0]`` in its file and ``lines`` the file line of each row, for the message.
    """

    def col(c: int) -> str:
        return repr(columns[c]) if columns is not None else str(c + 1)

    def problem(row: int, what: str, code: str) -> PredictionsError:
        line = None if lines is None else int(lines[row])
        ident = f" (id {str(ids[row])!r})" if ids is not None else ""
        where = f"row {row + offset}{ident}: "
        return PredictionsError([Problem(where + what, file, line, code=code)])

    bad = ~np.isfinite(probs)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise problem(
            int(r),
            f"value {probs[r, c]} in column {col(int(c))} is not a finite number "
            f"({int(bad.sum())} such values in this block)",
            "not-finite",
        )
    if negative:
        neg = probs < 0
        if neg.any():
            r, c = np.argwhere(neg)[0]
            raise problem(int(r), f"negative probability {probs[r, c]} in column {col(int(c))}", "negative")
    if tol is not None and probs.shape[0]:
        sums = probs.sum(axis=1, dtype=np.float64)
        off = np.abs(sums - 1.0) > tol
        if off.any():
            r = int(np.flatnonzero(off)[0])
            raise problem(
                r,
                f"probabilities sum to {sums[r]:.6g}, expected 1 within {tol:g} "
                f"({int(off.sum())} such rows in this block; renormalise them or pass logits)",
                "row-sum",
            )


# --- reading -------------------------------------------------------------------------------------------


class PredictionReader:
    """An open prediction file read in row blocks (see :func:`open_predictions`).

    Attributes:
        path: the file.
        columns: column node ids (resolved when a taxonomy was given, else as written).
        raw_columns: the column names as written in the file.
        has_ids, has_labels, has_groups: which optional fields the file carries (``fields`` lists them all,
            ``metadata_names`` the metadata columns).
        info: the file's facts (``split_level``, ``source``, ...; CSV files carry none).
        n_rows: number of rows when known before reading (``.npz``, ``.parquet``), else ``None``.
    """

    def __init__(
        self,
        path: str | Path,
        taxonomy: Taxonomy | None = None,
        *,
        check_probs: bool = True,
        tol: float | None = 1e-3,
        fast: bool = True,
    ) -> None:
        self.path = Path(path)
        self.file = str(path)
        self.taxonomy = taxonomy
        self.check_probs = check_probs
        self.tol = tol
        self._fast = fast
        leaves = taxonomy.leaves if taxonomy is not None else None
        self._format = open_format(self.path, leaves, fast=fast)
        self.n_rows: int | None = self._format.n_rows
        self.raw_columns = tuple(self._format.raw_columns)
        self.fields = tuple(self._format.fields)
        self.info = dict(self._format.info)
        self.has_ids, self.has_labels = "ids" in self.fields, "labels" in self.fields
        self.has_groups = "groups" in self.fields
        self.metadata_names = tuple(f[len(NPZ_META) :] for f in self.fields if f.startswith(NPZ_META))
        positions = [k + 1 for k in getattr(self._format, "prob_cols", [])] or None
        self.columns = (
            resolve_columns(taxonomy, self.raw_columns, self.file, positions=positions)
            if taxonomy is not None
            else tuple(self.raw_columns)
        )

    def __enter__(self) -> PredictionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._format.close()

    def chunks(self, chunk_size: int = DEFAULT_CHUNK) -> Iterator[Predictions]:
        """Yield the file as :class:`Predictions` blocks of at most ``chunk_size`` rows, checked as they come:
        finite values, and (with ``check_probs``) non-negative rows summing to 1 within ``tol``; ids unique
        over the whole file; labels resolved when a taxonomy was given. A problem in a block read without
        line numbers (pyarrow's CSV reader) is located by reading the file again with Python's."""
        if chunk_size < 1:
            raise HierclfError(f"chunk size must be positive, got {chunk_size}")
        try:
            yield from self._checked_chunks(chunk_size)
        except PredictionsError as exc:
            if not (self._fast and self.path.suffix.lower() == ".csv" and exc.problems[0].line is None):
                raise
            raise self._positioned(exc, chunk_size) from None

    def _positioned(self, exc: PredictionsError, chunk_size: int) -> PredictionsError:
        """The same problem with its line: the file read again by Python's CSV reader."""
        again = PredictionReader(
            self.path, self.taxonomy, check_probs=self.check_probs, tol=self.tol, fast=False
        )
        try:
            for _ in again.chunks(chunk_size):
                pass
        except PredictionsError as found:
            return found
        finally:
            again.close()
        return exc  # pragma: no cover - both readers check the same rows

    def _checked_chunks(self, chunk_size: int) -> Iterator[Predictions]:
        seen = _IdLedger()
        offset = 0
        label_cache: dict[str, str] = {}
        for block, extra, lines in self._format.blocks(chunk_size):
            ids = extra.get("ids")
            check_probabilities(
                block,
                file=self.file,
                offset=offset,
                lines=lines,
                ids=ids,
                tol=self.tol if self.check_probs else None,
                negative=self.check_probs,
                columns=self.raw_columns,
            )
            if ids is not None:
                _check_unique_ids(ids, self.file, offset, seen, lines)
            labels = extra.get("labels")
            if labels is not None and self.taxonomy is not None:
                labels = self._resolve_labels(labels, lines, offset, label_cache)
            metadata = {k[len(NPZ_META) :]: v for k, v in extra.items() if k.startswith(NPZ_META)}
            yield Predictions(
                block,
                self.columns,
                ids,
                labels,
                extra.get("groups"),
                extra.get("split"),
                extra.get("seed"),
                metadata,
                dict(self.info),
                _checked_ids=True,
            )
            offset += block.shape[0]

    def _resolve_labels(
        self, labels: np.ndarray, lines: np.ndarray | None, offset: int, cache: dict[str, str]
    ) -> np.ndarray:
        from hierclf.errors import UnknownNameError

        assert self.taxonomy is not None
        uniq, inverse = np.unique(labels, return_inverse=True)
        out = []
        for name in uniq.tolist():
            if name not in cache:
                try:
                    cache[name] = self.taxonomy.resolve(name)
                except UnknownNameError as exc:
                    r = int(np.flatnonzero(labels == name)[0])
                    line = None if lines is None else int(lines[r])
                    where = "" if line is not None else f"row {r + offset}: "
                    raise PredictionsError(
                        [Problem(f"{where}label: {exc}", self.file, line, code="unknown-label")]
                    ) from None
            out.append(cache[name])
        return np.asarray(out, dtype=str)[inverse.reshape(-1)] if out else labels


def open_predictions(
    path: str | Path, taxonomy: Taxonomy | None = None, *, check_probs: bool = True, tol: float | None = 1e-3
) -> PredictionReader:
    """Open a prediction file for reading in row blocks; use as a context manager.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "p.npz")
        >>> write_predictions(path, Predictions(np.full((5, 2), 0.5), ("a", "b")))
        >>> with open_predictions(path) as reader:
        ...     [len(block) for block in reader.chunks(2)]
        [2, 2, 1]
    """
    return PredictionReader(path, taxonomy, check_probs=check_probs, tol=tol)


def read_predictions(
    path: str | Path, taxonomy: Taxonomy | None = None, *, check_probs: bool = True, tol: float | None = 1e-3
) -> Predictions:
    """Read a whole ``.npz``, ``.csv`` or ``.parquet`` prediction file.

    Args:
        path: the file; the suffix picks the format.
        taxonomy: when given, column names and labels are resolved to node ids (aliases accepted) and the
            columns must partition the taxonomy's leaves.
        check_probs: require non-negative rows that sum to 1 within ``tol`` (NaN/inf are always refused).
        tol: row-sum tolerance; ``None`` skips that check.

    Raises:
        PredictionsError: naming the file, line or row, and the problem.
    """
    with open_predictions(path, taxonomy, check_probs=check_probs, tol=tol) as reader:
        blocks = list(reader.chunks(DEFAULT_CHUNK if reader.n_rows is None else max(reader.n_rows, 1)))
        if not blocks:
            empty = {f: np.zeros(0, np.int64 if f == "seed" else str) for f in reader.fields}
            return _from_fields(np.zeros((0, len(reader.columns))), reader.columns, empty, reader.info)
        if len(blocks) == 1:
            b = blocks[0]
            if not b.probs.flags.writeable:
                b.probs = b.probs.copy()
            return b
        probs = np.concatenate([b.probs for b in blocks])
        fields = {name: np.concatenate([b.fields()[name] for b in blocks]) for name in blocks[0].fields()}
        return _from_fields(probs, reader.columns, fields, reader.info)


def _from_fields(
    probs: np.ndarray, columns: Sequence[str], fields: Mapping[str, np.ndarray], info: Mapping[str, str]
) -> Predictions:
    metadata = {k[len(NPZ_META) :]: v for k, v in fields.items() if k.startswith(NPZ_META)}
    return Predictions(
        probs,
        tuple(columns),
        fields.get("ids"),
        fields.get("labels"),
        fields.get("groups"),
        fields.get("split"),
        fields.get("seed"),
        metadata,
        dict(info),
        _checked_ids=True,
    )


# --- writing -------------------------------------------------------------------------------------------


def write_predictions(path: str | Path, preds: Predictions, *, chunk_size: int = DEFAULT_CHUNK) -> None:
    """Write predictions atomically to ``.npz`` (uncompressed, no pickles), ``.csv`` or ``.parquet`` (by
    suffix).

    CSV and Parquet are written ``chunk_size`` rows at a time (one Parquet row group per block); CSV values
    are the shortest text that reads back exactly. Without ids a CSV has no id column. A CSV keeps no
    ``info`` (it has no place for it): write ``.npz`` or ``.parquet`` to keep the split level with the rows.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise unsupported(path)
    if suffix == ".npz":
        _write_npz(path, preds)
        return
    bad = [c for c in preds.columns if c.casefold() in (*ID_COLUMNS, *_RESERVED, *METADATA_COLUMNS)]
    if bad:
        raise _error(f"column name {bad[0]!r} is reserved in CSV and Parquet prediction files", str(path))
    fields = preds.fields()
    names = [header_name(f) for f in fields if f == "ids"] + list(preds.columns)
    names += [header_name(f) for f in fields if f != "ids"]
    description = parquet_description(
        preds.columns, [header_name(NPZ_META + m) for m in preds.metadata], preds.info
    )
    with atomic_open(path, "wb") as fh:
        writer = ColumnWriter(fh, names, suffix[1:], description)
        for start in range(0, len(preds), chunk_size):
            writer.write(_columns_of(preds, fields, slice(start, start + chunk_size)))
        writer.close(_columns_of(preds, fields, slice(0, 0)))


def _columns_of(preds: Predictions, fields: Mapping[str, np.ndarray], rows: slice) -> list[np.ndarray]:
    """The arrays of the file's columns for some rows: id, one per probability column, the other fields."""
    head = [fields["ids"][rows]] if "ids" in fields else []
    probs = preds.probs[rows]
    return (
        head
        + [probs[:, k] for k in range(probs.shape[1])]
        + [v[rows] for f, v in fields.items() if f != "ids"]
    )


def _write_npz(path: Path, preds: Predictions) -> None:
    arrays: dict[str, np.ndarray] = {
        "probs": np.ascontiguousarray(preds.probs),
        "leaves": np.asarray(preds.columns, dtype=str),
    }
    for name, value in preds.fields().items():
        arrays[name] = value if name == "seed" else np.asarray(value, dtype=str)
    if preds.info:
        arrays["info"] = np.asarray(json.dumps(preds.info, sort_keys=True))
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


class TableWriter:
    """A table of an id column and named number columns, streamed block by block to CSV (pyarrow's writer)
    or Parquet (one row group per block), atomically; the API of ``hierclf rollup``'s output.

    The header is written with the first block (or at close, for a table without rows), so an input that
    fails its first block's checks leaves nothing behind.

    Args:
        path: ``.csv`` or ``.parquet`` file, or None for CSV on stdout.
        columns: the names of the number columns (the id column ``id`` comes first).
        digits: significant digits of the values (CSV; 17 or None keeps every digit).
        inputs: files being read (an output that is one of them is refused before anything is written).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "nodes.csv")
        >>> with TableWriter(path, ["malignant", "benign"], digits=3) as out:
        ...     out.write(np.array(["a", "b"]), np.array([[0.12345, 0.87655], [0.5, 0.5]]))
        >>> open(path).read().splitlines()
        ['id,malignant,benign', 'a,0.123,0.877', 'b,0.5,0.5']
    """

    def __init__(
        self,
        path: str | Path | None,
        columns: Sequence[str],
        *,
        digits: int | None = None,
        inputs: Sequence[str | Path] = (),
    ) -> None:
        self.path = None if path is None else Path(path)
        kind = "csv" if self.path is None else self.path.suffix.lower()[1:]
        if kind not in ("csv", "parquet"):
            raise HierclfError(f"{path}: output must be .csv or .parquet, got {self.path.suffix!r}")  # type: ignore[union-attr]
        self.columns = list(columns)
        self.digits = digits
        self.rows = 0
        self._context: Any = atomic_open(self.path, "wb", inputs=inputs) if self.path is not None else None
        handle = self._context.__enter__() if self._context is not None else _stdout_bytes()
        description = parquet_description(self.columns, [], {}) if kind == "parquet" else None
        self._writer = ColumnWriter(handle, ["id", *self.columns], kind, description)

    def write(self, ids: np.ndarray, values: np.ndarray) -> None:
        """One block: ``ids`` ``(k,)`` and ``values`` ``(k, len(columns))``."""
        if values.ndim != 2 or values.shape != (len(ids), len(self.columns)):
            raise HierclfError(
                f"values must have shape ({len(ids)}, {len(self.columns)}), got {values.shape}"
            )
        if self.digits is not None:  # in row blocks: the rounding's temporaries stay small
            rounded = np.empty(values.shape, dtype=np.float64)
            for start in range(0, len(values), 8192):
                rounded[start : start + 8192] = round_significant(values[start : start + 8192], self.digits)
            values = rounded
        self._writer.write([np.asarray(ids).astype(str)] + [values[:, k] for k in range(values.shape[1])])
        self.rows += len(ids)

    def close(self) -> None:
        self._writer.close([np.zeros(0, str)] + [np.zeros(0, np.float64) for _ in self.columns])
        if self._context is not None:
            self._context.__exit__(None, None, None)
        else:
            sys.stdout.flush()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.close()
        elif self._context is not None:  # an error: the output is not published
            self._context.__exit__(type(exc), exc, tb)


def _stdout_bytes() -> Any:
    """stdout as a binary stream (its buffer; a text-only stream gets the bytes decoded)."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None:
        sys.stdout.flush()
        return buffer
    return _TextSink(sys.stdout)


class _TextSink:
    """A binary writer over a text stream (stdout replaced by one without a buffer)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.closed = False

    def write(self, data: bytes) -> int:
        self.stream.write(bytes(data).decode("utf-8"))
        return len(data)

    def flush(self) -> None:
        self.stream.flush()


def write_csv_rows(
    writer: Any, cells: np.ndarray, ids: np.ndarray | None, trailing: Sequence[np.ndarray] = ()
) -> None:
    """Write a block of formatted cells ``(n, k)`` str, with an id column first and extra columns last."""
    parts = ([ids.reshape(-1, 1)] if ids is not None else []) + [cells] + [t.reshape(-1, 1) for t in trailing]
    table = np.concatenate(parts, axis=1) if len(parts) > 1 else cells
    writer.writerows(table.tolist())


def metadata_from_predictions(sources: Sequence[str | Path | Predictions]) -> Any:
    """The metadata the prediction files carry, as the evaluation's metadata table
    (:class:`hierclf.evaluation.sample_metadata.Metadata`, keyed by sample id), or None when none carries any.

    Every sample appears once, whichever files list it (the seeds of a study share their images); empty
    cells read ``"(missing)"``, as in a metadata CSV. The ``group`` field is kept as the column ``group``.

    Raises:
        PredictionsError: a file with metadata but no ids, or one sample with two values of a column.
    """
    from hierclf.evaluation.sample_metadata import Metadata

    sets = [s if isinstance(s, Predictions) else read_predictions(s) for s in sources]
    names = sorted({name for p in sets for name in p.metadata})
    if not names:
        return None
    ids, columns, file = _metadata_rows(sets, names)
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    for name, values in columns.items():
        clash = np.flatnonzero(values != values[first][inverse.reshape(-1)])
        if clash.size:
            sample = str(ids[clash[0]])
            raise _error(f"sample {sample!r} has two values of metadata {name!r} in the prediction files")
    kept = {name: np.where(v[first] == "", "(missing)", v[first]) for name, v in columns.items()}
    return Metadata(file, "id", uniq.astype(str), kept)


def _metadata_rows(
    sets: list[Predictions], names: list[str]
) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """Every row's id and metadata values over the prediction sets (a column a set lacks reads ``""``)."""
    ids: list[np.ndarray] = []
    parts: dict[str, list[np.ndarray]] = {name: [] for name in [*names, "group"]}
    for p in sets:
        if p.ids is None:
            raise _error("prediction set has metadata but no sample ids to key it by")
        ids.append(p.ids)
        for name in names:
            parts[name].append(p.metadata.get(name, np.full(len(p), "")))
        parts["group"].append(p.groups if p.groups is not None else np.full(len(p), ""))
    columns = {name: np.concatenate(v).astype(str) for name, v in parts.items()}
    if not (columns["group"] != "").any():
        del columns["group"]
    return np.concatenate(ids).astype(str), columns, "the prediction files' metadata"
