"""CSV tables read whole, with every problem positioned: the one CSV header/row helper.

Metadata files, reader files, image lists, HAM10000 metadata and id files are small enough to read whole.
:func:`read_csv_table` reads one into a :class:`CsvTable` (every cell as stripped text, with the file line of
every row) and reports what is wrong as :class:`~hierclf.errors.FileFormatError` problems at
``file:line:column``: a missing file or one that is not a regular file, bytes that are not UTF-8 (with their
line), malformed quoting, an empty file, empty or repeated header names, rows with the wrong number of
fields, required columns that are missing (with "did you mean"). Blank lines are skipped. Streaming readers
(prediction files) use :func:`check_header` for the same header rules.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "meta.csv")
    >>> _ = open(path, "w").write("image_id,sex\\nISIC_1,male\\n\\nISIC_2, female\\n")
    >>> table = read_csv_table(path, what="metadata", required=["image_id"])
    >>> table.column("sex").tolist(), table.lines.tolist()
    (['male', 'female'], [2, 4])
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.errors import FileFormatError, Problem, did_you_mean
from hierclf.io.text_files import read_text_file

__all__ = ["CsvTable", "check_header", "read_csv_table"]


def check_header(header: Sequence[str], file: str, *, what: str) -> list[str]:
    """The header names stripped; empty or repeated (case-insensitive) names are positioned problems."""
    names = [h.strip() for h in header]
    problems = [
        Problem(f"column {k} has an empty name in the header", file, 1, k, code="bad-header")
        for k, name in enumerate(names, start=1)
        if not name
    ]
    seen: dict[str, int] = {}
    for k, name in enumerate(names, start=1):
        key = name.casefold()
        if name and key in seen:
            problems.append(
                Problem(
                    f"header repeats column {name!r} (first as column {seen[key]})",
                    file,
                    1,
                    k,
                    code="bad-header",
                )
            )
        seen.setdefault(key, k)
    if problems:
        raise FileFormatError(problems, what=what)
    return names


@dataclass(frozen=True)
class CsvTable:
    """A CSV file read whole.

    Attributes:
        file: the file name (for messages).
        what: what the file is (``"metadata"``), for messages.
        header: the column names, stripped.
        cells: ``(n_rows, n_columns)`` str, every cell stripped.
        lines: ``(n_rows,)`` the file line of each row (1-based; the header is line 1).
    """

    file: str
    what: str
    header: tuple[str, ...]
    cells: np.ndarray
    lines: np.ndarray

    def __len__(self) -> int:
        return int(self.cells.shape[0])

    def find(self, *names: str) -> int | None:
        """The index of the first of ``names`` that is a column (case-insensitive), or ``None``."""
        folded = [h.casefold() for h in self.header]
        return next((folded.index(n.casefold()) for n in names if n.casefold() in folded), None)

    def index_of(self, name: str) -> int:
        """The index of column ``name`` (case-insensitive); a positioned error with "did you mean" if not."""
        found = self.find(name)
        if found is None:
            raise FileFormatError([self.missing_column(name)], what=self.what)
        return found

    def missing_column(self, name: str) -> Problem:
        close = did_you_mean(name, self.header)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        columns = ", ".join(self.header) or "none"
        return Problem(
            f"unknown column {name!r} (columns: {columns}){hint}", self.file, 1, code="missing-column"
        )

    def column(self, name: str) -> np.ndarray:
        """The cells of column ``name``, ``(n_rows,)`` str."""
        return self.cells[:, self.index_of(name)]

    def problem(self, row: int, message: str, *, column: int | None = None, code: str = "invalid") -> Problem:
        """A problem at data row ``row`` (0-based) and, optionally, column index ``column`` (0-based)."""
        col = None if column is None else column + 1
        return Problem(message, self.file, int(self.lines[row]), col, code=code)

    def empty_cells(self, *names: str) -> list[Problem]:
        """A problem for each empty cell in the columns ``names`` (at most 20, then a count)."""
        problems: list[Problem] = []
        for name in names:
            col = self.index_of(name)
            empty = np.flatnonzero(self.cells[:, col] == "")
            problems += [
                self.problem(int(r), f"empty {name}", column=col, code="empty-cell") for r in empty[:20]
            ]
            if empty.size > 20:
                problems.append(Problem(f"... and {empty.size - 20} more empty {name} cells", self.file))
        return problems


def read_csv_table(
    path: str | Path, *, what: str, required: Sequence[str] = (), encoding: str = "utf-8-sig"
) -> CsvTable:
    """Read a CSV file with a header row (see the module docstring for what is checked).

    Args:
        path: the file.
        what: what the file is, for messages (``"metadata"``, ``"image list"``).
        required: columns that must be present (case-insensitive).
        encoding: the text encoding; the default reads UTF-8 with or without a byte-order mark.

    Raises:
        FileFormatError: every problem found, positioned.
    """
    file = str(path)
    text = read_text_file(path, what=what, encoding=encoding)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # strict: a stray quote is an error
    try:
        header = next(reader, None)
        if header is None:
            raise FileFormatError(
                [Problem("the file is empty; expected a header row", file, 1, code="empty")], what=what
            )
        names = check_header(header, file, what=what)
        rows, lines = _data_rows(reader, len(names), file, what)
    except csv.Error as exc:
        raise FileFormatError(
            [Problem(f"malformed CSV ({exc})", file, reader.line_num, code="csv")], what=what
        ) from None
    cells = np.char.strip(np.array(rows, dtype=str).reshape(len(rows), len(names)))
    table = CsvTable(file, what, tuple(names), cells, np.asarray(lines, dtype=np.int64))
    missing = [table.missing_column(name) for name in required if table.find(name) is None]
    if missing:
        raise FileFormatError(missing, what=what)
    return table


def _data_rows(reader: Any, width: int, file: str, what: str) -> tuple[list[list[str]], list[int]]:
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[Problem] = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip() and width > 1):
            continue  # a blank line
        if len(row) != width:
            if len(bad) < 20:
                bad.append(
                    Problem(
                        f"row has {len(row)} fields, the header has {width}",
                        file,
                        reader.line_num,
                        code="csv",
                    )
                )
            continue
        rows.append(row)
        lines.append(reader.line_num)
    if bad:
        raise FileFormatError(bad, what=what)
    return rows, lines
