"""The light core: ``pip install hierclf`` without torch, the extras, one-line messages for torch-backed
names and commands, the core installed in a fresh virtual environment, and the pre-commit hooks through
``pre-commit try-repo`` on a scratch repository.

Nothing here downloads: the fresh environment and pre-commit's hook environment install hierclf from a copy
of this checkout with ``--no-index``, their dependencies satisfied by a folder that links the core's
installed distributions only (:func:`core_mirror`). A core that needed torch would find no torch there and
fail to install, exactly as the check is meant to fail.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TORCH_SIDE = {"torch", "torchvision", "timm", "medmnist", "scikit-learn", "numba", "tqdm", "pillow"}

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_core_leaves_torch_out_and_the_extras_bring_it() -> None:
    project = _project()
    core = {_name(r) for r in project["dependencies"]}
    assert not core & TORCH_SIDE, f"the core pulls {core & TORCH_SIDE}"
    assert {"numpy", "pyyaml", "pydantic", "networkx", "matplotlib", "pyarrow"} <= core
    extras = project["optional-dependencies"]
    assert {"torch", "torchvision", "timm", "medmnist", "scikit-learn"} <= {_name(r) for r in extras["train"]}
    assert extras["all"] == ["hierclf[train,fast]"] and "hierclf[all]" in extras["dev"]
    assert "pre-commit" in {_name(r) for r in extras["dev"]}
    assert {"hierclf", "ray"} <= {_name(r) for r in extras["ray"]} and "ray[data]" in extras["ray"][1]
    assert {"onnx", "onnxscript"} <= {_name(r) for r in extras["onnx"]}
    assert "hierclf[onnx]" in extras["dev"] and "onnxruntime" in {_name(r) for r in extras["dev"]}
    for requirement in extras["train"]:
        if _name(requirement) in ("torch", "torchvision"):
            assert ">=" in requirement and "<" not in requirement.replace("<=", "<"), requirement  # no cap


def _python(code: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        **kw,  # type: ignore[arg-type]
    )


def test_torch_backed_names_and_commands_say_which_extra() -> None:
    result = _python(
        """
        import sys
        sys.modules["torch"] = None  # the core install: no torch
        import hierclf
        from hierclf.cli import main
        try:
            hierclf.LeafHead
        except hierclf.MissingExtraError as exc:
            assert isinstance(exc, ImportError)
            print("name:", exc)
        code = main(["train", "--config", "run.yaml"])
        print("exit:", code)
        """
    )
    lines = result.stdout.splitlines()
    message = "needs PyTorch, which the core install leaves out: pip install 'hierclf[train]'"
    assert lines == [f"name: hierclf.LeafHead {message}", "exit: 1"], result.stderr
    assert result.stderr.strip().splitlines() == [
        "hierclf train: error: this command needs PyTorch, which the core install leaves out: "
        "pip install 'hierclf[train]'"
    ]


def test_load_model_predict_and_export_say_which_extra(tmp_path: Path) -> None:
    """The inference names and commands are torch-backed: in the core install each is one line."""
    result = _python(
        f"""
        import sys
        sys.modules["torch"] = None
        import hierclf
        from hierclf.cli import main
        for name in ("load_model", "load_models"):
            try:
                getattr(hierclf, name)
            except hierclf.MissingExtraError as exc:
                print("name:", exc)
        print("exit:", main(["predict", "best.pt", "a.png", "--out", r"{tmp_path / "p.csv"}"]))
        print("exit:", main(["export", "best.pt", "--nodes", "malignant", "-f", "onnx", "-o", "m.onnx"]))
        """
    )
    message = "needs PyTorch, which the core install leaves out: pip install 'hierclf[train]'"
    assert result.stdout.splitlines() == [
        f"name: hierclf.load_model {message}",
        f"name: hierclf.load_models {message}",
        "exit: 1",
        "exit: 1",
    ], result.stderr
    assert [line.split(": error: ")[0] for line in result.stderr.strip().splitlines()] == [
        "hierclf predict",
        "hierclf export",
    ], result.stderr
    assert not (tmp_path / "p.csv").exists()


# --- a folder that offers exactly the core's installed distributions ----------------------------------------


def _requirements(dist: metadata.Distribution) -> list[str]:
    from packaging.requirements import Requirement

    names = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    return names


def _closure(roots: list[str]) -> list[metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        dist = metadata.distribution(name)
        seen[name] = dist
        todo.extend(_requirements(dist))
    return list(seen.values())


def core_mirror(folder: Path) -> Path:
    """``folder`` with a link to every top-level file of the core's dependencies (and setuptools, to build
    hierclf offline): put on ``PYTHONPATH``, pip counts them as installed and Python imports them."""
    roots = [_name(r) for r in _project()["dependencies"]] + ["setuptools", "packaging"]
    folder.mkdir(parents=True, exist_ok=True)
    for dist in _closure(roots):
        base = Path(str(dist.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            target, link = base / top, folder / top
            if target.exists() and not link.exists() and top != "__pycache__" and not top.endswith(".pth"):
                link.symlink_to(target)
    assert not (folder / "torch").exists(), "a core dependency brings torch"
    return folder


def _copy_of_the_project(dest: Path) -> Path:
    """The files a source install reads (no build artefacts land in the checkout)."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy2(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    for name in ("hierclf", "taxonomy"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


