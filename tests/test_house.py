"""The house rules of ``docs/architecture.md``, read from the code's own import graph and definitions (AST).

* **Layers**: a module imports only from its own layer or lower ones; the sibling layers ``nn``, ``data`` and
  ``evaluation`` do not import each other; nothing in the library imports the top-level ``hierclf`` package
  (the public face) except the CLI.
* **No torch** in the torch-free layers (foundation, taxonomy, classes, evaluation, the numpy side of the
  roll-up engine): not at module level, not inside a function.
* **Small functions**: no library function over 80 lines (docstring included); ruff's C901 checks complexity.
* **Rule zero**: no module is named like a public function or class it defines.

Each failure names the file and line of the offending import or definition.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hierclf"

#: layer of each module, by dotted-name prefix (the longest prefix wins); higher numbers sit higher
LAYERS: dict[str, tuple[int, str]] = {
    "hierclf.errors": (0, "foundation"),
    "hierclf.options": (0, "foundation"),
    "hierclf.io": (0, "foundation"),
    "hierclf.taxonomy": (1, "taxonomy"),
    "hierclf.classes": (2, "classes"),
    "hierclf.rollup_engine": (2, "rollup engine"),
    "hierclf.functional": (2, "rollup engine"),
    "hierclf.nn": (3, "nn"),
    "hierclf.data": (3, "data"),
    "hierclf.evaluation": (3, "evaluation"),
    "hierclf.train": (4, "train"),
    "hierclf.probe": (4, "probe"),
    "hierclf.inference": (4, "inference"),
    "hierclf.study": (5, "experiments"),
    "hierclf.experiments": (5, "experiments"),
    "hierclf.cli": (6, "cli"),
    "hierclf.__main__": (6, "cli"),
    "hierclf": (7, "public API"),
}
SIBLINGS = {"nn", "data", "evaluation"}
#: modules that must never import torch (the light core)
TORCH_FREE = (
    "hierclf.errors",
    "hierclf.options",
    "hierclf.io",
    "hierclf.taxonomy",
    "hierclf.classes",
    "hierclf.evaluation",
    "hierclf.functional",
    "hierclf.data.splits",
    "hierclf.rollup_engine.request_plans",
    "hierclf.rollup_engine.numpy_ops",
    "hierclf.rollup_engine.cpu_kernels",
)
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (dotted)
    file: Path
    line: int
    type_only: bool = False  # inside ``if TYPE_CHECKING:``: for type checkers, never run


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def imports_of(path: Path) -> list[Import]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [
                Import(name, alias.name, path, node.lineno, id(node) in type_only) for alias in node.names
            ]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from hierclf.x import y` may import the submodule hierclf.x.y: count the longer name when it is
            # one
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = (
                    sub
                    if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file()
                    or (PACKAGE.parent / sub.replace(".", "/") / "__init__.py").is_file()
                    else base
                )
                out.append(Import(name, target, path, node.lineno, id(node) in type_only))
    return out


def layer_of(module: str) -> tuple[int, str] | None:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    return LAYERS[best] if best is not None else None


def where(imp: Import) -> str:
    return f"{imp.file.relative_to(PACKAGE.parent)}:{imp.line}: {imp.module} imports {imp.target}"


ALL_IMPORTS = [imp for path in library_files() for imp in imports_of(path)]


def test_lower_layers_never_import_higher_ones() -> None:
    bad = []
    for imp in ALL_IMPORTS:
        if not imp.target.startswith("hierclf"):
            continue
        here, there = layer_of(imp.module), layer_of(imp.target)
        assert here is not None and there is not None, where(imp)
        if imp.target == "hierclf":
            if here[1] not in ("cli", "public API"):
                bad.append(where(imp) + " (the public face: import from the module that defines the name)")
        elif there[0] > here[0]:
            bad.append(where(imp) + f" (layer {here[1]!r} below {there[1]!r})")
    assert not bad, "imports that climb the layers:\n" + "\n".join(bad)


def test_sibling_layers_do_not_import_each_other() -> None:
    bad = []
    for imp in ALL_IMPORTS:
        here, there = layer_of(imp.module), layer_of(imp.target)
        if here and there and here[1] in SIBLINGS and there[1] in SIBLINGS and here[1] != there[1]:
            bad.append(where(imp))
    assert not bad, "sibling layers importing each other:\n" + "\n".join(bad)


def test_torch_free_layers_never_import_torch() -> None:
    bad = [
        where(imp)
        for imp in ALL_IMPORTS
        if imp.target.split(".")[0] in ("torch", "torchvision", "timm")
        and not imp.type_only
        and any(imp.module == m or imp.module.startswith(m + ".") for m in TORCH_FREE)
    ]
    assert not bad, "torch imported by the torch-free core:\n" + "\n".join(bad)


def test_no_circle_of_imports_inside_the_library() -> None:
    """Modules import downwards inside a layer too (docs/architecture.md, "No circles"): no strongly
    connected group of two or more modules, counting imports inside functions and for type checkers.
    Packages' ``__init__`` re-exports are left out (a package may name what its modules define)."""
    import networkx as nx

    modules = {module_name(p) for p in library_files() if p.name != "__init__.py"}
    graph = nx.DiGraph()
    for imp in ALL_IMPORTS:
        if imp.module in modules and imp.target in modules and imp.module != imp.target:
            graph.add_edge(imp.module, imp.target)
    circles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not circles, f"modules that import each other: {circles}"


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_library_function_is_over_80_lines() -> None:
    long = []
    for path in library_files():
        for fn in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            lines = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(PACKAGE.parent)}:{fn.lineno}: {fn.name} has {lines} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


@pytest.mark.parametrize("path", library_files(), ids=lambda p: module_name(p))
def test_no_module_is_named_like_what_it_defines(path: Path) -> None:
    """Rule zero: ``hierclf.x.rollup`` defining ``rollup`` would hide the function from imports."""
    stem = path.stem.replace("_", "").casefold()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    public = [
        n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")
    ]
    clash = [f"{n.name} (line {n.lineno})" for n in public if n.name.replace("_", "").casefold() == stem]
    assert not clash, f"{path.relative_to(PACKAGE.parent)} is named like what it defines: {', '.join(clash)}"
