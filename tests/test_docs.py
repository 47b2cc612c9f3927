"""The docs cannot drift from the code: the CLI reference is regenerated and compared, every page is in the
mkdocs navigation, and every benchmark script the docs cite exists."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from hierclf.cli.reference import render

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def test_cli_reference_is_current() -> None:
    committed = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert committed == render(), "docs/cli.md is stale: run `python -m hierclf.cli.reference > docs/cli.md`"


def test_cli_reference_covers_every_command() -> None:
    from hierclf.cli import COMMANDS

    text = render()
    for name in COMMANDS:
        assert f"## `hierclf {name}`" in text


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = {next(iter(item.values())) for item in config["nav"]}
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages == in_nav


def test_cited_benchmark_scripts_exist() -> None:
    cited = set()
    for page in DOCS.glob("*.md"):
        cited |= set(re.findall(r"benchmarks/(\w+)\.py", page.read_text(encoding="utf-8")))
    assert cited, "the docs cite no benchmark"
    for name in cited:
        assert (REPO / "benchmarks" / f"{name}.py").is_file(), name
