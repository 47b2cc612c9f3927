"""Experiments end to end on synthetic data: `hierclf probe`, an efficiency curve on tiny fractions (probe
and train), the labels-saved factor against hand-made curves, a shift split with its gap checked against the
two reports the evaluation writes, and the one-line errors of these commands."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from hierclf.cli import main
from hierclf.experiments.efficiency import labels_saved, parse_fractions
from hierclf.experiments.shift import shift_gap
from hierclf.train.subsample import grouped_class_subsample

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def protocol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("protocol")
    shipped = yaml.safe_load((REPO / "taxonomy" / "protocols" / "dermamnist.yaml").read_text())
    shipped.update(
        min_seeds=1,
        bootstrap={"replicates": 100, "ci_level": 0.95, "seed": 0},
        subgroups=[],
        subgroup_options={},
        group_column=None,
        training={
            "taxonomy": str(REPO / "taxonomy" / "dermamnist.yaml"),
            "backbone": "small_cnn",
            "device": "cpu",
            "epochs": 1,
            "batch_size": 70,
            "data": {"synthetic": {"n_train": 280, "n_val": 140, "n_test": 140, "seed": 0}, "augment": False},
        },
    )
    path = folder / "protocol.yaml"
    path.write_text(yaml.safe_dump(shipped, sort_keys=False))
    return path


# --- labels saved ------------------------------------------------------------------------------------------


def test_labels_saved_against_hand_made_curves() -> None:
    f = [0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0]
    a = [0.60 + 0.1 * math.log10(x / 0.01) for x in f]  # 0.6 at 1 %, 0.8 at 100 %
    b = [0.60 + 0.1 * math.log10(4 * x / 0.01) for x in f]  # reaches a's metric with a quarter of the labels
    saved = labels_saved((f, a), (f, b), names=("imagenet", "derm_ssl"))
    defined = [(x, need, fac) for x, need, fac in saved.per_fraction if fac is not None]
    assert [x for x, _, _ in defined] == [0.01, 0.02, 0.05, 0.1, 0.25]  # 4x within a's range
    for x, need, fac in defined:
        assert need == pytest.approx(4 * x) and fac == pytest.approx(4.0)
    assert saved.factor == pytest.approx(4.0)
    # a noisy reference is made non-decreasing first; a value below its first point has no factor
    noisy = [0.5, 0.7, 0.65, 0.8]
    got = labels_saved(([0.1, 0.2, 0.4, 0.8], noisy), ([0.1, 0.2], [0.45, 0.75]))
    assert got.per_fraction[0] == (0.1, None, None)
    # the envelope is 0.5, 0.7, 0.7, 0.8: 0.75 is reached half-way (log-linear) between 0.4 and 0.8
    halfway = math.exp(math.log(0.4) + 0.5 * (math.log(0.8) - math.log(0.4)))
    assert got.per_fraction[1][1] == pytest.approx(halfway) and got.per_fraction[1][2] == pytest.approx(
        halfway / 0.2
    )


def test_parse_fractions_refuses_what_is_not_a_fraction() -> None:
    from hierclf.errors import HierclfError

    assert parse_fractions("1,0.05,0.05") == (0.05, 1.0)
    with pytest.raises(HierclfError, match=r"fractions must lie in \(0, 1\]; got 1.5"):
        parse_fractions("0.5,1.5")
    with pytest.raises(HierclfError, match="expected numbers separated by commas"):
        parse_fractions("0.1;0.2")


# --- probe, efficiency -------------------------------------------------------------------------------------


def test_probe_command_writes_predictions_and_reports(protocol: Path, tmp_path: Path, capsys) -> None:
    out, cache = tmp_path / "probe", tmp_path / "cache"
    args = [
        "probe",
        str(protocol),
        "--data",
        "synthetic",
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--k",
        "10",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "extracted" in first and "knn_k10:" in first and "linear:" in first
    for probe in ("knn_k10", "linear"):
        assert (out / "predictions" / probe / "test.npz").is_file()
        report = json.loads((out / "reports" / probe / "report.json").read_text())
        assert report["synthetic"] and report["primary"]["metric"] == "specificity_at_target_sensitivity"
    assert main(args) == 0
    assert "reused from the cache" in capsys.readouterr().out


def test_efficiency_curve_on_tiny_fractions(protocol: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("timm")
    out, cache = tmp_path / "eff", tmp_path / "cache"
    args = ["efficiency", str(protocol), "--data", "synthetic", "--out", str(out), "--cache", str(cache)]
    args += ["--fractions", "0.1,0.3,1", "--seeds", "2", "--backbones", "small_cnn,timm/resnet18"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "labels saved by timm/resnet18 against small_cnn" in printed
    for name in ("efficiency.json", "efficiency.csv", "efficiency.md", "efficiency.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 100
    result = json.loads((out / "efficiency.json").read_text())
    assert result["metric"] == "specificity_at_target_sensitivity on melanoma_vs_nevus"
    # the training rows of each point are the grouped subsamples of the training split
    from hierclf.data.datasets import load_dermamnist

    train = load_dermamnist(out / "data", "train", npz=next((out / "data").glob("*.npz")))
    for points in result["curves"].values():
        assert [p["fraction"] for p in points] == [0.1, 0.3, 1.0]
        for p in points:
            drawn = [
                grouped_class_subsample(train.labels, train.groups, p["fraction"], seed=s) for s in (0, 1)
            ]
            # a probe's seeds differ only in their rows: two seeds drawing the same rows are one run
            distinct = drawn[:1] + [d for d in drawn[1:] if not np.array_equal(d, drawn[0])]
            assert p["n_train"] == [d.size for d in distinct]
            if p["fraction"] == 1.0:
                assert len(p["n_train"]) == 1
            assert set(p["auc"]) == {"melanoma_vs_nevus", "carcinoma_vs_keratosis", "malignant_vs_benign"}
        # fraction 1: the probe's two seeds are one run, evaluated once
        assert len(points[-1]["primary"]["per_seed"]) == 1
    # the labels-saved factor is the one of the written curves
    curves = {
        n: ([p["fraction"] for p in pts], [p["primary"]["value"] for p in pts])
        for n, pts in result["curves"].items()
    }
    saved = labels_saved(curves["small_cnn"], curves["timm/resnet18"])
    assert result["saved"][0]["factor"] == (pytest.approx(saved.factor) if saved.factor is not None else None)
    # the fraction-1 point of the linear probe is what `hierclf probe` reports for it
    assert (
        main(
            [
                "probe",
                str(protocol),
                "--data",
                "synthetic",
                "--out",
                str(tmp_path / "p"),
                "--cache",
                str(cache),
                "--no-knn",
            ]
        )
        == 0
    )
    probe_report = json.loads((tmp_path / "p" / "reports" / "linear" / "report.json").read_text())
    assert probe_report["primary"]["estimate"]["value"] == pytest.approx(
        result["curves"]["small_cnn"][-1]["primary"]["value"]
    )
    with (out / "efficiency.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 3 * 4  # backbones x fractions x (primary + 3 task AUCs)


def test_efficiency_by_training(protocol: Path, tmp_path: Path) -> None:
    from hierclf.experiments.efficiency import run_label_efficiency

    result = run_label_efficiency(
        protocol, fractions=[0.5, 1.0], seeds=1, method="train", data="synthetic", out_dir=tmp_path
    )
    runs = sorted(p.parent.parent.name for p in (tmp_path / "runs" / "small_cnn").glob("*/seed_0/DONE"))
    assert runs == ["fraction_0.5", "fraction_1"]
    done = json.loads((tmp_path / "runs" / "small_cnn" / "fraction_0.5" / "seed_0" / "DONE").read_text())
    assert done["settings"]["data"]["train_fraction"] == 0.5
    points = result.curves["small_cnn"]
    assert points[0]["n_train"][0] < points[1]["n_train"][0] == 280


# --- shift -------------------------------------------------------------------------------------------------


def test_shift_gap_matches_two_independent_evaluations() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y1, y2 = rng.random(300) < 0.3, rng.random(200) < 0.3
    s1, s2 = y1 + rng.normal(size=300), 0.5 * y2 + rng.normal(size=200)
    g1, g2 = (np.arange(300) // 2).astype(str), (np.arange(200) // 2).astype(str)
    gap = shift_gap(
        (y1, s1, g1), (y2, s2, g2), threshold=0.0, target_sensitivity=0.9, replicates=200, seed=0, level=0.95
    )
    assert gap["auc"]["gap"] == pytest.approx(roc_auc_score(y1, s1) - roc_auc_score(y2, s2))
    assert gap["sensitivity"]["id"] == pytest.approx((s1[y1] >= 0).mean())
    low, high = gap["auc"]["ci"]
    assert low < gap["auc"]["gap"] < high


def _metadata(protocol: Path, tmp_path: Path) -> Path:
    """A metadata CSV giving every synthetic image a site: its lesion's hash decides (a or b)."""
    import torch

    from hierclf.experiments.setup import experiment_setup
    from hierclf.train.distributed import init_process_group
    from hierclf.train.inputs import load_sources

    setup = experiment_setup(protocol, data="synthetic", out_dir=tmp_path / "shift")
    sources = load_sources(setup.config, setup.taxonomy, init_process_group(torch.device("cpu")))
    path = tmp_path / "meta.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "site"])
        for src in sources.values():
            for i, g in zip(src.ids, src.groups):
                writer.writerow([i, "a" if sum(map(ord, str(g))) % 3 else "b"])
    return path


