"""The three prediction file formats, block by block: ``.npz``, ``.csv`` and ``.parquet``.

Each reader opens a file, checks its layout and yields ``(probs, fields, lines)`` blocks: ``probs`` ``(k,
n_columns)`` float, ``fields`` the per-row arrays it carries (``ids``, ``labels``, ``groups``, ``split``,
``seed``, ``metadata.<name>``) and ``lines`` the file line of each row (CSV read by Python) or ``None``.
:class:`hierclf.evaluation.prediction_files.PredictionReader` checks the blocks and turns them into
:class:`~hierclf.evaluation.prediction_files.Predictions`.

CSV is read by pyarrow's streaming reader when pyarrow is installed (a core dependency) and by Python's
``csv`` module otherwise. pyarrow knows no line numbers, so any block it cannot read (a bad cell, a short
row, a number with spaces) hands the rest of the file to the Python reader, which reads what pyarrow could
not or reports the problem at its ``file:line:column``. Parquet is read and written by row groups, so the
memory a file takes stays one block however long the file is.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from hierclf.errors import FileFormatError, Problem, did_you_mean
from hierclf.io.text_files import first_bad_utf8

logger = logging.getLogger(__name__)

__all__ = [
    "ID_COLUMNS",
    "METADATA_COLUMNS",
    "CsvFile",
    "NpzFile",
    "ParquetFile",
    "PredictionsError",
    "column_role",
    "header_name",
    "open_format",
    "rebatch",
]

#: CSV header names (case-insensitive) of the sample id column when it comes first
ID_COLUMNS = ("id", "image", "image_id")
LABEL_COLUMN, GROUP_COLUMN, SPLIT_COLUMN, SEED_COLUMN = "label", "group", "split", "seed"
#: per-row fields besides the probabilities, by their name in the files
ROW_FIELDS = ("ids", "labels", "groups", "split", "seed")
#: metadata columns that CSV and Parquet files name plainly; any other metadata column is ``meta:<name>``
#: (the same names as ``hierclf.data.sources.STANDARD_METADATA``)
METADATA_COLUMNS = ("sex", "age", "site", "dx_type", "fitzpatrick", "lesion_id", "patient_id")
META_PREFIX = "meta:"
#: the npz member of a metadata column: ``metadata.<name>``
NPZ_META = "metadata."
#: the key of hierclf's description in a Parquet file's schema metadata
PARQUET_KEY = b"hierclf"
SUFFIXES = (".npz", ".csv", ".parquet")

Block = tuple[np.ndarray, dict[str, np.ndarray], "np.ndarray | None"]


class PredictionsError(FileFormatError):
    """A prediction file or :class:`~hierclf.evaluation.prediction_files.Predictions` object is invalid."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__(problems, what="predictions")


def error(
    message: str,
    file: str | None = None,
    line: int | None = None,
    column: int | None = None,
    code: str = "predictions",
) -> PredictionsError:
    return PredictionsError([Problem(message, file, line, column, code=code)])


def unsupported(path: Path) -> PredictionsError:
    return error(
        f"unsupported prediction file type {path.suffix!r}; expected .npz, .csv or .parquet",
        str(path),
        code="file-type",
    )


def _pyarrow() -> Any:
    """pyarrow, or None when it is not installed."""
    try:
        import pyarrow
    except ImportError:
        return None
    return pyarrow


def have_pyarrow() -> bool:
    return _pyarrow() is not None


def require_pyarrow(file: str) -> Any:
    found = _pyarrow()
    if found is None:
        raise error("Parquet files need pyarrow: pip install pyarrow", file, code="missing-dependency")
    return found


# --- column roles (CSV headers, Parquet files written by other tools) ---------------------------------


