"""Bad inputs, one class of defect at a time: each is refused in one positioned line, nothing is clobbered.

The classes follow the audit that found them: (1) writes that replaced what they should not, (2) stale
results reused, (3) small files that exhaust memory or time, (4) YAML values that crashed the loader,
(5) non-finite or absurd numbers, (6) corrupt or foreign files, (7) late checks, (8) the environment,
(9) kill windows, (10) degenerate setups. The YAML classes have their own file (``test_yaml_safety.py``),
as do safe writes (``test_io.py``) and stale reuse (``test_train_reuse.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hierclf.errors import FileFormatError
from hierclf.train.config import config_from_text

# --- (5) non-finite and absurd numbers ------------------------------------------------------------------

NUMBERS = {
    "lr: .inf": "2:5: error: lr: expected a finite number, got inf",
    "lr: .nan": "2:5: error: lr: expected a finite number, got nan",
    "weight_decay: .inf": "2:15: error: weight_decay: expected a finite number, got inf",
    "warmup_epochs: .inf": "2:16: error: warmup_epochs: expected a finite number, got inf",
    "epochs: 1000000000000": "2:9: error: epochs: must be <= 1000000, got 1000000000000",
    "batch_size: 0": "2:13: error: batch_size: must be >= 1, got 0",
    "seed: 99999999999999999999": "2:7: error: seed: must be <= 2147483647",
    "loss: {name: weighted_ce, weights: [1, .inf]}": "loss.weights: weights must list finite non-negative",
    "data: {synthetic: {n_train: 100000000000}}": "data.synthetic.n_train: must be <= 100000000",
    "loss: {name: focal, gamma: .inf}": "loss.gamma: expected a finite number, got inf",
}


@pytest.mark.parametrize("line", NUMBERS)
def test_non_finite_and_absurd_numbers_are_refused(line: str) -> None:
    with pytest.raises(FileFormatError) as err:
        config_from_text(f"taxonomy: t.yaml\n{line}\n", "c.yaml")
    assert NUMBERS[line] in str(err.value) and "\n" not in str(err.value)


def test_finite_bounded_numbers_are_accepted(tmp_path: Path) -> None:
    config = config_from_text(
        "taxonomy: t.yaml\nlr: 10\nepochs: 1000000\nwarmup_epochs: 0\nseed: 2147483647\n"
    )
    assert config.lr == 10 and config.epochs == 1_000_000


# --- (10) degenerate setups -------------------------------------------------------------------------------


def _small_run(tmp_path: Path, **extra: object) -> Path:
    import json

    repo = Path(__file__).resolve().parents[1]
    base: dict[str, object] = {
        "taxonomy": str(repo / "taxonomy" / "dermamnist.yaml"),
        "data": {
            "source": "synthetic",
            "root": str(tmp_path / "data"),
            "synthetic": {"n_train": 70, "n_val": 35, "n_test": 35},
        },
        "epochs": 1,
        "batch_size": 35,
        "device": "cpu",
        "out_dir": "out",
    }
    base.update(extra)
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(base), encoding="utf-8")
    return path


def test_a_one_class_head_is_refused(tmp_path: Path) -> None:
    from hierclf.train.errors import TrainSettingError
    from hierclf.train.loop import fit

    with pytest.raises(
        TrainSettingError, match="'skin_lesion' as the only training class: the training split has 70 images"
    ):
        fit(_small_run(tmp_path, classes={"kind": "partition"}), progress=False)
    with pytest.raises(TrainSettingError, match="a cut of one class"):
        fit(_small_run(tmp_path, classes={"kind": "cut", "nodes": ["skin_lesion"]}), progress=False)
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_stacked_imbalance_remedies_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from hierclf.train.loop import fit

    with caplog.at_level(logging.WARNING, logger="hierclf.train"):
        fit(_small_run(tmp_path, sampler="balanced", loss={"name": "focal"}), progress=False)
    assert any("both counter class imbalance" in r.getMessage() for r in caplog.records)


# --- (6) corrupt or foreign files ----------------------------------------------------------------------


class _NotWeights:
    """A class whose pickled instances need code to load."""


def test_foreign_tensor_files_are_one_line(tmp_path: Path) -> None:
    import pickle

    import torch

    from hierclf.nn.serialization import TensorFileError, load_tensor_file

    torch.save({"x": _NotWeights()}, tmp_path / "pickled.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip file at all")
    torch.save({"x": torch.zeros(1000)}, tmp_path / "whole.pt")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:2000])
    with open(tmp_path / "plain.pkl", "wb") as fh:
        pickle.dump({"a": 1}, fh)
    expected = {
        "pickled.pt": "it holds Python objects that need code to load, and hierclf loads weights only",
        "garbage.pt": "not a PyTorch file of tensors",
        "truncated.pt": "truncated or not a PyTorch file",
        "plain.pkl": "not a PyTorch file of tensors",
        "missing.pt": "not found",
    }
    for name, why in expected.items():
        with pytest.raises(TensorFileError) as err:
            load_tensor_file(tmp_path / name, hint="delete it")
        assert why in str(err.value) and "\n" not in str(err.value) and str(err.value).endswith("delete it")
    assert load_tensor_file(tmp_path / "whole.pt")["x"].shape == (1000,)


# --- (7) late checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["metadata", "readers"])
def test_study_checks_its_evaluation_inputs_before_training(tmp_path: Path, option: str) -> None:
    from hierclf.study import run_study

    repo = Path(__file__).resolve().parents[1]
    with pytest.raises(FileFormatError, match="missing.csv: error: file not found"):
        run_study(
            repo / "taxonomy" / "protocols" / "dermamnist.yaml",
            data="synthetic",
            out_dir=tmp_path / "study",
            seeds=1,
            epochs=1,
            device="cpu",
            **{option: tmp_path / "missing.csv"},
        )
    assert not (tmp_path / "study" / "seeds").exists()  # nothing trained


# --- (3) small files that would exhaust memory or time ------------------------------------------------------


def test_a_huge_dataset_code_is_refused_at_once() -> None:
    import time

    from hierclf.taxonomy.validation import validate_text

    text = (
        "name: t\nroot:\n  id: a\n  name: A\n  children: [{id: b, name: B, codes: {ds: 100000000000}}, "
        "{id: c, name: C, codes: {ds: 1}}]\n"
    )
    start = time.perf_counter()
    (problem,) = validate_text(text, "t.yaml").problems
    assert time.perf_counter() - start < 1.0
    assert str(problem) == (
        "t.yaml:5:88: error: dataset 'ds': codes must be contiguous from 0 to 100000000000; missing 0, 2, "
        "3, 4, 5, 6, 7, 8, 9, 10, ..."
    )


# --- (1) writes that replaced what they should not, through the CLI ---------------------------------------


def test_rollup_refuses_an_output_that_is_its_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    from hierclf import Predictions, Taxonomy, write_predictions
    from hierclf.cli import main

    repo = Path(__file__).resolve().parents[1]
    tax = Taxonomy.from_yaml(repo / "taxonomy" / "dermamnist.yaml")
    probs = tmp_path / "p.csv"
    write_predictions(probs, Predictions(np.full((3, 7), 1 / 7), tax.leaves, ids=np.array(["a", "b", "c"])))
    before = probs.read_bytes()
    link = tmp_path / "link.csv"
    link.symlink_to(probs)
    for out in (probs, link):
        assert (
            main(
                [
                    "rollup",
                    "-t",
                    str(repo / "taxonomy" / "dermamnist.yaml"),
                    "-p",
                    str(probs),
                    "--all",
                    "--out",
                    str(out),
                ]
            )
            == 1
        )
        err = capsys.readouterr().err
        assert "the output is also an input" in err and len(err.strip().splitlines()) == 1
    assert probs.read_bytes() == before and link.is_symlink()
    assert (
        main(
            [
                "rollup",
                "-t",
                str(repo / "taxonomy" / "dermamnist.yaml"),
                "-p",
                str(probs),
                "--all",
                "--out",
                "/dev/null",
            ]
        )
        == 0
    )
    assert main(["rollup", "-t", "t", "-p", str(probs), "--all", "--tolerance", "nan"]) == 2
    assert "--tolerance must be a number in [0, 1), got nan" in capsys.readouterr().err


# --- (8) the environment ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locators", "notice"),
    [
        ("UserProvidedCacheLocator", "numba's cache is not writable here; caching _kernel in"),  # temp folder
        ("ZipCacheLocator", "numba cannot cache _kernel here; it is compiled in every process"),  # no cache
    ],
)
def test_rollup_works_where_numba_cannot_cache(locators: str, notice: str) -> None:
    """A read-only installation without a writable home: numba finds no cache folder (simulated by allowing
    only locators that cannot serve this file); the roll-up still runs, with a logged notice."""
    import os
    import subprocess
    import sys

    code = (
        "import logging, numpy as np; logging.basicConfig(level=logging.INFO)\n"
        "from hierclf import Taxonomy, rollup\n"
        "tax = Taxonomy.from_yaml('taxonomy/dermamnist.yaml')\n"
        "print(rollup(np.full((100, 7), 1 / 7), tax).sum())\n"
    )
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": locators}
    env.pop("NUMBA_CACHE_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    import numpy as np

    from hierclf import Taxonomy, rollup

    tax = Taxonomy.from_yaml(Path(__file__).resolve().parents[1] / "taxonomy" / "dermamnist.yaml")
    expected = float(rollup(np.full((100, 7), 1 / 7), tax).sum())  # in this process, numba cached as usual
    assert notice in result.stderr and float(result.stdout) == pytest.approx(expected, rel=1e-12)


def test_train_check_reads_every_input_without_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hierclf.cli import main

    config = _small_run(tmp_path)
    assert main(["train", "--config", str(config), "--check"]) == 0
    assert (
        "inputs ok: taxonomy 'dermamnist'; images train 70, val 35, test 35; 7 classes"
        in capsys.readouterr().out
    )
    assert not (tmp_path / "out").exists()
    bad = _small_run(tmp_path, classes={"kind": "partition"})
    assert main(["train", "--config", str(bad), "--check"]) == 1
    err = capsys.readouterr().err
    assert "only training class" in err and len(err.strip().splitlines()) == 1