def test_shift_split_end_to_end(protocol: Path, tmp_path: Path, capsys) -> None:
    meta = _metadata(protocol, tmp_path)
    out = tmp_path / "shift"
    args = ["shift", str(protocol), "--data", "synthetic", "--out", str(out), "--cache", str(tmp_path / "c")]
    assert main([*args, "--metadata", str(meta), "--column", "site", "--train-levels", "a"]) == 0
    assert "melanoma_vs_nevus: auc" in capsys.readouterr().out
    summary = json.loads((out / "shift.json").read_text())
    sites = {row["id"]: row["site"] for row in csv.DictReader(meta.open())}
    val = np.load(out / "predictions" / "linear" / "val.npz")
    ood = np.load(out / "predictions" / "linear" / "test_ood.npz")
    assert {sites[i] for i in val["ids"]} == {"a"} and {sites[i] for i in ood["ids"]} == {"b"}
    assert summary["counts"]["test_ood"] == len(ood["ids"]) == sum(v == "b" for v in sites.values())
    for task, gaps in summary["gaps"].items():
        id_report = json.loads((out / "in_distribution" / "report.json").read_text())
        ood_report = json.loads((out / "out_of_distribution" / "report.json").read_text())
        auc_id, auc_ood = (r["tasks"][task]["metrics"]["auc"]["value"] for r in (id_report, ood_report))
        assert gaps["auc"]["gap"] == pytest.approx(auc_id - auc_ood) and gaps["auc"]["id"] == pytest.approx(
            auc_id
        )
        same_threshold = (
            id_report["tasks"][task]["thresholds"]["value"]
            == ood_report["tasks"][task]["thresholds"]["value"]
        )
        assert same_threshold  # both at the operating point chosen on in-distribution validation


def test_shift_errors_are_one_line(protocol: Path, tmp_path: Path, capsys) -> None:
    meta = _metadata(protocol, tmp_path)
    base = [
        "shift",
        str(protocol),
        "--data",
        "synthetic",
        "--out",
        str(tmp_path / "s"),
        "--metadata",
        str(meta),
    ]
    assert main([*base, "--column", "sit", "--train-levels", "a"]) == 1
    err = capsys.readouterr().err.strip()
    assert "unknown metadata column 'sit'" in err and "did you mean 'site'?" in err and "\n" not in err
    assert main([*base, "--column", "site", "--train-levels", "c"]) == 1
    assert "unknown level of 'site' 'c' (its levels: a, b)" in capsys.readouterr().err
    assert main(["efficiency", str(tmp_path / "none.yaml"), "--probe", "knn"]) == 1
    assert (
        main(
            [
                "probe",
                str(REPO / "taxonomy" / "protocols" / "dermamnist.yaml"),
                "--data",
                "synthetic",
                "--out",
                str(tmp_path / "x"),
                "--backbone",
                "resnt18",
            ]
        )
        == 1
    )
    assert "did you mean 'resnet18'" in capsys.readouterr().err
