"""hierclf.data.datasets: the generated DermaMNIST npz read through medmnist's own class, the loader's label
mapping
and errors, users' CSV / folder data, the (image, class index) wrapper and the class-aware samplers."""

from __future__ import annotations

import csv
from pathlib import Path

import medmnist
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from hierclf import HierclfError, Taxonomy, UnknownNameError
from hierclf.data.datasets import (
    DERMAMNIST_COUNTS,
    ArrayImageDataset,
    CsvImageDataset,
    DermaMNISTData,
    TaxonomyImageDataset,
    dermamnist_filename,
    load_dermamnist,
    make_synthetic_dermamnist,
)
from hierclf.data.sampling import make_sampler, sampler_weights
from hierclf.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from hierclf.errors import FileFormatError

SMALL = {"n_train": 280, "n_val": 70, "n_test": 140}


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dermamnist(tmp_path_factory.mktemp("derma"), seed=3, **SMALL)


# --- the generated file ----------------------------------------------------------------------------------


def test_default_file_is_medmnist_compatible_with_official_counts(tmp_path: Path) -> None:
    path = make_synthetic_dermamnist(tmp_path)
    assert path == tmp_path / "dermamnist.npz"
    with np.load(path) as z:
        assert sorted(z.files) == sorted(
            f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")
        )
        for split, counts in DERMAMNIST_COUNTS.items():
            images, labels = z[f"{split}_images"], z[f"{split}_labels"]
            assert images.shape == (sum(counts), 28, 28, 3) and images.dtype == np.uint8
            assert labels.shape == (sum(counts), 1) and np.issubdtype(labels.dtype, np.integer)
            # the default class counts are exactly the real DermaMNIST ones (PROVENANCE.md)
            assert np.bincount(labels[:, 0], minlength=7).tolist() == list(counts)
    for split in ("train", "val", "test"):
        ds = medmnist.DermaMNIST(split=split, root=str(tmp_path), download=False)
        assert (
            len(ds) == medmnist.INFO["dermamnist"]["n_samples"][split]
        )  # medmnist's own assertion runs here
        image, target = ds[0]
        assert isinstance(image, Image.Image) and image.size == (28, 28) and image.mode == "RGB"
        assert target.shape == (1,) and 0 <= int(target[0]) < 7


@pytest.mark.parametrize("size", [28, 64])
def test_small_file_reads_through_medmnist_at_each_size(tmp_path: Path, size: int) -> None:
    path = make_synthetic_dermamnist(tmp_path, size=size, **SMALL)
    assert (
        path.name
        == ("dermamnist.npz" if size == 28 else f"dermamnist_{size}.npz")
        == dermamnist_filename(size)
    )
    ds = medmnist.DermaMNIST(split="val", root=str(tmp_path), size=size, download=False)
    assert ds.imgs.shape == (SMALL["n_val"], size, size, 3)
    image, target = ds[5]
    assert image.size == (size, size)
    with np.load(path) as z:
        assert int(target[0]) == int(z["val_labels"][5, 0])
        np.testing.assert_array_equal(np.asarray(image), z["val_images"][5])


def test_class_allocation_follows_real_proportions(small_npz: Path) -> None:
    with np.load(small_npz) as z:
        for split, real in DERMAMNIST_COUNTS.items():
            got = np.bincount(z[f"{split}_labels"][:, 0], minlength=7)
            n = SMALL[f"n_{split}"]
            assert got.sum() == n and (got >= 1).all()
            expected = np.asarray(real) / sum(real) * n  # independent: plain proportional share
            assert np.abs(got - expected).max() <= 7  # within the 1-per-class floor plus rounding


