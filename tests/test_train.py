"""Training: a real 2-epoch run beats chance, resume is exact, configs fail with positioned messages.

Every run trains ``small_cnn`` on a generated DermaMNIST-layout npz
(``hierclf.data.datasets.make_synthetic_dermamnist``) on the CPU, without augmentation and with tiny splits,
so the file stays near a minute on two cores.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from hierclf import Taxonomy
from hierclf.errors import FileFormatError, HierclfError
from hierclf.train.config import TrainConfig, config_from_text, load_train_config
from hierclf.train.loop import EpochBatchSampler, fit, lr_factor

REPO = Path(__file__).resolve().parents[1]
DERMAMNIST = REPO / "taxonomy" / "dermamnist.yaml"


def _config(tmp: Path, out: str = "out", **extra: object) -> Path:
    """A small run: 210/70/70 synthetic images, batch 30, no augmentation."""
    base = {
        "taxonomy": str(DERMAMNIST),
        "data": {
            "source": "synthetic",
            "root": str(tmp.parent / "data"),
            "size": 28,
            "augment": False,
            "synthetic": {"n_train": 210, "n_val": 70, "n_test": 70, "seed": 0},
        },
        "backbone": "small_cnn",
        "epochs": 2,
        "batch_size": 30,
        "lr": 0.005,
        "warmup_epochs": 0.5,
        "sampler": "balanced",
        "out_dir": out,
        "seed": 3,
        "device": "cpu",
        "early_stopping": {"metric": "val_auc:malignant"},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}  # type: ignore[dict-item]
        else:
            base[key] = value
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "run.yaml"
    path.write_text(json.dumps(base), encoding="utf-8")  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("fit") / "run"
    return fit(_config(tmp), progress=False)


SELECT = "val_auc:malignant"


# --- the loop learns ---------------------------------------------------------------------------------


def test_two_epochs_beat_chance(trained) -> None:
    from hierclf.evaluation.prediction_files import read_predictions

    tax = Taxonomy.from_yaml(DERMAMNIST)
    test = read_predictions(trained.predictions["test"], tax)
    assert test.columns == tuple(tax.leaves) == trained.classes
    truth = np.array([test.columns.index(label) for label in test.labels])
    bacc = balanced_accuracy_score(truth, test.probs.argmax(axis=1))
    # chance is 1/7 = 0.143 for 7 classes; the synthetic signal is learnable in an epoch
    assert bacc > 1 / 7 + 0.2, f"balanced accuracy {bacc:.3f} is not clearly above chance"
    np.testing.assert_allclose(test.probs.sum(axis=1), 1.0, atol=1e-5)


def test_outputs_layout(trained) -> None:
    out = trained.out_dir
    for name in (
        "config.resolved.yaml",
        "checkpoint.pt",
        "best.pt",
        "history.json",
        "DONE",
        "predictions/val.npz",
        "predictions/test.npz",
    ):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] == [h["epoch"] for h in trained.history]
    assert trained.metric == SELECT
    assert trained.best_epoch == 1 + int(np.argmax([h[SELECT] for h in history]))
    # the resolved config reads back as the same config (paths absolute)
    resolved = load_train_config(out / "config.resolved.yaml")
    assert resolved.out_dir == out and resolved.epochs == 2 and resolved.taxonomy == DERMAMNIST
    with np.load(out / "predictions" / "val.npz") as z:
        assert set(z.files) >= {"probs", "leaves", "ids", "labels", "groups"}
        assert z["probs"].shape == (70, 7)


def test_history_metrics_match_saved_predictions(trained) -> None:
    """The best epoch's validation metrics, recomputed independently from predictions/val.npz (written
    from best.pt): cross-entropy by hand, balanced accuracy and node AUC by scikit-learn, nx.descendants."""
    import networkx as nx
    from sklearn.metrics import roc_auc_score

    from hierclf.evaluation.prediction_files import read_predictions

    tax = Taxonomy.from_yaml(DERMAMNIST)
    val = read_predictions(trained.predictions["val"])
    record = trained.history[trained.best_epoch - 1]
    truth = np.array([val.columns.index(lab) for lab in val.labels])
    p = val.probs[np.arange(len(val)), truth].astype(np.float64)
    assert math.isclose(-np.log(p).mean(), record["val_loss"], rel_tol=1e-5)
    assert math.isclose(balanced_accuracy_score(truth, val.probs.argmax(1)), record["val_balanced_accuracy"])
    malignant = nx.descendants(tax.graph, "malignant") | {"malignant"}
    cols = [i for i, c in enumerate(val.columns) if c in malignant]
    auc = roc_auc_score(np.isin(val.labels, sorted(malignant)), val.probs[:, cols].sum(axis=1))
    assert math.isclose(auc, record[SELECT], rel_tol=1e-5) and auc == pytest.approx(trained.best_metric)


def test_finished_run_returns_at_once(trained) -> None:
    again = fit(trained.out_dir / "config.resolved.yaml", progress=False)
    assert again.already_done and again.best_epoch == trained.best_epoch
    assert again.history == trained.history


# --- resume ------------------------------------------------------------------------------------------


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_resume_continues_exactly(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """1 epoch, then a crash in the middle of epoch 2, then resume == 2 epochs straight (``trained``)."""
    import hierclf.train.epoch as train_mod

    cfg = _config(tmp_path, out=str(tmp_path / "resumed"))
    first = fit(cfg, progress=False, stop_after_epochs=1)
    assert not first.finished and first.epochs_run == 1
    assert not (tmp_path / "resumed" / "DONE").exists()

    real_progress = train_mod._progress

    def crash_after_one_batch(loader, epoch, epochs, disable):  # a kill during epoch 2
        for i, batch in enumerate(real_progress(loader, epoch, epochs, disable)):
            if i == 1:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(train_mod, "_progress", crash_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, progress=False)
    monkeypatch.setattr(train_mod, "_progress", real_progress)
    resumed = fit(cfg, progress=False)
    assert resumed.resumed_from == 1 and resumed.epochs_run == 2
    straight = _weights(trained.out_dir / "checkpoint.pt")
    again = _weights(tmp_path / "resumed" / "checkpoint.pt")
    assert straight.keys() == again.keys()
    for key in straight:
        torch.testing.assert_close(again[key], straight[key], rtol=0, atol=1e-6, msg=key)
    for split in ("val", "test"):
        with np.load(trained.predictions[split]) as a, np.load(resumed.predictions[split]) as b:
            np.testing.assert_allclose(b["probs"], a["probs"], rtol=0, atol=1e-6)
            assert (a["ids"] == b["ids"]).all()
    expected = [h["train_loss"] for h in trained.history]
    assert [h["train_loss"] for h in resumed.history] == pytest.approx(expected, abs=1e-6)


def test_batched_augmentation_resumes_exactly(tmp_path: Path) -> None:
    """The batched pipeline (uint8 batches, augmentation on the device, as used on GPUs) with augmentation on:
    a run stopped after epoch 1 and resumed equals one that never stopped; and augmentation really ran."""

    def run(out: str, augment: bool, stop: int | None) -> Path:
        cfg = _config(
            tmp_path / out,
            out=str(tmp_path / out / "o"),
            epochs=2,
            max_steps_per_epoch=2,
            data={"pipeline": "batched", "augment": augment},
            early_stopping={"metric": "val_loss"},
        )
        fit(cfg, progress=False, stop_after_epochs=stop)
        if stop is not None:
            fit(cfg, progress=False)
        return tmp_path / out / "o" / "checkpoint.pt"

    straight, resumed = _weights(run("a", True, None)), _weights(run("b", True, 1))
    plain = _weights(run("c", False, None))
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6, msg=key)
    assert any(not torch.allclose(plain[k], straight[k]) for k in straight if plain[k].is_floating_point())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_amp_run(tmp_path: Path) -> None:
    """On a GPU: AMP (float16 autocast + GradScaler) and the batched pipeline are on by default; the run
    finishes with finite weights and a checkpoint that resumes."""
    cfg = _config(
        tmp_path,
        out=str(tmp_path / "o"),
        device="cuda",
        epochs=2,
        max_steps_per_epoch=2,
        data={"augment": True},
    )
    first = fit(cfg, progress=False, stop_after_epochs=1)
    result = fit(cfg, progress=False)
    assert first.epochs_run == 1 and result.resumed_from == 1 and result.epochs_run == 2
    ckpt = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["scaler"]["scale"] > 0  # the GradScaler was enabled and saved
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    cfg = _config(tmp_path, out=str(tmp_path / "r"), max_steps_per_epoch=1)
    fit(cfg, progress=False, stop_after_epochs=1)
    other = _config(tmp_path, out=str(tmp_path / "r"), max_steps_per_epoch=1, lr=0.01)
    with pytest.raises(
        HierclfError,
        match=r"cannot resume from .*checkpoint.pt: it was trained with other "
        r"settings \(lr: 0.005 -> 0.01\)",
    ):
        fit(other, progress=False)
    assert fit(other, progress=False, resume=False).epochs_run == 2  # --no-resume starts over


# --- regimes -----------------------------------------------------------------------------------------


def test_gradual_unfreeze_and_linear_probe(tmp_path: Path) -> None:
    """Epoch 1 of gradual unfreezing and linear probing trains the head only: the backbone (weights and
    BatchNorm statistics) stays at its seeded initialisation; per-block learning rates fall 10x per block."""
    from hierclf.nn.backbones import create_backbone
    from hierclf.nn.head import LeafHead
    from hierclf.train.seeding import set_determinism

    set_determinism(3)  # fit's order: seed, backbone, head
    initial, n_features = create_backbone("small_cnn", in_size=28)
    init_state = {f"backbone.{k}": v for k, v in initial.state_dict().items()}
    head = LeafHead(n_features, Taxonomy.from_yaml(DERMAMNIST))
    init_head = {f"head.{k}": v for k, v in head.state_dict().items()}
    for regime in ("gradual_unfreeze", "linear_probe"):
        out = tmp_path / regime
        cfg = _config(
            tmp_path / f"cfg_{regime}",
            out=str(out),
            regime=regime,
            epochs=3,
            max_steps_per_epoch=2,
            schedule="constant",
            warmup_epochs=0,
        )
        fit(cfg, progress=False, stop_after_epochs=1)
        ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
        for key, value in init_state.items():
            torch.testing.assert_close(ckpt["model"][key], value, rtol=0, atol=0, msg=key)
        assert init_head and all(
            not torch.equal(ckpt["model"][k], v) for k, v in init_head.items() if v.is_floating_point()
        )  # the head trained
        lrs = [g["lr"] for g in ckpt["optimizer"]["param_groups"]]
        if regime == "gradual_unfreeze":
            assert lrs == pytest.approx([0.005, 0.0005, 0.00005, 0.000005])  # head, stage3, stage2, stage1
            assert ckpt["history"][0]["unfrozen_blocks"] == 0
            # epoch 2 unfreezes the block nearest the head (stage3) only
            fit(cfg, progress=False, stop_after_epochs=1)
            ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
            changed = {k.split(".")[2] for k, v in init_state.items() if not torch.equal(ckpt["model"][k], v)}
            assert changed == {"stage3"}
        else:
            assert lrs == pytest.approx([0.005])


@pytest.mark.parametrize("kind", ["cut", "partition"])
def test_coarser_classes(kind: str, tmp_path: Path) -> None:
    """The head's classes follow classes.kind; predictions are over those classes, labels stay leaves."""
    from hierclf.classes.esteva import partition
    from hierclf.evaluation.prediction_files import read_predictions

    tax = Taxonomy.from_yaml(DERMAMNIST)
    classes = (
        {"kind": "cut", "nodes": ["malignant", "nv", "benign_keratosis", "benign_dermal"]}
        if kind == "cut"
        else {"kind": "partition", "max_class_size": 30}
    )
    result = fit(
        _config(
            tmp_path,
            out=str(tmp_path / "o"),
            classes=classes,
            epochs=1,
            max_steps_per_epoch=1,
            early_stopping={"metric": "val_loss"},
        ),
        progress=False,
    )
    if kind == "cut":
        expected = tax.cut(["malignant", "melanocytic_nevus", "benign_keratosis", "benign_dermal"])
    else:  # the partition of the training split's counts, computed here from the generated file
        with np.load(next((tmp_path.parent / "data").glob("synthetic_dermamnist_28px_210-*.npz"))) as z:
            codes = z["train_labels"][:, 0]
        names = tax.codes("dermamnist")
        counts: dict[str, int] = {}
        for code in codes.tolist():
            counts[names[code]] = counts.get(names[code], 0) + 1
        expected = partition(tax, counts, max_class_size=30).classes
        assert len(expected) not in (1, 7)  # the test is only meaningful when some leaves merge
    assert result.classes == tuple(expected)
    test = read_predictions(result.predictions["test"], tax)
    assert test.columns == tuple(expected) and set(test.labels) <= set(tax.leaves)


