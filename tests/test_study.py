"""`hierclf study` end to end on synthetic data: the report's files, its numbers against `hierclf evaluate`
run on the written predictions, and an interrupted study that resumes to the same report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from hierclf.cli import main
from hierclf.errors import HierclfError
from hierclf.study import run_study

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = REPO / "taxonomy" / "protocols" / "dermamnist.yaml"
TAXONOMY = REPO / "taxonomy" / "dermamnist.yaml"


class _Killed(Exception):
    """Stands for a study killed in the middle of a seed."""


def _numbers(report: dict[str, Any]) -> dict[str, Any]:
    """The numeric results of a report.json (paths and timings left out)."""
    out = {}
    for name, task in report["tasks"].items():
        for metric, est in task["metrics"].items():
            out[f"task/{name}/{metric}"] = (est["value"], est["std"], est["per_seed"], est["ci"])
        out[f"task/{name}/threshold"] = task["thresholds"]["per_seed"]
    for name, part in report["partitions"].items():
        for metric, est in part["metrics"].items():
            out[f"partition/{name}/{metric}"] = (est["value"], est["per_seed"], est["ci"])
        for cls, est in part["per_class_recall"].items():
            out[f"partition/{name}/recall/{cls}"] = (est["value"], est["per_seed"], est["ci"])
    return out


def _assert_same(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-6) -> None:
    assert a.keys() == b.keys()

    def flat(x: Any) -> list[float]:
        if isinstance(x, (list, tuple)):
            return [v for item in x for v in flat(item)]
        return [math.nan if x is None else float(x)]

    for key in a:
        for u, v in zip(flat(a[key]), flat(b[key]), strict=True):
            assert (math.isnan(u) and math.isnan(v)) or abs(u - v) <= tol, (key, a[key], b[key])


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study")
    result = run_study(PROTOCOL, data="synthetic", out_dir=out, seeds=2, epochs=1)
    assert result.trained == [0, 1] and result.reused == []
    return out


def test_study_writes_report_predictions_and_settings(study: Path) -> None:
    for name in ("report.md", "report.json", "study.yaml", "figures/roc_melanoma_vs_nevus.png"):
        assert (study / name).is_file(), name
    for split in ("val", "test"):
        for seed in (0, 1):
            assert (study / "predictions" / f"{split}_seed{seed}.npz").is_file()
            assert (study / "seeds" / f"seed_{seed}" / "DONE").is_file()
    report = json.loads((study / "report.json").read_text(encoding="utf-8"))
    assert report["synthetic"] is True and report["n_seeds"] == 2
    assert report["threshold_source"] == "validation"
    assert any("2 SEEDS" in w for w in report["warnings"])  # fewer seeds than the protocol's 5
    assert "SYNTHETIC DATA" in (study / "report.md").read_text(encoding="utf-8")
    # issue 12: the protocol's hash recorded when training started, every input and checkpoint hashed
    import hashlib

    prereg = json.loads((study / "preregistration.json").read_text(encoding="utf-8"))
    assert prereg["protocol"]["sha256"] == hashlib.sha256(Path(PROTOCOL).read_bytes()).hexdigest()
    provenance = report["provenance"]
    assert provenance["preregistration"]["unchanged"] is True
    assert len(provenance["checkpoints"]) == 2 and len(provenance["predictions"]["test"]) == 2
    assert "FEWER SEEDS THAN PRE-REGISTERED" in report["alerts"]
    # the documents: report.html, the checklist, and a model card (the predictions come from training)
    card = (study / "model_card.md").read_text(encoding="utf-8")
    assert "## Training data" in card and "SYNTHETIC DATA" in card
    assert "Primary metric (pre-registered)" in (study / "report.html").read_text(encoding="utf-8")
    assert "TO BE COMPLETED BY THE AUTHORS" in (study / "checklist.md").read_text(encoding="utf-8")


def test_study_numbers_equal_hierclf_evaluate(study: Path, tmp_path: Path) -> None:
    pred = study / "predictions"
    code = main(
        [
            "evaluate",
            "--taxonomy",
            str(TAXONOMY),
            "--protocol",
            str(PROTOCOL),
            "--val",
            str(pred / "val_seed0.npz"),
            str(pred / "val_seed1.npz"),
            "--test",
            str(pred / "test_seed0.npz"),
            str(pred / "test_seed1.npz"),
            "--synthetic",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0
    ours = json.loads((study / "report.json").read_text(encoding="utf-8"))
    theirs = json.loads((tmp_path / "eval" / "report.json").read_text(encoding="utf-8"))
    _assert_same(_numbers(ours), _numbers(theirs), tol=0.0)


def test_study_reports_the_seed_mean_like_hierclf_evaluate_ensemble_mean(study: Path, tmp_path: Path) -> None:
    pred = study / "predictions"
    code = main(
        ["evaluate", "--taxonomy", str(TAXONOMY), "--protocol", str(PROTOCOL),
         "--val", str(pred / "val_seed0.npz"), str(pred / "val_seed1.npz"),
         "--test", str(pred / "test_seed0.npz"), str(pred / "test_seed1.npz"),
         "--synthetic", "--ensemble", "mean", "--out", str(tmp_path / "mean")]
    )  # fmt: skip
    assert code == 0
    ours = json.loads((study / "seed_mean" / "report.json").read_text(encoding="utf-8"))
    theirs = json.loads((tmp_path / "mean" / "report.json").read_text(encoding="utf-8"))
    assert ours["n_seeds"] == 1 and any("SEED ENSEMBLE" in n for n in ours["notes"])
    _assert_same(_numbers(ours), _numbers(theirs), tol=0.0)


def test_rerun_reuses_finished_seeds(study: Path) -> None:
    before = json.loads((study / "report.json").read_text(encoding="utf-8"))
    totals: list[int] = []
    ticks: list[tuple[int, dict[str, Any]]] = []
    result = run_study(
        PROTOCOL,
        data="synthetic",
        out_dir=study,
        seeds=2,
        epochs=1,
        on_start=totals.append,
        on_epoch=lambda seed, record: ticks.append((seed, record)),
    )
    assert result.trained == [] and result.reused == [0, 1]
    assert totals == [2]  # one progress display: seeds x epochs, announced once
    assert [seed for seed, _ in ticks] == [0, 1] and all(r.get("skipped") for _, r in ticks)
    _assert_same(_numbers(before), _numbers(result.report.to_dict()), tol=0.0)


def test_killed_study_resumes_to_the_same_report(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"

    def kill_in_second_seed(seed: int, record: dict[str, Any]) -> None:
        if seed == 1 and not record.get("skipped"):
            raise _Killed  # after seed 1's epoch was checkpointed, before its predictions

    with pytest.raises(_Killed):
        run_study(PROTOCOL, data="synthetic", out_dir=out, seeds=2, epochs=1, on_epoch=kill_in_second_seed)
    assert (out / "seeds" / "seed_0" / "DONE").is_file()
    assert not (out / "seeds" / "seed_1" / "DONE").is_file()
    assert (out / "seeds" / "seed_1" / "checkpoint.pt").is_file()
    assert not (out / "report.json").exists()

    result = run_study(PROTOCOL, data="synthetic", out_dir=out, seeds=2, epochs=1)
    assert result.reused == [0] and result.trained == [1]
    expected = json.loads((study / "report.json").read_text(encoding="utf-8"))
    _assert_same(_numbers(expected), _numbers(result.report.to_dict()))


def test_bad_data_argument_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HierclfError, match="expected 'dermamnist', 'synthetic'"):
        run_study(PROTOCOL, data=str(tmp_path / "missing"), out_dir=tmp_path / "x", seeds=1)


def test_protocol_without_taxonomy_asks_for_one(tmp_path: Path) -> None:
    text = PROTOCOL.read_text(encoding="utf-8").replace("  taxonomy: ../dermamnist.yaml\n", "")
    proto = tmp_path / "p.yaml"
    proto.write_text(text, encoding="utf-8")
    with pytest.raises(HierclfError, match="names no taxonomy"):
        run_study(proto, data="synthetic", out_dir=tmp_path / "x", seeds=1)
    code = main(
        [
            "study",
            str(proto),
            "--data",
            "synthetic",
            "--out",
            str(tmp_path / "y"),
            "--seeds",
            "0",
            "--taxonomy",
            str(TAXONOMY),
            "--no-progress",
        ]
    )
    assert code == 1  # --seeds 0 is refused with one line


def test_the_synthetic_flag_travels_inside_the_prediction_files(study: Path) -> None:
    """Issue 12: evaluating a synthetic study's predictions later, without --synthetic, still banners every
    page; the files also carry the training ids, and the study's splits share none with them."""
    from hierclf import Taxonomy
    from hierclf.evaluation.pipeline import evaluate
    from hierclf.evaluation.prediction_files import read_predictions
    from hierclf.evaluation.protocol_format import load_protocol

    tax = Taxonomy.from_yaml(Path(PROTOCOL).parent.parent / "dermamnist.yaml")
    pred = study / "predictions"
    info = read_predictions(pred / "test_seed0.npz").info
    assert info["synthetic"] == "true" and json.loads(info["training"])["ids"]
    report = evaluate(tax, load_protocol(PROTOCOL, tax), [pred / "val_seed0.npz"], [pred / "test_seed0.npz"])
    assert report.synthetic is True
    assert "LEAKAGE" not in report.alerts