def _offline_env(mirror: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(
        PYTHONPATH=str(mirror),
        PIP_NO_INDEX="1",
        PIP_NO_BUILD_ISOLATION="0",  # pip reads this flag inverted: "0" turns build isolation off
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        **extra,
    )
    return env


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return core_mirror(tmp_path_factory.mktemp("core-mirror") / "site")


def _prediction_files(folder: Path) -> tuple[Path, Path]:
    """Validation and test predictions over the shipped DermaMNIST tree, written with numpy only."""
    from hierclf.evaluation.prediction_files import Predictions, write_predictions
    from hierclf.taxonomy.tree import Taxonomy

    tax = Taxonomy.from_yaml(REPO / "taxonomy" / "dermamnist.yaml")
    rng = np.random.default_rng(0)
    paths = []
    for split in ("val", "test"):
        labels = rng.choice(tax.leaves, size=200)
        probs = rng.dirichlet(np.ones(7), size=200)
        probs[np.arange(200), [tax.leaves.index(v) for v in labels]] += 2.0
        probs /= probs.sum(axis=1, keepdims=True)
        ids = np.array([f"{split}{i}" for i in range(200)])
        path = folder / f"{split}.parquet"
        write_predictions(path, Predictions(probs, tax.leaves, ids=ids, labels=labels, groups=ids))
        paths.append(path)
    return paths[0], paths[1]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="the offline mirror links files")
