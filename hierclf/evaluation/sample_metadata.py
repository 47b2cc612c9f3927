"""Metadata tables keyed by sample id (e.g. HAM10000's ``HAM10000_metadata.csv`` keyed by ``image_id``): the
bootstrap's groups (``group_column``) and the subgroup columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hierclf.errors import FileFormatError, Problem, UnknownNameError
from hierclf.evaluation.notices import EvaluationError
from hierclf.io.csv_files import read_csv_table

__all__ = ["METADATA_ID_COLUMNS", "Metadata", "read_metadata"]

#: metadata CSV columns (case-insensitive) that hold the sample id, in order of preference
METADATA_ID_COLUMNS = ("id", "image_id", "image")


@dataclass
class Metadata:
    """A metadata table keyed by sample id (e.g. HAM10000_metadata.csv keyed by ``image_id``)."""

    file: str
    id_column: str
    ids: np.ndarray
    columns: dict[str, np.ndarray]

    def lookup(self, ids: np.ndarray | None, what: str) -> np.ndarray:
        """Row of each id in this table; unknown ids are an error listing examples."""
        if ids is None:
            raise EvaluationError(
                f"{what} has no sample ids, so it cannot be joined with the metadata "
                f"{self.file}; write an 'id' column / 'ids' array"
            )
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[order]
        pos = np.searchsorted(sorted_ids, ids)
        pos = np.minimum(pos, max(len(sorted_ids) - 1, 0))
        found = sorted_ids[pos] == ids if len(sorted_ids) else np.zeros(len(ids), bool)
        if not found.all():
            missing = ids[~found]
            examples = ", ".join(repr(str(x)) for x in missing[:5])
            raise EvaluationError(
                f"{len(missing)} of {len(ids)} sample ids of {what} are not in the metadata "
                f"{self.file} (column {self.id_column!r}), e.g. {examples}"
            )
        return order[pos]

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise UnknownNameError("metadata column", name, list(self.columns), f"in {self.file}")
        return self.columns[name]


def read_metadata(path: str | Path) -> Metadata:
    """Read a metadata CSV whose id column is ``id``, ``image_id`` or ``image`` (case-insensitive).

    Values are kept as text; empty cells become ``"(missing)"``. Every problem of the file is a positioned
    :class:`~hierclf.errors.FileFormatError`.
    """
    table = read_csv_table(path, what="metadata")
    id_col = table.find(*METADATA_ID_COLUMNS)
    if id_col is None:
        problem = Problem(
            f"no sample id column; expected one of {', '.join(METADATA_ID_COLUMNS)} "
            f"(found {', '.join(table.header)})",
            table.file,
            1,
            code="missing-column",
        )
        raise FileFormatError([problem], what="metadata")
    cells = np.where(table.cells == "", "(missing)", table.cells)
    ids = cells[:, id_col]
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        k = int(np.flatnonzero(counts > 1)[0])
        again = int(np.flatnonzero(ids == uniq[k])[1])
        message = (
            f"sample id {str(uniq[k])!r} appears {int(counts[k])} times in column {table.header[id_col]!r} "
            f"(first at line {int(table.lines[first[k]])}); ids must be unique"
        )
        raise FileFormatError(
            [table.problem(again, message, column=id_col, code="duplicate-id")], what="metadata"
        )
    columns = {h: cells[:, k] for k, h in enumerate(table.header) if k != id_col}
    return Metadata(table.file, table.header[id_col], ids, columns)
