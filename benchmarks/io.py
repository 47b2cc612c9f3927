"""Benchmark: prediction tables at scale, ``hierclf rollup --all`` on ISIC-challenge CSVs against pandas.

Cases (issue 16): ISIC challenge CSVs (``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``, six decimals, rows summing
to 1) of 200,000 and 1,000,000 rows, rolled up to every node of ``taxonomy/dermamnist.yaml`` (12 nodes) and
written as CSV. Methods, each timed in this process, alternately, after one warm-up run:

* ``cli (as shipped)``: ``hierclf rollup --all --out`` in-process (``hierclf.cli.main``), as the command is;
* ``reader + TableWriter``: what the command does with this issue's API: ``open_predictions`` (pyarrow's
  CSV reader, every check) -> ``hierclf.functional.rollup`` on each block -> ``TableWriter`` (pyarrow's
  CSV writer, 8 significant digits as the command's default);
* ``pandas naive``: ``pd.read_csv`` -> one ``df[leaf columns].sum(axis=1)`` per node -> ``to_csv``: the
  baseline a user writes by hand (no checks);
* ``parquet -> parquet``: the same roll-up reading and writing Parquet (row groups).

Times are medians of ``--repeats`` runs. Peak memory is measured per method in a fresh subprocess: the
highest resident set size while the method runs (sampled every 2 ms) over the size after the imports, so
one method's garbage cannot inflate the next. Ratios are against the pandas baseline of the same run.

    python benchmarks/io.py --out benchmarks/results/io.json
    python benchmarks/io.py --quick                 # seconds: 20,000 rows, one repeat
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TAXONOMY = REPO / "taxonomy" / "dermamnist.yaml"
HEADER = ("image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def make_isic_csv(path: Path, n: int, seed: int = 0) -> None:
    """An ISIC-challenge submission: ids ``ISIC_0000000`` ..., probabilities with six decimals."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(",".join(HEADER) + "\n")
        for start in range(0, n, 100_000):
            k = min(100_000, n - start)
            p = rng.dirichlet(np.ones(7), size=k)
            ids = np.char.add("ISIC_", np.char.zfill(np.arange(start, start + k).astype(str), 7))
            cells = np.char.mod("%.6f", p)
            rows = np.concatenate([ids[:, None], cells], axis=1)
            fh.write("\n".join(",".join(r) for r in rows.tolist()) + "\n")


def run_cli(src: Path, out: Path) -> None:
    from hierclf.cli import main

    with contextlib.redirect_stderr(io.StringIO()):  # the command's "wrote N rows" line
        code = main(["rollup", "-t", str(TAXONOMY), "-p", str(src), "--all", "-o", str(out)])
    assert code == 0