def test_explicit_class_counts_and_seed_reproducibility(tmp_path: Path) -> None:
    counts = {"train": [5, 0, 3, 1, 4, 9, 2]}
    a = make_synthetic_dermamnist(tmp_path / "a", n_val=7, n_test=7, class_counts=counts, seed=11)
    b = make_synthetic_dermamnist(tmp_path / "b", n_val=7, n_test=7, class_counts=counts, seed=11)
    c = make_synthetic_dermamnist(tmp_path / "c", n_val=7, n_test=7, class_counts=counts, seed=12)
    with np.load(a) as za, np.load(b) as zb, np.load(c) as zc:
        assert np.bincount(za["train_labels"][:, 0], minlength=7).tolist() == counts["train"]
        for key in za.files:
            np.testing.assert_array_equal(za[key], zb[key])
        assert not np.array_equal(za["train_images"], zc["train_images"])
    with pytest.raises(HierclfError, match="7 non-negative counts"):
        make_synthetic_dermamnist(tmp_path / "d", class_counts={"train": [1, 2]})
    with pytest.raises(UnknownNameError, match="did you mean 'train'"):
        make_synthetic_dermamnist(
            tmp_path / "d", n_train=7, n_val=7, n_test=7, class_counts={"trian": [1] * 7}
        )