#: labels of the CSV runs: 3 images at keratinocyte_carcinoma, an internal node that a partition with
#: max_class_size 8 splits (bcc 4 + akiec 3 + its own 3 = 10 images)
CSV_LABELS = (
    ["nv"] * 12
    + ["mel"] * 6
    + ["bcc"] * 4
    + ["akiec"] * 3
    + ["keratinocyte_carcinoma"] * 3
    + ["bkl"] * 4
    + ["df"] * 2
    + ["vasc"] * 2
)


def _csv_run(tmp_path: Path, labels: list[str], **extra: object) -> Path:
    """A config over random 28x28 PNGs listed in one CSV (used as train, val and test), patient-grouped;
    the lists share every patient, which training refuses, so the run allows it (issue 12)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = ["path,label,patient"]
    for i, label in enumerate(labels):
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{label},p{i // 2}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    csv = {"train": "list.csv", "val": "list.csv", "test": "list.csv", "group_column": "patient"}
    settings: dict[str, object] = {
        "out": str(tmp_path / "o"),
        "epochs": 1,
        "max_steps_per_epoch": 1,
        "batch_size": 12,
        "data": {"source": "csv", "csv": csv, "allow_leakage": True},
        **extra,
    }
    return _config(tmp_path, **settings)  # type: ignore[arg-type]


def test_csv_images_with_a_residual_class(tmp_path: Path) -> None:
    """Own images from CSV files, some labelled at an internal node that the partition splits: the head gets
    a residual class, and the prediction files are over the cut (every column a node, rows summing to 1)."""
    from hierclf.classes.esteva import partition
    from hierclf.evaluation.prediction_files import read_predictions

    labels = CSV_LABELS
    cfg = _csv_run(
        tmp_path,
        labels,
        classes={"kind": "partition", "max_class_size": 8},
        early_stopping={"metric": "val_auc:malignant"},
    )
    result = fit(cfg, progress=False)
    tax = Taxonomy.from_yaml(DERMAMNIST)
    part = partition(tax, {tax.resolve(k): labels.count(k) for k in set(labels)}, max_class_size=8)
    assert "keratinocyte_carcinoma:residual" in part.classes  # the case this test is about
    assert result.classes == part.classes
    test = read_predictions(result.predictions["test"], tax)  # with a taxonomy: columns must form a cut
    assert test.columns == part.cut
    np.testing.assert_allclose(test.probs.sum(axis=1), 1.0, atol=1e-5)
    assert test.groups is not None and test.groups[0] == "p0"
    assert sorted(test.labels.tolist()) == sorted(tax.resolve(k) for k in labels)


def test_csv_images_with_dropped_internal_labels(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``internal_labels: drop``: the 3 training images at the split keratinocyte_carcinoma are left out of
    training (logged, node and count); in validation and test they stay in the prediction files (over the
    cut, labels as given) and the class metrics leave them out: val_loss, accuracy and balanced accuracy of
    the history equal those recomputed from predictions/val.npz over the other images (classes found with
    nx.descendants, balanced accuracy by scikit-learn)."""
    import logging

    import networkx as nx

    from hierclf.classes.esteva import partition
    from hierclf.evaluation.prediction_files import read_predictions

    labels = CSV_LABELS
    cfg = _csv_run(
        tmp_path,
        labels,
        classes={"kind": "partition", "max_class_size": 8, "internal_labels": "drop"},
        early_stopping={"metric": "val_loss"},
    )
    caplog.set_level(logging.INFO, logger="hierclf.train.inputs")
    result = fit(cfg, progress=False)
    tax = Taxonomy.from_yaml(DERMAMNIST)
    counts = {tax.resolve(k): labels.count(k) for k in set(labels)}
    part = partition(tax, counts, max_class_size=8, internal_labels="drop")
    assert dict(part.dropped) == {"keratinocyte_carcinoma": 3} and not part.residual  # the case tested
    assert result.classes == part.classes == part.cut
    logged = [r.getMessage() for r in caplog.records if r.name == "hierclf.train.inputs"]
    assert any(
        "3 of 36 training images are left out" in m and "keratinocyte_carcinoma (3)" in m for m in logged
    )
    assert any(m.startswith("val: 3 image(s) labelled above") for m in logged), logged

    for split in ("val", "test"):  # every image keeps its row
        pred = read_predictions(result.predictions[split], tax)
        assert pred.columns == part.cut
        assert sorted(pred.labels.tolist()) == sorted(tax.resolve(k) for k in labels)
        np.testing.assert_allclose(pred.probs.sum(axis=1), 1.0, atol=1e-5)
    val = read_predictions(result.predictions["val"], tax)
    scored = val.labels != "keratinocyte_carcinoma"
    assert scored.sum() == 33
    under = [{c} | nx.descendants(tax.graph, c) for c in val.columns]
    truth = np.array(
        [next(j for j, members in enumerate(under) if lab in members) for lab in val.labels[scored]]
    )
    probs = val.probs[scored].astype(np.float64)
    record = result.history[result.best_epoch - 1]
    assert result.best_epoch == 1
    assert math.isclose(-np.log(probs[np.arange(len(truth)), truth]).mean(), record["val_loss"], rel_tol=1e-5)
    pred_class = probs.argmax(axis=1)
    assert math.isclose(float((pred_class == truth).mean()), record["val_accuracy"])
    assert math.isclose(balanced_accuracy_score(truth, pred_class), record["val_balanced_accuracy"])


