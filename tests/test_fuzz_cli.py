"""Property-based fuzzing of the CLI: mutated shipped files, run in-process, never crash the CLI.

Hypothesis mutates the shipped taxonomy files (lines deleted, duplicated, re-indented, values replaced by
hostile YAML, bytes inserted, files truncated) and runs ``hierclf validate`` and ``hierclf show`` on them in
this process. Whatever the file, the CLI must answer as documented: exit code 0 or 1 (2 only for usage), no
traceback, never "internal error" (that path is for hierclf's own bugs), at most one line on stderr, in a
bounded time and memory, and no file changed.
"""

from __future__ import annotations

import hashlib
import resource
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hierclf.cli import main

REPO = Path(__file__).resolve().parents[1]
SOURCES = {
    p.stem: p.read_text(encoding="utf-8")
    for p in (REPO / "taxonomy").glob("*.yaml")
    if p.stat().st_size < 20_000
}

HOSTILE_VALUES = [
    ".inf",
    "-.nan",
    "!!int abc",
    "*undefined",
    "&a [*a, *a]",
    "2020-13-45",
    "9" * 5000,
    "\x00",
    "\x0b",
    "{",
    "[",
    "- -",
    "? x",
    "~",
    "null",
    '"\\u0000"',
    "<<: *x",
    "!!binary ab*c",
    "!!python/object/apply:os.system [id]",
    "[" * 3000,
    "'unterminated",
    "\ufeff",
    "é\u2028x",
    "a: b: c",
    "- id: x\n  name: X",
    "!!set {a, b}",
    "0x1F",
    "1_000",
    "{id: n, name: N, children: [{id: n, name: N}]}",
    "id",
    "\t",
    "  ",
    "",
]

_ops = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 10_000), st.sampled_from(HOSTILE_VALUES)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just("")),
    st.tuples(st.just("duplicate"), st.integers(0, 10_000), st.just("")),
    st.tuples(st.just("indent"), st.integers(0, 10_000), st.sampled_from([" ", "  ", "\t", "-"])),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.text(min_size=1, max_size=4)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just("")),
)


def mutate(text: str, ops: list[tuple[str, int, str]]) -> str:
    for op, where, what in ops:
        lines = text.split("\n")
        i = where % max(len(lines), 1)
        if op == "replace" and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {what}"
        elif op == "delete":
            del lines[i : i + 1]
        elif op == "duplicate":
            lines.insert(i, lines[i] if lines else "")
        elif op == "indent":
            lines[i] = what + lines[i] if lines else what
        text = "\n".join(lines)
        if op == "insert":
            k = where % (len(text) + 1)
            text = text[:k] + what + text[k:]
        elif op == "truncate":
            text = text[: where % (len(text) + 1)]
    return text


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    start = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert elapsed < 10.0, f"{argv} took {elapsed:.1f} s"
    return code, out, err


def _check(code: int, out: str, err: str, allowed: tuple[int, ...]) -> None:
    assert code in allowed, (code, out, err)
    assert "Traceback" not in out + err and "internal error" not in out + err, err
    assert len([line for line in err.splitlines() if line.strip()]) <= 1, err


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(source=st.sampled_from(sorted(SOURCES)), ops=st.lists(_ops, min_size=1, max_size=3))
def test_validate_and_show_survive_mutated_taxonomies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, ops: list[tuple[str, int, str]]
) -> None:
    path = tmp_path / "mutated.yaml"
    try:
        path.write_text(mutate(SOURCES[source], ops), encoding="utf-8", errors="surrogatepass")
    except UnicodeEncodeError:
        return  # hypothesis drew a lone surrogate: not a file anyone can write as UTF-8
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, out, err = _run(["validate", str(path)], capsys)
    _check(code, out, err, (0, 1))
    assert err == ""  # problems go to stdout, one per line, each positioned
    code, out, err = _run(["show", str(path)], capsys)
    _check(code, out, err, (0, 1))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grown_mb < 500, f"memory grew by {grown_mb:.0f} MB"


# --- prediction files through hierclf rollup ----------------------------------------------------------------

_DERMAMNIST = REPO / "taxonomy" / "dermamnist.yaml"
_ISIC_CSV = (
    "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
    "a,0.1,0.5,0.1,0.1,0.1,0.05,0.05\n"
    "b,0.2,0.2,0.2,0.1,0.1,0.1,0.1\n"
    "c,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"
)
_CSV_VALUES = [
    "nan",
    "inf",
    "-0.1",
    "1e400",
    "",
    "x",
    '"',
    "0x1",
    "1,2",
    "\x00",
    "é",
    "0.5\n",
    "label",
    "image",
]


def _warm_up_kernels() -> None:
    """Compile the roll-up kernels and import torch (``--logits``) once, so that the time bound measures the
    command, not numba's compiler or torch's import."""
    import numpy as np
    import torch  # noqa: F401

    from hierclf import Taxonomy, rollup

    rollup(np.full((8, 7), 1 / 7), Taxonomy.from_yaml(_DERMAMNIST))
    rollup(np.full((8, 7), 1 / 7, dtype=np.float32), Taxonomy.from_yaml(_DERMAMNIST))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cells=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 7), st.sampled_from(_CSV_VALUES)), max_size=3),
    cut=st.one_of(st.none(), st.integers(0, len(_ISIC_CSV))),
    raw=st.one_of(st.none(), st.binary(min_size=1, max_size=3)),
    options=st.sampled_from(
        [["--all"], ["--node", "mel"], ["--node", "malignant", "--normalize"], ["--all", "--logits"]]
    ),
)
def test_rollup_survives_mutated_prediction_files(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cells: list[tuple[int, int, str]],
    cut: int | None,
    raw: bytes | None,
    options: list[str],
) -> None:
    rows = [line.split(",") for line in _ISIC_CSV.strip().split("\n")]
    for r, c, value in cells:
        rows[r][c] = value
    text = "\n".join(",".join(row) for row in rows) + "\n"
    text = text if cut is None else text[:cut]
    data = text.encode("utf-8") + (raw or b"")
    _warm_up_kernels()
    probs, out = tmp_path / "p.csv", tmp_path / "out.csv"
    probs.write_bytes(data)
    out.write_text("keep me")
    code, stdout, err = _run(
        ["rollup", "-t", str(_DERMAMNIST), "-p", str(probs), *options, "--out", str(out)], capsys
    )
    _check(code, stdout, err, (0, 1))
    assert probs.read_bytes() == data
    if code != 0:
        assert out.read_text() == "keep me"  # a failed run never replaces its output


# --- training configurations through hierclf train --check -----------------------------------------------

_CONFIG = f"""taxonomy: {_DERMAMNIST}
data:
  source: synthetic
  root: DATA
  synthetic: {{n_train: 70, n_val: 35, n_test: 35}}
classes: {{kind: leaves}}
loss: {{name: weighted_ce, weights: inverse}}
sampler: uniform
epochs: 1
batch_size: 35
lr: 0.001
device: cpu
out_dir: OUT
"""


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_ops, min_size=1, max_size=2))
def test_train_check_survives_mutated_configs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ops: list[tuple[str, int, str]]
) -> None:
    text = _CONFIG.replace("DATA", str(tmp_path / "data")).replace("OUT", str(tmp_path / "out"))
    path = tmp_path / "run.yaml"
    try:
        path.write_text(mutate(text, ops), encoding="utf-8")
    except UnicodeEncodeError:
        return
    code, out, err = _run(["train", "--config", str(path), "--check"], capsys)
    _check(code, out, err, (0, 1, 2))
    assert not (tmp_path / "out" / "checkpoint.pt").exists()
