"""Training logs people read and runs that go on: history.jsonl after every epoch, TensorBoard scalars, a
finished run extended by more epochs (schedule recomputed and recorded), the preprocessing that follows the
backbone, a timm backbone and a user's factory in a config (positioned errors), fewer labels by groups."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hierclf.train.config import ConfigError, load_train_config
from hierclf.train.errors import CheckpointError
from hierclf.train.loop import fit
from hierclf.train.optim import lr_factor
from hierclf.train.preprocessing import resolve_preprocessing
from hierclf.train.subsample import grouped_class_subsample

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
        "epochs": 2,
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


def test_history_lines_are_written_after_every_epoch(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path / "data")
    partial = fit(config, progress=False, stop_after_epochs=1)
    lines = (tmp_path / "out" / "history.jsonl").read_text().splitlines()
    assert not partial.finished and [json.loads(line) for line in lines] == partial.history
    assert len(lines) == 1 and not (tmp_path / "out" / "history.json").exists()
    result = fit(config, progress=False)
    lines = (tmp_path / "out" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.history
    assert json.loads((tmp_path / "out" / "history.json").read_text()) == result.history


def test_tensorboard_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = fit(_config(tmp_path, tmp_path / "data", log="tensorboard"), progress=False)
    events = EventAccumulator(str(tmp_path / "out" / "tensorboard"))
    events.Reload()
    for key in ("train_loss", "val_loss", "val_balanced_accuracy", "lr"):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([h[key] for h in result.history], rel=1e-6)


def test_log_names_are_checked_where_the_file_sets_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run.yaml:1:\d+: error: log: unknown logger 'tensorbord'.*"):
        load_train_config(_config(tmp_path, tmp_path / "data", log="tensorbord"))


def test_a_finished_run_goes_on_for_more_epochs(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path / "data")
    first = fit(config, progress=False)
    steps = 2  # 70 images in batches of 35
    extended = fit(_config(tmp_path, tmp_path / "data", epochs=4), progress=False)
    assert not extended.already_done and extended.epochs_run == 4 and extended.resumed_from == 2
    assert extended.history[:2] == first.history
    # the schedule is the one of 4 epochs from epoch 3 on: the same rates as a run planned for 4 epochs
    fresh = fit(_config(tmp_path / "fresh", tmp_path / "data", epochs=4), progress=False)
    assert [h["lr"] for h in extended.history[2:]] == pytest.approx([h["lr"] for h in fresh.history[2:]])
    assert extended.history[2]["lr"] == pytest.approx(1e-3 * lr_factor(3 * steps, 4 * steps, steps))
    done = json.loads((tmp_path / "out" / "DONE").read_text())
    assert [(s["from_epoch"], s["epochs"], s["total_steps"]) for s in done["schedules"]] == [
        (0, 2, 4),
        (2, 4, 8),
    ]
    assert done["schedules"][1]["lr_factor_at_start"] == pytest.approx(lr_factor(2 * steps, 4 * steps, steps))
    assert fit(_config(tmp_path, tmp_path / "data", epochs=4), progress=False).already_done
    with pytest.raises(CheckpointError, match="it has trained 4 epochs already, more than epochs 3"):
        fit(_config(tmp_path, tmp_path / "data", epochs=3), progress=False)


def test_the_first_step_of_an_extension_uses_the_recomputed_rate(tmp_path: Path) -> None:
    from hierclf.train.distributed import init_process_group
    from hierclf.train.loop import start
    from hierclf.train.run import build_run

    fit(_config(tmp_path, tmp_path / "data"), progress=False)
    config = load_train_config(_config(tmp_path, tmp_path / "data", epochs=6))
    import torch

    run = build_run(config, tmp_path / "out", torch.device("cpu"), init_process_group(torch.device("cpu")))
    state, done = start(run, resume=True)
    assert done == 2 and state.schedules[-1]["epochs"] == 6
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * lr_factor(4, 12, 2))


def test_an_early_stopped_run_is_not_extended(tmp_path: Path) -> None:
    fit(_config(tmp_path, tmp_path / "data"), progress=False)
    done_file = tmp_path / "out" / "DONE"
    done = json.loads(done_file.read_text())
    done["stopped_early"] = True
    done_file.write_text(json.dumps(done))
    with pytest.raises(CheckpointError, match="early stopping ended it after epoch 2"):
        fit(_config(tmp_path, tmp_path / "data", epochs=5), progress=False)


# --- preprocessing follows the backbone --------------------------------------------------------------------


def test_preprocessing_follows_the_pretrained_config_unless_overridden(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    import timm

    dino = load_train_config(
        _config(tmp_path, tmp_path / "d", backbone="timm/vit_small_patch14_dinov2.lvd142m", pretrained=True),
        check_taxonomy=False,
    )
    settings = resolve_preprocessing(dino)
    cfg = timm.models.get_pretrained_cfg("vit_small_patch14_dinov2.lvd142m")
    assert (settings.size, settings.mean, settings.std) == (
        cfg.input_size[-1],
        tuple(cfg.mean),
        tuple(cfg.std),
    )
    own = load_train_config(
        _config(
            tmp_path,
            tmp_path / "d",
            backbone="timm/vit_small_patch14_dinov2.lvd142m",
            pretrained=True,
            data={"source": "synthetic", "root": "d", "input_size": 56, "mean": [0.5, 0.5, 0.5]},
        ),
        check_taxonomy=False,
    )
    settings = resolve_preprocessing(own)
    assert settings.size == 56 and settings.mean == (0.5, 0.5, 0.5) and settings.std == (0.229, 0.224, 0.225)
    plain = load_train_config(_config(tmp_path, tmp_path / "d"), check_taxonomy=False)
    assert resolve_preprocessing(plain).size == 28  # without pretrained weights: the images' own size


def test_run_records_and_applies_its_preprocessing(tmp_path: Path) -> None:
    from hierclf.data.transforms import preprocessing_of

    data = {"source": "synthetic", "root": str(tmp_path / "data"), "augment": False, "std": [0.5, 0.5, 0.5]}
    data["synthetic"] = {"n_train": 70, "n_val": 35, "n_test": 35, "seed": 0}
    result = fit(_config(tmp_path, tmp_path / "data", epochs=1, data=data), progress=False)
    assert result.preprocessing["std"] == [0.5, 0.5, 0.5] and result.preprocessing["size"] == 28
    done = json.loads((tmp_path / "out" / "DONE").read_text())
    assert done["preprocessing"] == result.preprocessing
    from hierclf.train.inputs import make_pipeline
    from hierclf.train.preprocessing import resolve_preprocessing as resolve

    config = load_train_config(_config(tmp_path, tmp_path / "data", epochs=1, data=data))
    import torch

    pipeline = make_pipeline(config, torch.device("cpu"), resolve(config))
    assert preprocessing_of(pipeline.train_item) == preprocessing_of(pipeline.eval_item)
    assert preprocessing_of(pipeline.eval_item)[1] == (0.5, 0.5, 0.5)


# --- backbones from a config -------------------------------------------------------------------------------


def test_a_timm_backbone_trains_with_gradual_unfreezing(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    config = _config(
        tmp_path, tmp_path / "data", backbone="timm/resnet18", regime="gradual_unfreeze", epochs=2
    )
    result = fit(config, progress=False)
    assert [h["unfrozen_blocks"] for h in result.history] == [0, 1]
    assert np.isfinite([h["val_loss"] for h in result.history]).all()


FACTORY = """
import torch
from torch import nn

