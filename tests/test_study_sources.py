"""`hierclf study --data`: a HAM10000 folder is split by lesion into one OUT/split.csv that every seed
shares (found by name or by its files); `--data dermamnist`-style data is said to be split by image."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hierclf.cli import main
from hierclf.data.datasets import make_synthetic_dermamnist
from hierclf.data.sources import DERMAMNIST_SPLIT_NOTICE, IMAGE_SPLIT_NOTICE
from hierclf.evaluation.prediction_files import read_predictions
from hierclf.study import study_configs

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = REPO / "taxonomy" / "protocols" / "dermamnist.yaml"
CODES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def _ham_folder(root: Path, n: int = 140) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        code = CODES[(i // 2) % 7]
        image = f"ISIC_{i:07d}"
        rows.append([f"HAM_{i // 2:07d}", image, code, "histo" if i % 3 else "consensus", 40, "male", "back"])
        path = root / "HAM10000_images_part_1" / f"{image}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(path)
    with open(root / "HAM10000_metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
        writer.writerows(rows)
    return root


def test_settings_of_each_data_argument(tmp_path: Path) -> None:
    folder = _ham_folder(tmp_path / "HAM10000", n=14)
    out = tmp_path / "study"
    _, _, by_name = study_configs(PROTOCOL, data="ham10000", data_root=folder, out_dir=out, seeds=2)
    _, _, by_folder = study_configs(PROTOCOL, data=str(folder), out_dir=out, seeds=2)
    for configs in (by_name, by_folder):
        assert [c.data.source for c in configs] == ["ham10000", "ham10000"]
        assert {c.data.split.file for c in configs} == {out.resolve() / "split.csv"}  # one split, every seed
        assert configs[0].data.root == folder.resolve()


def test_a_ham10000_study_splits_by_lesion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _ham_folder(tmp_path / "HAM10000")
    out = tmp_path / "study"
    args = ["study", str(PROTOCOL), "--data", "ham10000", "--data-root", str(folder), "--out", str(out)]
    code = main([*args, "--seeds", "2", "--epochs", "1", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "IMAGE-LEVEL SPLIT" not in captured.out
    with open(out / "split.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    where: dict[str, set[str]] = {}
    for row in rows:
        where.setdefault(row["group"], set()).add(row["split"])
    assert all(len(s) == 1 for s in where.values()) and {r["level"] for r in rows} == {"lesion"}
    tests = [read_predictions(out / "predictions" / f"test_seed{k}.npz") for k in (0, 1)]
    assert tests[0].ids is not None and tests[1].ids is not None
    assert tests[0].ids.tolist() == tests[1].ids.tolist()  # both seeds tested on the same lesions
    assert {r["id"] for r in rows if r["split"] == "test"} == set(tests[0].ids.tolist())


def test_dermamnist_studies_are_told_the_split_is_by_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npz = make_synthetic_dermamnist(
        tmp_path / "official.npz", n_train=140, n_val=70, n_test=70, write_ids=False
    )  # no lesion ids: the layout of the real DermaMNIST files
    out = tmp_path / "study"
    code = main(
        ["study", str(PROTOCOL), "--data", str(npz), "--out", str(out), "--seeds", "2", "--epochs", "1"]
        + ["--no-progress"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"IMAGE-LEVEL SPLIT: {DERMAMNIST_SPLIT_NOTICE}" in captured.out
    assert "--data ham10000" in DERMAMNIST_SPLIT_NOTICE and "docs/data.md" in DERMAMNIST_SPLIT_NOTICE


def test_the_report_says_when_the_files_record_a_split_by_image(tmp_path: Path) -> None:
    """Prediction files that carry ``info.split_level: image`` (what training on DermaMNIST's official split
    writes) give the report a SPLIT BY IMAGE warning; files split by lesion do not."""
    from hierclf import Predictions, Taxonomy, write_predictions
    from hierclf.evaluation.pipeline import evaluate
    from hierclf.evaluation.protocol_format import load_protocol

    repo = Path(__file__).resolve().parents[1]
    tax = Taxonomy.from_yaml(repo / "taxonomy" / "dermamnist.yaml")
    proto = load_protocol(repo / "taxonomy" / "protocols" / "dermamnist.yaml", tax)
    rng = np.random.default_rng(0)

    def files(level: str) -> list[Path]:
        paths = []
        for split in ("val", "test"):
            labels = np.tile(np.arange(7), 10)
            probs = rng.dirichlet(np.ones(7), len(labels)) + np.eye(7)[labels]
            preds = Predictions(
                probs / probs.sum(1, keepdims=True),
                tax.leaves,
                ids=np.array([f"{split}{k}" for k in range(len(labels))]),
                labels=np.array(tax.leaves)[labels],
                info={"split_level": level, "notice": IMAGE_SPLIT_NOTICE},  # as training writes them
            )
            paths.append(tmp_path / f"{level}_{split}.npz")
            write_predictions(paths[-1], preds)
        return paths

    (val, test), (lesion_val, lesion_test) = files("image"), files("lesion")
    report = evaluate(tax, proto, [val], [test])
    flagged = [w for w in report.warnings if w.startswith("SPLIT BY IMAGE")]
    assert len(flagged) == 1 and "image_test" in flagged[0] and IMAGE_SPLIT_NOTICE in flagged[0]
    assert "ham10000" in flagged[0]
    assert not any(
        w.startswith("SPLIT BY IMAGE") for w in evaluate(tax, proto, [lesion_val], [lesion_test]).warnings
    )