def test_dropped_rows_keep_their_images_ids_and_groups() -> None:
    """The training split without the dropped images: the remaining rows keep their order, ids, groups and
    pixels (through the uint8 path of the batched pipeline); validation rows at a dropped node get the class
    index UNSCORED and keep their row."""
    from hierclf.data.datasets import ArrayImageDataset
    from hierclf.data.transforms import to_uint8
    from hierclf.train.inputs import UNSCORED, Pipeline, build_datasets

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    labels = ["bcc", "keratinocyte_carcinoma", "akiec", "keratinocyte_carcinoma", "mel", "bcc"]
    source = ArrayImageDataset(images, labels, ids=[f"i{k}" for k in range(6)], groups=list("aabbcc"))
    class_index = {"bcc": 0, "akiec": 1, "mel": 2}
    pipeline = Pipeline(to_uint8(8), to_uint8(8))
    sets = build_datasets(
        {"train": source, "val": source, "test": source}, class_index, pipeline, leave_out_unmapped=True
    )
    kept = [0, 2, 4, 5]
    train = sets["train"]
    assert len(train) == 4 and train.labels.tolist() == [labels[k] for k in kept]
    assert train.ids.tolist() == [f"i{k}" for k in kept] and train.groups.tolist() == list("abcc")
    assert train.targets.tolist() == [0, 1, 2, 0]
    for row, k in enumerate(kept):
        image, target = train[row]
        assert (
            torch.equal(image, torch.from_numpy(images[k]).permute(2, 0, 1)) and target == train.targets[row]
        )
    assert sets["val"].targets.tolist() == [0, UNSCORED, 1, UNSCORED, 2, 0] and len(sets["test"]) == 6


