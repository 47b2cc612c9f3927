"""Published-layout sources (HAM10000, ISIC 2019, ISIC 2020, generic) on small generated folders, split
files, and lesion-grouped splits of the real HAM10000 metadata."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hierclf.data.datasets import SourceImages, TaxonomyImageDataset, load_source_splits
from hierclf.data.sources import PRESETS, read_source, source_spec
from hierclf.data.split_files import read_split_file, split_of, write_split_file
from hierclf.data.splits import LeakageError
from hierclf.errors import FileFormatError, HierclfError, UnknownNameError
from hierclf.taxonomy.tree import Taxonomy

HAM_CODES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
ISIC2019_COLUMNS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _image(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(path)


@pytest.fixture
def ham_folder(tmp_path: Path) -> Path:
    """HAM10000 as downloaded: the metadata CSV and two image folders (the Dataverse layout)."""
    root = tmp_path / "HAM10000"
    rows = []
    rng = np.random.default_rng(0)
    for i in range(140):
        lesion = f"HAM_{i // 2:07d}"  # two images per lesion
        code = HAM_CODES[(i // 2) % 7]
        image = f"ISIC_{i:07d}"
        rows.append([lesion, image, code, "histo" if i % 3 else "follow_up", 40 + i % 30, "male", "back"])
        _image(root / f"HAM10000_images_part_{1 + i % 2}" / f"{image}.jpg", int(rng.integers(0, 255)))
    header = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    _write_csv(root / "HAM10000_metadata.csv", header, rows)
    return root


def test_ham10000_preset_reads_the_download_layout(ham_folder: Path, dermamnist: Taxonomy) -> None:
    table = read_source(source_spec("ham10000", root=ham_folder), dermamnist)
    assert len(table) == 140 and table.level == "lesion"
    assert table.groups[:4].tolist() == ["HAM_0000000", "HAM_0000000", "HAM_0000001", "HAM_0000001"]
    assert table.labels[:4].tolist() == [
        "actinic_keratosis_intraepithelial_carcinoma",
        "actinic_keratosis_intraepithelial_carcinoma",
        "basal_cell_carcinoma",
        "basal_cell_carcinoma",
    ]
    assert set(table.metadata) == {"sex", "age", "site", "dx_type", "lesion_id"}  # standard names
    assert table.metadata["site"][0] == "back" and table.metadata["dx_type"][:2].tolist() == [
        "follow_up",
        "histo",
    ]
    # images are found in either part folder, by id
    assert table.paths[0].parent.name == "HAM10000_images_part_1"
    assert table.paths[1].parent.name == "HAM10000_images_part_2"
    assert all(p.is_file() and p.stem == i for p, i in zip(table.paths, table.ids.tolist()))


def test_ham10000_splits_by_lesion_and_reuses_its_file(
    ham_folder: Path, dermamnist: Taxonomy, tmp_path: Path
) -> None:
    split_file = tmp_path / "runs" / "split.csv"
    spec = source_spec("ham10000", root=ham_folder)
    first, assignment = load_source_splits(spec, dermamnist, split_file=split_file, seed=3)
    assert assignment.made and assignment.level == "lesion" and split_file.is_file()
    # independent check: no lesion in two splits, every image in exactly one
    where: dict[str, set[str]] = {}
    for name, part in first.items():
        for g in part.groups.tolist():
            where.setdefault(g, set()).add(name)
    assert len(where) == 70 and all(len(s) == 1 for s in where.values())
    assert sum(len(p) for p in first.values()) == 140
    with open(split_file, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["level"] for r in rows] == ["lesion"] * 140 and rows[0]["id"] == "ISIC_0000000"
    # a later run reads the file, whatever seed it asks for
    again, reread = load_source_splits(spec, dermamnist, split_file=split_file, seed=99)
    assert not reread.made
    for name in first:
        assert first[name].ids.tolist() == again[name].ids.tolist()
    # the training view: image tensors and class indices; metadata rides along
    part = again["val"]
    assert isinstance(part, SourceImages) and part.split_level == "lesion" and part.source_name == "ham10000"
    assert part.metadata["sex"].shape == (len(part),)
    ds = TaxonomyImageDataset(part, {leaf: k for k, leaf in enumerate(dermamnist.leaves)})
    image, target = ds[0]
    assert tuple(image.shape)[0] == 3 and target == dermamnist.leaves.index(part.labels[0])


def test_unknown_labels_are_listed_with_lines_and_suggestions(ham_folder: Path, dermamnist: Taxonomy) -> None:
    meta = ham_folder / "HAM10000_metadata.csv"
    text = meta.read_text().splitlines()
    text[3] = text[3].replace(",bcc,", ",bcx,")
    text[5] = text[5].replace(",bkl,", ",nevvus,")
    meta.write_text("\n".join(text) + "\n")
    with pytest.raises(FileFormatError) as info:
        read_source(source_spec("ham10000", root=ham_folder), dermamnist)
    messages = [str(p) for p in info.value.problems]
    assert messages == [
        f"{meta}:4:3: error: unknown node 'bcx' in taxonomy 'dermamnist' (source ham10000); did you mean "
        "'bcc'? (column 'dx', line 4)",
        f"{meta}:6:3: error: unknown node 'nevvus' in taxonomy 'dermamnist' (source ham10000); did you mean "
        "'Nevus'? (column 'dx', line 6)",
    ]


def test_missing_and_repeated_images_are_reported(ham_folder: Path, dermamnist: Taxonomy) -> None:
    (ham_folder / "HAM10000_images_part_1" / "ISIC_0000000.jpg").unlink()
    _image(ham_folder / "elsewhere" / "ISIC_0000002.jpg")
    with pytest.raises(FileFormatError) as info:
        read_source(source_spec("ham10000", root=ham_folder), dermamnist)
    codes = [(p.code, p.line) for p in info.value.problems]
    assert codes == [("missing-file", 2), ("ambiguous-file", 4)]
    assert "found twice" in info.value.problems[1].message


def test_repeated_ids_and_missing_columns(tmp_path: Path, dermamnist: Taxonomy) -> None:
    path = _write_csv(
        tmp_path / "m.csv", ["lesion_id", "image_id", "dx"], [["L1", "a", "mel"], ["L2", "a", "nv"]]
    )
    with pytest.raises(FileFormatError, match=r"m.csv:3:2: error: sample id 'a' repeats \(first at line 2\)"):
        read_source(source_spec("ham10000", table=path, images=tmp_path), dermamnist, check_files=False)
    path = _write_csv(tmp_path / "n.csv", ["lesion_id", "imageid", "dx"], [["L1", "a", "mel"]])
    with pytest.raises(FileFormatError, match="unknown column 'image_id'.*did you mean 'imageid'"):
        read_source(source_spec("ham10000", table=path, images=tmp_path), dermamnist)


@pytest.fixture
def isic2019_folder(tmp_path: Path) -> Path:
    root = tmp_path / "isic2019"
    gt, meta = [], []
    for i in range(60):
        image = f"ISIC_{i:07d}"
        onehot = [0.0] * len(ISIC2019_COLUMNS)
        onehot[i % 7] = 1.0
        gt.append([image, *onehot])
        lesion = "" if i % 10 == 0 else f"L{i // 3}"
        meta.append([image, 55, "anterior torso", lesion, "female"])
        _image(root / "ISIC_2019_Training_Input" / f"{image}.jpg")
    _write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image", *ISIC2019_COLUMNS], gt)
    header = ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
    _write_csv(root / "ISIC_2019_Training_Metadata.csv", header, meta)
    return root


ISIC_TREE = """\
name: isic_demo
root:
  id: lesion
  name: Skin lesion
  children:
    - id: benign
      name: Benign
      source_aliases: {isic2020: [unknown]}
      children:
        - {id: nevus, name: Nevus, aliases: [nv]}
        - id: seborrheic_keratosis
          name: Seborrheic keratosis
          aliases: [bkl]
          source_aliases: {isic2020: [lentigo NOS]}
        - {id: dermatofibroma, name: Dermatofibroma, aliases: [df]}
        - {id: vascular, name: Vascular lesion, aliases: [vasc]}
    - id: malignant
      name: Malignant
      children:
        - {id: melanoma, name: Melanoma, aliases: [mel]}
        - {id: bcc, name: Basal cell carcinoma}
        - {id: actinic_keratosis, name: Actinic keratosis, source_aliases: {isic2019: [AK], isic2020: [ak]}}
        - {id: scc, name: Squamous cell carcinoma}
