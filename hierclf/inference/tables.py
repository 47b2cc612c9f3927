"""Writing a :class:`~hierclf.inference.prediction_loop.PredictionTable`: the prediction-file writer,
atomically, never over an input.

The table goes through :func:`hierclf.evaluation.prediction_files.write_predictions` (the format follows the
suffix: ``.csv``, ``.parquet`` or ``.npz``), as an ``id`` column and one value column
each: the model's columns (tree nodes: leaves or training classes, so the first part is a prediction file
``hierclf rollup`` and ``hierclf evaluate`` read), then ``node:<node>`` for each named node, then
``score:<task>`` (or ``margin:<task>`` under the or rule) and ``decision:<task>`` (1 flagged, 0 not) for each
task. Values are float32 (9 significant digits in CSV) without tasks, float64 (17 digits) with them, so
every number reads back exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from hierclf.inference.prediction_loop import PredictionTable
from hierclf.io.atomic import check_output

__all__ = ["write_table"]


def _may_be(inputs: Iterable[str | Path], out: Path) -> list[Path]:
    """The inputs that could be the output file: the same name as it or as what it links to (a million
    image paths are not each compared with ``stat``)."""
    names = {out.name, out.resolve().name}
    return [Path(p) for p in inputs if Path(p).name in names]


def write_table(table: PredictionTable, path: str | Path, *, inputs: Iterable[str | Path] = ()) -> Path:
    """Write ``table`` to ``path`` (module docstring); returns the path.

    Raises:
        OutputIsInputError: ``path`` is one of ``inputs`` (the checkpoint, an image, the image list).
        OutputPathError: ``path`` is a folder or cannot be written.
        PredictionsError: a format the prediction-file writer does not know (by suffix).
    """
    from hierclf.evaluation.prediction_files import Predictions, write_predictions

    out = Path(path)
    check_output(out, _may_be(inputs, out))
    dtype = np.float64 if table.tasks else np.float32
    preds = Predictions(table.values().astype(dtype), tuple(table.output_columns()), ids=table.ids)
    write_predictions(out, preds)
    return out
