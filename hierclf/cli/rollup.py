"""``hierclf rollup``: node probabilities from a prediction file, streamed in row blocks.

Reads ``.npz`` (``probs``, ``leaves``, optional ``ids``) or ``.csv`` (id column, one column per leaf or cut
class, matched by id or alias: the ISIC challenge format ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` works as is),
checks every row, and writes ``id`` plus one column per requested node as CSV to stdout or ``--out``
(atomically). Exit codes: 0 done, 1 bad input (one line naming the file, line or row), 2 usage error.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from typing import Any

logger = logging.getLogger(__name__)

#: cells (rows x columns) per block when --chunk-size is not given: about 32 MB of float64 for .npz; CSV
#: blocks are smaller because parsing holds every cell as a Python string first (~60-80 bytes a cell)
AUTO_CELLS = {".npz": 4 * 1024 * 1024, ".csv": 1024 * 1024}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "rollup",
        help="sum leaf probabilities up the tree to named nodes (CSV out)",
        description="Roll leaf (or training-class) probabilities up the taxonomy: P(node) = sum of the "
        "probabilities of the leaves under it. Input .npz or .csv (ISIC challenge CSVs work as "
        "is); output CSV with an id column and one column per node.",
    )
    p.add_argument("--taxonomy", "-t", required=True, metavar="T", help="taxonomy YAML file")
    p.add_argument("--probs", "-p", required=True, metavar="FILE", help="prediction file (.npz or .csv)")
    p.add_argument(
        "--node",
        "-n",
        action="append",
        default=[],
        metavar="NODE",
        help="node to output (id, alias or name); repeat for several",
    )
    p.add_argument("--all", action="store_true", help="output every node the input determines, in tree order")
    p.add_argument("--out", "-o", metavar="FILE", help="output CSV (written atomically); default stdout")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--normalize",
        action="store_true",
        help="divide each row by its sum instead of requiring rows to sum to 1",
    )
    how.add_argument("--logits", action="store_true", help="inputs are logits: apply a softmax per row")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        metavar="TOL",
        help="allowed |row sum - 1| for probabilities (default 1e-3)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="ROWS",
        help="rows per block (default: about 4 million values per block for .npz, 1 million for .csv)",
    )
    p.add_argument(
        "--digits",
        type=int,
        default=8,
        metavar="D",
        help="significant digits of the output values (default 8)",
    )
    p.set_defaults(func=run, _parser=p)


def _check_args(args: argparse.Namespace) -> None:
    parser: argparse.ArgumentParser = args._parser
    if not args.node and not args.all:
        parser.error("give at least one --node, or --all")
    if args.node and args.all:
        parser.error("--all already outputs every node; leave out --node")
    if args.chunk_size is not None and args.chunk_size < 1:
        parser.error(f"--chunk-size must be positive, got {args.chunk_size}")
    if not 1 <= args.digits <= 17:
        parser.error(f"--digits must be between 1 and 17, got {args.digits}")
    if not 0 <= args.tolerance < 1:  # nan fails both comparisons: it would switch the row-sum check off
        parser.error(f"--tolerance must be a number in [0, 1), got {args.tolerance}")


def _check_nodes(tax: Any, names: list[str]) -> None:
    from hierclf.errors import HierclfError

    seen: dict[str, str] = {}
    for name in names:
        node = tax.resolve(name)
        if node in seen:
            raise HierclfError(f"--node {name!r} names node {node!r} again (already given as {seen[node]!r})")
        seen[node] = name


def _probabilities(block: Any, args: argparse.Namespace, first_row: int) -> Any:
    """A block's probabilities, C-contiguous: as read, softmaxed (``--logits``, in float64 with torch, as
    before), or divided by their row sums (``--normalize``, float64 sums added in torch's order)."""
    import numpy as np

    from hierclf.errors import HierclfError
    from hierclf.rollup_engine.numpy_ops import torch_order_sum

    probs = block.probs
    if args.logits:
        import torch

        return torch.softmax(torch.from_numpy(probs).double(), dim=1).numpy()
    if args.normalize:
        sums = torch_order_sum(np.ascontiguousarray(probs, dtype=np.float64))[:, None]
        zero = np.flatnonzero(sums[:, 0] <= 0)
        if len(zero):
            r = int(zero[0])
            ident = f" (id {str(block.ids[r])!r})" if block.ids is not None else ""
            raise HierclfError(
                f"{args.probs}: row {first_row + r}{ident}: probabilities sum to 0; cannot renormalise it"
            )
        return probs / sums
    return np.ascontiguousarray(probs)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from hierclf.evaluation.prediction_files import open_predictions, write_csv_rows
    from hierclf.functional import rollup, rollup_nodes
    from hierclf.io.atomic import atomic_open
    from hierclf.taxonomy.tree import Taxonomy

    _check_args(args)
    tax = Taxonomy.from_yaml(args.taxonomy)
    _check_nodes(tax, args.node)
    tol = None if args.normalize else args.tolerance
    with open_predictions(args.probs, tax, check_probs=not args.logits, tol=tol) as reader:
        wanted = None if args.all else args.node
        out_nodes = rollup_nodes(tax, wanted, columns=reader.columns)
        cells = AUTO_CELLS.get(reader.path.suffix.lower(), AUTO_CELLS[".csv"])
        rows = args.chunk_size or max(1, cells // max(len(reader.columns), 1))
        fmt = f"%.{args.digits}g"
        n_rows = 0
        buffer: Any = None
        out = (
            atomic_open(args.out, "w", newline="", inputs=[args.probs, args.taxonomy])
            if args.out
            else _Stdout()
        )
        with out as fh:
            writer = csv.writer(fh, lineterminator="\n")
            header = ["id", *out_nodes]
            for block in reader.chunks(rows):
                if header:  # written once the first block passed its checks: a bad file prints nothing
                    writer.writerow(header)
                    header = []
                probs = _probabilities(block, args, n_rows)
                if buffer is None or buffer.shape[0] < len(probs) or buffer.dtype != probs.dtype:
                    buffer = np.empty((len(probs), len(out_nodes)), dtype=probs.dtype)
                # one output buffer for every block: fresh pages for each block cost more than the roll-up;
                # numpy in, numpy out: the roll-up itself needs no torch
                values = rollup(probs, tax, wanted, columns=reader.columns, out=buffer[: len(probs)])
                ids = block.ids
                if ids is None:  # no id column: rows are numbered from 0
                    ids = np.arange(n_rows, n_rows + len(block)).astype(str)
                write_csv_rows(writer, np.char.mod(fmt, values), ids)
                n_rows += len(block)
            if header:  # no rows at all
                writer.writerow(header)
    logger.info("rolled %d rows up to %d nodes", n_rows, len(out_nodes))
    if args.out:
        print(f"wrote {n_rows} rows x {len(out_nodes)} nodes to {args.out}", file=sys.stderr)
    return 0


class _Stdout:
    """Context manager giving stdout without closing it."""

    def __enter__(self) -> Any:
        return sys.stdout

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