def run_tables(src: Path, out: Path) -> None:
    """The roll-up command's work through open_predictions + rollup + TableWriter."""
    from hierclf.evaluation.prediction_files import TableWriter, open_predictions
    from hierclf.functional import rollup, rollup_nodes
    from hierclf.taxonomy.tree import Taxonomy

    tax = Taxonomy.from_yaml(TAXONOMY)
    with open_predictions(src, tax) as reader:
        nodes = rollup_nodes(tax, None, columns=reader.columns)
        rows = max(1, (1 << 20) // len(reader.columns))
        with TableWriter(out, nodes, digits=8, inputs=[src]) as writer:
            for block in reader.chunks(rows):
                values = rollup(block.probs, tax, None, columns=reader.columns)
                ids = block.ids if block.ids is not None else np.arange(len(block)).astype(str)
                writer.write(ids, values)


def _pandas_plan() -> tuple[list[str], list[list[str]]]:
    from hierclf.taxonomy.tree import Taxonomy

    tax = Taxonomy.from_yaml(TAXONOMY)
    by_leaf = {tax.resolve(c): c for c in HEADER[1:]}
    return list(tax.nodes), [[by_leaf[leaf] for leaf in tax.leaves_under(n)] for n in tax.nodes]


def run_pandas(src: Path, out: Path) -> None:
    import pandas as pd

    nodes, columns = _pandas_plan()
    df = pd.read_csv(src)
    result = pd.DataFrame({"id": df["image"]})
    for node, cols in zip(nodes, columns):
        result[node] = df[cols].sum(axis=1)
    result.to_csv(out, index=False)


def run_parquet(src: Path, out: Path) -> None:
    run_tables(src, out)


METHODS: dict[str, Callable[[Path, Path], None]] = {
    "cli (as shipped)": run_cli,
    "reader + TableWriter": run_tables,
    "pandas naive": run_pandas,
    "parquet -> parquet": run_parquet,
}


def _inputs(csv: Path) -> dict[str, Path]:
    parquet = csv.with_suffix(".parquet")
    if not parquet.is_file():
        from hierclf.evaluation.prediction_files import read_predictions, write_predictions

        write_predictions(parquet, read_predictions(csv))
    return {"csv": csv, "parquet": parquet}


def _source_of(method: str, inputs: dict[str, Path]) -> tuple[Path, str]:
    return (inputs["parquet"], ".parquet") if method.startswith("parquet") else (inputs["csv"], ".csv")


def time_methods(inputs: dict[str, Path], work: Path, repeats: int, methods: list[str]) -> dict[str, float]:
    """Median seconds of each method, the methods run alternately (repeats rounds after a warm-up)."""
    times: dict[str, list[float]] = {m: [] for m in methods}
    for round_ in range(repeats + 1):
        for method in methods:
            src, suffix = _source_of(method, inputs)
            out = work / f"out{suffix}"
            start = time.perf_counter()
            METHODS[method](src, out)
            elapsed = time.perf_counter() - start
            if round_:  # the first round warms caches, numba and the file system
                times[method].append(elapsed)
            out.unlink()
    return {m: statistics.median(t) for m, t in times.items()}


def _rss_mb() -> float:
    """The resident set size now (Linux ``/proc/self/statm``; elsewhere the peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakSampler:
    """The highest resident set size seen while it runs (sampled every 2 ms in a thread)."""

    def __init__(self) -> None:
        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_mb())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def child(method: str, src: Path, out: Path) -> None:
    """Run one method after importing everything it needs; print the peak RSS growth and the time."""
    import pandas  # noqa: F401 - imports are not part of any method's memory
    import pyarrow.csv  # noqa: F401

    import hierclf.cli.rollup  # noqa: F401
    import hierclf.functional  # noqa: F401

    METHODS[method](*_warm_up_files(src, out))  # compiles numba's kernel, loads lazy modules
    before = _rss_mb()
    start = time.perf_counter()
    with PeakSampler() as sampler:
        METHODS[method](src, out)
    elapsed = time.perf_counter() - start
    print(json.dumps({"peak_mb": sampler.peak - before, "seconds": elapsed, "imports_mb": before}))


def _warm_up_files(src: Path, out: Path) -> tuple[Path, Path]:
    """A 100-row copy of ``src`` (same format) and where its output goes."""
    from hierclf.evaluation.prediction_files import read_predictions, write_predictions

    head = out.with_name("warm" + src.suffix)
    if src.suffix == ".csv":
        with open(src, encoding="utf-8") as fh:
            head.write_text("".join(next(fh) for _ in range(101)), encoding="utf-8")
    else:
        write_predictions(head, read_predictions(src).select(slice(0, 100)))
    return head, out.with_name("warm_out" + src.suffix)


def memory_of(method: str, inputs: dict[str, Path], work: Path) -> dict[str, float]:
    src, suffix = _source_of(method, inputs)
    cmd = [sys.executable, __file__, "--child", method, str(src), str(work / f"mem{suffix}")]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available(method: str) -> bool:
    if method == "pandas naive":
        try:
            import pandas  # noqa: F401
        except ImportError:
            return False
    return True


def bench(rows: int, repeats: int, work: Path) -> list[dict[str, Any]]:
    csv = work / f"isic_{rows}.csv"
    if not csv.is_file():
        make_isic_csv(csv, rows)
    inputs = _inputs(csv)
    methods = [m for m in METHODS if available(m)]
    times = time_methods(inputs, work, repeats, methods)
    baseline = times.get("pandas naive")
    results = []
    for method in methods:
        memory = memory_of(method, inputs, work)
        row = {
            "rows": rows,
            "method": method,
            "seconds": times[method],
            "vs_pandas": None if baseline is None else times[method] / baseline,
            "peak_mb": memory["peak_mb"],
            "input_mb": _inputs(csv)["parquet" if method.startswith("parquet") else "csv"].stat().st_size
            / 1e6,
        }
        results.append(row)
        ratio = "" if row["vs_pandas"] is None else f"{row['vs_pandas']:6.2f}x"
        print(
            f"{rows:>9,}  {method:<22} {row['seconds']:8.2f} s  {ratio:>8}  peak +{row['peak_mb']:7.1f} MB"
            f"  (input {row['input_mb']:.0f} MB)"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 rows, one repeat")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated files here")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    if args.quick:
        args.rows, args.repeats = [20_000], 1
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = [r for n in args.rows for r in bench(n, args.repeats, work)]
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"results": results, "load": os.getloadavg()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
