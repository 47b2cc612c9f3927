"""Training from a published-layout source: the split file is made once, reused by later runs and seeds, and
the configuration refuses settings that belong to other sources; DermaMNIST's image-level split is said."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hierclf import Taxonomy
from hierclf.data.datasets import make_synthetic_dermamnist
from hierclf.data.splits import LeakageError
from hierclf.errors import FileFormatError
from hierclf.evaluation.prediction_files import read_predictions
from hierclf.train.config import config_from_text, load_train_config
from hierclf.train.distributed import ProcessGroup
from hierclf.train.inputs import load_sources
from hierclf.train.loop import fit

REPO = Path(__file__).resolve().parents[1]
DERMAMNIST = REPO / "taxonomy" / "dermamnist.yaml"
COLOURS = {"akiec": 40, "bcc": 80, "bkl": 120, "df": 160, "mel": 10, "nv": 200, "vasc": 240}


def _ham_folder(root: Path, n: int = 112) -> Path:
    """A HAM10000-layout folder whose images carry their class as a grey level (learnable)."""
    rows = []
    for i in range(n):
        code = list(COLOURS)[(i // 2) % 7]
        image = f"ISIC_{i:07d}"
        rows.append([f"HAM_{i // 2:07d}", image, code, "histo", 50, "female", "back"])
        path = root / "images" / f"{image}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), COLOURS[code], np.uint8)).save(path)
    with open(root / "HAM10000_metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
        writer.writerows(rows)
    return root


def _config(tmp: Path, data_root: Path, out: str, seed: int) -> Path:
    config = {
        "taxonomy": str(DERMAMNIST),
        "data": {
            "source": "ham10000",
            "root": str(data_root),
            "columns": {"suffix": ".png"},
            "size": 16,
            "augment": False,
            "split": {"file": str(tmp / "split.csv"), "val_fraction": 0.25, "test_fraction": 0.25},
        },
        "backbone": "small_cnn",
        "epochs": 1,
        "batch_size": 28,
        "out_dir": out,
        "seed": seed,
        "device": "cpu",
    }
    path = tmp / f"run{seed}.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_a_ham10000_run_splits_by_lesion_and_later_runs_reuse_the_split(tmp_path: Path) -> None:
    data = _ham_folder(tmp_path / "HAM10000")
    first = fit(_config(tmp_path, data, "seed0", seed=0), progress=False)
    split_file = tmp_path / "split.csv"
    with open(split_file, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assigned = {r["id"]: r["split"] for r in rows}
    lesion_splits: dict[str, set[str]] = {}
    for r in rows:
        lesion_splits.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in lesion_splits.values()) and {r["level"] for r in rows} == {"lesion"}
    val = read_predictions(first.predictions["val"])
    assert val.ids is not None and {assigned[i] for i in val.ids.tolist()} == {"val"}
    assert val.groups is not None and val.groups[0].startswith("HAM_")
    # another seed trains on the same split: its validation ids are the same images
    second = fit(_config(tmp_path, data, "seed1", seed=1), progress=False)
    again = read_predictions(second.predictions["val"])
    assert again.ids is not None and again.ids.tolist() == val.ids.tolist()
    assert (
        split_file.read_text()
        == "\n".join(["id,split,group,level,label", *(",".join(r.values()) for r in rows)]) + "\n"
    )


def test_a_split_file_that_leaks_is_refused(tmp_path: Path) -> None:
    data = _ham_folder(tmp_path / "HAM10000")
    split_file = tmp_path / "split.csv"
    rows = ["id,split,group,level,label"]
    for i in range(112):  # image-level rows: the two images of lesion 0 in train and test
        rows.append(f"ISIC_{i:07d},{['train', 'test', 'train', 'val'][i % 4]},x,image,y")
    split_file.write_text("\n".join(rows) + "\n")
    cfg = load_train_config(_config(tmp_path, data, "out", seed=0))
    tax = Taxonomy.from_yaml(DERMAMNIST)
    with pytest.raises(LeakageError, match=r"lesion\(s\) appear in more than one split"):
        load_sources(cfg, tax, ProcessGroup())


def test_config_refuses_settings_of_other_sources() -> None:
    text = "taxonomy: t.yaml\ndata:\n  source: dermamnist\n  labels: x.csv\n"
    cfg = config_from_text(text, "c.yaml")
    from hierclf.train.config import _data_problems

    assert _data_problems(cfg) == [
        (
            ("data", "labels"),
            "data.labels is for the sources ham10000, isic2019, isic2020, generic, not 'dermamnist'",
        )
    ]
    with pytest.raises(
        FileFormatError, match=r"c.yaml:3:11: error: data.source: unknown data source 'ham1000'"
    ):
        config_from_text("taxonomy: t.yaml\ndata:\n  source: ham1000\n", "c.yaml")
    with pytest.raises(
        FileFormatError, match=r"val_fraction \(0.5\) \+ test_fraction \(0.5\) must be below 1"
    ):
        config_from_text(
            "taxonomy: t.yaml\ndata:\n  source: ham10000\n  split: {val_fraction: 0.5, test_fraction: 0.5}\n"
        )


def test_dermamnist_runs_are_told_their_split_is_by_image(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    npz = make_synthetic_dermamnist(
        tmp_path / "official.npz", n_train=35, n_val=14, n_test=14, write_ids=False
    )
    text = f"taxonomy: {DERMAMNIST}\ndata: {{source: dermamnist, npz: {npz}}}\n"
    cfg = config_from_text(text)
    tax = Taxonomy.from_yaml(DERMAMNIST)
    with caplog.at_level(logging.WARNING, logger="hierclf.train.inputs"):
        sources = load_sources(cfg, tax, ProcessGroup())
    assert "DermaMNIST's official split is by image" in caplog.text
    assert "data.source: ham10000" in caplog.text
    assert sources["test"].split_level == "image" and sources["test"].groups is None
