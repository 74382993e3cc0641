"""The package's shape: imports flow one way, the library never imports the studies, every module imports on its
own, no function grows past 80 lines.

Files are sized by responsibility, not by a line cap; a function too long to read in one screen is the
smell worth flagging.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_dendrites"
MODULES = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")


def internal_imports(module: str) -> set[str]:
    """The package modules `module` imports, at any depth of its code (lazy imports count too)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import x
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hf_dendrites."):
            found.add(node.module.split(".")[1])
    return found & set(MODULES)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search)."""
    finished: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in finished:
            return None
        for target in sorted(graph[node]):
            cycle = visit(target, [*path, node])
            if cycle:
                return cycle
        finished.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_cycle_finder_finds_a_cycle_and_accepts_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_package_imports_have_no_cycle():
    graph = {module: internal_imports(module) for module in MODULES}
    assert graph["augment"] >= {"model", "serialization", "adapters", "hub"}  # the parser sees real imports
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_saving_stack_is_layered():
    """model knows nothing of files, serialization nothing of PEFT or the Hub, the Hub nothing of training."""
    assert not internal_imports("model") & {"serialization", "hub", "adapters", "augment", "compression"}
    assert not internal_imports("serialization") & {"hub", "adapters", "augment"}
    assert not internal_imports("hub") & {"augment", "trainer", "callbacks"}
    assert not internal_imports("adapters") & {"hub", "augment"}
    assert "torch" not in {alias.split(".")[0] for alias in _absolute_imports("tracker")}


def _absolute_imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


STUDY_PACKAGES = {"experiments", "benchmarks", "scripts"}


def study_imports(source: str) -> set[str]:
    """The study packages (experiments/, benchmarks/, scripts/) a module's source imports, at any depth:
    `import x`, `from x import y` and `importlib.import_module("x...")` / `__import__("x...")` with a literal name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value.split(".")[0])
    return found & STUDY_PACKAGES


def test_study_import_finder_sees_every_form_of_import():
    source = (
        "import os\nimport experiments.data\nfrom hf_dendrites.model import grow\n"
        "def f():\n    from benchmarks import common\n    return importlib.import_module('scripts.train')\n"
    )
    assert study_imports(source) == {"experiments", "benchmarks", "scripts"}
    assert study_imports("from .metrics import METRICS\nimport hf_dendrites\nimport datasets\n") == set()


def test_the_library_never_imports_the_studies():
    """hf_dendrites/ is what a user installs: the study helpers, studies and scripts stay outside it."""
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(found)
        for path in sorted(PACKAGE.rglob("*.py"))
        if (found := study_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_every_module_imports_in_a_fresh_interpreter_in_either_order(order):
    modules = MODULES if order == "forward" else MODULES[::-1]
    code = "import importlib\nfor name in %r:\n    importlib.import_module('hf_dendrites.' + name)\n" % modules
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


MAX_FUNCTION_LINES = 80


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """Functions (methods and nested ones too) whose definition spans more than `limit` lines."""
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found[node.name] = length
    return found


def test_long_function_finder_counts_the_whole_definition():
    body = "\n".join(f"        x{i} = {i}" for i in range(85))
    source = f"def short():\n    return 1\n\n\nclass C:\n    def long(self):\n{body}\n"
    assert long_functions(source) == {"long": 86}


def test_no_function_is_longer_than_80_lines():
    lengths = {
        f"{path.name}:{name}": n
        for path in PACKAGE.glob("*.py")
        for name, n in long_functions(path.read_text(encoding="utf-8")).items()
    }
    assert lengths == {}
