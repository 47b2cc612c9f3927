"""Prediction files: per-sample probabilities over named columns, with ids, true labels and patient groups.

Training writes them, ``hierclf rollup`` and ``hierclf evaluate`` read them. Two formats, chosen by suffix:

``.npz`` (NumPy archive, written uncompressed)
    ``probs`` ``(n, n_columns)`` float; ``leaves`` ``(n_columns,)`` str, the node ids naming the columns
    (taxonomy leaves, or a cut of the tree such as the training classes); optional ``ids``, ``labels`` and
    ``groups``, each ``(n,)`` str. Arrays are stored without pickles. Reading streams ``probs`` row block by
    row block from the archive (compressed members too), so a large file is never held twice.

``.csv``
    A header row, then one row per sample. The first column holds the sample id when it is named ``id``,
    ``image`` or ``image_id`` (the ISIC challenge format ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` reads as is);
    optional ``label`` and ``group`` columns; every other column is a probability column named by a node id
    or alias.

With a taxonomy, column names and labels are resolved (ids, aliases, display names) and the columns must
partition the leaves (a cut); every problem is reported with the file, the line or row, and what was
expected.

Example:
    >>> import numpy as np, tempfile, os
    >>> p = Predictions(np.array([[0.2, 0.8], [0.5, 0.5]]), ("nevus", "melanoma"), ids=np.array(["a", "b"]))
    >>> path = os.path.join(tempfile.mkdtemp(), "val.csv")
    >>> write_predictions(path, p)
    >>> q = read_predictions(path)
    >>> q.columns, q.ids.tolist(), bool(np.array_equal(q.probs, p.probs))
    (('nevus', 'melanoma'), ['a', 'b'], True)
"""

from __future__ import annotations

import csv
import logging
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from hierclf.errors import FileFormatError, HierclfError, Problem, did_you_mean
from hierclf.io.atomic import atomic_open
from hierclf.io.text_files import first_bad_utf8

if TYPE_CHECKING:
    from hierclf.taxonomy.tree import Taxonomy

logger = logging.getLogger(__name__)

__all__ = [
    "ID_COLUMNS",
    "PredictionReader",
    "Predictions",
    "PredictionsError",
    "check_probabilities",
    "open_predictions",
    "read_predictions",
    "resolve_columns",
    "write_predictions",
]

#: CSV header names (case-insensitive) of the sample id column when it comes first
ID_COLUMNS = ("id", "image", "image_id")
LABEL_COLUMN, GROUP_COLUMN = "label", "group"
DEFAULT_CHUNK = 65_536


