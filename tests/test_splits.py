"""hierclf.data.splits: lesion-grouped splits on the real HAM10000 metadata (and why image-level splits leak),
the fraction-to-fold rule, the leakage check, and invariants on random groupings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hierclf import HierclfError
from hierclf.data.splits import (
    HAM10000Split,
    LeakageError,
    check_no_leakage,
    find_leakage,
    grouped_split,
    ham10000_split,
    split_proportions,
)
from hierclf.errors import FileFormatError


@pytest.fixture(scope="module")
def ham(shared_data: Path) -> HAM10000Split:
    return ham10000_split(shared_data / "HAM10000_metadata.csv", val_fraction=0.1, test_fraction=0.2, seed=0)


def _split_of_each_lesion(result: HAM10000Split) -> dict[str, set[str]]:
    """Independent of hierclf: which splits each lesion's images went to, by a plain loop."""
    where: dict[str, set[str]] = {}
    for name, idx in result.splits.items():
        for i in idx.tolist():
            where.setdefault(str(result.lesion_ids[i]), set()).add(name)
    return where


def test_ham10000_lesion_grouped_split(ham: HAM10000Split) -> None:
    n = ham.image_ids.size
    assert n == 10_015 and np.unique(ham.lesion_ids).size == 7_470 and np.unique(ham.image_ids).size == n
    # the three splits partition the rows
    together = np.concatenate(list(ham.splits.values()))
    np.testing.assert_array_equal(np.sort(together), np.arange(n))
    # zero leakage: every lesion in exactly one split (checked by a plain loop, then by hierclf)
    where = _split_of_each_lesion(ham)
    assert len(where) == 7_470 and all(len(s) == 1 for s in where.values())
    assert find_leakage(ham.splits, ham.lesion_ids) == {}
    check_no_leakage(ham.splits, ham.lesion_ids)
    # fractions are of lesions: test = 1/5 of them, val = 1/8 of the rest = 1/10 of all
    lesions_per_split = {k: np.unique(ham.lesion_ids[v]).size for k, v in ham.splits.items()}
    assert abs(lesions_per_split["test"] / 7_470 - 0.2) < 0.005
    assert abs(lesions_per_split["val"] / 7_470 - 0.1) < 0.005


def test_ham10000_class_proportions_follow_the_whole(ham: HAM10000Split) -> None:
    classes, props = split_proportions(ham.dx, ham.splits)
    assert classes.tolist() == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    overall = np.array([np.mean(ham.dx == c) for c in classes])  # independent of split_proportions
    for name, p in props.items():
        np.testing.assert_allclose(p, overall, atol=0.01, err_msg=name)
        # relative tolerance too, so the rare classes (df 1.1 %, vasc 1.4 %) are really kept
        np.testing.assert_allclose(p, overall, rtol=0.15, err_msg=name)