def column_role(name: str, position: int) -> str:
    """What a column holds: ``ids``, ``labels``, ``groups``, ``split``, ``seed``, ``metadata.<name>`` or
    ``probs`` (a probability column, named by a node)."""
    key = name.casefold()
    if position == 0 and key in ID_COLUMNS:
        return "ids"
    fixed = {LABEL_COLUMN: "labels", GROUP_COLUMN: "groups", SPLIT_COLUMN: "split", SEED_COLUMN: "seed"}
    if key in fixed:
        return fixed[key]
    if key in METADATA_COLUMNS:
        return NPZ_META + key
    if key.startswith(META_PREFIX) and len(name) > len(META_PREFIX):
        return NPZ_META + name[len(META_PREFIX) :]
    return "probs"


def header_name(field: str) -> str:
    """The CSV / Parquet column name of a row field (``metadata.sex`` -> ``sex``, ``metadata.x`` ->
    ``meta:x``)."""
    plain = {"ids": "id", "labels": LABEL_COLUMN, "groups": GROUP_COLUMN}
    if field in plain:
        return plain[field]
    if field.startswith(NPZ_META):
        name = field[len(NPZ_META) :]
        return name if name in METADATA_COLUMNS else META_PREFIX + name
    return field


def check_header(header: Sequence[str], file: str) -> tuple[list[str], list[int]]:
    """The role of every column of a header and the positions of the probability columns; the header's
    problems (empty or repeated names, no probability column, a misspelt id column) are raised."""
    lowered = [h.casefold() for h in header]
    roles = [column_role(h, k) for k, h in enumerate(header)]
    prob_cols = [k for k, role in enumerate(roles) if role == "probs"]
    if not prob_cols:
        raise error("header has no probability columns", file, 1, code="no-columns")
    empty = [k + 1 for k in range(len(header)) if not header[k]]
    if empty:
        raise error(
            f"column {empty[0]} has an empty name in the header", file, 1, empty[0], code="bad-header"
        )
    if len(set(lowered)) != len(lowered):
        dup = sorted({h for h in header if lowered.count(h.casefold()) > 1})
        raise error(f"header repeats column {dup[0]!r}", file, 1, code="bad-header")
    if roles[0] == "probs":
        hint = did_you_mean(header[0], ID_COLUMNS)
        if hint:
            message = f"first column {header[0]!r} is not an id column; did you mean {hint[0]!r}?"
            raise error(message, file, 1, 1, code="bad-header")
    return roles, prob_cols


def _seeds(cells: np.ndarray, file: str, lines: np.ndarray | None) -> np.ndarray:
    try:
        return cells.astype(np.int64)
    except ValueError:
        r = next(i for i, c in enumerate(cells.tolist()) if not c.strip().lstrip("-").isdigit())
        line = None if lines is None else int(lines[r])
        raise error(
            f"seed {str(cells[r])!r} is not a whole number", file, line, code="not-a-number"
        ) from None


# --- npz ------------------------------------------------------------------------------------------------


#: what reading a damaged archive raises: bad headers and CRCs, broken deflate streams, short data, an
#: encrypted member (RuntimeError) or an unknown compression method (NotImplementedError)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError)


