"""``hierclf rollup``: output against brute force, streaming, and one clear line per bad input."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from hierclf.cli import main
from hierclf.evaluation.prediction_files import Predictions, write_predictions
from hierclf.taxonomy.synthetic import random_taxonomy

REPO = Path(__file__).resolve().parents[1]
DERMAMNIST = str(REPO / "taxonomy" / "dermamnist.yaml")
ISIC_HEADER = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def parse(text: str) -> tuple[list[str], list[str], np.ndarray]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], [r[0] for r in rows[1:]], np.array([[float(v) for v in r[1:]] for r in rows[1:]])


def brute(probs: np.ndarray, tax, columns: tuple[str, ...], nodes: list[str]) -> np.ndarray:
    col = {c: i for i, c in enumerate(columns)}
    return np.stack(
        [sum(probs[:, col[c]] for c in ({n} | nx.descendants(tax.graph, n)) & set(col)) for n in nodes], 1
    )


@pytest.fixture
def isic_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=20)
    lines = [ISIC_HEADER] + [
        f"ISIC_{i:07d}," + ",".join(f"{v:.17g}" for v in row) for i, row in enumerate(probs)
    ]
    path = tmp_path / "isic.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_isic_csv_to_stdout(isic_csv: Path, dermamnist, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        [
            "rollup",
            "-t",
            DERMAMNIST,
            "-p",
            str(isic_csv),
            "--node",
            "malignant",
            "--node",
            "nv",
            "--node",
            "keratinocyte_carcinoma",
        ],
        capsys,
    )
    assert code == 0, err
    header, ids, values = parse(out)
    assert header == ["id", "malignant", "melanocytic_nevus", "keratinocyte_carcinoma"]
    assert ids == [f"ISIC_{i:07d}" for i in range(20)]
    text = isic_csv.read_text().splitlines()
    probs = np.array([[float(v) for v in line.split(",")[1:]] for line in text[1:]])
    columns = tuple(dermamnist.resolve(c) for c in ISIC_HEADER.split(",")[1:])
    expected = brute(probs, dermamnist, columns, ["malignant", "melanocytic_nevus", "keratinocyte_carcinoma"])
    np.testing.assert_allclose(values, expected, rtol=1e-7)


@pytest.mark.parametrize("chunk", ["1", "7", "1000"])
def test_npz_all_nodes_streamed_to_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], chunk: str
) -> None:
    tax = random_taxonomy(40, max_depth=5, seed=1)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(40), size=23).astype(np.float32)
    write_predictions(
        tmp_path / "p.npz", Predictions(probs, tax.leaves, ids=np.array([f"s{i}" for i in range(23)]))
    )
    (tmp_path / "tax.yaml").write_text(tax.to_yaml())
    out = tmp_path / "out" / "nodes.csv"
    code, stdout, err = run(
        [
            "rollup",
            "-t",
            str(tmp_path / "tax.yaml"),
            "-p",
            str(tmp_path / "p.npz"),
            "--all",
            "--out",
            str(out),
            "--chunk-size",
            chunk,
        ],
        capsys,
    )
    assert code == 0, err
    assert stdout == "" and "wrote 23 rows" in err
    header, ids, values = parse(out.read_text())
    assert header == ["id", *tax.nodes] and ids == [f"s{i}" for i in range(23)]
    np.testing.assert_allclose(
        values, brute(probs.astype(np.float64), tax, tax.leaves, list(tax.nodes)), atol=1e-6
    )
    assert [p.name for p in out.parent.iterdir()] == ["nodes.csv"]  # no temporary file left behind


def test_cut_columns_and_row_numbers_as_ids(
    tmp_path: Path, dermamnist, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.csv").write_text("malignant,benign\n0.25,0.75\n0.5,0.5\n")
    code, out, err = run(["rollup", "-t", DERMAMNIST, "-p", str(tmp_path / "p.csv"), "--all"], capsys)
    assert code == 0, err
    header, ids, values = parse(out)
    assert header == ["id", "skin_lesion", "benign", "malignant"] and ids == ["0", "1"]
    np.testing.assert_allclose(values, [[1, 0.75, 0.25], [1, 0.5, 0.5]])
    code, out, err = run(["rollup", "-t", DERMAMNIST, "-p", str(tmp_path / "p.csv"), "--node", "mel"], capsys)
    assert code == 1 and "'mel' lies below the input columns" in err and "'malignant'" in err


def test_normalize_and_logits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.csv").write_text(f"{ISIC_HEADER}\na,2,2,0,0,0,0,0\n")
    argv = ["rollup", "-t", DERMAMNIST, "-p", str(tmp_path / "p.csv"), "--node", "malignant"]
    code, _, err = run(argv, capsys)
    assert code == 1 and "sum to 4" in err
    code, out, err = run([*argv, "--normalize"], capsys)
    assert code == 0 and parse(out)[2].tolist() == [[0.5]]
    logits = np.array([1.0, -2.0, 0.5, 3.0, 0.0, -1.0, 2.0])
    (tmp_path / "l.csv").write_text(f"{ISIC_HEADER}\na," + ",".join(map(str, logits)) + "\n")
    code, out, err = run(
        ["rollup", "-t", DERMAMNIST, "-p", str(tmp_path / "l.csv"), "--node", "malignant", "--logits"], capsys
    )
    soft = np.exp(logits) / np.exp(logits).sum()
    assert code == 0, err
    np.testing.assert_allclose(parse(out)[2][0, 0], soft[[0, 2, 3]].sum(), rtol=1e-7)  # MEL, BCC, AKIEC
    (tmp_path / "z.csv").write_text(f"{ISIC_HEADER}\na,0,0,0,0,0,0,0\n")
    code, _, err = run(
        ["rollup", "-t", DERMAMNIST, "-p", str(tmp_path / "z.csv"), "--node", "malignant", "--normalize"],
        capsys,
    )
    assert code == 1 and "row 0 (id 'a'): probabilities sum to 0" in err


BAD_INPUTS = [
    (
        f"{ISIC_HEADER.replace('VASC', 'VASK')}\na,0.1,0.5,0.1,0.1,0.1,0.05,0.05\n",
        "unknown column 'VASK' (column 8; did you mean 'vasc'?)",
    ),
    (
        "image,MEL,NV,BCC,AKIEC,BKL,DF\na,0.1,0.5,0.1,0.1,0.1,0.1\n",
        "columns leave 1 leaf uncovered: 'vascular_lesion'",
    ),
    (
        f"{ISIC_HEADER}\na,0.1,0.5,0.1,0.1,0.1,0.05,0.05\na,0.1,0.5,0.1,0.1,0.1,0.05,0.05\n",
        ":3: error: duplicate sample id 'a'",
    ),
    (
        f"{ISIC_HEADER}\na,nan,0.5,0.1,0.1,0.1,0.05,0.05\n",
        ":2: error: row 0 (id 'a'): value nan in column 'MEL'",
    ),
    (f"{ISIC_HEADER}\na,-0.1,0.7,0.1,0.1,0.1,0.05,0.05\n", ":2: error: row 0 (id 'a'): negative probability"),
    (f"{ISIC_HEADER}\na,0.1,0.5,0.1,0.1,0.1,0.05,0.04\n", "sum to 0.99, expected 1 within 0.001"),
    (
        f"{ISIC_HEADER}\na,x,0.5,0.1,0.1,0.1,0.05,0.05\n",
        ":2:2: error: value 'x' in column 'MEL' is not a number",
    ),
    ("", "file is empty"),
]


@pytest.mark.parametrize(("text", "message"), BAD_INPUTS)
def test_bad_input_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    (tmp_path / "bad.csv").write_text(text)
    out_file = tmp_path / "out.csv"
    code, out, err = run(
        [
            "rollup",
            "-t",
            DERMAMNIST,
            "-p",
            str(tmp_path / "bad.csv"),
            "--node",
            "malignant",
            "--out",
            str(out_file),
        ],
        capsys,
    )
    assert code == 1
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out_file.exists()  # nothing half-written


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--node", "malignat"],
            "unknown node 'malignat' in taxonomy 'dermamnist'; did you mean 'malignant'?",
        ),
        (["--node", "malignant", "--node", "cancer"], "--node 'cancer' names node 'malignant' again"),
    ],
)
def test_bad_node_exit_1(
    isic_csv: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, out, err = run(["rollup", "-t", DERMAMNIST, "-p", str(isic_csv), *extra], capsys)
    assert code == 1 and message in err and out == ""


def test_missing_files_exit_1(tmp_path: Path, isic_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["rollup", "-t", DERMAMNIST, "-p", str(tmp_path / "none.csv"), "--all"], capsys)
    assert code == 1 and "none.csv: error: no such file" in err
    code, _, err = run(["rollup", "-t", str(tmp_path / "none.yaml"), "-p", str(isic_csv), "--all"], capsys)
    assert code == 1 and "none.yaml" in err


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--all", "--node", "malignant"],
        ["--all", "--normalize", "--logits"],
        ["--all", "--chunk-size", "0"],
        ["--all", "--digits", "30"],
    ],
)
def test_usage_errors_exit_2(isic_csv: Path, capsys: pytest.CaptureFixture[str], extra: list[str]) -> None:
    code, _, err = run(["rollup", "-t", DERMAMNIST, "-p", str(isic_csv), *extra], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "(see hierclf rollup --help)" in err


def test_real_entry_point_has_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text(f"{ISIC_HEADER}\na,0.5,0.5,0.5,0,0,0,0\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hierclf",
            "rollup",
            "-t",
            DERMAMNIST,
            "-p",
            str(tmp_path / "bad.csv"),
            "--node",
            "malignant",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("hierclf rollup: error: ") and "Traceback" not in proc.stderr
