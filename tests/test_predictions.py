"""Prediction files (contract 2): round trips, ISIC CSVs, streaming, and every bad input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from hierclf.evaluation.prediction_files import (
    Predictions,
    PredictionsError,
    open_predictions,
    read_predictions,
    write_predictions,
)

ISIC_HEADER = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"


def _random(n: int, k: int, seed: int = 0, dtype: type = np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(k), size=n)
    return p.astype(dtype)


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(tmp_path: Path, suffix: str, dtype: type) -> None:
    ids = np.array([f"s{i}" for i in range(50)])
    p = Predictions(
        _random(50, 4, dtype=dtype),
        ("a", "b", "c", "d"),
        ids=ids,
        labels=np.array(["a", "b"] * 25),
        groups=np.array([f"p{i // 3}" for i in range(50)]),
    )
    write_predictions(tmp_path / f"p{suffix}", p)
    q = read_predictions(tmp_path / f"p{suffix}")
    assert q.columns == p.columns
    np.testing.assert_array_equal(q.probs.astype(dtype), p.probs)  # CSV digits read back bit-exact
    for name in ("ids", "labels", "groups"):
        np.testing.assert_array_equal(getattr(q, name), getattr(p, name))


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_optional_fields_stay_absent(tmp_path: Path, suffix: str) -> None:
    p = Predictions(_random(3, 2), ("a", "b"))
    write_predictions(tmp_path / f"p{suffix}", p)
    q = read_predictions(tmp_path / f"p{suffix}")
    assert q.ids is None and q.labels is None and q.groups is None
    np.testing.assert_allclose(q.probs, p.probs, rtol=0, atol=0)


def test_isic_challenge_csv_resolves_aliases(tmp_path: Path, dermamnist) -> None:
    rows = ["ISIC_0000000,0.1,0.5,0.1,0.1,0.1,0.05,0.05", "ISIC_0000001,1,0,0,0,0,0,0"]
    (tmp_path / "sub.csv").write_text("\n".join([ISIC_HEADER, *rows]) + "\n")
    p = read_predictions(tmp_path / "sub.csv", dermamnist)
    expected = tuple(dermamnist.resolve(c) for c in ISIC_HEADER.split(",")[1:])
    assert p.columns == expected
    assert set(p.columns) == set(dermamnist.leaves)  # all seven ISIC codes resolve to distinct leaves
    assert p.ids.tolist() == ["ISIC_0000000", "ISIC_0000001"]
    np.testing.assert_allclose(p.probs[0], [0.1, 0.5, 0.1, 0.1, 0.1, 0.05, 0.05])


def test_labels_resolve_through_aliases(tmp_path: Path, dermamnist) -> None:
    text = "id,MEL,NV,BCC,AKIEC,BKL,DF,VASC,label\na,1,0,0,0,0,0,0,mel\nb,0,1,0,0,0,0,0,NV\n"
    (tmp_path / "p.csv").write_text(text)
    labels = read_predictions(tmp_path / "p.csv", dermamnist).labels
    assert labels.tolist() == ["melanoma", "melanocytic_nevus"]


def test_cut_columns_are_accepted(tmp_path: Path, dermamnist) -> None:
    cut = ("benign", "malignant")
    write_predictions(tmp_path / "p.npz", Predictions(_random(4, 2), cut))
    assert read_predictions(tmp_path / "p.npz", dermamnist).columns == cut


def test_npz_without_leaves_uses_taxonomy_order(tmp_path: Path, dermamnist) -> None:
    np.savez(tmp_path / "p.npz", probs=_random(3, 7))
    assert read_predictions(tmp_path / "p.npz", dermamnist).columns == dermamnist.leaves
    with pytest.raises(PredictionsError, match="no 'leaves' array"):
        read_predictions(tmp_path / "p.npz")


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_streams_in_blocks(tmp_path: Path, compressed: bool) -> None:
    probs = _random(103, 5, dtype=np.float32)
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "p.npz", probs=probs, leaves=np.array(list("abcde")), ids=np.arange(103).astype(str))
    with open_predictions(tmp_path / "p.npz") as reader:
        assert reader.n_rows == 103
        blocks = list(reader.chunks(10))
    assert [len(b) for b in blocks] == [10] * 10 + [3]
    np.testing.assert_array_equal(np.concatenate([b.probs for b in blocks]), probs)
    assert np.concatenate([b.ids for b in blocks]).tolist() == [str(i) for i in range(103)]


def test_csv_streams_in_blocks(tmp_path: Path) -> None:
    p = Predictions(_random(25, 3), ("a", "b", "c"), ids=np.arange(25).astype(str))
    write_predictions(tmp_path / "p.csv", p)
    with open_predictions(tmp_path / "p.csv") as reader:
        assert reader.n_rows is None
        sizes = [len(b) for b in reader.chunks(7)]
    assert sizes == [7, 7, 7, 4]


# --- bad input --------------------------------------------------------------------------------------------


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", "empty"),
        (
            "image,MEL,NV,BCC,AKIEC,BKL,DF,VASK\nx,0.1,0.5,0.1,0.1,0.1,0.05,0.05\n",
            r"unknown column 'VASK' \(column 8; did you mean 'vasc'\?\).*"
            r"columns leave 1 leaf uncovered: 'vascular_lesion'",
        ),
        (
            "image,MEL,NV,BCC,AKIEC,BKL,DF\nx,0.1,0.5,0.1,0.1,0.2,0.1\n",
            "columns leave 1 leaf uncovered: 'vascular_lesion'",
        ),
        (
            "image,MEL,melanoma,NV,BCC,AKIEC,BKL,DF,VASC\nx,0,0.1,0.5,0.1,0.1,0.1,0.05,0.05\n",
            "header repeats|overlap",
        ),
        (
            "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nx,0.1,0.5,0.1,0.1,0.1,0.05,0.05\nx,0.1,0.5,0.1,0.1,0.1,0.05,0.05\n",
            r"bad.csv:3: error: duplicate sample id 'x'",
        ),
        (
            "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nx,nan,0.5,0.1,0.1,0.1,0.05,0.05\n",
            r"bad.csv:2: .*in column 'MEL' is not a finite number",
        ),
        ("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nx,-0.1,0.7,0.1,0.1,0.1,0.05,0.05\n", r"bad.csv:2: .*negative"),
        ("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nx,0.5,0.5,0.1,0.1,0.1,0.05,0.05\n", r"bad.csv:2: .*sum to 1.4"),
        (
            "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nx,abc,0.5,0.1,0.1,0.1,0.05,0.05\n",
            r"bad.csv:2:2: .*'abc' in column 'MEL' is not a number",
        ),
        ("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nx,0.5,0.5\n", r"bad.csv:2: .*3 fields, the header has 8"),
        ("imgae,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nx,0.1,0.5,0.1,0.1,0.1,0.05,0.05\n", "did you mean 'image'"),
    ],
)
def test_bad_csv_is_reported_with_position(tmp_path: Path, dermamnist, text: str, pattern: str) -> None:
    with pytest.raises(PredictionsError, match=pattern):
        read_predictions(_csv(tmp_path, text), dermamnist)


def test_unknown_label(tmp_path: Path, dermamnist) -> None:
    path = _csv(tmp_path, "id,MEL,NV,BCC,AKIEC,BKL,DF,VASC,label\na,1,0,0,0,0,0,0,melanomma\n")
    pattern = r"bad.csv:2: .*unknown node 'melanomma'.*did you mean 'melanoma'"
    with pytest.raises(PredictionsError, match=pattern):
        read_predictions(path, dermamnist)


def test_duplicate_ids_across_blocks(tmp_path: Path) -> None:
    ids = np.array(["a", "b", "c", "a"])
    np.savez(tmp_path / "p.npz", probs=_random(4, 2), leaves=np.array(["x", "y"]), ids=ids)
    pattern = "duplicate sample id 'a' at row 3"
    with open_predictions(tmp_path / "p.npz") as reader, pytest.raises(PredictionsError, match=pattern):
        list(reader.chunks(2))


def test_row_sum_check_can_be_relaxed(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", probs=np.array([[2.0, -1.0]]), leaves=np.array(["x", "y"]))
    with pytest.raises(PredictionsError, match="row 0: negative probability -1"):
        read_predictions(tmp_path / "p.npz")
    assert read_predictions(tmp_path / "p.npz", check_probs=False).probs.tolist() == [[2.0, -1.0]]


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"scores": np.zeros((2, 2))}, "no 'probs' array"),
        ({"probs": np.zeros(3)}, "must be 2-D"),
        ({"probs": np.zeros((2, 2), int), "leaves": np.array(["a", "b"])}, "floating point"),
        ({"probs": np.full((2, 2), 0.5), "leaves": np.array(["a"])}, "names 1 columns but 'probs' has 2"),
        ({"probs": np.full((2, 2), 0.5), "leaves": np.array(["a", "b"]), "ids": np.array(["x"])}, "ids"),
        (
            {
                "probs": np.full((2, 2), 0.5),
                "leaves": np.array(["a", "b"]),
                "ids": np.array([{}, {}], dtype=object),
            },
            "without pickles",
        ),
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict, pattern: str) -> None:
    np.savez(tmp_path / "p.npz", **arrays)
    with pytest.raises(PredictionsError, match=pattern):
        read_predictions(tmp_path / "p.npz")


def test_not_a_zip_and_wrong_suffix(tmp_path: Path) -> None:
    (tmp_path / "p.npz").write_text("hello")
    with pytest.raises(PredictionsError, match="not a valid .npz"):
        read_predictions(tmp_path / "p.npz")
    (tmp_path / "p.txt").write_text("hello")
    with pytest.raises(PredictionsError, match="expected .npz, .csv or .parquet"):
        read_predictions(tmp_path / "p.txt")
    with pytest.raises(PredictionsError, match="no such file"):
        read_predictions(tmp_path / "missing.csv")


def test_predictions_object_checks_itself() -> None:
    with pytest.raises(PredictionsError, match="3 columns but 2"):
        Predictions(np.zeros((2, 3)), ("a", "b"))
    with pytest.raises(PredictionsError, match="duplicate sample id 'x'"):
        Predictions(np.zeros((2, 2)), ("a", "b"), ids=np.array(["x", "x"]))
    with pytest.raises(PredictionsError, match="repeat"):
        Predictions(np.zeros((2, 2)), ("a", "a"))


def test_write_is_atomic_npz_has_no_pickles(tmp_path: Path) -> None:
    p = Predictions(_random(3, 2), ("a", "b"), ids=np.array(["x", "y", "z"]))
    write_predictions(tmp_path / "p.npz", p)
    with zipfile.ZipFile(tmp_path / "p.npz") as zf:
        assert sorted(zf.namelist()) == ["ids.npy", "leaves.npy", "probs.npy"]
    np.load(tmp_path / "p.npz", allow_pickle=False)["ids"]  # loads without pickles
    assert [f.name for f in tmp_path.iterdir()] == ["p.npz"]  # no temporary file left