class NpzFile:
    """An ``.npz`` archive: ``probs`` streamed from the archive, every other array read whole."""

    def __init__(self, path: Path, leaves: Sequence[str] | None) -> None:
        self.file = str(path)
        self._stack: list[Any] = []
        try:
            zf = zipfile.ZipFile(path)
        except (*_ZIP_ERRORS, ValueError) as exc:
            raise error(f"not a valid .npz archive ({exc})", self.file, code="file-type") from None
        self._stack.append(zf)
        members = {n[: -len(".npy")]: n for n in zf.namelist() if n.endswith(".npy")}
        if "probs" not in members:
            found = ", ".join(sorted(members)) or "none"
            raise error(
                f"archive has no 'probs' array (arrays found: {found})", self.file, code="missing-array"
            )
        known = {"probs", "leaves", "info", *ROW_FIELDS}
        extra = sorted(k for k in members if k not in known and not k.startswith(NPZ_META))
        if extra:
            logger.warning("%s: ignoring unknown arrays %s", self.file, ", ".join(extra))
        self._open_probs(zf, members["probs"])  # its header first: the other arrays' shapes follow from it
        small = {k: self._small(zf, members[k], k) for k in members if k != "probs" and k not in extra}
        self.raw_columns = self._names(small, leaves)
        self.info = _info_of(small.pop("info", None), self.file)
        self._fields = {
            k: (np.asarray(v).astype(np.int64) if k == "seed" else np.asarray(v).astype(str))
            for k, v in small.items()
            if k != "leaves"
        }
        self.fields = tuple(self._fields)

    def _open_member(self, zf: zipfile.ZipFile, member: str) -> Any:
        try:
            return zf.open(member)
        except _ZIP_ERRORS as exc:  # a damaged local header, an encrypted or unknown-method member
            raise error(f"member {member} is corrupt ({exc})", self.file, code="corrupt") from None

    def _small(self, zf: zipfile.ZipFile, member: str, key: str) -> np.ndarray:
        """Read one per-row (or naming) array whole, after its header says it is the size it must be: a
        header that claims millions of rows is refused before a byte of its data is read."""
        with self._open_member(zf, member) as fh:
            shape, fortran, dtype = self._header(fh, key)
            self._check_shape(key, tuple(shape))
            if dtype.hasobject:
                raise error(
                    f"array {key!r} holds Python objects, which are never unpickled; "
                    "store strings as a unicode array",
                    self.file,
                    code="bad-array",
                )
            count = int(np.prod(shape, dtype=np.int64))
            data = self._read_exactly(fh, count * dtype.itemsize, key)
            array = np.frombuffer(data, dtype=dtype, count=count)
            return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)

    def _check_shape(self, key: str, shape: tuple[int, ...]) -> None:
        """A row per sample, a name per column, one JSON text: anything else is refused unread."""
        n_rows, width = self._shape
        if key == "leaves":
            names = int(np.prod(shape, dtype=np.int64))
            if names != width:
                raise error(
                    f"'leaves' names {names} columns but 'probs' has {width}", self.file, code="bad-array"
                )
        elif key == "info":
            if int(np.prod(shape, dtype=np.int64)) != 1:
                raise error("array 'info' is not a JSON object of text", self.file, code="bad-array")
        elif shape != (n_rows,):
            raise error(
                f"{key!r} has shape {shape}, expected ({n_rows},) to match 'probs'",
                self.file,
                code="bad-array",
            )

    def _header(self, fh: Any, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
        """The ``.npy`` header of a member, or one line saying the member is not a readable array."""
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                return np.lib.format.read_array_header_1_0(fh)
            return np.lib.format.read_array_header_2_0(fh)
        except (ValueError, EOFError) as exc:  # numpy's words for a header that is not one
            raise error(
                f"member {key}.npy is not a readable .npy array ({exc})", self.file, code="bad-array"
            ) from None
        except _ZIP_ERRORS as exc:
            raise error(f"member {key}.npy is corrupt ({exc})", self.file, code="corrupt") from None

    def _read_exactly(self, fh: Any, size: int, key: str) -> bytes:
        """``size`` bytes of a member; a truncated, corrupt or altered archive (bad CRC) is one line."""
        try:
            data = fh.read(size)
        except _ZIP_ERRORS as exc:
            raise error(f"member {key}.npy is corrupt ({exc})", self.file, code="corrupt") from None
        if len(data) != size:
            raise error(
                f"member {key}.npy is truncated: expected {size} bytes of data, got {len(data)}",
                self.file,
                code="truncated",
            )
        return data

    def _open_probs(self, zf: zipfile.ZipFile, member: str) -> None:
        fh = self._open_member(zf, member)
        self._stack.append(fh)
        shape, fortran, dtype = self._header(fh, "probs")
        if len(shape) != 2:
            raise error(f"'probs' must be 2-D (n, n_columns), got shape {shape}", self.file, code="bad-array")
        if not np.issubdtype(dtype, np.floating):
            raise error(f"'probs' must be floating point, got dtype {dtype}", self.file, code="bad-array")
        if shape[1] == 0:
            raise error("'probs' has no columns; expected one per leaf or class", self.file, code="bad-array")
        self._fh: Any = fh
        self._dtype, self._fortran, self._shape = dtype, fortran, shape
        self.n_rows: int | None = int(shape[0])

    def _names(self, small: Mapping[str, np.ndarray], leaves: Sequence[str] | None) -> tuple[str, ...]:
        if "leaves" in small:  # its length was checked against 'probs' from its header (_check_shape)
            return tuple(str(x) for x in np.asarray(small["leaves"]).reshape(-1))
        if leaves is not None and self._shape[1] == len(leaves):
            return tuple(leaves)
        raise error(
            "archive has no 'leaves' array naming the probability columns", self.file, code="missing-array"
        )

    def blocks(self, chunk: int) -> Iterator[Block]:
        n, m = self._shape
        if self._fortran:  # column-major: rows are not contiguous, read it whole
            raw = self._read_exactly(self._fh, n * m * self._dtype.itemsize, "probs")
            data = np.frombuffer(raw, dtype=self._dtype).reshape((m, n)).T
            yield np.ascontiguousarray(data, dtype=self._dtype.newbyteorder("=")), dict(self._fields), None
            return
        row_bytes = m * self._dtype.itemsize
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            block = np.empty((k, m), dtype=self._dtype)  # read straight into a writable array
            view = memoryview(block).cast("B")  # type: ignore[arg-type]
            filled = 0
            while filled < len(view):
                got = self._read_into(view[filled:])
                if not got:
                    rows = start + filled // max(row_bytes, 1)
                    raise error(
                        f"'probs' is truncated: expected {n} rows, the data ends after row {rows}",
                        self.file,
                        code="truncated",
                    )
                filled += got
            if not self._dtype.isnative:  # big-endian files: compute in the machine's own order
                block = block.astype(self._dtype.newbyteorder("="))
            yield block, {key: v[start : start + k] for key, v in self._fields.items()}, None
        if n == 0:
            yield np.zeros((0, m), self._dtype), dict(self._fields), None

    def _read_into(self, view: memoryview) -> int:
        try:
            return int(self._fh.readinto(view))
        except _ZIP_ERRORS as exc:  # zipfile checks the CRC at the end
            raise error(f"member probs.npy is corrupt ({exc})", self.file, code="corrupt") from None

    def close(self) -> None:
        while self._stack:
            self._stack.pop().close()


def _info_of(value: np.ndarray | None, file: str) -> dict[str, str]:
    if value is None:
        return {}
    try:
        info = json.loads(str(np.asarray(value).reshape(-1)[0]))
    except (ValueError, IndexError):
        raise error("array 'info' is not a JSON object of text", file, code="bad-array") from None
    if not isinstance(info, dict):
        raise error("array 'info' is not a JSON object of text", file, code="bad-array")
    return {str(k): str(v) for k, v in info.items()}


# --- csv ------------------------------------------------------------------------------------------------


class CsvFile:
    """A ``.csv`` prediction file: the header read here; rows by pyarrow (fast) or Python (positioned)."""

    def __init__(self, path: Path, *, fast: bool = True) -> None:
        self.path, self.file = path, str(path)
        self.n_rows: int | None = None
        self.info: dict[str, str] = {}
        self._stack: list[Any] = []
        fh: IO[str] = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed in close()
        self._stack.append(fh)
        self._reader = csv.reader(fh)
        try:
            header = next(self._reader)
        except StopIteration:
            raise error("file is empty; expected a header row", self.file, 1, code="empty") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise error(f"cannot read the header row ({exc})", self.file, 1, code="csv") from None
        self.header = [h.strip() for h in header]
        self.roles, self.prob_cols = check_header(self.header, self.file)
        self.raw_columns = tuple(self.header[k] for k in self.prob_cols)
        self.fields = tuple(r for r in self.roles if r != "probs")
        self.fast = fast and have_pyarrow()

    def close(self) -> None:
        while self._stack:
            self._stack.pop().close()

    def blocks(self, chunk: int) -> Iterator[Block]:
        if not self.fast:
            yield from self._python_blocks(chunk, skip=0)
            return
        done = 0
        try:
            for block in self._arrow_blocks(chunk):
                yield block
                done += block[0].shape[0]
        except _arrow_errors() as exc:
            # pyarrow knows no lines: the Python reader reads the rest, or says where the problem is
            logger.debug(
                "%s: pyarrow stopped after %d rows (%s); reading on with Python", self.file, done, exc
            )
            yield from self._python_blocks(chunk, skip=done)

    # Python ----------------------------------------------------------------------------------------------

    def _python_blocks(self, chunk: int, skip: int) -> Iterator[Block]:
        fh = open(self.path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed in close()
        self._stack.append(fh)
        reader = csv.reader(fh)
        next(reader, None)
        width = len(self.header)
        while True:
            rows, lines = self._python_rows(reader, chunk, width, skip)
            skip = 0
            if not rows:
                return
            table = np.array(rows, dtype=str)
            line_arr = np.asarray(lines)
            cells = table[:, self.prob_cols]
            try:
                block = cells.astype(np.float64)
            except ValueError:
                block = self._parse_slowly(cells, line_arr)
            fields = {
                role: np.char.strip(table[:, k]) for k, role in enumerate(self.roles) if role != "probs"
            }
            if "seed" in fields:
                fields["seed"] = _seeds(fields["seed"], self.file, line_arr)
            yield block, fields, line_arr
            if len(rows) < chunk:
                return

    def _python_rows(
        self, reader: Any, chunk: int, width: int, skip: int
    ) -> tuple[list[list[str]], list[int]]:
        rows: list[list[str]] = []
        lines: list[int] = []
        try:
            for row in reader:
                if not row:  # blank line
                    continue
                if len(row) != width:
                    message = f"row has {len(row)} fields, the header has {width}"
                    raise error(message, self.file, reader.line_num, code="csv")
                if skip:
                    skip -= 1
                    continue
                rows.append(row)
                lines.append(reader.line_num)
                if len(rows) == chunk:
                    break
        except csv.Error as exc:
            raise error(f"malformed CSV ({exc})", self.file, reader.line_num, code="csv") from None
        except UnicodeDecodeError:
            line, byte = first_bad_utf8(self.path)
            message = f"byte 0x{byte:02x} is not UTF-8 text (save the file as UTF-8)"
            raise error(message, self.file, line, code="encoding") from None
        return rows, lines

    def _parse_slowly(self, cells: np.ndarray, lines: np.ndarray) -> np.ndarray:
        """Locate the cell that is not a number (only runs once a block failed to parse)."""
        out = np.empty(cells.shape, np.float64)
        for r in range(cells.shape[0]):
            for c in range(cells.shape[1]):
                try:
                    out[r, c] = float(cells[r, c])
                except ValueError:
                    col = self.prob_cols[c]
                    value, name = str(cells[r, c]), self.raw_columns[c]
                    raise error(
                        f"value {value!r} in column {name!r} is not a number",
                        self.file,
                        int(lines[r]),
                        col + 1,
                        code="not-a-number",
                    ) from None
        return out  # pragma: no cover - astype failed, so some cell raises above

    # pyarrow ---------------------------------------------------------------------------------------------

    def _arrow_blocks(self, chunk: int) -> Iterator[Block]:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        names = [f"c{k}" for k in range(len(self.header))]  # the header is read (and checked) above
        types = {names[k]: pa.string() for k in range(len(names)) if self.roles[k] != "probs"}
        types.update({names[k]: pa.float64() for k in self.prob_cols})
        stream = pcsv.open_csv(
            self.path,
            # one thread, 1 MB blocks: with threads pyarrow parses ahead of the reader without bound
            read_options=pcsv.ReadOptions(
                column_names=names, skip_rows=1, block_size=1 << 20, use_threads=False
            ),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types=types,
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        self._stack.append(stream)
        yield from rebatch((self._arrow_block(b) for b in stream), chunk)

    def _arrow_block(self, batch: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        import pyarrow.compute as pc

        probs = np.empty((batch.num_rows, len(self.prob_cols)), dtype=np.float64)
        for j, k in enumerate(self.prob_cols):
            probs[:, j] = batch.column(k).to_numpy()
        fields = {}
        for k, role in enumerate(self.roles):
            if role != "probs":
                text = pc.utf8_trim_whitespace(batch.column(k)).to_numpy(zero_copy_only=False).astype(str)
                fields[role] = _seeds(text, self.file, None) if role == "seed" else text
        return probs, fields


def _arrow_errors() -> tuple[type[BaseException], ...]:
    pa = _pyarrow()
    return (pa.ArrowInvalid,) if pa is not None else ()


def rebatch(blocks: Iterator[tuple[np.ndarray, dict[str, np.ndarray]]], chunk: int) -> Iterator[Block]:
    """Blocks of exactly ``chunk`` rows (the last one shorter) from blocks of any size."""
    held: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    count = 0
    for block in blocks:
        held.append(block)
        count += block[0].shape[0]
        while count >= chunk:
            probs, fields = _join(held)
            yield probs[:chunk], {k: v[:chunk] for k, v in fields.items()}, None
            held = [(probs[chunk:], {k: v[chunk:] for k, v in fields.items()})]
            count -= chunk
    if count:
        probs, fields = _join(held)
        yield probs, fields, None


def _join(held: list[tuple[np.ndarray, dict[str, np.ndarray]]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if len(held) == 1:
        return held[0]
    probs = np.concatenate([h[0] for h in held])
    return probs, {k: np.concatenate([h[1][k] for h in held]) for k in held[0][1]}


# --- parquet --------------------------------------------------------------------------------------------


class ParquetFile:
    """A ``.parquet`` prediction file read row group by row group.

    Files hierclf wrote describe their columns in the schema metadata (key ``hierclf``: the probability
    columns, the metadata columns, the file's ``info``); other files are read by the CSV header rules.
    """

    def __init__(self, path: Path) -> None:
        self.file = str(path)
        pa = require_pyarrow(self.file)
        import pyarrow.parquet as pq

        try:
            self._pq = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise error(f"not a valid Parquet file ({exc})", self.file, code="file-type") from None
        schema = self._pq.schema_arrow
        self.n_rows: int | None = int(self._pq.metadata.num_rows)
        names = list(schema.names)
        described = (schema.metadata or {}).get(PARQUET_KEY)
        self.info: dict[str, str] = {}
        if described is not None:
            self.roles, self.prob_cols = self._described(names, described)
        else:
            self.roles, self.prob_cols = check_header(names, self.file)
        self._names = names
        self.raw_columns = tuple(names[k] for k in self.prob_cols)
        self.fields = tuple(r for r in self.roles if r != "probs")
        self._check_types(schema)

    def _described(self, names: list[str], text: bytes) -> tuple[list[str], list[int]]:
        try:
            spec = json.loads(text)
            columns, metadata = list(spec["columns"]), list(spec.get("metadata", []))
            self.info = {str(k): str(v) for k, v in dict(spec.get("info", {})).items()}
        except (ValueError, KeyError, TypeError):
            raise error(
                "the file's hierclf description is not valid JSON", self.file, code="bad-header"
            ) from None
        fixed = {
            "id": "ids",
            LABEL_COLUMN: "labels",
            GROUP_COLUMN: "groups",
            SPLIT_COLUMN: "split",
            SEED_COLUMN: "seed",
        }
        roles = []
        for name in names:
            if name in columns:
                roles.append("probs")
            elif name in metadata:
                roles.append(NPZ_META + name.removeprefix(META_PREFIX))
            elif name in fixed:
                roles.append(fixed[name])
            else:
                raise error(
                    f"column {name!r} is not in the file's hierclf description", self.file, code="bad-header"
                )
        return roles, [k for k, r in enumerate(roles) if r == "probs"]

    def _check_types(self, schema: Any) -> None:
        import pyarrow.types as pt

        for k in self.prob_cols:
            t = schema.field(k).type
            if not (pt.is_floating(t) or pt.is_integer(t)):
                raise error(
                    f"probability column {schema.names[k]!r} has type {t}; expected numbers",
                    self.file,
                    column=k + 1,
                    code="not-a-number",
                )

    def blocks(self, chunk: int) -> Iterator[Block]:
        produced = 0
        for batch in self._pq.iter_batches(batch_size=chunk):
            probs = np.empty((batch.num_rows, len(self.prob_cols)), dtype=_float_type(batch, self.prob_cols))
            for j, k in enumerate(self.prob_cols):
                probs[:, j] = batch.column(k).to_numpy(zero_copy_only=False)
            fields = {}
            for k, role in enumerate(self.roles):
                if role != "probs":
                    values = batch.column(k).to_numpy(zero_copy_only=False)
                    fields[role] = values.astype(np.int64) if role == "seed" else values.astype(str)
            produced += batch.num_rows
            yield probs, fields, None
        if produced == 0:
            yield np.zeros((0, len(self.prob_cols))), {r: np.zeros(0, str) for r in self.fields}, None

    def close(self) -> None:
        self._pq.close()


def _float_type(batch: Any, columns: Sequence[int]) -> type:
    import pyarrow.types as pt

    single = all(pt.is_float32(batch.schema.field(k).type) for k in columns)
    return np.float32 if single and columns else np.float64


def open_format(
    path: Path, leaves: Sequence[str] | None, *, fast: bool = True
) -> NpzFile | CsvFile | ParquetFile:
    """The reader of ``path`` by its suffix (``leaves``: the npz column names when it has none)."""
    if not path.is_file():
        raise error("no such file", str(path), code="missing-file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return NpzFile(path, leaves)
    if suffix == ".csv":
        return CsvFile(path, fast=fast)
    if suffix == ".parquet":
        return ParquetFile(path)
    raise unsupported(path)


# --- writing --------------------------------------------------------------------------------------------


class ColumnWriter:
    """Named columns written block by block to CSV or Parquet (a row group per block).

    CSV goes through pyarrow's writer (floats as the shortest text that reads back exactly) when pyarrow
    is installed, else through Python's ``csv`` (``%.9g`` for float32, ``%.17g`` for float64: exact too).

    Args:
        handle: a binary file handle (:func:`hierclf.io.atomic.atomic_open` in ``"wb"`` mode).
        names: the column names.
        kind: ``"csv"`` or ``"parquet"``.
        description: Parquet only: the schema metadata ``{b"hierclf": ...}``.
    """

    def __init__(self, handle: IO[bytes], names: Sequence[str], kind: str, description: bytes | None = None):
        self.handle, self.names, self.kind = handle, list(names), kind
        self.description = description
        self._writer: Any = None
        self._python: Any = None
        if kind == "parquet":
            require_pyarrow(str(getattr(handle, "name", "<parquet>")))

    def write(self, arrays: Sequence[np.ndarray]) -> None:
        """One block: an ``(n,)`` array per column (floats, integers or text)."""
        if self.kind == "csv" and not have_pyarrow():
            self._write_python(arrays)
            return
        import pyarrow as pa

        table = pa.table({f"c{k}": _arrow_array(a) for k, a in enumerate(arrays)}).rename_columns(self.names)
        if self.kind == "parquet":
            if self._writer is None:
                self._writer = self._open_parquet(table.schema)
            self._writer.write_table(table)
            return
        self._write_arrow_csv(table)

    def _open_parquet(self, schema: Any) -> Any:
        import pyarrow.parquet as pq

        if self.description is not None:
            schema = schema.with_metadata({PARQUET_KEY: self.description})
        return pq.ParquetWriter(self.handle, schema, compression="zstd")

    def _write_arrow_csv(self, table: Any) -> None:
        """A block through pyarrow's CSV writer; text is quoted only in blocks where some value needs it
        (pyarrow's ``needed`` style quotes every text value)."""
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv

        if self._writer is None:  # the header, as Python's csv module writes it
            self._writer = "csv"
            line = io.StringIO()
            csv.writer(line, lineterminator="\n").writerow(self.names)
            self.handle.write(line.getvalue().encode())
        texts = [c for c in table.columns if c.type == "string"]
        quote = any(pc.any(pc.match_substring_regex(c, r'[",\r\n]')).as_py() for c in texts)
        options = pcsv.WriteOptions(include_header=False, quoting_style="needed" if quote else "none")
        pcsv.write_csv(table, self.handle, write_options=options)

    def _write_python(self, arrays: Sequence[np.ndarray]) -> None:
        if self._python is None:
            self._text = io.TextIOWrapper(self.handle, encoding="utf-8", newline="", write_through=True)
            self._python = csv.writer(self._text, lineterminator="\n")
            self._python.writerow(self.names)
        cells = [
            np.char.mod("%.9g" if a.dtype.itemsize <= 4 else "%.17g", a)
            if a.dtype.kind == "f"
            else a.astype(str)
            for a in arrays
        ]
        self._python.writerows(np.stack(cells, axis=1).tolist() if cells and len(cells[0]) else [])

    def close(self, empty: Sequence[np.ndarray] | None = None) -> None:
        """Finish the file; ``empty`` gives the column types of a file that got no block."""
        if self._writer is None and self._python is None:
            self.write(empty if empty is not None else [np.zeros(0, np.float64) for _ in self.names])
        if self._writer is not None and self._writer != "csv":
            self._writer.close()
        if self._python is not None:
            self._text.detach()


def _arrow_array(values: np.ndarray) -> Any:
    import pyarrow as pa

    if values.dtype.kind in "US" or values.dtype == object:
        return pa.array(values.astype(str), type=pa.string())
    return pa.array(values)


def parquet_description(columns: Sequence[str], metadata: Sequence[str], info: Mapping[str, str]) -> bytes:
    """The schema metadata that names a Parquet file's probability and metadata columns."""
    spec = {"format": 1, "columns": list(columns), "metadata": list(metadata), "info": dict(info)}
    return json.dumps(spec, sort_keys=True).encode()


def round_significant(values: np.ndarray, digits: int) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits, so that their shortest text has at most that
    many (what ``%.{digits}g`` prints, as numbers); 17 or more digits leave them as they are.

    >>> round_significant(np.array([0.123456789, 1 / 3, 0.0, 2.5e-7]), 4).tolist()
    [0.1235, 0.3333, 0.0, 2.5e-07]
    """
    x = np.asarray(values, dtype=np.float64)
    if digits >= 17:
        return x
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exponent = np.floor(np.log10(np.abs(x)))
    exponent = np.where(np.isfinite(exponent), exponent, 0.0)
    scale = digits - 1 - exponent
    up = scale >= 0
    with np.errstate(invalid="ignore", over="ignore"):
        power = 10.0 ** np.abs(scale)  # exact for |scale| <= 22: the division below is then correctly rounded
        rounded = np.where(up, np.round(x * power) / power, np.round(x / power) * power)
    return np.where(np.isfinite(rounded), rounded, x)
