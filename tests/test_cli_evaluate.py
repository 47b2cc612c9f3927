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


def _preds(tax: Taxonomy, n: int, seed: int, prefix: str) -> Predictions:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
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
            p = _preds(tax, n, seed + (10 if split == "test" else 0), split)
            preds[f"{split}{seed}"] = p
            out[f"{split}{seed}"] = d / f"{split}{seed}.npz"
            write_predictions(out[f"{split}{seed}"], p)
    (d / "protocol.yaml").write_text(PROTOCOL)
    out["protocol"] = d / "protocol.yaml"
    with open(d / "meta.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "lesion_id", "sex"])
        for p in preds.values():
            for i, g in zip(p.ids, p.groups):
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
    assert data["n_seeds"] == 2 and data["warnings"] == []
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
