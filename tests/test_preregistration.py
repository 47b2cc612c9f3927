"""Pre-registration a reader can verify, and warnings with consequences: the SHA-256 of every input in the
report (stable across runs, equal to hashlib's), the protocol checked against the record written when
training started, ``--strict`` turning every warning into exit status 3, and the alerts (LEAKAGE, fewer
seeds than pre-registered, a changed protocol) on the primary-metric line, the figures and the CLI summary."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hierclf import Taxonomy
from hierclf.cli import main
from hierclf.evaluation.prediction_files import Predictions, write_predictions
from hierclf.evaluation.provenance import (
    PREREGISTRATION_FILE,
    code_version,
    run_record,
    sha256_file,
    write_preregistration,
)

REPO = Path(__file__).resolve().parents[1]
TAXONOMY = REPO / "taxonomy" / "dermamnist.yaml"
PROTOCOL = """\
name: prereg_test
target_sensitivity: 0.5
group_column: lesion_id
min_seeds: {min_seeds}
bootstrap: {{replicates: 20, seed: 1}}
primary_metric: {{metric: auc, task: mel_vs_nv}}
tasks:
  - {{name: mel_vs_nv, positive: [malignant_melanocytic], negative: [benign_melanocytic]}}
"""


def _preds(tax: Taxonomy, n: int, seed: int, prefix: str) -> Predictions:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
    logits = rng.normal(size=(n, 7))
    logits[np.arange(n), y] += 2.0
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    ids = np.array([f"{prefix}{seed}_{i}" for i in range(n)])
    groups = np.array([f"{prefix}{seed}_L{i // 2}" for i in range(n)])
    return Predictions(p, tax.leaves, ids, np.asarray(tax.leaves)[y], groups)


@pytest.fixture()
def study_dir(tmp_path: Path) -> Path:
    """A folder laid out like a study's: OUT/protocol.yaml, OUT/predictions/{val,test}_seed0.npz."""
    tax = Taxonomy.from_yaml(TAXONOMY)
    (tmp_path / "predictions").mkdir()
    write_predictions(tmp_path / "predictions" / "val_seed0.npz", _preds(tax, 300, 0, "v"))
    write_predictions(tmp_path / "predictions" / "test_seed0.npz", _preds(tax, 300, 1, "t"))
    (tmp_path / "protocol.yaml").write_text(PROTOCOL.format(min_seeds=1))
    return tmp_path


def _evaluate(d: Path, out: str, *extra: str, test: str = "test_seed0.npz") -> int:
    return main(
        [
            "evaluate",
            "--taxonomy", str(TAXONOMY),
            "--protocol", str(d / "protocol.yaml"),
            "--val", str(d / "predictions" / "val_seed0.npz"),
            "--test", str(d / "predictions" / test),
            "--out", str(d / out),
            *extra,
        ]
    )  # fmt: skip


def test_the_report_records_every_input_hash(study_dir: Path) -> None:
    assert _evaluate(study_dir, "a") == 0
    assert _evaluate(study_dir, "b") == 0
    first = json.loads((study_dir / "a" / "report.json").read_text())["provenance"]
    second = json.loads((study_dir / "b" / "report.json").read_text())["provenance"]
    for rec in (first, second):
        assert (
            rec["protocol"]["sha256"]
            == hashlib.sha256((study_dir / "protocol.yaml").read_bytes()).hexdigest()
        )
        assert rec["taxonomy"]["sha256"] == hashlib.sha256(TAXONOMY.read_bytes()).hexdigest()
        test = rec["predictions"]["test"][0]
        assert test["sha256"] == hashlib.sha256(Path(test["path"]).read_bytes()).hexdigest()
        assert rec["command"][:2] == ["hierclf", "evaluate"]
        assert rec["hierclf_version"] and rec["time_utc"].endswith("+00:00")
    stable = ("protocol", "taxonomy", "predictions", "hierclf_version", "git_commit")
    assert {k: first[k] for k in stable} == {k: second[k] for k in stable}  # hashes stable across runs
    md = (study_dir / "a" / "report.md").read_text()
    assert "## Pre-registration and provenance" in md and first["protocol"]["sha256"] in md


