"""A finished run is reused only when its settings, its data and its outputs are what they were.

Each case trains one tiny run once (module fixture), copies its folder, damages or changes one thing, and
calls ``fit`` again: the same settings reuse it; other settings or other data are refused with the
difference named; a truncated or missing output is produced again from the checkpoint (bit-identical); a
corrupt ``DONE`` is not trusted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hierclf.evaluation.prediction_files import read_predictions
from hierclf.train.errors import CheckpointError
from hierclf.train.loop import fit

REPO = Path(__file__).resolve().parents[1]


def _config(folder: Path, data_root: Path, **extra: object) -> Path:
    base: dict[str, object] = {
        "taxonomy": str(REPO / "taxonomy" / "dermamnist.yaml"),
        "data": {
            "source": "synthetic",
            "root": str(data_root),
            "augment": False,
            "synthetic": {"n_train": 70, "n_val": 35, "n_test": 35, "seed": 0},
        },
        "backbone": "small_cnn",
        "epochs": 1,
        "batch_size": 35,
        "out_dir": "out",
        "seed": 1,
        "device": "cpu",
    }
    base.update(extra)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(json.dumps(base), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reuse")
    config = _config(root / "run", root / "data")
    fit(config, progress=False)
    return root / "run", root / "data"


def _copy(finished: tuple[Path, Path], tmp_path: Path, **extra: object) -> Path:
    folder, data = finished
    shutil.copytree(folder / "out", tmp_path / "out")
    return _config(tmp_path, data, **extra)


def test_same_settings_are_reused(finished: tuple[Path, Path], tmp_path: Path) -> None:
    result = fit(_copy(finished, tmp_path), progress=False)
    assert result.already_done
    done = json.loads((tmp_path / "out" / "DONE").read_text())
    assert set(done["files"]) == {"predictions/val.npz", "predictions/test.npz", "history.json", "best.pt"}


def test_other_settings_are_refused_with_the_difference(finished: tuple[Path, Path], tmp_path: Path) -> None:
    # more epochs alone would extend the run (tests/test_train_logs.py); another lr is refused
    config = _copy(finished, tmp_path, lr=0.01, epochs=2, momentum=0.5)
    with pytest.raises(
        CheckpointError,
        match=r"cannot reuse .*DONE: it was trained with other settings "
        r"\(lr: 0\.001 -> 0\.01; momentum: 0\.9 -> 0\.5\)",
    ):
        fit(config, progress=False)
    resolved = (tmp_path / "out" / "config.resolved.yaml").read_text()  # still the settings of the run
    assert "\nlr: 0.001\n" in resolved and "\nepochs: 1\n" in resolved


def test_other_data_is_refused(finished: tuple[Path, Path], tmp_path: Path) -> None:
    folder, data = finished
    other = tmp_path / "other-data"
    shutil.copytree(data, other)
    npz = next(other.glob("*.npz"))
    with np.load(npz) as z:
        arrays = dict(z)
    arrays["train_labels"] = arrays["train_labels"][::-1].copy()  # same shapes, other labels
    np.savez(npz, **arrays)
    shutil.copytree(folder / "out", tmp_path / "out")
    config = _config(tmp_path, other)  # data.root is a path the run may move; its content may not change
    with pytest.raises(CheckpointError, match="it was trained on other data"):
        fit(config, progress=False)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_outputs_are_produced_again(finished: tuple[Path, Path], tmp_path: Path, damage: str) -> None:
    config = _copy(finished, tmp_path)
    test_file = tmp_path / "out" / "predictions" / "test.npz"
    before = read_predictions(finished[0] / "out" / "predictions" / "test.npz")
    if damage == "truncate":
        test_file.write_bytes(test_file.read_bytes()[:300])
    else:
        test_file.unlink()
    result = fit(config, progress=False)
    assert not result.already_done and result.epochs_run == 1
    after = read_predictions(test_file)
    assert np.array_equal(after.probs, before.probs) and np.array_equal(after.ids, before.ids)
    assert fit(config, progress=False).already_done


def test_corrupt_done_is_not_trusted(finished: tuple[Path, Path], tmp_path: Path) -> None:
    config = _copy(finished, tmp_path)
    (tmp_path / "out" / "DONE").write_bytes(b"\x00\xffnot json")
    result = fit(config, progress=False)
    assert not result.already_done and json.loads((tmp_path / "out" / "DONE").read_text())["data"]