def test_protocol_task_metric(tmp_path: Path) -> None:
    """task_auc:<task> selects on a protocol task; its value is the AUC of P(pos) / (P(pos) + P(neg)) on the
    samples under either side, recomputed here with scikit-learn from the saved validation predictions."""
    from sklearn.metrics import roc_auc_score

    from hierclf.evaluation.prediction_files import read_predictions

    protocol = str(REPO / "taxonomy" / "protocols" / "dermamnist.yaml")
    cfg = _config(
        tmp_path,
        out=str(tmp_path / "o"),
        epochs=1,
        max_steps_per_epoch=2,
        protocol=protocol,
        early_stopping={"metric": "task_auc:melanoma_vs_nevus"},
    )
    result = fit(cfg, progress=False)
    val = read_predictions(result.predictions["val"])
    keep = np.isin(val.labels, ["melanoma", "melanocytic_nevus"])
    mel = val.probs[keep, val.columns.index("melanoma")].astype(np.float64)
    nev = val.probs[keep, val.columns.index("melanocytic_nevus")].astype(np.float64)
    auc = roc_auc_score(val.labels[keep] == "melanoma", mel / (mel + nev))
    assert result.history[0]["task_auc:melanoma_vs_nevus"] == pytest.approx(auc, rel=1e-6)

    bad = _write(tmp_path, f"protocol: {protocol}\nearly_stopping: {{metric: 'task_auc:mel_vs_nevus'}}\n")
    with pytest.raises(FileFormatError, match="unknown task 'mel_vs_nevus' .*did you mean 'melanoma_vs_nev"):
        load_train_config(bad)


