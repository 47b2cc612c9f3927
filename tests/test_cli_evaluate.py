"""``hierclf evaluate``: a full run, and one-line errors with exit code 1 for each kind of bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from hierclf import Taxonomy
from hierclf.cli import main
from hierclf.evaluation.prediction_files import Predictions, write_predictions

REPO = Path(__file__).resolve().parents[1]
TAXONOMY = REPO / "taxonomy" / "dermamnist.yaml"

PROTOCOL = """\
name: cli_test
target_sensitivity: 0.9
group_column: lesion_id
min_seeds: 2
bootstrap: {replicates: 30, seed: 1}
primary_metric: {metric: specificity_at_target_sensitivity, task: mel_vs_nv}
tasks:
  - {name: mel_vs_nv, positive: [malignant_melanocytic], negative: [benign_melanocytic]}
  - {name: malignant_vs_benign, positive: [malignant], negative: [benign]}
partitions:
  - {name: three_way, nodes: [benign, melanoma, keratinocyte_carcinoma]}
subgroups: [sex]
"""


def _preds(tax: Taxonomy, n: int, seed: int, prefix: str, label_seed: int | None = None) -> Predictions:
    """Random predictions with a signal towards the true leaf; the labels (and ids) come from
    ``label_seed`` when given, so that several seeds are tested on the same samples."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
    if label_seed is not None:
        y, seed = np.random.default_rng(label_seed).integers(0, 7, n), label_seed
    logits = rng.normal(size=(n, 7))
    logits[np.arange(n), y] += 1.5
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    ids = np.array([f"{prefix}{seed}_{i}" for i in range(n)])
    return Predictions(
        p, tax.leaves, ids, np.asarray(tax.leaves)[y], np.array([f"{prefix}L{i // 2}" for i in range(n)])
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tax = Taxonomy.from_yaml(TAXONOMY)
    d = tmp_path_factory.mktemp("cli")
    out: dict[str, Path] = {}
    preds = {}
    for seed in range(2):
        for split, n in (("val", 200), ("test", 240)):
            # every seed is tested on the same samples (test ids and labels of "seed 10")
            p = (
                _preds(tax, n, seed + 10, split, label_seed=10)
                if split == "test"
                else _preds(tax, n, seed, split)
            )
            preds[f"{split}{seed}"] = p
            out[f"{split}{seed}"] = d / f"{split}{seed}.npz"
            write_predictions(out[f"{split}{seed}"], p)
    (d / "protocol.yaml").write_text(PROTOCOL)
    out["protocol"] = d / "protocol.yaml"
    with open(d / "meta.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "lesion_id", "sex"])
        written: set[str] = set()
        for p in preds.values():
            for i, g in zip(p.ids, p.groups):
                if str(i) not in written:  # the seeds share their test samples
                    written.add(str(i))
                    w.writerow([i, g, "male" if int(str(i).split("_")[1]) % 2 else "female"])
    out["meta"] = d / "meta.csv"
    (d / "readers.csv").write_text("reader,sensitivity,specificity\nderm1,0.8,0.7\nderm2,0.9,0.6\n")
    out["readers"] = d / "readers.csv"
    # a CSV test file with a NaN probability
    bad = preds["test0"]
    header = "id," + ",".join(tax.leaves) + ",label,group\n"
    rows = [
        f"{i},"
        + ",".join("nan" if (r == 3 and c == 1) else f"{v:.6f}" for c, v in enumerate(pr))
        + f",{lab},{g}"
        for r, (i, pr, lab, g) in enumerate(zip(bad.ids, bad.probs, bad.labels, bad.groups))
    ]
    (d / "nan.csv").write_text(header + "\n".join(rows) + "\n")
    out["nan"] = d / "nan.csv"
    # test predictions without any melanoma
    keep = np.flatnonzero(preds["test0"].labels != "melanoma")
    write_predictions(d / "nomel.npz", preds["test0"].select(keep))
    out["nomel"] = d / "nomel.npz"
    out["dir"] = d
    return out


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["evaluate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _base(f: dict[str, Path], out: Path, seeds: int = 2) -> list[str]:
    return [
        "--taxonomy",
        str(TAXONOMY),
        "--protocol",
        str(f["protocol"]),
        "--val",
        *[str(f[f"val{s}"]) for s in range(seeds)],
        "--test",
        *[str(f[f"test{s}"]) for s in range(seeds)],
        "--out",
        str(out),
    ]


def test_full_run(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    code, stdout, err = _run(
        _base(files, out)
        + ["--metadata", str(files["meta"]), "--readers", str(files["readers"]), "--synthetic"],
        capsys,
    )
    assert code == 0, err
    assert "primary metric specificity_at_target_sensitivity on mel_vs_nv" in stdout
    assert "thresholds chosen on validation" in stdout and "SYNTHETIC DATA" in stdout
    for name in (
        "report.md",
        "report.json",
        "figures/roc_mel_vs_nv.png",
        "figures/confusion_three_way.png",
        "figures/reliability_malignant_vs_benign.png",
    ):
        assert (out / name).is_file(), name
    data = json.loads((out / "report.json").read_text())
    # the only warnings: a test sensitivity below the target it was chosen for on validation (issue 12)
    missed = [n for n, t in data["tasks"].items() if "BELOW-TARGET" in t["metrics"]["sensitivity"]["flags"]]
    assert data["n_seeds"] == 2 and len(data["warnings"]) == len(missed)
    assert all(w.startswith("TARGET MISSED") for w in data["warnings"])
    assert "figures/decision_mel_vs_nv.png" in data["figures"].values()
    assert len(data["tasks"]["mel_vs_nv"]["readers"]) == 2
    assert {r["value"] for r in data["subgroups"]["sex"]} == {"female", "male"}
    printed = stdout.split("primary metric")[1].split(":")[1].split()[0]
    assert float(printed) == pytest.approx(data["primary"]["estimate"]["value"], abs=5e-4)
    # the summary table: the catalog's labels as headers, one row per task and per partition class
    lines = stdout.splitlines()
    header = next(line for line in lines if line.strip().startswith("task "))
    assert header.split() == ["task", "AUC", "sensitivity", "specificity", "threshold", "chosen", "on"]
    mel = next(line for line in lines if line.strip().startswith("mel_vs_nv "))
    auc = data["tasks"]["mel_vs_nv"]["metrics"]["auc"]
    assert mel.split()[1] == f"{auc['value']:.3f}" and mel.split()[-1] == "validation"
    assert any(
        line.strip().startswith("three_way: recall of melanoma") and "argmax" in line for line in lines
    )


def test_test_thresholds_need_the_flag(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    args = [
        "--taxonomy",
        str(TAXONOMY),
        "--protocol",
        str(files["protocol"]),
        "--test",
        str(files["test0"]),
        "--out",
        str(tmp_path / "o"),
    ]
    code, _, err = _run(args, capsys)
    assert code == 1 and "no validation predictions" in err and len(err.strip().splitlines()) == 1
    code, stdout, err = _run(args + ["--allow-test-thresholds"], capsys)
    assert code == 0, err
    assert "THRESHOLDS CHOSEN ON TEST" in caplog.text and "ONLY 1 SEED" in caplog.text  # logged, not printed
    assert "THRESHOLDS CHOSEN ON TEST" not in stdout
    assert "3 warning(s): see the top of report.md" in stdout  # + subgroups without metadata
    assert json.loads((tmp_path / "o" / "report.json").read_text())["threshold_source"].startswith("test")


def _one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hierclf evaluate: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_unknown_task_node(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(PROTOCOL.replace("positive: [malignant]", "positive: [malignat]"))
    args = _base(files, tmp_path / "o")
    args[args.index("--protocol") + 1] = str(tmp_path / "p.yaml")
    _one_line_error(
        *_run(args, capsys)[::2], "p.yaml:9:", "unknown node 'malignat'", "did you mean 'malignant'"
    )


def test_overlapping_partition(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(
        PROTOCOL.replace("[benign, melanoma, keratinocyte_carcinoma]", "[benign, malignant, melanoma]")
    )
    args = _base(files, tmp_path / "o")
    args[args.index("--protocol") + 1] = str(tmp_path / "p.yaml")
    _one_line_error(*_run(args, capsys)[::2], "partition 'three_way'", "overlap")


def test_split_without_positives(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _base(files, tmp_path / "o", seeds=1)
    args[args.index("--test") + 1] = str(files["nomel"])
    _one_line_error(*_run(args, capsys)[::2], "nomel.npz", "task 'mel_vs_nv' has no positive samples")


def test_ids_not_in_metadata(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.csv").write_text("image_id,lesion_id,sex\nx,1,male\n")
    args = _base(files, tmp_path / "o") + ["--metadata", str(tmp_path / "m.csv")]
    _one_line_error(*_run(args, capsys)[::2], "sample ids", "are not in the metadata", "e.g. 'test10_0'")


def test_nan_probabilities(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _base(files, tmp_path / "o", seeds=1)
    args[args.index("--test") + 1] = str(files["nan"])
    _one_line_error(*_run(args, capsys)[::2], "nan.csv", "not a finite number")


def test_seed_count_mismatch(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _base(files, tmp_path / "o")
    args.remove(str(files["val1"]))
    _one_line_error(*_run(args, capsys)[::2], "1 --val and 2 --test files")


def test_missing_file_and_usage(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _base(files, tmp_path / "o", seeds=1)
    args[args.index("--test") + 1] = str(tmp_path / "nope.npz")
    _one_line_error(*_run(args, capsys)[::2], "nope.npz")
    assert main(["evaluate", "--taxonomy", str(TAXONOMY)]) == 2  # a usage error: its code, not SystemExit


def test_cancer_sensitivity_without_cancer_node(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = PROTOCOL.replace(
        "{metric: specificity_at_target_sensitivity, task: mel_vs_nv}",
        "{metric: cancer_sensitivity, partition: three_way}",
    )
    (tmp_path / "p.yaml").write_text(text)
    args = _base(files, tmp_path / "o")
    args[args.index("--protocol") + 1] = str(tmp_path / "p.yaml")
    _one_line_error(*_run(args, capsys)[::2], "p.yaml:6:", "cancer_sensitivity", "add `cancer_node: <node>`")
    (tmp_path / "p.yaml").write_text(text + "cancer_node: malignant\n")
    code, stdout, err = _run(args, capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "o" / "report.json").read_text())
    assert data["primary"]["estimate"] == data["partitions"]["three_way"]["metrics"]["cancer_sensitivity"]
    assert "primary metric cancer_sensitivity on three_way" in stdout


def test_save_replicates_and_seed_checks(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    code, stdout, err = _run(_base(files, out) + ["--save-replicates"], capsys)
    assert code == 0, err
    assert "replicates.npz" in stdout
    data = np.load(out / "replicates.npz")
    report = json.loads((out / "report.json").read_text())
    assert data["tasks/mel_vs_nv/metrics/auc"].shape == (2, 30)
    assert report["resampling"]["unit"] == "lesion_id" and len(report["seed_table"]) == 2
    # the same file twice is refused with one line; with the flag it is reported loudly
    args = _base(files, tmp_path / "d")
    args[args.index("--test") + 2] = str(files["test0"])
    _one_line_error(*_run(args, capsys)[::2], "DUPLICATE PREDICTIONS", "--allow-seed-mismatch")
    code, stdout, err = _run(args + ["--allow-seed-mismatch"], capsys)
    assert code == 0, err
    assert any(
        w.startswith("DUPLICATE PREDICTIONS")
        for w in json.loads((tmp_path / "d" / "report.json").read_text())["warnings"]
    )
    # a seed tested on other samples
    args = _base(files, tmp_path / "e")
    args[args.index("--test") + 2] = str(files["nomel"])
    _one_line_error(*_run(args, capsys)[::2], "DIFFERENT TEST SETS", "nomel.npz lacks")


def test_rounded_probabilities_and_bad_rollups(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 4-decimal CSV whose rows sum to 1 within the tolerance rolls up to P(malignant) = 1.0001: the
    report is written (the calibration step used to stop); rows far off stop with file, row and node."""
    from hierclf.evaluation.prediction_files import read_predictions

    tax = Taxonomy.from_yaml(TAXONOMY)
    p = read_predictions(files["test0"], tax)
    probs = np.round(p.probs, 4)
    mal = [tax.leaves.index(x) for x in tax.leaves_under("malignant")]
    probs[:5] = 0.0
    probs[:5, mal[0]], probs[:5, mal[1]] = 0.5001, 0.5  # rows summing to 1.0001
    header = "id," + ",".join(tax.leaves) + ",label,group\n"
    body = "".join(
        f"{i}," + ",".join(f"{v:.4f}" for v in row) + f",{lab},{g}\n"
        for i, row, lab, g in zip(p.ids, probs, p.labels, p.groups)
    )
    (tmp_path / "rounded.csv").write_text(header + body)
    text = PROTOCOL + "calibration_nodes: [malignant]\n"
    (tmp_path / "p.yaml").write_text(text)
    args = _base(files, tmp_path / "o", seeds=1)
    args[args.index("--test") + 1] = str(tmp_path / "rounded.csv")
    args[args.index("--protocol") + 1] = str(tmp_path / "p.yaml")
    code, _, err = _run(args, capsys)
    assert code == 0, err
    assert (
        json.loads((tmp_path / "o" / "report.json").read_text())["calibration_nodes"]["malignant"]["ece"][
            "value"
        ]
        is not None
    )


def test_blank_lesion_ids_warn(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = []
    for key in ("val0", "test0"):
        ids += np.load(files[key])["ids"].tolist()
    (tmp_path / "m.csv").write_text("image_id,lesion_id,sex\n" + "".join(f"{i},,male\n" for i in ids))
    args = _base(files, tmp_path / "o", seeds=1) + ["--metadata", str(tmp_path / "m.csv")]
    code, stdout, err = _run(args, capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert any("BLANK LESION_ID IDS: 240 of 240 test samples" in w for w in report["warnings"])
    auc = report["tasks"]["mel_vs_nv"]["metrics"]["auc"]
    assert auc["ci"][1] > auc["ci"][0] and auc["n_groups"] == auc["n"]
    assert "resampled one by one" in (tmp_path / "o" / "report.md").read_text()


def test_case_level_reads(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = np.load(files["test0"])["ids"].tolist()
    rng = np.random.default_rng(0)
    rows = [f"derm{r},{i},{int(rng.random() < 0.5)},{int(rng.integers(1, 6))}" for r in (1, 2) for i in ids]
    (tmp_path / "reads.csv").write_text("reader,case_id,decision,score\n" + "\n".join(rows) + "\n")
    out = tmp_path / "o"
    code, _, err = _run(_base(files, out, seeds=1) + ["--readers", str(tmp_path / "reads.csv")], capsys)
    assert code == 0, err
    data = json.loads((out / "report.json").read_text())
    study = data["tasks"]["mel_vs_nv"]["reader_study"]
    assert [r["reader"] for r in study["readers"]] == ["derm1", "derm2"]
    assert "p_value" in study["readers"][0]["matched_specificity"]["difference"]
    header = (out / "mrmc_long.csv").read_text().splitlines()[0]
    assert header == "task,reader,case,test,truth,rating"
    (tmp_path / "bad.csv").write_text("reader,case_id,decision\nderm1,nope,1\n")
    args = _base(files, tmp_path / "p", seeds=1) + ["--readers", str(tmp_path / "bad.csv")]
    _one_line_error(*_run(args, capsys)[::2], "not in the test set", "e.g. 'nope'")
