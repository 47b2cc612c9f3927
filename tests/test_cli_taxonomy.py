"""``hierclf validate``, ``show`` and ``schema``: exit codes, output, no tracebacks, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hierclf import Taxonomy
from hierclf.cli import main
from hierclf.taxonomy.format import json_schema_text

REPO = Path(__file__).resolve().parents[1]
TAXONOMY_DIR = REPO / "taxonomy"
SHIPPED = sorted(str(p) for p in TAXONOMY_DIR.glob("*.yaml"))

VALID = "name: t\nroot:\n  id: a\n  name: A\n  children:\n    - {id: b, name: B}\n    - {id: c, name: C}\n"
SINGLE = "name: t\nroot:\n  id: a\n  name: A\n  children:\n    - {id: b, name: B}\n"
INVALID = "name: t\nroot:\n  id: a\n  name: A\n  children:\n    - {id: b, name: B}\n    - {id: b, name: C}\n"


def run_module(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HIERCLF_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "hierclf", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name, text in {
        "valid": VALID,
        "single": SINGLE,
        "invalid": INVALID,
        "broken": "root: {id: [\n",
        "empty": "",
    }.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        out[name] = str(path)
    return out


# --- validate -------------------------------------------------------------------------------------


def test_validate_shipped_files_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--strict", *SHIPPED]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(SHIPPED)
    for line, path in zip(out, SHIPPED):
        tax = Taxonomy.from_yaml(path)
        assert line == f"{path}: ok ({len(tax.nodes)} nodes, {len(tax.leaves)} leaves, height {tax.height})"


DUPLICATE_B = (
    ":7:12: error: duplicate node id 'b' (first defined at line 6); ids must be unique in the whole tree"
)


def test_validate_invalid_exit_1_lists_problems(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", files["valid"], files["invalid"]]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{files['valid']}: ok (3 nodes, 2 leaves, height 1)",
        files["invalid"] + DUPLICATE_B,
        f"{files['invalid']}: invalid (1 error(s), 0 warning(s))",
    ]


def test_validate_strict_turns_warnings_into_errors(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", files["single"]]) == 0
    out = capsys.readouterr().out
    assert ": warning: node 'a' has a single child 'b'" in out
    assert "ok (2 nodes, 1 leaf, height 1, 1 warning(s))" in out
    assert main(["validate", "--strict", files["single"]]) == 1
    assert ": error: node 'a' has a single child 'b'" in capsys.readouterr().out


def test_validate_quiet_prints_problems_only(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-q", files["valid"], files["invalid"]]) == 1
    assert capsys.readouterr().out.splitlines() == [files["invalid"] + DUPLICATE_B]


def test_validate_json_shape(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--format", "json", files["valid"], files["invalid"], files["broken"]]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    assert [f["file"] for f in report["files"]] == [files["valid"], files["invalid"], files["broken"]]
    valid, invalid, broken = report["files"]
    assert valid == {
        "file": files["valid"],
        "valid": True,
        "errors": 0,
        "warnings": 0,
        "problems": [],
        "name": "t",
        "nodes": 3,
        "leaves": 2,
        "height": 1,
    }
    assert invalid["valid"] is False and invalid["errors"] == 1 and "nodes" not in invalid
    assert invalid["problems"] == [
        {
            "message": "duplicate node id 'b' (first defined at line 6); ids must be unique in the "
            "whole tree",
            "file": files["invalid"],
            "line": 7,
            "column": 12,
            "severity": "error",
            "code": "duplicate-id",
            "node": "b",
        }
    ]
    assert broken["problems"][0]["code"] == "yaml-syntax" and broken["problems"][0]["line"] == 2


def test_validate_json_all_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--format", "json", *SHIPPED]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True and all(f["valid"] for f in report["files"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["validate", "missing.yaml"], "hierclf validate: error: file not found: missing.yaml"),
        (
            ["validate", "taxonomy"],
            "hierclf validate: error: is a directory, not a taxonomy file: taxonomy "
            "(e.g. give taxonomy/*.yaml)",
        ),
        (["show", "missing.yaml"], "hierclf show: error: file not found: missing.yaml"),
    ],
)
def test_missing_file_is_a_usage_error(args: list[str], message: str) -> None:
    proc = run_module(*args)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [message] and proc.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["validate"],
        ["validate", "--format", "xml", "taxonomy/esteva.yaml"],
        ["show"],
        ["show", "taxonomy/esteva.yaml", "--depth", "-1"],
        ["nosuchcommand"],
    ],
)
def test_argparse_usage_errors_exit_2(args: list[str]) -> None:
    proc = run_module(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.rstrip().endswith("--help)")  # one line


def test_no_traceback_on_bad_input(files: dict[str, str]) -> None:
    for name in ("invalid", "broken", "empty"):
        for command in (["validate"], ["validate", "--format", "json"], ["show"]):
            proc = run_module(*command, files[name])
            assert proc.returncode == 1, (command, name, proc.stderr)
            assert "Traceback" not in proc.stderr + proc.stdout
    proc = run_module("show", files["broken"])
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("hierclf show: error: ")
    proc = run_module("show", "taxonomy/esteva.yaml", "--node", "melanomma")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "hierclf show: error: unknown node 'melanomma' in taxonomy 'esteva'; "
        "did you mean 'melanoma_in_situ' or 'melanoma_invasive'?"
    ]


# --- show -----------------------------------------------------------------------------------------


def test_show_depth(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(TAXONOMY_DIR / "dermamnist.yaml"), "--depth", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "dermamnist: 12 nodes, 7 leaves, height 3",
        "skin_lesion  Skin lesion  [7 leaves]",
        "├── benign  Benign  [4 leaves]",
        "└── malignant  Malignant  [3 leaves]",
    ]
    assert main(["show", str(TAXONOMY_DIR / "dermamnist.yaml"), "--depth", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["skin_lesion  Skin lesion  [7 leaves]"]


def test_show_full_tree_and_node(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(TAXONOMY_DIR / "dermamnist.yaml"), "--node", "KC"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "keratinocyte_carcinoma  Keratinocyte carcinoma  [2 leaves]",
        "├── basal_cell_carcinoma  Basal cell carcinoma  [leaf]",
        "└── actinic_keratosis_intraepithelial_carcinoma  Actinic keratosis and intraepithelial carcinoma"
        "  [leaf]",
    ]
    for path in SHIPPED:
        tax = Taxonomy.from_yaml(path)
        assert main(["show", path]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 1 + len(tax.nodes)
        ids = [line.lstrip("│├└─ ").split("  ")[0] for line in lines[1:]]
        assert ids == list(tax.nodes)  # pre-order, one line per node


# --- schema ---------------------------------------------------------------------------------------


def test_schema_stdout_and_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == json_schema_text()
    out = tmp_path / "schema.json"
    assert main(["schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["title"] == "hierclf taxonomy file"


def test_committed_json_schema_is_current() -> None:
    committed = REPO / "docs" / "taxonomy.schema.json"
    assert committed.read_text(encoding="utf-8") == json_schema_text(), (
        "regenerate with: hierclf schema --out docs/taxonomy.schema.json"
    )


def test_shipped_files_satisfy_the_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json.loads(json_schema_text())
    for path in SHIPPED:
        jsonschema.validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")), schema)


# --- stays light ----------------------------------------------------------------------------------


def test_import_and_validate_do_not_import_torch() -> None:
    code = (
        "import sys, hierclf\n"
        "from hierclf.cli import main\n"
        "assert 'torch' not in sys.modules, 'import hierclf'\n"
        f"rc = main(['validate', '-q', *{SHIPPED!r}])\n"
        f"rc += main(['show', {SHIPPED[0]!r}, '--depth', '1'])\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('torch', 'torchvision', 'sklearn'))\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


# --- pre-commit hook ------------------------------------------------------------------------------


def test_pre_commit_hook_definition() -> None:
    import re

    import yaml

    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    (hook,) = [h for h in hooks if h["id"] == "hierclf-validate"]
    assert hook["entry"] == "hierclf validate" and hook["language"] == "python"
    pattern = re.compile(hook["files"])
    for path in ("taxonomy/dermamnist.yaml", "taxonomy/sub/x.yml"):
        assert pattern.search(path)
    for path in (
        ".github/workflows/ci.yml",
        "protocols/dermamnist.yaml",
        ".pre-commit-hooks.yaml",
        "taxonomy/notes.md",
    ):
        assert not pattern.search(path)
    # the hook runs the entry with the matched files appended: the shipped files must pass it
    assert main([*hook["entry"].split()[1:], *SHIPPED]) == 0


# --- the format documentation ---------------------------------------------------------------------


def test_docs_example_tree_loads_as_described() -> None:
    import re

    text = (REPO / "docs" / "taxonomy-format.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    tax = Taxonomy.from_text(blocks[0], strict=True)
    assert tax.leaves == ("melanocytic_nevus", "seborrheic_keratosis", "melanoma", "basal_cell_carcinoma")
    assert tax.resolve("MEL") == tax.resolve("Melanoma, NOS") == "melanoma"
    assert tax.codes("ham10000") == {
        0: "melanoma",
        1: "melanocytic_nevus",
        2: "seborrheic_keratosis",
        3: "basal_cell_carcinoma",
    }
    assert tax.cut(["malignant", "benign"]) == ("benign", "malignant")
    import yaml

    for block in blocks[1:]:
        yaml.safe_load(block)  # the pre-commit and editor snippets are valid YAML
