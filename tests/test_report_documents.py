"""report.html, checklist.md and model_card.md: self-contained, the primary metric and every warning on the
first screen (checked in a real headless Chromium where the system has one), checklist items filled from
the run with their sources and placeholders for the human-only items, the model card only for models trained
by hierclf."""

from __future__ import annotations

import html.parser
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hierclf import Taxonomy
from hierclf.evaluation.checklist import PLACEHOLDER, render_checklist, render_model_card
from hierclf.evaluation.pipeline import evaluate
from hierclf.evaluation.prediction_files import Predictions
from hierclf.evaluation.protocol_format import protocol_from_dict
from hierclf.evaluation.provenance import run_record
from hierclf.evaluation.report import write_report
from hierclf.evaluation.report_html import markdown_to_html

REPO = Path(__file__).resolve().parents[1]
TAXONOMY = REPO / "taxonomy" / "dermamnist.yaml"


def _preds(tax: Taxonomy, n: int, seed: int, prefix: str, *, info: dict | None = None) -> Predictions:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
    logits = rng.normal(size=(n, 7))
    logits[np.arange(n), y] += 1.5
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    ids = np.array([f"{prefix}{seed}_{i}" for i in range(n)])
    groups = np.array([f"{prefix}{seed}_L{i // 2}" for i in range(n)])
    dx = np.array(["histo" if i % 3 else "follow_up" for i in range(n)])
    return Predictions(
        p, tax.leaves, ids, np.asarray(tax.leaves)[y], groups, metadata={"dx_type": dx}, info=info or {}
    )


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return Taxonomy.from_yaml(TAXONOMY)


def _report(tax: Taxonomy, *, trained: bool = False, min_seeds: int = 3):
    proto = protocol_from_dict(
        {
            "name": "documents", "target_sensitivity": 0.9, "group_column": "lesion_id",
            "min_seeds": min_seeds,
            "bootstrap": {"replicates": 20}, "primary_metric": {"metric": "auc", "task": "mel"},
            "tasks": [{"name": "mel", "positive": ["mel"], "negative": ["nv"], "prevalences": [0.02]}],
        },
        tax,
    )  # fmt: skip
    info = {"source": "ham10000", "split_level": "lesion"}
    if trained:
        info["training"] = (
            '{"ids": ["a", "b", "c"], "groups": ["g1", "g1", "g2"], "labels": ["mel", "nv", "nv"]}'
        )
    val, test = _preds(tax, 300, 0, "v", info=info), _preds(tax, 300, 1, "t", info=info)
    return evaluate(tax, proto, [val], [test], provenance=run_record(protocol=None, taxonomy=TAXONOMY))


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag in ("img", "script"):
            self.srcs.append(str(a.get("src")))
        if tag == "link":
            self.links.append(str(a.get("href")))


def test_report_html_is_self_contained_and_opens_with_the_primary_metric_and_warnings(
    tax: Taxonomy, tmp_path: Path
) -> None:
    report = _report(tax)
    written = write_report(report, tmp_path)
    text = written["report.html"].read_text(encoding="utf-8")
    parser = _Text()
    parser.feed(text)
    assert parser.srcs and all(
        s.startswith("data:image/png;base64,") for s in parser.srcs
    )  # figures embedded
    assert not parser.links and "<script" not in text  # nothing from outside, no script
    assert "width=device-width" in text and "@media print" in text
    first = text.index("id='first-screen'")
    assert first < text.index("<h2>")  # before every section
    box = text[first : text.index("</section>", first)]
    assert "Primary metric (pre-registered)" in box and "<strong>auc</strong>" in box
    assert "FEWER SEEDS THAN PRE-REGISTERED" in box  # alerts and every warning
    for warning in report.warnings:
        assert (
            re.sub(r"`([^`]+)`", r"<code>\1</code>", warning.replace("&", "&amp;").replace("<", "&lt;"))[:60]
            in box
        )
    # the same content as report.md: every section heading of the Markdown is a heading of the HTML
    md = written["report.md"].read_text(encoding="utf-8")
    for heading in re.findall(r"^## (.*)$", md, flags=re.M):
        assert markdown_to_html(f"## {heading}") in text


CHROMIUM = next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no headless Chromium on this system (`which chromium chromium-browser google-chrome` found "
    "none); "
    "install the system's chromium package to run the browser check",
)
def test_report_html_in_headless_chromium_shows_primary_metric_and_warnings_first(
    tax: Taxonomy, tmp_path: Path
) -> None:
    written = write_report(_report(tax), tmp_path)
    page = written["report.html"].read_text(encoding="utf-8")
    probe = (
        "<script>window.addEventListener('load',()=>{const h=window.innerHeight;"
        "const seen=id=>{const r=document.getElementById(id).getBoundingClientRect();"
        "return r.height>0&&r.top<h&&getComputedStyle(document.getElementById(id)).visibility!=='hidden'};"
        "document.body.setAttribute('data-first-screen',seen('primary-metric')&&seen('warnings')?'yes':'no');"
        "});</script>"
    )
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", probe + "</body>"), encoding="utf-8")
    for width, height in ((390, 844), (1280, 800)):  # a phone and a desktop
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}",
             "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert 'data-first-screen="yes"' in done.stdout, (width, height)
        assert "Primary metric (pre-registered)" in done.stdout


def test_checklist_items_come_from_the_run_with_their_sources(tax: Taxonomy) -> None:
    report = _report(tax)
    text = render_checklist(report)
    rows = {
        line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| ") and " | " in line
    }
    assert "ham10000" in rows["data source"] and "info.source" in rows["data source"]
    assert "lesion" in rows["split level (unit of the partition)"]
    test = report.data["test"]
    assert f"{test['n']} images in {test['n_groups']} groups" in rows["test set: size and class counts"]
    assert "`dx_type`: follow_up 100, histo 200" in rows["reference standard mix"]
    assert "no shared ids or groups found" in rows["leakage check between partitions"]
    assert "sensitivity >= 0.9 on validation" in rows["operating point of `mel` and how it was chosen"]
    assert "AUC" in rows["`mel`: discrimination and operating point"]
    assert "slope" in rows["`mel`: calibration"] and "0.02" in rows["`mel`: clinical utility"]
    assert "FEWER SEEDS THAN PRE-REGISTERED" in rows["pre-registered primary metric"]
    for item in ("intended use", "ethics approval", "annotators", "human factors"):
        line = next(x for x in text.splitlines() if item in x)
        assert PLACEHOLDER in line


def test_model_card_only_for_models_trained_by_hierclf(tax: Taxonomy, tmp_path: Path) -> None:
    assert render_model_card(_report(tax)) is None
    assert "model_card.md" not in write_report(_report(tax), tmp_path / "other")
    trained = _report(tax, trained=True)
    card = render_model_card(trained)
    assert card is not None
    sections = ("Model details", "Intended use", "Factors", "Metrics", "Evaluation data", "Training data")
    sections += ("Quantitative analyses", "Ethical considerations", "Caveats and recommendations")
    for section in sections:
        assert f"## {section}" in card
    assert "3 images in 2 groups (mel 1, nv 2)" in card and PLACEHOLDER in card
    assert (
        (tmp_path / "trained" / "model_card.md").read_text() == card
        if write_report(trained, tmp_path / "trained")
        else False
    )