def test_image_level_split_leaks_on_ham10000(ham: HAM10000Split) -> None:
    """Why grouping matters: an ordinary stratified image-level split puts one lesion's images on both
    sides."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(ham.image_ids.size)
    train, test = train_test_split(idx, test_size=0.2, stratify=ham.dx, random_state=0)
    splits = {"train": train, "test": test}
    leaks = find_leakage(splits, ham.lesion_ids)
    shared = leaks[("train", "test")]
    # independent count: lesions seen in both index sets
    expected = np.intersect1d(np.unique(ham.lesion_ids[train]), np.unique(ham.lesion_ids[test]))
    np.testing.assert_array_equal(shared, expected)
    assert shared.size > 500  # hundreds of test lesions have a near-copy in training
    with pytest.raises(
        LeakageError,
        match=rf"{shared.size} lesion\(s\) appear in more than one split: "
        rf"train & test share {shared.size} \('HAM_",
    ):
        check_no_leakage(splits, ham.lesion_ids, what="lesion")


def test_fraction_to_fold_rule_exact_on_equal_groups() -> None:
    """100 groups of 2 images, one class: test 0.2 -> 5 folds -> 20 groups; val 0.1 -> 8 folds of 80 -> 10."""
    groups = np.repeat([f"g{i:03d}" for i in range(100)], 2)
    labels = np.zeros(200, dtype=np.int64)
    s = grouped_split(labels, groups, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert {k: np.unique(groups[v]).size for k, v in s.items()} == {"train": 70, "val": 10, "test": 20}
    s = grouped_split(labels, groups, val_fraction=0.0, test_fraction=0.25, seed=4)
    assert s["val"].size == 0 and np.unique(groups[s["test"]]).size == 25


def test_same_seed_same_split_and_seed_matters() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 300, 900).astype(str)
    labels = (rng.random(900) < 0.3).astype(np.int64)
    a = grouped_split(labels, groups, seed=1)
    b = grouped_split(labels, groups, seed=1)
    c = grouped_split(labels, groups, seed=2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["test"], c["test"])


def test_no_groups_is_an_image_level_split() -> None:
    labels = np.array(["a"] * 80 + ["b"] * 20)
    s = grouped_split(labels, None, val_fraction=0.1, test_fraction=0.2)
    assert [s[k].size for k in ("train", "val", "test")] == [70, 10, 20]
    assert (labels[s["test"]] == "b").sum() == 4  # stratified: 20 % of b


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_groups=st.integers(20, 40), n_classes=st.integers(1, 4), seed=st.integers(0, 10_000), data=st.data())
def test_property_partition_without_leakage(
    n_groups: int, n_classes: int, seed: int, data: st.DataObject
) -> None:
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=n_groups, max_size=n_groups))
    group_class = data.draw(st.lists(st.integers(0, n_classes - 1), min_size=n_groups, max_size=n_groups))
    groups = np.repeat(np.arange(n_groups), sizes).astype(str)
    labels = np.repeat(group_class, sizes)
    s = grouped_split(labels, groups, val_fraction=0.1, test_fraction=0.2, seed=seed)
    np.testing.assert_array_equal(np.sort(np.concatenate(list(s.values()))), np.arange(labels.size))
    assert find_leakage(s, groups) == {}
    assert all(v.size > 0 for v in s.values())


def test_leakage_message_names_groups_and_splits() -> None:
    groups = np.array(["p1", "p1", "p2", "p3", "p3", "p4"])
    splits = {"train": [0, 2, 3], "val": [5], "test": [1, 4]}
    with pytest.raises(LeakageError) as err:
        check_no_leakage(splits, groups, what="patient")
    assert str(err.value).startswith(
        "2 patient(s) appear in more than one split: train & test share 2 ('p1', 'p3')"
    )
    assert list(err.value.leaks) == [("train", "test")]
    assert isinstance(err.value, HierclfError)
    check_no_leakage({"train": [0, 1], "test": [2, 3, 4]}, groups[:5] + np.array(["", "", "", "x", "x"]))
    with pytest.raises(HierclfError, match="holds index 9 but there are 6 samples"):
        check_no_leakage({"train": [9]}, groups)


def test_bad_split_arguments() -> None:
    labels, groups = np.zeros(10, dtype=np.int64), np.arange(10).astype(str)
    with pytest.raises(HierclfError, match="sum to less than 1"):
        grouped_split(labels, groups, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(HierclfError, match="groups has 9 entries but labels has 10"):
        grouped_split(labels, groups[:9])
    with pytest.raises(HierclfError, match="only 3 groups"):
        grouped_split(labels, np.repeat(["a", "b", "c"], [4, 3, 3]), test_fraction=0.2)


def test_bad_metadata_files(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("lesion,image_id,dx\nL1,I1,nv\n")
    with pytest.raises(FileFormatError, match="unknown column 'lesion_id'.*did you mean 'lesion'"):
        ham10000_split(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("lesion_id,image_id,dx\nL1,I1,nv\n,I2,mel\n")
    with pytest.raises(FileFormatError, match=r"b\.csv:3:1: error: empty lesion_id"):
        ham10000_split(tmp_path / "b.csv")
    with pytest.raises(HierclfError, match="not found"):
        ham10000_split(tmp_path / "missing.csv")