"""


@pytest.fixture(scope="module")
def isic_tax() -> Taxonomy:
    return Taxonomy.from_text(ISIC_TREE)


def test_isic2019_one_hot_labels_and_joined_metadata(isic2019_folder: Path, isic_tax: Taxonomy) -> None:
    table = read_source(source_spec("isic2019", root=isic2019_folder), isic_tax)
    expected = [
        "melanoma",
        "nevus",
        "bcc",
        "actinic_keratosis",
        "seborrheic_keratosis",
        "dermatofibroma",
        "vascular",
    ]
    assert table.labels[:7].tolist() == expected  # AK through the isic2019 scope
    assert table.level == "lesion"
    assert table.groups[0] == "image:ISIC_0000000"  # no lesion id: a group of its own
    assert table.groups[1] == table.groups[2] == "L0"
    assert table.metadata["site"][0] == "anterior torso" and table.metadata["age"][0] == "55"


def test_isic2019_bad_one_hot_rows_are_positioned(isic2019_folder: Path, isic_tax: Taxonomy) -> None:
    gt = isic2019_folder / "ISIC_2019_Training_GroundTruth.csv"
    lines = gt.read_text().splitlines()
    lines[2] = lines[2].replace("0.0", "1.0", 1)  # two ones
    lines[4] = lines[4].replace("1.0", "0.0", 1)  # none
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(FileFormatError) as info:
        read_source(source_spec("isic2019", root=isic2019_folder), isic_tax)
    assert [(p.line, p.code) for p in info.value.problems] == [(3, "one-hot"), (5, "one-hot")]


def _isic2020_folder(root: Path, diagnoses: list[str]) -> Path:
    rows = []
    for i, diagnosis in enumerate(diagnoses):
        image = f"ISIC_{i:07d}"
        patient = f"IP_{i // 4:07d}"  # four images per patient, two lesions each
        rows.append([image, patient, f"IL_{i // 2:07d}", "male", 45, "torso", diagnosis, "benign", 0])
        _image(root / "train" / f"{image}.jpg")
    header = [
        "image_name",
        "patient_id",
        "lesion_id",
        "sex",
        "age_approx",
        "anatom_site_general_challenge",
        "diagnosis",
        "benign_malignant",
        "target",
    ]
    _write_csv(root / "ISIC_2020_Training_GroundTruth_v2.csv", header, rows)
    return root


def test_isic2020_groups_by_patient_and_labels_internal_nodes(tmp_path: Path, isic_tax: Taxonomy) -> None:
    diagnoses = ["unknown", "nevus", "melanoma", "lentigo NOS"] * 20
    root = _isic2020_folder(tmp_path / "isic2020", diagnoses)
    table = read_source(source_spec("isic2020", root=root), isic_tax)
    assert table.level == "patient" and table.groups[:5].tolist() == ["IP_0000000"] * 4 + ["IP_0000001"]
    # "unknown" (most of ISIC 2020) is a partial label: the benign node itself, through the isic2020 scope
    assert table.labels[:4].tolist() == ["benign", "nevus", "melanoma", "seborrheic_keratosis"]
    assert set(table.metadata) == {"sex", "age", "site", "lesion_id", "patient_id"}
    lesion = read_source(source_spec("isic2020", root=root), isic_tax, group_by="lesion")
    assert lesion.level == "lesion" and lesion.groups[0] == "IL_0000000"
    assignment = split_of(
        table.ids, table.labels, table.groups, level="patient", file=None, test_fraction=0.25
    )
    owners: dict[str, set[str]] = {}
    for name, rows in assignment.splits.items():
        for g in table.groups[rows].tolist():
            owners.setdefault(g, set()).add(name)
    assert all(len(s) == 1 for s in owners.values())


def test_isic2020_without_the_alias_names_the_unknown_label(tmp_path: Path) -> None:
    tax = Taxonomy.from_text(
        ISIC_TREE.replace("source_aliases: {isic2020: [unknown]}", "aliases: [harmless]")
    )
    root = _isic2020_folder(tmp_path / "isic2020", ["unknown", "nevus"] * 4)
    with pytest.raises(
        FileFormatError, match=r"unknown node 'unknown' in taxonomy 'isic_demo'.*lines 2, 4, 6, 8"
    ):
        read_source(source_spec("isic2020", root=root), tax)


def test_generic_source_with_paths_scopes_and_metadata(tmp_path: Path, isic_tax: Taxonomy) -> None:
    rows = []
    for i in range(12):
        rel = f"batch{i % 2}/img{i}.png"
        _image(tmp_path / "images" / rel)
        rows.append([f"s{i}", rel, ["AK", "Nevus", "MEL"][i % 3], f"P{i // 3}", "IV" if i % 2 else "II"])
    table_path = _write_csv(
        tmp_path / "list.csv", ["sample", "file", "diagnosis", "patient", "skin_type"], rows
    )
    spec = source_spec(
        "generic",
        table=table_path,
        images=tmp_path / "images",
        columns={
            "id": "sample",
            "path": "file",
            "label": "diagnosis",
            "patient": "patient",
            "metadata": {"fitzpatrick": "skin_type"},
        },
        alias_scopes=["isic2019"],
    )
    table = read_source(spec, isic_tax)
    assert table.labels[:3].tolist() == ["actinic_keratosis", "nevus", "melanoma"]
    assert table.level == "patient" and table.groups[:4].tolist() == ["P0", "P0", "P0", "P1"]
    assert list(table.metadata) == ["fitzpatrick"]
    assert table.metadata["fitzpatrick"].tolist() == ["II", "IV"] * 6
    assert table.paths[1] == tmp_path / "images" / "batch1" / "img1.png"
    with pytest.raises(UnknownNameError, match="unknown column field 'lable'.*did you mean 'label'"):
        source_spec("generic", table=table_path, columns={"lable": "x"})
    with pytest.raises(HierclfError, match="cannot group by lesion: no lesion column"):
        read_source(spec, isic_tax, group_by="lesion")


def test_presets_and_missing_files(tmp_path: Path) -> None:
    assert PRESETS.names() == ("ham10000", "isic2019", "isic2020", "generic")
    with pytest.raises(UnknownNameError, match="did you mean 'ham10000'"):
        source_spec("ham1000", root=tmp_path)
    with pytest.raises(
        HierclfError, match=r"no table of the isic2020 preset in .*looked for ISIC_2020_Training"
    ):
        source_spec("isic2020", root=tmp_path)


# --- split files -----------------------------------------------------------------------------------------


def _tiny_source() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.array([f"i{k}" for k in range(40)])
    labels = np.array(["a", "b"] * 20)
    groups = np.array([f"g{k // 2}" for k in range(40)])
    return ids, labels, groups


def test_split_file_round_trip_and_stale_files(tmp_path: Path) -> None:
    ids, labels, groups = _tiny_source()
    path = tmp_path / "split.csv"
    made = split_of(ids, labels, groups, level="lesion", file=path, val_fraction=0.25, test_fraction=0.25)
    read = read_split_file(path, ids, groups, level="lesion")
    for name in made.splits:
        np.testing.assert_array_equal(made.splits[name], read[name])
    # the source lost an image, or gained one: the file was made for other data
    with pytest.raises(FileFormatError, match="1 images of the split file are not in the source"):
        read_split_file(path, ids[1:], groups[1:])
    with pytest.raises(FileFormatError, match="1 of the source's 41 images are not in the split file"):
        read_split_file(path, np.append(ids, "new"), np.append(groups, "gnew"))
    # the groups changed so that a group now spans two splits
    regrouped = np.where(np.isin(ids, ids[made.splits["test"][:1]]), "g_train_0", groups)
    regrouped[made.splits["train"][0]] = "g_train_0"
    with pytest.raises(LeakageError, match="1 lesion"):
        read_split_file(path, ids, regrouped, level="lesion")


def test_split_file_names_are_checked(tmp_path: Path) -> None:
    ids, labels, groups = _tiny_source()
    path = tmp_path / "split.csv"
    splits = {"train": np.arange(0, 30), "val": np.arange(30, 35), "test": np.arange(35, 40)}
    write_split_file(path, ids, splits, groups, labels, level="lesion")
    text = path.read_text().replace("i31,val", "i31,valid").replace("i32,val", "i32,Val")
    path.write_text(text)
    with pytest.raises(FileFormatError) as info:
        read_split_file(path, ids)
    assert [(p.line, p.message) for p in info.value.problems] == [
        (33, "unknown split 'valid' (known splits: test, train, val); did you mean 'val'?"),
        (34, "split 'Val' must be written in lower case"),
    ]


def test_real_ham10000_lesion_split(shared_data: Path, dermamnist: Taxonomy, tmp_path: Path) -> None:
    """The real metadata: zero shared lesions, every class in every split, and the file reproduces it."""
    spec = source_spec("ham10000", table=shared_data / "HAM10000_metadata.csv", images=tmp_path)
    table = read_source(spec, dermamnist, check_files=False)
    assert len(table) == 10_015 and table.level == "lesion" and np.unique(table.groups).size == 7_470
    path = tmp_path / "split.csv"
    made = split_of(table.ids, table.labels, table.groups, level="lesion", file=path, seed=0)
    lesions = {name: set(table.groups[rows].tolist()) for name, rows in made.splits.items()}
    assert not lesions["train"] & lesions["val"] and not lesions["train"] & lesions["test"]
    assert not lesions["val"] & lesions["test"]
    assert sum(len(v) for v in lesions.values()) == 7_470
    for name, rows in made.splits.items():
        assert set(table.labels[rows].tolist()) == set(dermamnist.leaves), name  # every class everywhere
    again = split_of(table.ids, table.labels, table.groups, level="lesion", file=path, seed=5)
    assert not again.made
    for name in made.splits:
        np.testing.assert_array_equal(made.splits[name], again.splits[name])
    # the reference-standard mix travels as metadata
    dx_type, counts = np.unique(table.metadata["dx_type"], return_counts=True)
    assert dict(zip(dx_type.tolist(), counts.tolist())) == {
        "confocal": 69,
        "consensus": 902,
        "follow_up": 3704,
        "histo": 5340,
    }


def test_prediction_info_says_how_a_source_was_split(
    ham_folder: Path, dermamnist: Taxonomy, tmp_path: Path
) -> None:
    from hierclf.data.datasets import load_dermamnist, prediction_info

    splits, _ = load_source_splits(source_spec("ham10000", root=ham_folder), dermamnist, split_file=None)
    assert prediction_info(splits["test"]) == {"split_level": "lesion", "source": "ham10000"}
    from hierclf.data.datasets import make_synthetic_dermamnist

    npz = make_synthetic_dermamnist(tmp_path / "d.npz", n_train=14, n_val=14, n_test=14, write_ids=False)
    official = prediction_info(load_dermamnist(tmp_path, "test", npz=npz, taxonomy=dermamnist), "dermamnist")
    assert official["split_level"] == "image" and official["source"] == "dermamnist"
    assert official["notice"].startswith("split by image: images of one lesion may be in training and test")
