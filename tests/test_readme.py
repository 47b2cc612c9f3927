"""Every command the README shows is run here, as a user would type it, in a scratch folder.

The quick start's shell block runs line by line through bash (so `taxonomy/*.yaml` globs as in a
terminal); the Python example runs as written. The install and test commands are run by `.ci/run` itself.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _block(marker: str) -> list[str]:
    """Lines of the fenced block right after ``<!-- marker -->``."""
    lines = README.splitlines()
    start = lines.index(f"<!-- {marker} -->")
    assert lines[start + 1].startswith("```"), f"no code block after <!-- {marker} -->"
    end = next(i for i in range(start + 2, len(lines)) if lines[i].startswith("```"))
    return lines[start + 2 : end]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: a copy of the shipped taxonomies, nothing else."""
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "taxonomy", work / "taxonomy")
    return work


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("HIERCLF_DEBUG", None)
    return env


@pytest.fixture(scope="module")
def quickstart(workdir: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    results = {}
    for line in _block("readme:commands"):
        assert line.startswith("hierclf "), f"README quick-start line is not a hierclf command: {line}"
        results[line.split()[1]] = subprocess.run(
            ["bash", "-c", line], cwd=workdir, env=_env(), capture_output=True, text=True, timeout=600
        )
    return results


def test_install_and_test_commands_are_marked_for_ci() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert _block("ci:install") and _block("ci:test")
    assert "readme_block ci:install" in ci and "readme_block ci:test" in ci


def test_quickstart_commands_succeed(quickstart: dict[str, subprocess.CompletedProcess[str]]) -> None:
    assert set(quickstart) == {"validate", "show", "study", "rollup"}
    for name, done in quickstart.items():
        assert done.returncode == 0, f"hierclf {name} failed: {done.stderr}"
        assert "Traceback" not in done.stderr


def test_validate_reports_every_shipped_tree(
    quickstart: dict[str, subprocess.CompletedProcess[str]], workdir: Path
) -> None:
    out = quickstart["validate"].stdout
    for path in sorted((workdir / "taxonomy").glob("*.yaml")):
        assert f"taxonomy/{path.name}: ok" in out


def test_show_draws_two_levels(quickstart: dict[str, subprocess.CompletedProcess[str]]) -> None:
    out = quickstart["show"].stdout
    assert "benign" in out and "malignant" in out and "keratinocyte_carcinoma" in out
    assert "basal_cell_carcinoma" not in out  # depth 3, below --depth 2


def test_study_wrote_a_synthetic_report(
    quickstart: dict[str, subprocess.CompletedProcess[str]], workdir: Path
) -> None:
    out = workdir / "runs" / "quickstart"
    for name in (
        "report.md",
        "report.html",
        "checklist.md",
        "model_card.md",
        "preregistration.json",
        "report.json",
        "study.yaml",
        "predictions/val_seed0.npz",
        "predictions/test_seed1.npz",
    ):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "SYNTHETIC DATA" in report and "melanoma_vs_nevus" in report
    assert "melanoma_vs_nevus" in quickstart["study"].stdout


def test_rollup_output_equals_leaf_sums(
    quickstart: dict[str, subprocess.CompletedProcess[str]], workdir: Path
) -> None:
    from hierclf import Taxonomy
    from hierclf.evaluation.prediction_files import read_predictions

    tax = Taxonomy.from_yaml(workdir / "taxonomy" / "dermamnist.yaml")
    preds = read_predictions(workdir / "runs/quickstart/predictions/test_seed0.npz", tax)
    with open(workdir / "runs/quickstart/malignant.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == [str(i) for i in preds.ids]
    for node in ("malignant", "melanoma"):
        cols = [preds.columns.index(leaf) for leaf in tax.leaves_under(node)]
        expected = preds.probs[:, cols].sum(axis=1)
        np.testing.assert_allclose([float(r[node]) for r in rows], expected, rtol=1e-6, atol=1e-7)


def test_python_example_runs(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    code = "\n".join(_block("readme:python"))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