def test_early_stopping(tmp_path: Path) -> None:
    """With a learning rate too small to change any prediction, accuracy cannot improve after epoch 1:
    patience 1 stops after epoch 2 and the predictions come from epoch 1."""
    result = fit(
        _config(
            tmp_path,
            out=str(tmp_path / "o"),
            lr=1e-12,
            epochs=5,
            max_steps_per_epoch=1,
            early_stopping={"metric": "val_accuracy", "patience": 1},
        ),
        progress=False,
    )
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 1
    assert result.history[0]["val_accuracy"] == result.history[1]["val_accuracy"]
    assert json.loads((tmp_path / "o" / "DONE").read_text())["stopped_early"] is True


# --- building blocks ---------------------------------------------------------------------------------


def test_lr_factor_warmup_then_cosine() -> None:
    total, warm = 100, 10
    f = [lr_factor(s, total, warm) for s in range(total + 1)]
    assert f[:warm] == pytest.approx([(s + 1) / warm for s in range(warm)])
    for s in range(warm, total + 1):  # independent: 0.5 (1 + cos(pi t)), t the decay phase in [0, 1]
        assert f[s] == pytest.approx(0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))))
    assert lr_factor(50, 100, 0, "constant") == 1.0
    assert lr_factor(100, 100, 0, min_ratio=0.1) == pytest.approx(0.1)


