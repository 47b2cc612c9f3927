"""The public face: ``from hierclf import ...`` gives every documented name, lazily, and the torch-free core
runs with torch made unimportable.

The subprocess tests block ``import torch`` (``sys.modules["torch"] = None``), so any code path that reaches
for torch fails loudly instead of passing because torch happens to be installed here.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hierclf
from hierclf.errors import HierclfError

REPO = Path(__file__).resolve().parents[1]

#: the names the house issue lists, plus the error classes
REQUIRED = [
    "Taxonomy", "TaxonomyIndex", "rollup", "log_rollup", "conditional", "rollup_nodes", "RollUp", "LogRollUp",
    "LeafHead", "partition", "TrainingClasses", "build_loss", "class_weights", "create_backbone",
    "register_backbone", "load_protocol", "Protocol", "Predictions", "read_predictions", "write_predictions",
    "evaluate", "Evaluator", "write_report", "TrainConfig", "load_train_config", "fit", "set_determinism",
]  # fmt: skip
TORCH_FREE = [
    "Taxonomy", "TaxonomyIndex", "rollup", "log_rollup", "conditional", "rollup_nodes", "RollUpError",
    "partition", "TrainingClasses", "ClassMap", "load_protocol", "Protocol", "Predictions",
    "read_predictions", "write_predictions", "evaluate", "Evaluator", "write_report", "EvaluationReport",
    "EvaluationError", "MetricError", "ProtocolError", "PredictionsError", "LeakageError", "OutputPathError",
    "OutputIsInputError", "HierclfError", "FileFormatError", "TaxonomyError", "UnknownNameError",
    "SyntheticTreeError",
]  # fmt: skip


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO, timeout=300
    )


@pytest.mark.parametrize("name", REQUIRED)
def test_required_names_come_from_their_modules(name: str) -> None:
    value = getattr(hierclf, name)
    module = hierclf._LAZY.get(name)
    if module is not None:
        assert getattr(importlib.import_module(module), name) is value
    assert name in dir(hierclf)


def test_import_hierclf_and_the_torch_free_names_need_no_torch() -> None:
    result = _python(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        import hierclf
        for name in {TORCH_FREE!r}:
            getattr(hierclf, name)
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None], "torch was imported"
        print("ok")
        """
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_torch_free_core_runs_without_torch(tmp_path: Path) -> None:
    """Roll-up, prediction files, protocol, evaluation and report on numpy data, with torch unimportable."""
    result = _python(
        f"""
        import sys
        sys.modules["torch"] = None
        import numpy as np
        from hierclf import Taxonomy, Predictions, evaluate, load_protocol, rollup, write_report
        from hierclf import read_predictions, write_predictions, conditional, log_rollup
        tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        proto = load_protocol("taxonomy/protocols/dermamnist.yaml", tax)
        rng = np.random.default_rng(0)
        files = []
        for split, n in (("val", 300), ("test", 300)):
            labels = rng.choice(tax.leaves, size=n)
            probs = rng.dirichlet(np.ones(len(tax.leaves)), size=n)
            probs[np.arange(n), [tax.leaves.index(v) for v in labels]] += 2.0
            probs /= probs.sum(axis=1, keepdims=True)
            ids = np.array([f"{{split}}{{i}}" for i in range(n)])
            path = r"{tmp_path}" + f"/{{split}}.npz"
            write_predictions(path, Predictions(probs, tax.leaves, ids=ids, labels=labels, groups=ids))
            files.append(path)
        p = read_predictions(files[1], tax)
        assert rollup(p.probs, tax, ["malignant"]).shape == (300, 1)
        assert conditional(p.probs, tax, ["mel"], ["nv"]).shape == (300,)
        assert np.isfinite(log_rollup(np.log(p.probs), tax)).all()
        report = evaluate(tax, proto, [files[0]], [files[1]])
        out = write_report(report, r"{tmp_path}/report")
        assert "report.md" in {{k: str(v) for k, v in out.items()}} or (r"{tmp_path}/report/report.md")
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        print("ok")
        """
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
    assert (tmp_path / "report" / "report.md").is_file()


def _exception_classes() -> list[tuple[str, str]]:
    found = []
    for path in sorted((REPO / "hierclf").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if (
                isinstance(node, ast.ClassDef)
                and not node.name.startswith("_")
                and node.name.endswith("Error")
            ):
                found.append((module, node.name))
    return found


@pytest.mark.parametrize(("module", "name"), _exception_classes(), ids=lambda v: str(v))
def test_every_error_is_a_hierclf_error_exported_from_hierclf(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, HierclfError), f"{module}.{name} is not a HierclfError"
    assert getattr(hierclf, name) is cls, f"hierclf.{name} is missing"