def test_the_core_installs_in_a_fresh_venv_and_runs_without_torch(tmp_path: Path, mirror: Path) -> None:
    project = _copy_of_the_project(tmp_path / "project")
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=300)
    bin_dir = tmp_path / "venv" / "bin"
    env = _offline_env(mirror)
    install = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(project)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    site = next((tmp_path / "venv" / "lib").glob("python*/site-packages"))
    assert not (site / "torch").exists() and (site / "hierclf").is_dir()
    val, test = _prediction_files(tmp_path)
    taxonomies = sorted(str(p) for p in (REPO / "taxonomy").glob("*.yaml"))
    protocols = sorted(str(p) for p in (REPO / "taxonomy" / "protocols").glob("*.yaml"))
    dermamnist, protocol = str(REPO / "taxonomy" / "dermamnist.yaml"), protocols[0]
    commands = [
        ["validate", "--strict", *taxonomies],
        ["check-protocol", *protocols],
        ["show", dermamnist, "--depth", "2"],
        ["schema"],
        ["rollup", "-t", dermamnist, "-p", str(test), "--all", "-o", str(tmp_path / "nodes.csv")],
        ["evaluate", "--taxonomy", dermamnist, "--protocol", protocol, "--val", str(val), "--test", str(test)]
        + ["--out", str(tmp_path / "report")],
    ]
    for args in commands:
        run = subprocess.run(
            [str(bin_dir / "hierclf"), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=600,
        )
        assert run.returncode == 0, (args[0], run.stderr[-2000:])
    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "nodes.csv").is_file()
    train = subprocess.run(
        [str(bin_dir / "hierclf"), "train", "--config", "x.yaml"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert train.returncode == 1 and "pip install 'hierclf[train]'" in train.stderr


# --- the pre-commit hooks --------------------------------------------------------------------------------

GOOD = """\
name: demo
root:
  id: lesion
  name: Lesion
  children:
    - {id: nevus, name: Nevus}
    - {id: melanoma, name: Melanoma}
"""
BAD = GOOD.replace("id: melanoma", "id: nevus")  # a duplicate id


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env, timeout=120)


def _pre_commit() -> list[str]:
    found = shutil.which("pre-commit")
    if found is None and shutil.which("git") is None:
        pytest.skip("pre-commit and git are not installed (pre-commit is in the dev extra)")
    try:
        import pre_commit  # noqa: F401
    except ImportError:
        if found is None:
            pytest.skip("pre-commit is not installed (it is in the dev extra: pip install -e '.[dev]')")
        return [found]
    return [sys.executable, "-m", "pre_commit"]


@pytest.mark.skipif(shutil.which("git") is None, reason="pre-commit try-repo needs git")
def test_pre_commit_try_repo_validates_taxonomies_and_protocols(tmp_path: Path, mirror: Path) -> None:
    command = _pre_commit()
    hooks = _copy_of_the_project(tmp_path / "hierclf")
    _git(hooks, "init", "-q")
    _git(hooks, "add", "-A")
    _git(hooks, "commit", "-qm", "hooks")
    scratch = tmp_path / "scratch"
    (scratch / "taxonomy" / "protocols").mkdir(parents=True)
    (scratch / "taxonomy" / "good.yaml").write_text(GOOD)
    shutil.copy2(REPO / "taxonomy" / "dermamnist.yaml", scratch / "taxonomy" / "dermamnist.yaml")
    shutil.copy2(
        REPO / "taxonomy" / "protocols" / "dermamnist.yaml", scratch / "taxonomy" / "protocols" / "p.yaml"
    )
    (scratch / "ci.yml").write_text("jobs: {test: {runs-on: ubuntu-latest}}\n")  # not a taxonomy
    _git(scratch, "init", "-q")
    _git(scratch, "add", "-A")
    env = _offline_env(mirror, PRE_COMMIT_HOME=str(tmp_path / "cache"))  # never the user's cache

    def try_repo(hook: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "try-repo", str(hooks), hook, "--all-files"],
            cwd=scratch,
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )

    ok = try_repo("hierclf-validate")
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
    assert "hierclf validate (taxonomies)" in ok.stdout and "Passed" in ok.stdout
    protocols = try_repo("hierclf-check-protocol")
    assert protocols.returncode == 0, protocols.stdout[-3000:]
    (scratch / "taxonomy" / "bad.yaml").write_text(BAD)
    _git(scratch, "add", "-A")
    bad = try_repo("hierclf-validate")
    assert bad.returncode == 1 and "Failed" in bad.stdout
    assert re.search(r"taxonomy/bad\.yaml:7:\d+: error: duplicate node id 'nevus'", bad.stdout), bad.stdout
    assert "ci.yml" not in bad.stdout and "p.yaml" not in bad.stdout  # only taxonomy files are checked
    # the hook's environment installed hierclf with --no-index from a mirror without torch: the install
    # succeeding is the proof that the hook needs the core only
    assert not (mirror / "torch").exists()


def test_the_documented_hook_revision_exists() -> None:
    """docs/taxonomy-format.md pins a commit (until releases are tagged); it holds the documented hooks."""
    text = (REPO / "docs" / "taxonomy-format.md").read_text(encoding="utf-8")
    revs = re.findall(r"rev: ([0-9a-f]{40})", text)
    assert revs, "the pre-commit example pins no commit"
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: cannot look the revision up")
    for rev in set(revs):
        shown = subprocess.run(
            ["git", "show", f"{rev}:.pre-commit-hooks.yaml"], cwd=REPO, capture_output=True, text=True
        )
        assert shown.returncode == 0, f"revision {rev} is not in this repository's history"
        ids = {hook["id"] for hook in yaml.safe_load(shown.stdout)}
        assert {"hierclf-validate", "hierclf-check-protocol"} <= ids
