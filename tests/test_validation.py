"""Every validation rule: a failing example, its exact message, and its line and column.

Line and column numbers below were counted by hand in the YAML snippets (1-based, as editors show them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import tree_dicts

from hierclf import Taxonomy, TaxonomyError
from hierclf.taxonomy.validation import validate_file, validate_text

ID_RULE = (
    "expected snake_case: lowercase letters and digits in words joined by single '_', starting with a letter"
)
TWO_LEAVES = "  children:\n    - {id: b, name: B}\n    - {id: c, name: C}\n"


def problems(text: str, strict: bool = False) -> list[str]:
    return [str(p) for p in validate_text(text, "t.yaml", strict=strict).problems]


CASES = {
    "malformed YAML (unclosed flow mapping)": (
        "name: t\nroot: {id: a, name: A\n",
        [
            "t.yaml:3:1: error: malformed YAML: expected ',' or '}', but got '<stream end>' (while parsing a "
            "flow mapping at line 2, column 7)"
        ],
    ),
    "malformed YAML (bad indentation)": (
        "name: t\nroot:\n  id: a\n   name: A\n",
        ["t.yaml:4:8: error: malformed YAML: mapping values are not allowed here"],
    ),
    "malformed YAML (undefined anchor)": (
        "name: t\nroot: *r\n",
        ["t.yaml:2:7: error: malformed YAML: found undefined alias 'r'"],
    ),
    "duplicate key": (
        "name: t\nroot:\n  id: a\n  name: A\n  name: B\n" + TWO_LEAVES,
        [
            "t.yaml:5:3: error: duplicate key 'name' (first at line 4); YAML would silently keep only "
            "the last "
            "value"
        ],
    ),
    "duplicate id": (
        "name: t\nroot:\n  id: a\n  name: A\n  children:\n    - id: b\n      name: B\n    - id: b\n"
        "      name: C\n",
        [
            "t.yaml:8:11: error: duplicate node id 'b' (first defined at line 6); ids must be unique in the "
            "whole tree"
        ],
    ),
    "alias naming two nodes": (
        "name: t\nroot:\n  id: a\n  name: A\n  children:\n    - id: b\n      name: B\n      aliases: [x]\n"
        "    - id: c\n      name: C\n      aliases: [X]\n",
        ["t.yaml:11:17: error: alias 'X' names two nodes: 'b' (line 8) and 'c'"],
    ),
    "alias shadowing an id": (
        "name: t\nroot:\n  id: a\n  name: A\n  children:\n    - id: b\n      name: B\n      aliases: [C]\n"
        "    - id: c\n      name: C\n",
        ["t.yaml:8:17: error: alias 'C' of node 'b' shadows the id of node 'c'"],
    ),
    "invalid ids": (
        "name: t\nroot:\n  id: A-1\n  name: A\n  children:\n    - {id: b, name: B}\n"
        "    - {id: 2c, name: C}\n",
        [
            f"t.yaml:3:7: error: node 'A-1': invalid id 'A-1': {ID_RULE}",
            f"t.yaml:7:12: error: node '2c': invalid id '2c': {ID_RULE}",
        ],
    ),
    "invalid taxonomy name": (
        "name: Derm Tree\nroot:\n  id: a\n  name: A\n" + TWO_LEAVES,
        [f"t.yaml:1:7: error: top level: invalid taxonomy name 'Derm Tree': {ID_RULE}"],
    ),
    "empty names": (
        "name: t\nroot:\n  id: a\n  name: '  '\n  children:\n    - {id: b, name: B}\n"
        "    - {id: c, name: ''}\n",
        [
            "t.yaml:4:9: error: node 'a': empty name: every node needs a display name",
            "t.yaml:7:21: error: node 'c': empty name: every node needs a display name",
        ],
    ),
    "codes not contiguous": (
        "name: t\nroot:\n  id: a\n  name: A\n  children:\n    - {id: b, name: B, codes: {ds: 0}}\n"
        "    - {id: c, name: C, codes: {ds: 2}}\n",
        ["t.yaml:6:36: error: dataset 'ds': codes must be contiguous from 0 to 2; missing 1"],
    ),
    "two nodes one code": (
        "name: t\nroot:\n  id: a\n  name: A\n  children:\n    - {id: b, name: B, codes: {ds: 0}}\n"
        "    - {id: c, name: C, codes: {ds: 0}}\n    - {id: d, name: D, codes: {ds: 1}}\n",
        ["t.yaml:7:36: error: dataset 'ds': code 0 maps 2 nodes ('b', 'c'); each code must name one node"],
    ),
    "negative code": (
        "name: t\nroot:\n  id: a\n  name: A\n  children:\n    - {id: b, name: B, codes: {ds: -1}}\n"
        "    - {id: c, name: C}\n",
        ["t.yaml:6:36: error: node 'b': code for dataset 'ds' must be a whole number >= 0, got -1"],
    ),
    "empty file": ("", ["t.yaml: error: the file is empty: expected a mapping with 'name' and 'root'"]),
    "only a comment": (
        "# nothing yet\n",
        ["t.yaml: error: the file is empty: expected a mapping with 'name' and 'root'"],
    ),
    "not a mapping": (
        "- a\n- b\n",
        ["t.yaml:1:1: error: expected a mapping with 'name' and 'root' at the top, got a list"],
    ),
    "tree with no leaves": (
        "name: t\nroot:\n  id: a\n  name: A\n",
        [
            "t.yaml:3:3: error: the tree has no leaves: root 'a' has no children (a classifier needs "
            "at least "
            "two conditions)"
        ],
    ),
    "unknown node field": (
        "name: t\nroot:\n  id: a\n  name: A\n  alias: [x]\n  children:\n    - {id: b, name: B, childs: []}\n"
        "    - {id: c, name: C}\n",
        [
            "t.yaml:5:10: error: node 'a': unknown field 'alias' (expected one of id, name, aliases, "
            "source_aliases, codes, metadata, children); did you mean 'aliases'?",
            "t.yaml:7:32: error: node 'b': unknown field 'childs' (expected one of id, name, aliases, "
            "source_aliases, codes, metadata, children); did you mean 'children'?",
        ],
    ),
    "unknown top-level field": (
        "name: t\ndescripton: x\nroot:\n  id: a\n  name: A\n" + TWO_LEAVES,
        [
            "t.yaml:2:13: error: top level: unknown field 'descripton' (expected one of format_version, "
            "name, "
            "description, metadata, root); did you mean 'description'?"
        ],
    ),
    "missing fields": (
        "name: t\nroot:\n  name: A\n  children:\n    - {id: b}\n    - {id: c, name: C}\n",
        [
            "t.yaml:3:3: error: root: missing required field 'id'",
            "t.yaml:5:7: error: node 'b': missing required field 'name'",
        ],
    ),
    "children not a list": (
        "name: t\nroot:\n  id: a\n  name: A\n  children: {id: b, name: B}\n",
        ["t.yaml:5:13: error: node 'a': children: expected a list, got a mapping"],
    ),
    "unsupported format version": (
        "format_version: 2\nname: t\nroot:\n  id: a\n  name: A\n" + TWO_LEAVES,
        ["t.yaml:1:17: error: top level: format_version: this hierclf reads format version 1, got 2"],
    ),
}


@pytest.mark.parametrize("text, expected", CASES.values(), ids=CASES.keys())
def test_rule(text: str, expected: list[str]) -> None:
    assert problems(text) == expected
    with pytest.raises(TaxonomyError) as info:
        Taxonomy.from_text(text, file="t.yaml")
    assert [str(p) for p in info.value.problems] == expected
    assert str(info.value).startswith(expected[0])


SINGLE = (
    "name: t\nroot:\n  id: a\n  name: A\n  children:\n    - id: b\n      name: B\n      children:\n"
    "        - {id: c, name: C}\n    - {id: d, name: D}\n"
)
SINGLE_MESSAGE = (
    "t.yaml:6:7: {}: node 'b' has a single child 'c': both always get the same probability; "
    "merge them, add the missing siblings, or acknowledge it with "
    "'metadata: {{single_child_ok: true}}'"
)


def test_single_child_is_a_warning() -> None:
    report = validate_text(SINGLE, "t.yaml")
    assert report.ok and [str(p) for p in report.problems] == [SINGLE_MESSAGE.format("warning")]
    assert Taxonomy.from_text(SINGLE).children("b") == ("c",)


def test_single_child_is_an_error_with_strict() -> None:
    assert problems(SINGLE, strict=True) == [SINGLE_MESSAGE.format("error") + " (an error with --strict)"]
    with pytest.raises(TaxonomyError):
        Taxonomy.from_text(SINGLE, strict=True)


def test_alias_equal_to_another_display_name_is_a_warning() -> None:
    text = (
        "name: t\nroot:\n  id: a\n  name: A\n  children:\n    - id: b\n      name: B\n"
        "      aliases: [Nevus]\n    - id: c\n      name: nevus\n"
    )
    message = (
        "t.yaml:8:17: {}: alias 'Nevus' of node 'b' is the display name of node 'c'; resolving "
        "'Nevus' gives 'b', not 'c'"
    )
    assert problems(text) == [message.format("warning")]
    assert problems(text, strict=True) == [message.format("error") + " (an error with --strict)"]
    assert Taxonomy.from_text(text).resolve("NEVUS") == "b"


def test_acknowledged_single_child_passes_strict() -> None:
    text = SINGLE.replace("      name: B\n", "      name: B\n      metadata: {single_child_ok: true}\n")
    assert problems(text, strict=True) == []
    not_true = SINGLE.replace("      name: B\n", "      name: B\n      metadata: {single_child_ok: 'yes'}\n")
    assert len(problems(not_true, strict=True)) == 1  # only the literal `true` acknowledges


def test_all_problems_are_reported_together_in_line_order() -> None:
    text = (
        "name: T\nroot:\n  id: a\n  name: A\n  children:\n    - {id: b, name: B, aliases: [c]}\n"
        "    - {id: c, name: C, codes: {ds: 1}}\n    - {id: c, name: ''}\n"
    )
    assert problems(text) == [
        f"t.yaml:1:7: error: top level: invalid taxonomy name 'T': {ID_RULE}",
        "t.yaml:6:34: error: alias 'c' of node 'b' shadows the id of node 'c'",
        "t.yaml:7:36: error: dataset 'ds': codes must be contiguous from 0 to 1; missing 0",
        "t.yaml:8:12: error: duplicate node id 'c' (first defined at line 7); ids must be unique in the "
        "whole tree",
        "t.yaml:8:21: error: node 'c': empty name: every node needs a display name",
    ]
    with pytest.raises(TaxonomyError, match=r"\(and 4 more problems\)"):
        Taxonomy.from_text(text, file="t.yaml")


def test_python_whitespace_names_are_empty() -> None:
    # U+001C is white space for str.strip() but not for Rust's regex: it must still count as empty
    text = 'name: t\nroot:\n  id: a\n  name: "\\x1c"\n  aliases: ["\\x1f"]\n' + TWO_LEAVES
    assert problems(text) == [
        "t.yaml:4:9: error: node 'a': empty name: every node needs a display name",
        "t.yaml:5:13: error: node 'a': empty alias: remove it or write the other name",
    ]


def test_file_not_found_and_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    assert [str(p) for p in validate_file(missing).problems] == [f"{missing}: error: file not found"]
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    (problem,) = validate_file(binary).problems
    assert problem.message.startswith("byte 0xff is not UTF-8 text") and problem.line == 1


def test_merge_keys_and_anchors_are_resolved_like_safe_load() -> None:
    text = "name: t\nbase: &b {name: Leaf}\n"  # an unknown top-level field, but the anchor parses
    assert [p for p in problems(text) if "'base'" in p] == [
        "t.yaml:2:7: error: top level: unknown field 'base' (expected one of format_version, name, "
        "description, metadata, root)"
    ]
    ok = (
        "name: t\nroot:\n  id: a\n  name: A\n  children:\n    - &leaf {id: b, name: B}\n"
        "    - {<<: *leaf, id: c}\n"
    )
    assert Taxonomy.from_text(ok).display_name("c") == "B"
    twice = ok.replace("    - {<<: *leaf, id: c}\n", "    - &m {<<: *leaf, id: c}\n    - {<<: *m, id: d}\n")
    assert Taxonomy.from_text(twice).leaves == ("b", "c", "d")
    dup = "name: t\nroot:\n  id: a\n  id: b\n  <<: {name: A}\n"
    assert (
        "t.yaml:4:3: error: duplicate key 'id' (first at line 3); YAML would silently keep only the last "
        "value"
    ) in problems(dup)


# --- properties on random trees ---------------------------------------------------------------------------


def _id_lines(text: str) -> dict[str, tuple[int, int]]:
    """id -> (line, column) of its value in block-style YAML written by Taxonomy.to_yaml."""
    import re

    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = re.fullmatch(r"(\s*(?:- )?id: )'?([a-z0-9_]+)'?", line)  # 'null', 'yes' come quoted
        if match:
            out[match.group(2)] = (number, len(match.group(1)) + 1)
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree_dicts(min_nodes=3, max_nodes=20), st.data())
def test_injected_problems_are_all_found_at_their_lines(data: dict, draw: st.DataObject) -> None:
    text = Taxonomy.from_dict(data).to_yaml()
    assert [p for p in validate_text(text).problems if p.severity == "error"] == []
    positions = _id_lines(text)
    ids = list(positions)
    assert len(ids) == len(Taxonomy.from_dict(data).nodes)
    first, second = sorted(
        draw.draw(st.lists(st.integers(1, len(ids) - 1), min_size=2, max_size=2, unique=True))
    )
    # node `second` takes the id of node `first` (both non-root), and node `first` gets an unknown field
    lines = text.splitlines()
    line_2, col_2 = positions[ids[second]]
    lines[line_2 - 1] = lines[line_2 - 1][: col_2 - 1] + f"'{ids[first]}'"
    line_1, col_1 = positions[ids[first]]
    indent = " " * (col_1 - 1 - len("id: "))
    lines.insert(line_1, f"{indent}colour: red")
    bad = "\n".join(lines) + "\n"
    line_2 += 1 if line_2 > line_1 else 0
    report = validate_text(bad, "t.yaml")
    found = [(p.code, p.line, p.column) for p in report.problems if p.severity == "error"]
    assert found == [("schema", line_1 + 1, col_1 - 4 + len("colour: ")), ("duplicate-id", line_2, col_2)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree_dicts(max_nodes=15))
def test_libyaml_fast_path_equals_pure_python_parser(data: dict) -> None:
    from hierclf.io import yaml_files as _yaml

    if _yaml._FastLoader is None:
        pytest.skip("PyYAML without libyaml: there is only one parser")
    text = Taxonomy.from_dict(data).to_yaml()
    fast = _yaml._load_with(_yaml._FastLoader, text, "t.yaml")
    pure = _yaml._load_with(_yaml._SafeLoader, text, "t.yaml")
    assert (fast.data, fast.positions, fast.problems) == (pure.data, pure.positions, pure.problems)


def test_bom_and_crlf_files(tmp_path: Path) -> None:
    path = tmp_path / "windows.yaml"
    path.write_bytes(
        b"\xef\xbb\xbfname: t\r\nroot:\r\n  id: a\r\n  name: A\r\n  name: B\r\n"
        b"  children: [{id: b, name: B}, {id: c, name: C}]\r\n"
    )
    assert [str(p) for p in validate_file(path).problems] == [
        f"{path}:5:3: error: duplicate key 'name' (first at line 4); YAML would silently keep only the last "
        "value"
    ]
    path.write_bytes(path.read_bytes().replace(b"  name: B\r\n  children", b"  children"))
    assert Taxonomy.from_yaml(path).leaves == ("b", "c")
