"""Hostile YAML: every document that could exhaust memory or time, or crash the loader, is one positioned
problem, quickly (``hierclf.io.yaml_files``), for taxonomies, protocols and configurations alike."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from hierclf.cli import main
from hierclf.io import yaml_files
from hierclf.io.yaml_files import load_located, load_located_file
from hierclf.taxonomy.validation import validate_text


def _billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


HOSTILE = {
    "alias bomb": (_billion_laughs(), "expands to more than 1,000,000 values", "yaml-size"),
    "bad int tag": (
        "x: !!int abc\n",
        "1:4: error: malformed YAML: cannot read value 'abc' (tag !!int)",
        "yaml-syntax",
    ),
    "invalid date": (
        "x: 2020-13-45\n",
        "1:4: error: malformed YAML: cannot read value '2020-13-45'",
        "yaml-syntax",
    ),
    "huge integer": (
        "x: " + "9" * 5000 + "\n",
        "1:4: error: malformed YAML: cannot read value '999",
        "yaml-syntax",
    ),
    "NUL": ("name: a\x00b\n", "1:8: error: malformed YAML: character 0x0000 is not allowed", "yaml-syntax"),
    "vertical tab": (
        "name: a\x0bb\n",
        "1:8: error: malformed YAML: character 0x000b is not allowed",
        "yaml-syntax",
    ),
    "deep flow": ("x: " + "[" * 5000 + "]" * 5000 + "\n", "malformed YAML", "yaml-syntax"),
    "deep block": (
        "".join(" " * i + "a:\n" for i in range(3000)) + " " * 3000 + "b\n",
        "malformed YAML",
        "yaml-syntax",
    ),
    "python tag": (
        "x: !!python/object/apply:os.system [echo pwned]\n",
        "unsupported tag 'tag:yaml.org,2002:python/object/apply:os.system'",
        "yaml-syntax",
    ),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_documents_are_one_positioned_problem(name: str) -> None:
    text, message, code = HOSTILE[name]
    start = time.perf_counter()
    doc = load_located(text, "t.yaml")
    assert time.perf_counter() - start < 2.0  # refused before anything is built
    assert doc.data is None and len(doc.problems) == 1
    assert message in str(doc.problems[0]) and doc.problems[0].code == code
    report = validate_text(text, "t.yaml")  # and the validator goes no further
    assert [str(p) for p in report.problems] == [str(doc.problems[0])]


def test_alias_budget_counts_every_expanded_value(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\n"  # 1 + (1 + 3) + (1 + 3 * 4) = 18 values
    assert load_located(text).data == {"a": [1, 2, 3], "b": [[1, 2, 3]] * 3}
    monkeypatch.setattr(yaml_files, "MAX_VALUES", 18)
    assert load_located(text).data is not None
    monkeypatch.setattr(yaml_files, "MAX_VALUES", 17)
    (problem,) = load_located(text, "t.yaml").problems
    assert problem.code == "yaml-size" and problem.line == 1  # the anchored value that is repeated
    (recursive,) = load_located("a: &a [1, *a]\n", "t.yaml").problems
    assert "refers to itself through an alias" in recursive.message and recursive.line == 1


def test_special_and_huge_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fifo = tmp_path / "tree.yaml"
    os.mkfifo(fifo)
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(load_located_file(fifo)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done, "reading a FIFO must not hang"
    assert "is not a regular file" in str(done[0].problems[0])  # type: ignore[attr-defined]
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" * 100)
    monkeypatch.setattr(yaml_files, "MAX_YAML_BYTES", 64)
    assert "is too large" in str(load_located_file(big).problems[0])


@pytest.mark.parametrize("name", ["alias bomb", "NUL", "deep flow", "bad int tag"])
def test_cli_validate_gives_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(HOSTILE[name][0], encoding="utf-8")
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert any(HOSTILE[name][1] in line for line in lines) and "Traceback" not in out + err
    assert "internal error" not in out + err