def wrong_width(width=8):
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), width + 1
"""


def test_a_factory_breaking_its_contract_is_positioned_in_the_config(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "user_nets.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        text = (
            f"taxonomy: {REPO / 'taxonomy' / 'dermamnist.yaml'}\n"
            f"data: {{source: synthetic, root: {tmp_path / 'data'}}}\n"
            "backbone:\n  factory: user_nets:wrong_width\n  kwargs: {width: 4}\nepochs: 1\ndevice: cpu\n"
        )
        (tmp_path / "run.yaml").write_text(text)
        with pytest.raises(ConfigError) as err:
            fit(tmp_path / "run.yaml", progress=False)
        assert str(err.value) == (
            f"{tmp_path / 'run.yaml'}:4:12: error: backbone.factory 'user_nets:wrong_width': "
            "the module maps a (2, 3, 28, 28) batch to (2, 4); expected (2, 5) = (batch, n_features)"
        )
        (tmp_path / "run.yaml").write_text(text.replace("user_nets:wrong_width", "user_nets:wrong_widht"))
        with pytest.raises(
            ConfigError, match=r"run.yaml:4:12: error: backbone.factory: module 'user_nets' has no "
        ):
            load_train_config(tmp_path / "run.yaml")
    finally:
        sys.modules.pop("user_nets", None)


# --- fewer labels, by groups -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_subsample_keeps_groups_whole_per_class_and_nested(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_groups = 300
    group_label = rng.choice(["nevus", "melanoma", "bcc", "df"], p=[0.6, 0.2, 0.15, 0.05], size=n_groups)
    sizes = rng.integers(1, 5, size=n_groups)
    groups = np.repeat(np.arange(n_groups), sizes).astype(str)
    labels = np.repeat(group_label, sizes)
    previous: set[int] = set()
    for fraction in (0.02, 0.1, 0.25, 0.5, 1.0):
        rows = grouped_class_subsample(labels, groups, fraction, seed=seed)
        kept = set(rows.tolist())
        assert previous <= kept  # nested: a larger fraction adds labels
        previous = kept
        kept_groups = set(groups[rows])
        assert set(np.flatnonzero(np.isin(groups, list(kept_groups)))) == kept  # whole groups only
        for cls in np.unique(labels):
            mine = labels == cls
            target = fraction * mine.sum()
            got = int((mine & np.isin(np.arange(labels.size), rows)).sum())
            assert got >= 1
            # closest to the target among whole-group prefixes: off by less than the largest group
            assert abs(got - target) <= sizes.max()
    assert grouped_class_subsample(labels, groups, 1.0, seed=seed).size == labels.size


def test_subsample_in_a_training_config(tmp_path: Path) -> None:
    import torch

    from hierclf.data.datasets import load_dermamnist
    from hierclf.train.distributed import init_process_group
    from hierclf.train.run import build_run

    data = {"source": "synthetic", "root": str(tmp_path / "data"), "augment": False, "train_fraction": 0.5}
    data["synthetic"] = {"n_train": 140, "n_val": 35, "n_test": 35, "seed": 0}
    config = load_train_config(_config(tmp_path, tmp_path / "data", epochs=1, data=data))
    cpu = torch.device("cpu")
    run = build_run(config, tmp_path / "out", cpu, init_process_group(cpu))
    full = load_dermamnist(tmp_path / "data", "train", npz=next((tmp_path / "data").glob("*.npz")))
    rows = grouped_class_subsample(full.labels, full.groups, 0.5, seed=0)
    assert 0.35 * len(full) < len(rows) < 0.65 * len(full)
    assert run.datasets["train"].ids.tolist() == full.ids[rows].tolist()
    assert len(run.datasets["val"]) == 35  # validation and test keep every image
