"""The foundation: safe output (``hierclf.io.atomic``), CSV tables (``hierclf.io.csv_files``), pydantic errors
as problems (``hierclf.io.problems``) and the option lookup (``hierclf.options``)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hierclf.errors import FileFormatError, UnknownNameError
from hierclf.io.atomic import OutputIsInputError, OutputPathError, atomic_open, atomic_write_text
from hierclf.io.csv_files import read_csv_table
from hierclf.io.problems import fields_at, model_at, problems_from_validation_error
from hierclf.options import Registry, look_up_option

# --- safe output ---------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_gets_the_umask_mode_and_no_temporary_is_left(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "secret.txt"
    path.write_text("old")
    path.chmod(0o600)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o600


def test_symlink_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "made.csv")
    atomic_write_text(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "made.csv").read_text() == "made"


def test_character_device_is_streamed_to_not_replaced() -> None:
    before = os.stat("/dev/null")
    atomic_write_text("/dev/null", "discarded")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_fifo_is_streamed_to(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    atomic_write_text(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == ["through the pipe"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_output_that_is_an_input_is_refused_also_through_a_link(tmp_path: Path) -> None:
    src = tmp_path / "probs.csv"
    src.write_text("keep me")
    link = tmp_path / "alias.csv"
    link.symlink_to(src)
    for out in (src, link, tmp_path / "." / "probs.csv"):
        with pytest.raises(OutputIsInputError, match="the output is also an input"):
            atomic_write_text(out, "clobbered", inputs=[src])
    assert src.read_text() == "keep me"


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError, match="is a directory"):
        atomic_write_text(tmp_path, "x")


def test_failure_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "report.md"
    path.write_text("complete")
    with pytest.raises(RuntimeError), atomic_open(path) as fh:
        fh.write("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "complete" and sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


# --- CSV tables ---------------------------------------------------------------------------------------


def test_protected_inputs_cannot_be_replaced_by_any_write(tmp_path: Path) -> None:
    from hierclf.io.atomic import protected_inputs

    source = tmp_path / "metadata.csv"
    source.write_text("id,sex\n", encoding="utf-8")
    link = tmp_path / "report.md"
    link.symlink_to(source)
    with protected_inputs([source]):
        for target in (source, link):
            with pytest.raises(OutputIsInputError, match="the output is also an input"):
                atomic_write_text(target, "overwritten")
        with protected_inputs([tmp_path / "other.csv"]), pytest.raises(OutputIsInputError):  # nested: both
            atomic_write_text(source, "overwritten")
        atomic_write_text(tmp_path / "new.md", "fine")  # other files are written as usual
    assert source.read_text(encoding="utf-8") == "id,sex\n" and link.is_symlink()
    atomic_write_text(source, "after")  # outside, the file is the caller's to replace
    assert source.read_text(encoding="utf-8") == "after"


def test_output_folder_is_one_line_when_it_cannot_be_a_folder(tmp_path: Path) -> None:
    from hierclf.io.atomic import output_folder

    file = tmp_path / "val.csv"
    file.write_text("x", encoding="utf-8")
    assert output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    with pytest.raises(OutputPathError, match="val.csv: is a file, not a folder"):
        output_folder(file)
    with pytest.raises(OutputPathError, match="val.csv/sub: a folder above it is a file"):
        output_folder(file / "sub")
    with pytest.raises(OutputPathError, match="val.csv: is a file, not a folder"):
        atomic_write_text(file / "x.csv", "data")  # a file's folder that is a file
    assert file.read_text(encoding="utf-8") == "x"


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT", "EIO"])
def test_a_full_disk_is_one_line_and_the_old_file_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    import errno

    target = tmp_path / "report.json"
    target.write_text("old", encoding="utf-8")

    def full(fd: int) -> None:
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputPathError, match=r"report.json: cannot write it \(.+\); the file is unchanged"):
        atomic_write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "1: error: the file is empty; expected a header row"),
        (b"a,,b\n1,2,3\n", "1:2: error: column 2 has an empty name in the header"),
        (b"a,A\n1,2\n", "1:2: error: header repeats column 'A' (first as column 1)"),
        (b"a,b\n1,2\n3\n", "3: error: row has 1 fields, the header has 2"),
        (b"a,b\n1,2\n3,\xff\n", "3: error: byte 0xff is not UTF-8 text"),
        (b'a,b\n1,"2\n', "malformed CSV"),
    ],
)
def test_bad_csv_files_are_positioned(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_csv_table(path, what="test table")


def test_csv_required_column_with_suggestion_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("Image_ID,lesion\n a , L1 \n\nb,L2\n")
    table = read_csv_table(path, what="metadata", required=["image_id"])
    assert table.column("image_id").tolist() == ["a", "b"] and table.lines.tolist() == [2, 4]
    with pytest.raises(
        FileFormatError, match=r"t\.csv:1: error: unknown column 'lesion_id' .*did you mean 'lesion'"
    ):
        read_csv_table(path, what="metadata", required=["lesion_id"])


def test_csv_special_files_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(FileFormatError, match="not a regular file"):
        read_csv_table(fifo, what="metadata")  # would block forever if opened
    with pytest.raises(FileFormatError, match="file not found"):
        read_csv_table(tmp_path / "missing.csv", what="metadata")


# --- pydantic errors -------------------------------------------------------------------------------------


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(1, ge=1)
    kind: str = "a"


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: _Inner = _Inner()
    items: list[_Inner | None] = []


def test_pydantic_errors_become_positioned_lines() -> None:
    with pytest.raises(ValidationError) as err:
        _Outer.model_validate({"inner": {"size": 0, "sise": 2}, "items": [{"kind": 3}]})
    lines = [p.message for p in problems_from_validation_error(err.value, _Outer, file="x.yaml")]
    assert lines == [
        "top level: missing required field 'name'",
        "inner.size: must be >= 1, got 0",
        "inner: unknown field 'sise' (expected one of size, kind); did you mean 'size'?",
        "items[0].kind: expected text, got a number 3",
    ]


def test_models_are_found_by_walking_the_annotations() -> None:
    assert model_at(_Outer, ("items", 2)) is _Inner and model_at(_Outer, ("inner",)) is _Inner
    assert fields_at(_Outer, ()) == ("name", "inner", "items") and fields_at(_Outer, ("name",)) == ()


# --- options -------------------------------------------------------------------------------------------


def test_option_lookup_normalises_and_suggests() -> None:
    assert look_up_option(" Weighted-CE ", ("ce", "weighted_ce"), kind="loss") == "weighted_ce"
    with pytest.raises(UnknownNameError) as err:
        look_up_option("focl", ("ce", "focal"), kind="loss", context="for the test")
    assert (
        str(err.value) == "unknown loss 'focl' for the test (known losses: ce, focal); did you mean 'focal'?"
    )


def test_registry() -> None:
    reg: Registry[int] = Registry("sampler")

    @reg.register("one_thing")
    def build() -> int:
        """Builds one thing."""
        return 1

    reg.add("two", 2, summary="two")
    assert reg.names() == ("one_thing", "two") and reg.get("ONE-THING") is build and reg.get("two") == 2
    assert reg.entry("one_thing").summary == "Builds one thing." and "TWO" in reg and len(reg) == 2
    with pytest.raises(ValueError, match="already registered"):
        reg.add("One-Thing", 3)
    with pytest.raises(UnknownNameError, match="did you mean 'two'"):
        reg.get("tow")