def test_git_commit_is_recorded_in_a_checkout() -> None:
    import subprocess

    info = code_version()
    inside = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if inside.returncode != 0:
        pytest.skip("not running from a git checkout")
    assert info["git_commit"] == inside.stdout.strip()


def test_a_protocol_changed_after_training_started_is_loud_and_strict_fails(
    study_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_preregistration(study_dir, protocol=study_dir / "protocol.yaml", taxonomy=TAXONOMY, argv=["x"])
    record = json.loads((study_dir / PREREGISTRATION_FILE).read_text())
    assert record["protocol"]["sha256"] == sha256_file(study_dir / "protocol.yaml")
    assert _evaluate(study_dir, "same", "--strict") == 0  # unchanged: no warning, exit 0
    report = json.loads((study_dir / "same" / "report.json").read_text())
    assert report["provenance"]["preregistration"]["unchanged"] is True
    assert not report["warnings"]
    capsys.readouterr()
    # edit the protocol after training started: a lower target
    (study_dir / "protocol.yaml").write_text(PROTOCOL.format(min_seeds=1).replace("0.5", "0.4"))
    assert _evaluate(study_dir, "changed") == 0  # a loud warning, exit 0
    out = capsys.readouterr().out
    report = json.loads((study_dir / "changed" / "report.json").read_text())
    assert any(w.startswith("PROTOCOL CHANGED") for w in report["warnings"])
    assert "PROTOCOL CHANGED" in report["alerts"] and "PROTOCOL CHANGED" in out.split("primary metric")[1]
    assert _evaluate(study_dir, "strict", "--strict") == 3
    err = capsys.readouterr().err
    assert "--strict" in err and len(err.strip().splitlines()) >= 1
    assert (study_dir / "strict" / "report.md").is_file()  # the report is written anyway
    # a record is written once: a resumed study keeps the first
    write_preregistration(study_dir, protocol=study_dir / "protocol.yaml", taxonomy=TAXONOMY)
    assert json.loads((study_dir / PREREGISTRATION_FILE).read_text()) == record


def test_leakage_and_fewer_seeds_ride_on_the_primary_line_figures_and_summary(
    study_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from matplotlib.figure import Figure

    from hierclf.evaluation.pipeline import evaluate
    from hierclf.evaluation.protocol_format import load_protocol
    from hierclf.evaluation.report import stamp_figure

    (study_dir / "protocol.yaml").write_text(PROTOCOL.format(min_seeds=3))
    # validation shares samples with test: LEAKAGE
    shutil.copy(study_dir / "predictions" / "val_seed0.npz", study_dir / "predictions" / "leaky.npz")
    assert _evaluate(study_dir, "leak", test="leaky.npz") == 0
    out = capsys.readouterr().out
    primary = next(line for line in out.splitlines() if line.startswith("primary metric"))
    assert "LEAKAGE" in primary and "FEWER SEEDS THAN PRE-REGISTERED" in primary
    md = (study_dir / "leak" / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("**auc** on task"))
    assert "**LEAKAGE**" in line and "**FEWER SEEDS THAN PRE-REGISTERED**" in line
    assert _evaluate(study_dir, "leak_strict", "--strict", test="leaky.npz") == 3
    tax = Taxonomy.from_yaml(TAXONOMY)
    proto = load_protocol(study_dir / "protocol.yaml", tax)
    leaky = study_dir / "predictions" / "leaky.npz"
    report = evaluate(tax, proto, [study_dir / "predictions" / "val_seed0.npz"], [leaky])
    fig = Figure()
    stamp_figure(report, fig)
    texts = [t.get_text() for t in fig.texts]
    assert any("LEAKAGE" in t and "FEWER SEEDS" in t for t in texts)


def test_run_record_lists_objects_and_missing_files_without_failing(tmp_path: Path) -> None:
    tax = Taxonomy.from_yaml(TAXONOMY)
    rec = run_record(protocol=None, taxonomy=TAXONOMY, test=[_preds(tax, 10, 0, "t"), tmp_path / "gone.npz"])
    assert rec["predictions"]["test"] == [
        {"path": "in memory"},
        {"path": str(tmp_path / "gone.npz"), "sha256": None},
    ]