@pytest.mark.parametrize("weighted", [False, True])
def test_epoch_batches_shard_the_global_batch(weighted: bool) -> None:
    weights = torch.linspace(0.1, 1.0, 50) if weighted else None
    single = EpochBatchSampler(50, 12, weights, seed=5)
    shards = [EpochBatchSampler(50, 12, weights, seed=5, world_size=3, rank=r) for r in range(3)]
    for epoch in (0, 1):
        for s in (single, *shards):
            s.set_epoch(epoch)
        global_batches = list(single)
        assert len(global_batches) == 4  # 50 // 12, the incomplete last batch dropped
        for step, parts in enumerate(zip(*shards)):
            assert [len(p) for p in parts] == [4, 4, 4]
            assert sum(parts, []) == global_batches[step]
    single.set_epoch(0)
    first = list(single)
    single.set_epoch(1)
    assert list(single) != first
    single.set_epoch(0)
    assert list(single) == first  # a pure function of (seed, epoch)
    if not weighted:
        assert len(set(sum(first, []))) == 48  # without replacement


def test_seed_streams_are_the_formulas_of_earlier_runs() -> None:
    """Every stream's seed, against the formulas written out here (those of every earlier hierclf run, so old
    checkpoints resume exactly): data order and DataLoader workers ``seed * 1_000_003 + epoch``, batched
    augmentation ``(seed * 1_000_003 + epoch) * 4099 + rank``, per-rank augmentation ``seed + 7919 * rank``;
    and the sampler draws its order from the data-order stream."""
    from hierclf.train.seeding import SeedStreams

    for seed, rank, epoch in [(0, 0, 0), (3, 1, 2), (11, 3, 29)]:
        streams = SeedStreams(seed, rank)
        assert streams.model_init == seed
        assert streams.data_order(epoch).initial_seed() == seed * 1_000_003 + epoch
        assert streams.loader_workers(epoch).initial_seed() == seed * 1_000_003 + epoch
        assert streams.loader_workers(epoch) is not streams.data_order(epoch)
        assert streams.batch_augmentation(epoch).initial_seed() == (seed * 1_000_003 + epoch) * 4099 + rank
        assert streams.rank_augmentation == seed + 7919 * rank
        sampler = EpochBatchSampler(40, 8, seed=seed, world_size=1)
        sampler.set_epoch(epoch)
        expected = torch.randperm(40, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        assert torch.equal(sampler.global_order(), expected)


def test_balanced_draws_equalise_classes() -> None:
    from hierclf.data.sampling import sampler_weights

    targets = np.array([0] * 900 + [1] * 90 + [2] * 10)
    s = EpochBatchSampler(1000, 1000, sampler_weights(targets, "balanced"), seed=0)
    drawn = np.bincount(targets[list(s)[0]], minlength=3)
    assert np.all(np.abs(drawn / 1000 - 1 / 3) < 0.05), drawn


def test_batch_size_must_split_evenly() -> None:
    with pytest.raises(HierclfError, match="batch_size 10 .* divisible by the number of processes \\(3\\)"):
        EpochBatchSampler(100, 10, world_size=3)


def test_user_errors_are_hierclf_errors(tmp_path: Path) -> None:
    """Bad arguments raise TrainSettingError (a HierclfError and a ValueError) with one line; a file that is
    not a training checkpoint raises CheckpointError instead of a KeyError."""
    from hierclf.train.distributed import pick_device
    from hierclf.train.errors import CheckpointError, TrainSettingError
    from hierclf.train.seeding import set_determinism

    with pytest.raises(TrainSettingError, match=r"^seed must be >= 0, got -1$") as err:
        set_determinism(-1)
    assert isinstance(err.value, ValueError) and isinstance(err.value, HierclfError)
    if not torch.backends.mps.is_available():
        with pytest.raises(TrainSettingError, match="device 'mps' requested but MPS is not available"):
            pick_device("mps")
    with pytest.raises(TrainSettingError, match="divisible by the number of processes"):
        EpochBatchSampler(100, 10, world_size=3)

    cfg = _config(tmp_path, out=str(tmp_path / "o"), max_steps_per_epoch=1)
    (tmp_path / "o").mkdir()
    torch.save({"model": {}, "epoch": 1}, tmp_path / "o" / "checkpoint.pt")  # e.g. best.pt copied over
    with pytest.raises(
        CheckpointError, match=r"checkpoint.pt is not a training checkpoint \(it lacks optimizer"
    ):
        fit(cfg, progress=False)


def test_fit_options_are_keyword_only(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        fit(_config(tmp_path), False)  # type: ignore[misc]


# --- bad configurations ------------------------------------------------------------------------------


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(f"taxonomy: {DERMAMNIST}\n" + textwrap.dedent(body), encoding="utf-8")
    return path


def test_unknown_backbone_message(tmp_path: Path) -> None:
    path = _write(tmp_path, "backbone: resnt18\n")
    with pytest.raises(FileFormatError) as err:
        load_train_config(path)
    assert str(err.value) == (
        f"{path}:2:11: error: backbone: unknown backbone 'resnt18' (known backbones: convnext_tiny, "
        "efficientnet_b0, resnet18, resnet50, small_cnn, vit_b_16); did you mean 'resnet18' or 'resnet50'?"
    )


def test_negative_learning_rate_message(tmp_path: Path) -> None:
    path = _write(tmp_path, "epochs: 3\nlr: -0.001\n")
    with pytest.raises(FileFormatError) as err:
        load_train_config(path)
    assert str(err.value) == f"{path}:3:5: error: lr: must be > 0.0, got -0.001"


def test_unknown_node_message(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        classes:
          kind: cut
          nodes: [benign, malignat]
        """,
    )
    with pytest.raises(FileFormatError) as err:
        load_train_config(path)
    assert str(err.value) == (
        f"{path}:4:19: error: classes.nodes: unknown node 'malignat' in taxonomy "
        "'dermamnist'; did you mean 'malignant'?"
    )


def test_every_problem_is_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        optimiser: adamw
        regime: linear
        early_stopping: {metric: val_los}
        """,
    )
    with pytest.raises(FileFormatError) as err:
        load_train_config(path)
    messages = [str(p) for p in err.value.problems]
    assert messages == [
        f"{path}:2:12: error: top level: unknown field 'optimiser' (expected one of "
        + ", ".join(TrainConfig.model_fields)
        + "); did you mean 'optimizer'?",
        f"{path}:3:9: error: regime: expected 'linear_probe', 'full' or 'gradual_unfreeze', got 'linear'; "
        "did you mean 'linear_probe'?",
        f"{path}:4:26: error: early_stopping.metric: unknown metric 'val_los' (expected one of val_loss, "
        "val_accuracy, val_balanced_accuracy, val_auc:<node> or task_auc:<task>); did you mean 'val_loss'?",
    ]


def test_metric_node_is_checked(tmp_path: Path) -> None:
    path = _write(tmp_path, "early_stopping: {metric: 'val_auc:melanomma'}\n")
    with pytest.raises(FileFormatError, match="unknown node 'melanomma' .*did you mean 'melanoma'"):
        load_train_config(path)


def test_config_defaults_and_loss_shorthand() -> None:
    cfg = config_from_text("taxonomy: t.yaml\nloss: focal\n")
    assert cfg.loss.name == "focal" and cfg.regime == "full" and cfg.amp == "auto"
    assert cfg.early_stopping.mode == "min"


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        (
            "loss: {name: focal, alpha: 0.25}\n",
            "2:28",
            "loss.alpha: expected a scheme name (inverse, effective, none) "
            "or a list with one weight per class, got the single number 0.25",
        ),
        (
            "loss: {name: weighted_ce, weights: [1, -2]}\n",
            "2:36",
            "loss.weights: weights must list finite non-negative numbers, one per class",
        ),
        (
            "loss: {name: ce, gamma: 2}\n",
            "2:7",
            "loss: loss 'ce' does not take gamma (it takes: no options besides label_smoothing)",
        ),
        (
            "loss: {name: asymmetric, alpha: inverse}\n",
            "2:7",
            "loss: loss 'asymmetric' does not take alpha (it takes: gamma_pos, gamma_neg, clip)",
        ),
        (
            "loss: focal\nlabel_smoothing: 0.1\n",
            "3:18",
            "label_smoothing: label_smoothing applies to the ce and weighted_ce losses, not 'focal'",
        ),
    ],
)
def test_loss_options_that_build_loss_would_refuse_are_refused_in_the_file(
    tmp_path: Path, body: str, where: str, message: str
) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(FileFormatError) as err:
        load_train_config(path)
    assert str(err.value).splitlines() == [f"{path}:{where}: error: {message}"]


