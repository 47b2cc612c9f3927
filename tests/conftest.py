"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent), the shipped trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from hierclf import Taxonomy

REPO = Path(__file__).resolve().parents[1]
TAXONOMY_DIR = REPO / "taxonomy"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _downloads_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never download (docs/training.md#pretrained-weights): weights come from caches a test fills, or
    the request fails with the file and folder named. A test of the online path removes both variables and
    replaces the downloader itself."""
    monkeypatch.setenv("HIERCLF_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's real reference data (ISIC paths, Fitzpatrick17k labels, HAM10000 metadata)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA} (only in the project's checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dermamnist() -> Taxonomy:
    return Taxonomy.from_yaml(TAXONOMY_DIR / "dermamnist.yaml")


@pytest.fixture(scope="session")
def esteva() -> Taxonomy:
    return Taxonomy.from_yaml(TAXONOMY_DIR / "esteva.yaml")
