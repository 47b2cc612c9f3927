"""Prediction files at scale: Parquet round trips in row groups, metadata / split / seed columns in every
format, the file's info, pyarrow's CSV reader with the Python reader locating problems, and TableWriter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hierclf.data.sources import STANDARD_METADATA
from hierclf.evaluation.prediction_files import (
    METADATA_COLUMNS,
    Predictions,
    PredictionsError,
    TableWriter,
    open_predictions,
    read_predictions,
    write_predictions,
)
from hierclf.evaluation.prediction_formats import CsvFile, round_significant

pa = pytest.importorskip("pyarrow", reason="pyarrow is a core dependency; these tests need it installed")
import pyarrow.parquet as pq  # noqa: E402

SUFFIXES = (".npz", ".csv", ".parquet")


def _full(n: int = 40, dtype: type = np.float64) -> Predictions:
    rng = np.random.default_rng(0)
    return Predictions(
        rng.dirichlet(np.ones(3), size=n).astype(dtype),
        ("nevus", "melanoma", "bcc"),
        ids=np.array([f"ISIC_{i:07d}" for i in range(n)]),
        labels=np.array(["nevus", "melanoma"] * n)[:n],
        groups=np.array([f"HAM_{i // 2}" for i in range(n)]),
        split=np.array(["test"] * n),
        seed=np.full(n, 3),
        metadata={
            "sex": np.array(["male", "female", ""] * n)[:n],
            "age": np.array([str(30 + i % 50) for i in range(n)]),
            "dx_type": np.array(["histo", "follow_up"] * n)[:n],
            "scanner": np.array(["a, b", 'x "y"'] * n)[:n],  # a non-standard column, text that needs quotes
        },
        info={"split_level": "lesion", "source": "ham10000"},
    )


def test_standard_metadata_names_agree_across_layers() -> None:
    assert METADATA_COLUMNS == STANDARD_METADATA  # the data and evaluation layers cannot import each other


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_field_round_trips(tmp_path: Path, suffix: str, dtype: type) -> None:
    p = _full(dtype=dtype)
    write_predictions(tmp_path / f"p{suffix}", p)
    q = read_predictions(tmp_path / f"p{suffix}")
    assert q.columns == p.columns
    np.testing.assert_array_equal(q.probs.astype(dtype), p.probs)
    for name in ("ids", "labels", "groups", "split", "seed"):
        np.testing.assert_array_equal(getattr(q, name), getattr(p, name))
    assert q.seed is not None and q.seed.dtype == np.int64
    assert set(q.metadata) == set(p.metadata)
    for name, values in p.metadata.items():
        assert q.metadata[name].tolist() == values.tolist(), name
    assert q.info == (p.info if suffix != ".csv" else {})  # a CSV has no place for the file's facts


def test_parquet_is_typed_and_describes_itself(tmp_path: Path) -> None:
    write_predictions(tmp_path / "p.parquet", _full(dtype=np.float32), chunk_size=16)
    f = pq.ParquetFile(tmp_path / "p.parquet")
    assert f.metadata.num_row_groups == 3  # 16 + 16 + 8 rows: one row group per block
    schema = f.schema_arrow
    fields = ["id", "nevus", "melanoma", "bcc", "label", "group", "split", "seed"]
    assert schema.names == [*fields, "sex", "age", "dx_type", "meta:scanner"]
    assert str(schema.field("melanoma").type) == "float" and str(schema.field("seed").type) == "int64"
    q = read_predictions(tmp_path / "p.parquet")
    assert q.probs.dtype == np.float32  # float32 stays float32


def test_parquet_reads_in_row_groups_with_flat_memory(tmp_path: Path) -> None:
    n = 50_000
    p = Predictions(np.full((n, 4), 0.25), ("a", "b", "c", "d"), ids=np.arange(n).astype(str))
    write_predictions(tmp_path / "p.parquet", p, chunk_size=10_000)
    with open_predictions(tmp_path / "p.parquet") as reader:
        assert reader.n_rows == n
        sizes = [len(b) for b in reader.chunks(7_000)]
    assert sizes == [7_000] * 7 + [1_000]


def test_foreign_parquet_reads_by_the_csv_rules(tmp_path: Path, dermamnist) -> None:
    table = pa.table(
        {
            "image": ["ISIC_1", "ISIC_2"],
            "MEL": [0.2, 0.0],
            "NV": [0.8, 1.0],
            "BCC": [0.0] * 2,
            "AKIEC": [0.0] * 2,
            "BKL": [0.0] * 2,
            "DF": [0.0] * 2,
            "VASC": [0.0] * 2,
            "sex": ["f", "m"],
        }
    )
    pq.write_table(table, tmp_path / "sub.parquet")
    q = read_predictions(tmp_path / "sub.parquet", dermamnist)
    assert q.ids is not None and q.ids.tolist() == ["ISIC_1", "ISIC_2"]
    assert q.columns[:2] == ("melanoma", "melanocytic_nevus") and q.metadata == {"sex": q.metadata["sex"]}
    bad = table.set_column(1, "MEL", pa.array(["x", "y"]))
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(PredictionsError, match="probability column 'MEL' has type string; expected numbers"):
        read_predictions(tmp_path / "bad.parquet", dermamnist)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(PredictionsError, match="not a valid Parquet file"):
        read_predictions(tmp_path / "junk.parquet")


def test_csv_metadata_columns_are_not_probabilities(tmp_path: Path) -> None:
    text = "id,a,b,sex,meta:batch,split,seed\nx,0.5,0.5,f,1,val,2\ny,1,0,m,2,val,2\n"
    (tmp_path / "p.csv").write_text(text)
    q = read_predictions(tmp_path / "p.csv")
    assert q.columns == ("a", "b") and q.metadata["batch"].tolist() == ["1", "2"]
    assert q.split is not None and q.split.tolist() == ["val", "val"]
    assert q.seed is not None and q.seed.tolist() == [2, 2]
    (tmp_path / "bad.csv").write_text("id,a,b,seed\nx,0.5,0.5,two\n")
    with pytest.raises(PredictionsError, match=r"bad.csv:2: error: seed 'two' is not a whole number"):
        read_predictions(tmp_path / "bad.csv")


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("x,0.5,0.5\ny,abc,0.5\n", r"p.csv:3:2: error: value 'abc' in column 'a' is not a number"),
        ("x,0.5,0.5\ny,,1\n", r"p.csv:3:2: error: value '' in column 'a' is not a number"),
        ("x,0.5,0.5\ny,0.5\n", r"p.csv:3: error: row has 2 fields, the header has 3"),
        ("x,0.5,0.5\n\ny,0.7,0.5\n", r"p.csv:4: error: row 1 \(id 'y'\): probabilities sum to 1.2"),
        ("x,0.5,0.5\nx,0.5,0.5\n", r"p.csv:3: error: duplicate sample id 'x'"),
    ],
)
def test_problems_found_by_pyarrow_are_located_by_python(tmp_path: Path, body: str, pattern: str) -> None:
    (tmp_path / "p.csv").write_text("id,a,b\n" + body)
    with pytest.raises(PredictionsError, match=pattern):
        read_predictions(tmp_path / "p.csv")


def test_fast_and_python_readers_agree(tmp_path: Path) -> None:
    p = _full(203)
    write_predictions(tmp_path / "p.csv", p)
    text = (tmp_path / "p.csv").read_text().replace(",0.", ", 0.", 5)  # spaces pyarrow refuses mid-file
    (tmp_path / "q.csv").write_text(text)
    for name in ("p.csv", "q.csv"):
        for fast in (True, False):
            with _blocks(tmp_path / name, fast) as got:
                probs, fields = got
            np.testing.assert_allclose(probs, p.probs, rtol=1e-15)
            assert fields["ids"].tolist() == p.ids.tolist()  # type: ignore[union-attr]
            assert fields["metadata.scanner"].tolist() == p.metadata["scanner"].tolist()


class _blocks:
    """All blocks of a CSV file, read fast (pyarrow, then Python) or by Python alone, joined."""

    def __init__(self, path: Path, fast: bool) -> None:
        self.reader = CsvFile(path, fast=fast)

    def __enter__(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        blocks = list(self.reader.blocks(50))
        assert [b[0].shape[0] for b in blocks] == [50, 50, 50, 50, 3]
        probs = np.concatenate([b[0] for b in blocks])
        return probs, {k: np.concatenate([b[1][k] for b in blocks]) for k in blocks[0][1]}

    def __exit__(self, *exc: object) -> None:
        self.reader.close()


def test_table_writer_csv_parquet_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = np.array(["a", "b,c"])
    values = np.array([[1 / 3, 2 / 3], [0.1, 0.9]])
    with TableWriter(tmp_path / "n.csv", ["x", "y"], digits=4) as out:
        out.write(ids, values)
    assert (tmp_path / "n.csv").read_text() == 'id,x,y\n"a",0.3333,0.6667\n"b,c",0.1,0.9\n'
    with TableWriter(tmp_path / "n.parquet", ["x", "y"]) as out:
        out.write(ids, values)
        out.write(ids[:1], values[:1])
    table = pq.read_table(tmp_path / "n.parquet")
    assert table.column("id").to_pylist() == ["a", "b,c", "a"]
    np.testing.assert_array_equal(table.column("x").to_numpy(), [1 / 3, 0.1, 1 / 3])
    with TableWriter(None, ["x"]) as out:
        out.write(np.array(["r"]), np.array([[0.25]]))
    assert capsys.readouterr().out == "id,x\nr,0.25\n"
    with pytest.raises(RuntimeError), TableWriter(tmp_path / "never.csv", ["x"]) as out:
        out.write(np.array(["r"]), np.array([[0.25]]))
        raise RuntimeError("the input failed half way")
    assert not (tmp_path / "never.csv").exists()  # nothing published
    with TableWriter(tmp_path / "empty.csv", ["x", "y"]):
        pass
    assert (tmp_path / "empty.csv").read_text() == "id,x,y\n"


def test_round_significant_prints_like_printf() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random(2000), rng.random(200) * 1e-9, [0.0, 1.0, 0.5, 1e-300]])
    for digits in (1, 3, 8, 12):
        rounded = round_significant(x, digits)
        expected = np.array([float(f"{v:.{digits}g}") for v in x.tolist()])
        np.testing.assert_array_equal(rounded[:-1], expected[:-1])  # 1e-300: a power beyond exact doubles
    assert round_significant(x, 17) is not None and np.array_equal(round_significant(x, 17), x)


def test_a_metadata_name_may_not_clash() -> None:
    with pytest.raises(PredictionsError, match="metadata column 'label' clashes"):
        Predictions(np.full((1, 2), 0.5), ("a", "b"), metadata={"label": np.array(["x"])})
    with pytest.raises(PredictionsError, match="metadata column 'A' clashes"):
        Predictions(np.full((1, 2), 0.5), ("a", "b"), metadata={"A": np.array(["x"])})
    with pytest.raises(PredictionsError, match=r"metadata 'sex' must have shape \(1,\)"):
        Predictions(np.full((1, 2), 0.5), ("a", "b"), metadata={"sex": np.array(["x", "y"])})


def test_csv_without_pyarrow_writes_the_same_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hierclf.evaluation.prediction_formats as formats

    p = _full(10)
    write_predictions(tmp_path / "fast.csv", p)
    monkeypatch.setattr(formats, "_pyarrow", lambda: None)
    write_predictions(tmp_path / "slow.csv", p)
    a, b = read_predictions(tmp_path / "fast.csv"), read_predictions(tmp_path / "slow.csv")
    np.testing.assert_array_equal(a.probs, b.probs)
    assert a.metadata["scanner"].tolist() == b.metadata["scanner"].tolist()
    (tmp_path / "x.parquet").touch()
    with pytest.raises(PredictionsError, match="Parquet files need pyarrow: pip install pyarrow"):
        read_predictions(tmp_path / "x.parquet")


def test_metadata_from_prediction_files_is_the_evaluations_table(tmp_path: Path) -> None:
    from hierclf.evaluation.prediction_files import metadata_from_predictions

    seeds = []
    for seed in (0, 1):  # two seeds of a study: the same images, the same metadata
        p = _full(6)
        p.seed = np.full(6, seed)
        write_predictions(tmp_path / f"test_seed{seed}.parquet", p)
        seeds.append(tmp_path / f"test_seed{seed}.parquet")
    table = metadata_from_predictions(seeds)
    assert table.ids.tolist() == [f"ISIC_{i:07d}" for i in range(6)]
    rows = table.lookup(np.array(["ISIC_0000002", "ISIC_0000000"]), "test")
    assert table.column("sex")[rows].tolist() == ["(missing)", "male"]  # empty cells as a metadata CSV reads
    assert table.column("group")[rows].tolist() == ["HAM_1", "HAM_0"]
    other = _full(6)
    other.metadata["sex"] = np.array(["female"] * 6)
    with pytest.raises(PredictionsError, match="sample 'ISIC_0000000' has two values of metadata 'sex'"):
        metadata_from_predictions([seeds[0], other])
    assert metadata_from_predictions([Predictions(np.full((1, 2), 0.5), ("a", "b"))]) is None