class PredictionsError(FileFormatError):
    """A prediction file or :class:`Predictions` object is invalid."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__(problems, what="predictions")


def _error(
    message: str,
    file: str | None = None,
    line: int | None = None,
    column: int | None = None,
    code: str = "predictions",
) -> PredictionsError:
    return PredictionsError([Problem(message, file, line, column, code=code)])


@dataclass
class Predictions:
    """Per-sample scores over named columns.

    Attributes:
        probs: ``(n, n_columns)`` float probabilities; rows sum to 1.
        columns: node ids naming the columns (taxonomy leaves, or a cut such as the training classes).
        ids: ``(n,)`` str unique sample ids, or ``None``.
        labels: ``(n,)`` str true node ids (usually leaves), or ``None``.
        groups: ``(n,)`` str patient / lesion ids (for grouped statistics), or ``None``.
    """

    probs: np.ndarray
    columns: tuple[str, ...]
    ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None
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
        for name in ("ids", "labels", "groups"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.asarray(value).astype(str)
            if arr.shape != (n,):
                raise _error(f"{name} must have shape ({n},) to match probs, got {arr.shape}")
            setattr(self, name, arr)
        if self.ids is not None and not self._checked_ids:
            _check_unique_ids(self.ids, None, 0)

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
            _checked_ids=True,
        )


def _check_unique_ids(
    ids: np.ndarray,
    file: str | None,
    offset: int,
    seen: set[str] | None = None,
    lines: np.ndarray | None = None,
) -> None:
    """Raise naming the first repeated id; ``seen`` carries ids across chunks."""
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    dup = uniq[counts > 1]
    if seen is not None and seen:
        clash = [i for i in uniq.tolist() if i in seen]
        if clash:
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
        seen.update(uniq.tolist())


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
        has_ids, has_labels, has_groups: which optional fields the file carries.
        n_rows: number of rows when known before reading (``.npz``), else ``None``.
    """

    def __init__(
        self,
        path: str | Path,
        taxonomy: Taxonomy | None = None,
        *,
        check_probs: bool = True,
        tol: float | None = 1e-3,
    ) -> None:
        self.path = Path(path)
        self.file = str(path)
        self.taxonomy = taxonomy
        self.check_probs = check_probs
        self.tol = tol
        self.n_rows: int | None = None
        self._stack: list[Any] = []
        suffix = self.path.suffix.lower()
        if not self.path.is_file():
            raise _error("no such file", self.file, code="missing-file")
        if suffix == ".npz":
            self._open_npz()
        elif suffix == ".csv":
            self._open_csv()
        else:
            raise _error(
                f"unsupported prediction file type {self.path.suffix!r}; expected .npz or .csv",
                self.file,
                code="file-type",
            )
        positions = [k + 1 for k in self._num_cols] if suffix == ".csv" else None
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
        while self._stack:
            self._stack.pop().close()

    # npz ---------------------------------------------------------------------------------------------

    def _open_npz(self) -> None:
        try:
            zf = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise _error(f"not a valid .npz archive ({exc})", self.file, code="file-type") from None
        self._stack.append(zf)
        members = {Path(n).stem: n for n in zf.namelist() if n.endswith(".npy")}
        if "probs" not in members:
            found = ", ".join(sorted(members)) or "none"
            raise _error(
                f"archive has no 'probs' array (arrays found: {found})", self.file, code="missing-array"
            )
        extra = sorted(set(members) - {"probs", "leaves", "ids", "labels", "groups"})
        if extra:
            logger.warning("%s: ignoring unknown arrays %s", self.file, ", ".join(extra))
        small: dict[str, np.ndarray] = {}
        for key in ("leaves", "ids", "labels", "groups"):
            if key in members:
                with zf.open(members[key]) as fh:
                    try:
                        arr = np.lib.format.read_array(fh, allow_pickle=False)
                    except ValueError as exc:
                        raise _error(
                            f"array {key!r} cannot be read without pickles ({exc}); store strings "
                            "as a unicode array",
                            self.file,
                            code="bad-array",
                        ) from None
                small[key] = arr
        fh = zf.open(members["probs"])
        self._stack.append(fh)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        if len(shape) != 2:
            raise _error(
                f"'probs' must be 2-D (n, n_columns), got shape {shape}", self.file, code="bad-array"
            )
        if not np.issubdtype(dtype, np.floating):
            raise _error(f"'probs' must be floating point, got dtype {dtype}", self.file, code="bad-array")
        self._npz_fh: Any = fh
        self._npz_dtype, self._npz_fortran = dtype, fortran
        self._npz_shape = shape
        self.n_rows = int(shape[0])
        if "leaves" in small:
            names = [str(x) for x in np.asarray(small["leaves"]).reshape(-1)]
        elif self.taxonomy is not None and shape[1] == len(self.taxonomy.leaves):
            names = list(self.taxonomy.leaves)
        else:
            raise _error(
                "archive has no 'leaves' array naming the probability columns",
                self.file,
                code="missing-array",
            )
        if len(names) != shape[1]:
            raise _error(
                f"'leaves' names {len(names)} columns but 'probs' has {shape[1]}", self.file, code="bad-array"
            )
        self.raw_columns = tuple(names)
        for key in ("ids", "labels", "groups"):
            if key in small and np.asarray(small[key]).shape != (shape[0],):
                raise _error(
                    f"{key!r} has shape {np.asarray(small[key]).shape}, expected ({shape[0]},) to "
                    "match 'probs'",
                    self.file,
                    code="bad-array",
                )
        self._npz_small: dict[str, np.ndarray] = {
            k: np.asarray(v).astype(str) for k, v in small.items() if k != "leaves"
        }
        self.has_ids, self.has_labels = "ids" in small, "labels" in small
        self.has_groups = "groups" in small

    def _npz_blocks(self, chunk: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], None]]:
        n, m = self._npz_shape
        if self._npz_fortran:  # column-major: rows are not contiguous, read it whole
            data = np.frombuffer(self._npz_fh.read(), dtype=self._npz_dtype).reshape((m, n)).T
            yield np.ascontiguousarray(data), dict(self._npz_small), None
            return
        row_bytes = m * self._npz_dtype.itemsize
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            block = np.empty((k, m), dtype=self._npz_dtype)  # read straight into a writable array
            view = memoryview(block).cast("B")  # type: ignore[arg-type]
            filled = 0
            while filled < len(view):
                got = self._npz_fh.readinto(view[filled:])
                if not got:
                    rows = start + filled // max(row_bytes, 1)
                    raise _error(
                        f"'probs' is truncated: expected {n} rows, the data ends after row {rows}",
                        self.file,
                        code="truncated",
                    )
                filled += got
            yield block, {key: v[start : start + k] for key, v in self._npz_small.items()}, None
        if n == 0:
            yield np.zeros((0, m), self._npz_dtype), dict(self._npz_small), None

    # csv ---------------------------------------------------------------------------------------------

    def _open_csv(self) -> None:
        fh: IO[str] = open(self.path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed in close()
        self._stack.append(fh)
        self._reader = csv.reader(fh)
        try:
            header = next(self._reader)
        except StopIteration:
            raise _error("file is empty; expected a header row", self.file, 1, code="empty") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _error(f"cannot read the header row ({exc})", self.file, 1, code="csv") from None
        header = [h.strip() for h in header]
        self._width = len(header)
        lowered = [h.casefold() for h in header]
        self._id_col = 0 if header and lowered[0] in ID_COLUMNS else None
        self._label_col = lowered.index(LABEL_COLUMN) if LABEL_COLUMN in lowered else None
        self._group_col = lowered.index(GROUP_COLUMN) if GROUP_COLUMN in lowered else None
        special = {self._id_col, self._label_col, self._group_col} - {None}
        self._num_cols = [k for k in range(len(header)) if k not in special]
        if not self._num_cols:
            raise _error("header has no probability columns", self.file, 1, code="no-columns")
        empty = [k + 1 for k in self._num_cols if not header[k]]
        if empty:
            raise _error(
                f"column {empty[0]} has an empty name in the header",
                self.file,
                1,
                empty[0],
                code="bad-header",
            )
        names = [header[k] for k in self._num_cols]
        if len(set(lowered)) != len(lowered):
            dup = sorted({h for h in header if lowered.count(h.casefold()) > 1})
            raise _error(f"header repeats column {dup[0]!r}", self.file, 1, code="bad-header")
        if self._id_col is None and lowered and lowered[0] not in ID_COLUMNS:
            hint = did_you_mean(header[0], ID_COLUMNS)
            if hint:
                raise _error(
                    f"first column {header[0]!r} is not an id column; did you mean {hint[0]!r}?",
                    self.file,
                    1,
                    1,
                    code="bad-header",
                )
        self.raw_columns = tuple(names)
        self.has_ids = self._id_col is not None
        self.has_labels = self._label_col is not None
        self.has_groups = self._group_col is not None

    def _csv_blocks(self, chunk: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]]:
        reader = self._reader
        num_cols = np.asarray(self._num_cols)
        while True:
            rows: list[list[str]] = []
            lines: list[int] = []
            try:
                for row in reader:
                    if not row:  # blank line
                        continue
                    if len(row) != self._width:
                        raise _error(
                            f"row has {len(row)} fields, the header has {self._width}",
                            self.file,
                            reader.line_num,
                            code="csv",
                        )
                    rows.append(row)
                    lines.append(reader.line_num)
                    if len(rows) == chunk:
                        break
            except csv.Error as exc:
                raise _error(f"malformed CSV ({exc})", self.file, reader.line_num, code="csv") from None
            except UnicodeDecodeError:
                line, byte = first_bad_utf8(self.path)
                message = f"byte 0x{byte:02x} is not UTF-8 text (save the file as UTF-8)"
                raise _error(message, self.file, line, code="encoding") from None
            if not rows:
                return
            table = np.array(rows, dtype=str)
            line_arr = np.asarray(lines)
            cells = table[:, num_cols]
            try:
                block = cells.astype(np.float64)
            except ValueError:
                block = self._parse_slowly(cells, line_arr)
            extra = {}
            for key, col in (("ids", self._id_col), ("labels", self._label_col), ("groups", self._group_col)):
                if col is not None:
                    extra[key] = np.char.strip(table[:, col])
            yield block, extra, line_arr
            if len(rows) < chunk:
                return

    def _parse_slowly(self, cells: np.ndarray, lines: np.ndarray) -> np.ndarray:
        """Locate the cell that is not a number (only runs once a block failed to parse)."""
        out = np.empty(cells.shape, np.float64)
        for r in range(cells.shape[0]):
            for c in range(cells.shape[1]):
                try:
                    out[r, c] = float(cells[r, c])
                except ValueError:
                    col = self._num_cols[c]
                    value, name = str(cells[r, c]), self.raw_columns[c]
                    raise _error(
                        f"value {value!r} in column {name!r} is not a number",
                        self.file,
                        int(lines[r]),
                        col + 1,
                        code="not-a-number",
                    ) from None
        return out  # pragma: no cover - astype failed, so some cell raises above

    # both --------------------------------------------------------------------------------------------

    def chunks(self, chunk_size: int = DEFAULT_CHUNK) -> Iterator[Predictions]:
        """Yield the file as :class:`Predictions` blocks of at most ``chunk_size`` rows, checked as they come:
        finite values, and (with ``check_probs``) non-negative rows summing to 1 within ``tol``; ids unique
        over the whole file; labels resolved when a taxonomy was given."""
        if chunk_size < 1:
            raise HierclfError(f"chunk size must be positive, got {chunk_size}")
        npz = self.path.suffix.lower() == ".npz"
        blocks = self._npz_blocks(chunk_size) if npz else self._csv_blocks(chunk_size)
        seen: set[str] = set()
        offset = 0
        label_cache: dict[str, str] = {}
        for block, extra, lines in blocks:
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
            yield Predictions(block, self.columns, ids, labels, extra.get("groups"), _checked_ids=True)
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
    """Read a whole ``.npz`` or ``.csv`` prediction file.

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
            return Predictions(
                np.zeros((0, len(reader.columns))),
                reader.columns,
                np.zeros(0, str) if reader.has_ids else None,
                np.zeros(0, str) if reader.has_labels else None,
                np.zeros(0, str) if reader.has_groups else None,
                _checked_ids=True,
            )
        if len(blocks) == 1:
            b = blocks[0]
            probs = b.probs if b.probs.flags.writeable else b.probs.copy()
            return Predictions(probs, b.columns, b.ids, b.labels, b.groups, _checked_ids=True)

        def cat(name: str) -> np.ndarray | None:
            parts = [getattr(b, name) for b in blocks]
            return None if parts[0] is None else np.concatenate(parts)

        return Predictions(
            np.concatenate([b.probs for b in blocks]),
            reader.columns,
            cat("ids"),
            cat("labels"),
            cat("groups"),
            _checked_ids=True,
        )


# --- writing -------------------------------------------------------------------------------------------


def write_predictions(path: str | Path, preds: Predictions, *, chunk_size: int = DEFAULT_CHUNK) -> None:
    """Write predictions atomically to ``.npz`` (uncompressed, no pickles) or ``.csv`` (by suffix).

    CSV values are written with enough digits to read back exactly (9 significant for float32, 17 for
    float64). Without ids the CSV has no id column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays: dict[str, np.ndarray] = {
            "probs": np.ascontiguousarray(preds.probs),
            "leaves": np.asarray(preds.columns, dtype=str),
        }
        for key in ("ids", "labels", "groups"):
            value = getattr(preds, key)
            if value is not None:
                arrays[key] = np.asarray(value, dtype=str)
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
    elif suffix == ".csv":
        bad = [c for c in preds.columns if c.casefold() in (*ID_COLUMNS, LABEL_COLUMN, GROUP_COLUMN)]
        if bad:
            raise _error(f"column name {bad[0]!r} is reserved in CSV prediction files", str(path))
        fmt = "%.9g" if preds.probs.dtype.itemsize <= 4 else "%.17g"
        header = (["id"] if preds.ids is not None else []) + list(preds.columns)
        header += [LABEL_COLUMN] if preds.labels is not None else []
        header += [GROUP_COLUMN] if preds.groups is not None else []
        with atomic_open(path, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            for start in range(0, len(preds), chunk_size):
                stop = min(start + chunk_size, len(preds))
                write_csv_rows(
                    writer,
                    np.char.mod(fmt, preds.probs[start:stop]),
                    None if preds.ids is None else preds.ids[start:stop],
                    [x[start:stop] for x in (preds.labels, preds.groups) if x is not None],
                )
    else:
        raise _error(
            f"unsupported prediction file type {path.suffix!r}; expected .npz or .csv",
            str(path),
            code="file-type",
        )


def write_csv_rows(
    writer: Any, cells: np.ndarray, ids: np.ndarray | None, trailing: Sequence[np.ndarray] = ()
) -> None:
    """Write a block of formatted cells ``(n, k)`` str, with an id column first and extra columns last."""
    parts = ([ids.reshape(-1, 1)] if ids is not None else []) + [cells] + [t.reshape(-1, 1) for t in trailing]
    table = np.concatenate(parts, axis=1) if len(parts) > 1 else cells
    writer.writerows(table.tolist())