def test_signal_is_learnable(small_npz: Path) -> None:
    """A class-weighted linear model on 4x4-pooled pixels is far above chance (training tests rely on it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    with np.load(small_npz) as z:

        def feats(split: str) -> np.ndarray:
            x = z[f"{split}_images"].astype(np.float32) / 255.0
            return x.reshape(x.shape[0], 7, 4, 7, 4, 3).mean(axis=(2, 4)).reshape(x.shape[0], -1)

        clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(
            feats("train"), z["train_labels"][:, 0]
        )
        pred = clf.predict(feats("test"))
        score = balanced_accuracy_score(z["test_labels"][:, 0], pred)
    assert score > 0.8  # chance is 1/7 = 0.14


def test_side_ids_file_groups_are_lesions(small_npz: Path) -> None:
    ids_file = small_npz.with_name("dermamnist_ids.csv")
    with open(ids_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(SMALL.values())
    with np.load(small_npz) as z:
        label_of = {
            (r["split"], int(r["index"])): int(z[f"{r['split']}_labels"][int(r["index"]), 0]) for r in rows
        }
    by_group: dict[str, set] = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add((r["split"], label_of[(r["split"], int(r["index"]))]))
    assert all(len(v) == 1 for v in by_group.values())  # one split and one class per lesion
    assert len(by_group) < len(rows)  # some lesions have several images
    assert len({r["id"] for r in rows}) == len(rows)


# --- load_dermamnist ---------------------------------------------------------------------------------------


def test_loader_maps_codes_to_taxonomy_leaves(small_npz: Path, dermamnist: Taxonomy) -> None:
    ds = load_dermamnist(small_npz.parent, "test", taxonomy=dermamnist)
    codes = dermamnist.codes("dermamnist")
    with np.load(small_npz) as z:
        raw = z["test_labels"][:, 0]
    assert ds.labels.tolist() == [codes[int(c)] for c in raw]
    assert set(ds.labels) <= set(dermamnist.leaves)
    assert ds.labels[raw == 4][0] == "melanoma" and ds.labels[raw == 5][0] == "melanocytic_nevus"
    assert ds.medmnist is not None and isinstance(ds.medmnist, medmnist.DermaMNIST)
    assert ds.groups is not None and ds.ids[0] == "syn_test_00000"
    image, label = ds[3]
    assert isinstance(image, Image.Image) and label == ds.labels[3]


def test_loader_default_ids_when_no_side_file(tmp_path: Path, dermamnist: Taxonomy) -> None:
    make_synthetic_dermamnist(tmp_path, write_ids=False, **SMALL)
    ds = load_dermamnist(tmp_path, "val", taxonomy=dermamnist)
    assert ds.groups is None
    assert ds.ids[:2].tolist() == ["dermamnist_val_00000", "dermamnist_val_00001"]
    data = DermaMNISTData.load(tmp_path, taxonomy=dermamnist)
    assert [len(data.train), len(data.val), len(data.test)] == [
        SMALL["n_train"],
        SMALL["n_val"],
        SMALL["n_test"],
    ]


def test_missing_file_says_which_file_goes_where(tmp_path: Path, dermamnist: Taxonomy) -> None:
    with pytest.raises(HierclfError) as err:
        load_dermamnist(tmp_path, "train", size=64, taxonomy=dermamnist)
    msg = str(err.value)
    assert (
        "'dermamnist_64.npz'" in msg and str(tmp_path) in msg and "download=True" in msg and "by hand" in msg
    )


def test_failed_download_is_a_clear_error(
    tmp_path: Path, dermamnist: Taxonomy, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(self: object) -> None:
        raise RuntimeError("Automatic download failed! Please download dermamnist_128.npz manually.")

    monkeypatch.setattr(medmnist.DermaMNIST, "download", no_network)  # never a real download in tests
    root = tmp_path / "new"
    with pytest.raises(HierclfError, match=r"dermamnist_128\.npz.*download failed.*by hand"):
        load_dermamnist(root, "train", size=128, download=True, taxonomy=dermamnist)
    assert root.is_dir()


def test_bad_arguments(small_npz: Path, dermamnist: Taxonomy) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'test'"):
        load_dermamnist(small_npz.parent, "tset", taxonomy=dermamnist)
    with pytest.raises(HierclfError, match="28, 64, 128, 224"):
        load_dermamnist(small_npz.parent, "test", size=32, taxonomy=dermamnist)


def test_taxonomy_without_dermamnist_codes(small_npz: Path, dermamnist: Taxonomy) -> None:
    tree = Taxonomy.from_text(
        "name: t\nroot:\n  id: r\n  name: R\n  children:\n"
        "    - {id: a, name: A, codes: {isic: 0}}\n    - {id: b, name: B, codes: {isic: 1}}\n"
    )
    with pytest.raises(UnknownNameError, match="unknown dataset 'dermamnist'"):
        load_dermamnist(small_npz.parent, "test", taxonomy=tree)
    partial = Taxonomy.from_text(
        "name: t\nroot:\n  id: r\n  name: R\n  children:\n"
        + "".join(f"    - {{id: c{i}, name: C{i}, codes: {{dermamnist: {i}}}}}\n" for i in range(5))
    )
    with pytest.raises(HierclfError, match=r"code\(s\) \[5, 6\]"):
        load_dermamnist(small_npz.parent, "train", taxonomy=partial)


def test_wrong_layout_is_reported(tmp_path: Path, dermamnist: Taxonomy) -> None:
    bad = tmp_path / "mine.npz"
    np.savez(bad, train_images=np.zeros((3, 28, 28), np.float32), train_labels=np.zeros((3, 1), np.int64))
    with pytest.raises(FileFormatError, match=r"train_images must be \(n, 28, 28, 3\) uint8"):
        load_dermamnist(tmp_path, "train", npz=bad, taxonomy=dermamnist)
    with pytest.raises(FileFormatError, match="missing array 'val_images'"):
        load_dermamnist(tmp_path, "val", npz=bad, taxonomy=dermamnist)


def test_explicit_npz_with_own_name(tmp_path: Path, dermamnist: Taxonomy) -> None:
    path = make_synthetic_dermamnist(tmp_path / "elsewhere.npz", **SMALL)
    ds = load_dermamnist(tmp_path, "val", npz=path, taxonomy=dermamnist)
    assert len(ds) == SMALL["n_val"] and ds.medmnist is None and ds.groups is not None


# --- TaxonomyImageDataset --------------------------------------------------------------------------------


def test_taxonomy_dataset_with_dict_mapping(small_npz: Path, dermamnist: Taxonomy) -> None:
    source = load_dermamnist(small_npz.parent, "val", taxonomy=dermamnist)
    mapping = {leaf: i for i, leaf in enumerate(dermamnist.leaves)}
    ds = TaxonomyImageDataset(source, mapping)
    assert ds.targets.dtype == torch.int64
    assert ds.targets.tolist() == [mapping[lab] for lab in source.labels]
    x, y = ds[0]
    assert x.shape == (3, 28, 28) and x.dtype == torch.float32 and y == mapping[source.labels[0]]
    # default transform is the shared preprocessing: normalised with the documented statistics
    raw = torch.from_numpy(source.images[0]).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(x, (raw - mean) / std)
    batch, targets = next(iter(DataLoader(ds, batch_size=16)))
    assert batch.shape == (16, 3, 28, 28) and targets.dtype == torch.int64
    assert ds.ids is source.ids and ds.groups is source.groups and ds.labels is source.labels


def test_taxonomy_dataset_with_callable_and_cut(small_npz: Path, dermamnist: Taxonomy) -> None:
    source = load_dermamnist(small_npz.parent, "val", taxonomy=dermamnist)
    cut = dermamnist.cut(["benign", "malignant"])
    calls = []

    def class_index(labels: list[str]) -> torch.Tensor:  # the LeafHead.class_index contract
        calls.append(labels)
        return torch.tensor(
            [
                cut.index("malignant" if "malignant" in dermamnist.ancestors(lab) else "benign")
                for lab in labels
            ]
        )

    ds = TaxonomyImageDataset(source, class_index)
    assert len(calls) == 1 and len(calls[0]) == len(set(source.labels))  # called once on the unique labels
    expected = [1 if "malignant" in dermamnist.ancestors(lab) else 0 for lab in source.labels]
    assert ds.targets.tolist() == expected


def test_taxonomy_dataset_with_leaf_head(small_npz: Path, dermamnist: Taxonomy) -> None:
    head_mod = pytest.importorskip("hierclf.nn.head")
    source = load_dermamnist(small_npz.parent, "val", taxonomy=dermamnist)
    head = head_mod.LeafHead(8, dermamnist)
    ds = TaxonomyImageDataset(source, head.class_index)
    assert ds.targets.tolist() == [list(head.classes).index(lab) for lab in source.labels]


def test_unmapped_label_is_named(dermamnist: Taxonomy) -> None:
    source = ArrayImageDataset(np.zeros((2, 4, 4, 3), np.uint8), ["melanoma", "melanocytic_nevus"])
    with pytest.raises(UnknownNameError, match="melanocytic_nevus"):
        TaxonomyImageDataset(source, {"melanoma": 0})


# --- users' own data ----------------------------------------------------------------------------------------


def _write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(folder / name)


def test_csv_dataset_resolves_aliases(tmp_path: Path, dermamnist: Taxonomy) -> None:
    _write_images(tmp_path / "img", ["a.png", "b.png", "c.png", "d.png"])
    (tmp_path / "list.csv").write_text(
        "path,label,patient\nimg/a.png,mel,P1\nimg/b.png,NV,P1\n"
        'img/c.png,"Melanoma, NOS",P2\nimg/d.png,basal_cell_carcinoma,P3\n'
    )
    ds = CsvImageDataset(tmp_path / "list.csv", dermamnist, group_column="patient")
    assert ds.labels.tolist() == ["melanoma", "melanocytic_nevus", "melanoma", "basal_cell_carcinoma"]
    assert ds.groups.tolist() == ["P1", "P1", "P2", "P3"]
    assert ds.ids.tolist() == ["img/a.png", "img/b.png", "img/c.png", "img/d.png"]
    image = ds.load_image(0)
    assert image.size == (12, 10) and image.mode == "RGB"
    tds = TaxonomyImageDataset(ds, {leaf: i for i, leaf in enumerate(dermamnist.leaves)})
    assert tds[1][0].shape == (3, 10, 12)


def test_csv_dataset_reports_every_bad_row(tmp_path: Path, dermamnist: Taxonomy) -> None:
    _write_images(tmp_path, ["a.png"])
    (tmp_path / "list.csv").write_text(
        "path,label\na.png,melanomma\na.png,nv\nmissing.png,nv\na.png,melanomma\n"
    )
    with pytest.raises(FileFormatError) as err:
        CsvImageDataset(tmp_path / "list.csv", dermamnist, id_column=None)
    problems = err.value.problems
    label_problem = next(p for p in problems if p.code == "unknown-label")
    assert label_problem.line == 2 and label_problem.column == 2
    assert "did you mean 'melanoma'" in label_problem.message and "lines 2, 5" in label_problem.message
    missing = [p for p in problems if p.code == "missing-file"]
    assert [p.line for p in missing] == [4] and "missing.png" in missing[0].message
    assert str(err.value).startswith(f"{tmp_path / 'list.csv'}:2:2: error: unknown node 'melanomma'")


def test_csv_dataset_column_and_id_errors(tmp_path: Path, dermamnist: Taxonomy) -> None:
    _write_images(tmp_path, ["a.png"])
    (tmp_path / "list.csv").write_text("path,diagnosis\na.png,mel\na.png,nv\n")
    with pytest.raises(FileFormatError, match="unknown column 'label'"):
        CsvImageDataset(tmp_path / "list.csv", dermamnist)
    with pytest.raises(HierclfError, match="sample ids must be unique; repeated: 'a.png'"):
        CsvImageDataset(tmp_path / "list.csv", dermamnist, label_column="diagnosis")


def test_image_folder_mode(tmp_path: Path, dermamnist: Taxonomy) -> None:
    _write_images(tmp_path / "mel", ["1.png", "2.jpg"])
    _write_images(tmp_path / "Melanocytic nevus", ["3.png"])
    ds = CsvImageDataset.from_folder(tmp_path, dermamnist)
    assert ds.labels.tolist() == ["melanocytic_nevus", "melanoma", "melanoma"]
    assert ds.ids.tolist() == ["Melanocytic nevus/3.png", "mel/1.png", "mel/2.jpg"]
    _write_images(tmp_path / "melanomma", ["4.png"])
    with pytest.raises(UnknownNameError, match="did you mean 'melanoma'"):
        CsvImageDataset.from_folder(tmp_path, dermamnist)


# --- samplers -----------------------------------------------------------------------------------------------


def _class_probabilities(weights: torch.Tensor, labels: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(labels, weights=weights.numpy(), minlength=k) / float(weights.sum())


def test_balanced_sampler_hand_computation() -> None:
    pytest.importorskip("hierclf.nn.losses")
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    w = sampler_weights(labels, "balanced")
    # by hand: every sample of class c weighs proportional to 1 / n_c, so each class is drawn w.p. 1/3
    np.testing.assert_allclose(_class_probabilities(w, labels, 3), [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(w[labels == 2][0] / w[labels == 0][0], 6.0, rtol=1e-6)


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999])
def test_effective_sampler_hand_computation(beta: float) -> None:
    pytest.importorskip("hierclf.nn.losses")
    n = np.array([60, 30, 10])
    labels = np.repeat(np.arange(3), n)
    w = sampler_weights(labels, "effective", beta=beta)
    per_class = n * (1 - beta) / (1 - beta**n)  # Cui et al.: n_c * w_c with w_c = (1-b)/(1-b^n_c)
    np.testing.assert_allclose(_class_probabilities(w, labels, 3), per_class / per_class.sum(), rtol=1e-5)


def test_empty_class_is_never_drawn_and_nothing_is_nan() -> None:
    pytest.importorskip("hierclf.nn.losses")
    labels = torch.tensor([0, 0, 0, 2, 2, 3])
    for scheme in ("balanced", "effective"):
        w = sampler_weights(labels, scheme, n_classes=5)
        assert torch.isfinite(w).all() and (w > 0).all() and w.shape == (6,)
        probs = _class_probabilities(w, labels.numpy(), 5)
        assert probs[1] == 0 and probs[4] == 0
    np.testing.assert_allclose(
        _class_probabilities(sampler_weights(labels, "balanced", n_classes=5), labels.numpy(), 5),
        [1 / 3, 0, 1 / 3, 1 / 3, 0],
        rtol=1e-6,
    )


def test_balanced_sampler_draws_near_uniform_classes() -> None:
    pytest.importorskip("hierclf.nn.losses")
    labels = np.repeat(np.arange(7), DERMAMNIST_COUNTS["train"])
    sampler = make_sampler(labels, "balanced", num_samples=70_000, generator=torch.Generator().manual_seed(0))
    assert sampler is not None and sampler.num_samples == 70_000 and sampler.replacement
    drawn = labels[np.fromiter(iter(sampler), dtype=np.int64)]
    freq = np.bincount(drawn, minlength=7) / drawn.size
    np.testing.assert_allclose(freq, 1 / 7, atol=0.01)  # the data is 67 % nevi
    assert make_sampler(labels, "uniform") is None


def test_sampler_accepts_names_and_rejects_bad_input() -> None:
    pytest.importorskip("hierclf.nn.losses")
    names = np.array(["mel"] * 3 + ["nv"] * 9)
    np.testing.assert_allclose(
        _class_probabilities(sampler_weights(names, "balanced"), (names == "nv").astype(np.int64), 2),
        [0.5, 0.5],
    )
    with pytest.raises(UnknownNameError, match="did you mean 'balanced'"):
        make_sampler([0, 1], "balnced")
    with pytest.raises(HierclfError, match="out of range"):
        make_sampler([0, 3], "balanced", n_classes=2)
    with pytest.raises(HierclfError, match="zero samples"):
        make_sampler([], "balanced")


def test_ham10000_metadata_as_an_image_list(shared_data: Path, dermamnist: Taxonomy) -> None:
    """The real HAM10000 metadata names images by id; every `dx` code resolves through the shipped tree's
    aliases and lesion ids become groups."""
    metadata = shared_data / "HAM10000_metadata.csv"
    ds = CsvImageDataset(
        metadata,
        dermamnist,
        image_root=shared_data / "HAM10000_images",
        path_column="image_id",
        path_suffix=".jpg",
        label_column="dx",
        group_column="lesion_id",
        id_column="image_id",
        check_files=False,
    )
    with open(metadata, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(ds) == len(rows) == 10_015 and np.unique(ds.groups).size == 7_470
    codes = dermamnist.codes("dermamnist")
    dx_to_leaf = {dx: codes[i] for i, dx in enumerate(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])}
    assert ds.labels.tolist() == [dx_to_leaf[r["dx"]] for r in rows]  # HAM code order = DermaMNIST code order
    assert ds.paths[0] == shared_data / "HAM10000_images" / f"{rows[0]['image_id']}.jpg"
    assert ds.ids.tolist() == [r["image_id"] for r in rows]


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(0, 50), min_size=2, max_size=8).filter(lambda c: sum(c) > 0),
    beta=st.sampled_from([0.9, 0.99, 0.999, 0.9999]),
)
def test_property_sampler_class_probabilities(counts: list[int], beta: float) -> None:
    pytest.importorskip("hierclf.nn.losses")
    n = np.asarray(counts)
    labels = np.repeat(np.arange(n.size), n)
    present = n > 0
    balanced = _class_probabilities(sampler_weights(labels, "balanced", n_classes=n.size), labels, n.size)
    np.testing.assert_allclose(balanced, np.where(present, 1 / present.sum(), 0.0), rtol=1e-5, atol=1e-12)
    effective = _class_probabilities(
        sampler_weights(labels, "effective", beta=beta, n_classes=n.size), labels, n.size
    )
    by_hand = np.where(present, n * (1 - beta) / (1 - beta ** np.maximum(n, 1)), 0.0)
    np.testing.assert_allclose(effective, by_hand / by_hand.sum(), rtol=1e-4, atol=1e-12)


def test_loader_workers_and_split_transforms(small_npz: Path, dermamnist: Taxonomy) -> None:
    from hierclf.data.transforms import eval_transform, train_transform

    data = DermaMNISTData.load(
        small_npz.parent,
        taxonomy=dermamnist,
        train_transform=train_transform(28),
        eval_transform=eval_transform(28),
    )
    mapping = {leaf: i for i, leaf in enumerate(dermamnist.leaves)}
    val = TaxonomyImageDataset(data.val, mapping)  # the source's eval transform is used
    serial = torch.stack([val[i][0] for i in range(len(val))])
    batches = list(DataLoader(val, batch_size=32, num_workers=2))  # the dataset pickles into workers
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), serial)
    assert torch.equal(torch.cat([b[1] for b in batches]), val.targets)
    train = TaxonomyImageDataset(data.train, mapping)
    assert train.transform is data.train.transform and train[0][0].shape == (3, 28, 28)