def test_per_class_loss_weights_reach_the_loss(tmp_path: Path) -> None:
    from hierclf.nn.losses import build_loss

    cfg = load_train_config(_write(tmp_path, "loss: {name: focal, alpha: [1, 2, 0.5, 1, 1, 1, 1]}\n"))
    loss = build_loss(cfg.loss.name, class_counts=[10] * 7, **cfg.loss.params())
    assert loss.alpha.tolist() == [1.0, 2.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    cfg = load_train_config(_write(tmp_path, "loss: {name: weighted_ce, weights: none}\n"))
    assert build_loss(cfg.loss.name, class_counts=[10, 1], **cfg.loss.params()).weight.tolist() == [1.0, 1.0]


def test_cli_run_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An error found while the run is built (a selection metric on a node below the head's cut) is one line
    on stderr, not an internal error."""
    from hierclf.cli import main

    cfg = _config(
        tmp_path,
        out=str(tmp_path / "o"),
        classes={"kind": "cut", "nodes": ["malignant", "nv", "benign_keratosis", "benign_dermal"]},
        early_stopping={"metric": "val_auc:melanoma"},
    )
    assert main(["train", "--config", str(cfg), "--no-progress"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "hierclf train: error: early_stopping.metric 'val_auc:melanoma': node 'melanoma' lies below the "
        "head's classes (under 'malignant'); its probability is not defined"
    ]


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``hierclf train`` with a bad config: one line on stderr, exit status 1 (the subprocess path of the
    CLI is exercised by tests/test_ddp.py)."""
    from hierclf.cli import main

    path = _write(tmp_path, "lr: -1\n")
    assert main(["train", "--config", str(path)]) == 1
    captured = capsys.readouterr()
    expected = f"hierclf train: error: {path}:2:5: error: lr: must be > 0.0, got -1"
    assert captured.err.strip().splitlines() == [expected]
    assert captured.out == ""


def test_csv_lists_that_share_patients_are_refused_unless_allowed(tmp_path: Path) -> None:
    """Issue 12: training refuses splits sharing groups; allowed, the prediction files record the training
    ids and groups, and evaluating them says LEAKAGE (train/test and train/validation), loudly."""
    from hierclf.data.splits import LeakageError
    from hierclf.evaluation.pipeline import evaluate
    from hierclf.evaluation.prediction_files import read_predictions
    from hierclf.evaluation.protocol_format import protocol_from_dict
    from hierclf.train.config import load_train_config

    allowed = _csv_run(tmp_path, CSV_LABELS, classes={"kind": "partition", "max_class_size": 8})
    refused = load_train_config(allowed, overrides={"data.allow_leakage": False})
    with pytest.raises(LeakageError, match=r"appear in more than one split.*--allow-leakage"):
        fit(refused, progress=False)
    result = fit(load_train_config(allowed), progress=False)
    tax = Taxonomy.from_yaml(DERMAMNIST)
    test = read_predictions(result.predictions["test"], tax)
    training = json.loads(test.info["training"])
    assert sorted(training["ids"]) == sorted(test.ids.tolist())  # one list for every split
    assert set(training["groups"]) == {f"p{i // 2}" for i in range(len(CSV_LABELS))}
    proto = protocol_from_dict(
        {
            "name": "leak", "target_sensitivity": 0.8, "group_column": None, "min_seeds": 1,
            "bootstrap": {"replicates": 5}, "primary_metric": {"metric": "auc", "task": "m"},
            "tasks": [{"name": "m", "positive": ["malignant"], "negative": ["benign"]}],
        },
        tax,
    )  # fmt: skip
    report = evaluate(tax, proto, [result.predictions["val"]], [result.predictions["test"]])
    leaks = [w for w in report.warnings if w.startswith("LEAKAGE: training and")]
    assert {w.split(" of seed")[0] for w in leaks} == {
        "LEAKAGE: training and test",
        "LEAKAGE: training and validation",
    }
    assert "LEAKAGE" in report.alerts
