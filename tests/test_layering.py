"""The import layering: no module of modules/ or experiments/ needs itself back through other modules (module-level
and function-level imports alike), the library (modules/) never imports the experiments (experiments/), and no
question's or claim's sub-package of experiments/ (q1_game ... c4_transfer) imports another's: what they share is in
experiments/core/."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("modules", "experiments")


def module_files(root: Path) -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = path
    return files


def import_edges(root: Path) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file (at the top or inside a function)."""
    files = module_files(root)
    known = set(files)
    edges = {}
    for module, path in files.items():
        targets = set()
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importing module's package
                    parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*parent, base] if base else parent)
                # `from experiments import cli` imports the module experiments.cli
                names = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for name in names:
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    targets.add(name)
        edges[module] = targets
    return edges


def find_circle(edges: dict[str, set[str]]) -> list[str]:
    """One import circle as [a, b, ..., a], or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if not state.get(nxt):
                found = visit(nxt, path)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for start in sorted(edges):
        if not state.get(start):
            found = visit(start, [])
            if found:
                return found
    return []


def upward_edges(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in edges.items() for b in targets
                  if a.split(".")[0] == "modules" and b.split(".")[0] == "experiments")


def part_of(module: str):
    """The question's or claim's sub-package a module belongs to (``q1_game``, ``c4_transfer``, ...), or None."""
    parts = module.split(".")
    if len(parts) > 1 and parts[0] == "experiments" and re.fullmatch(r"[qc]\d+_\w+", parts[1]):
        return parts[1]
    return None


def cross_part_edges(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in edges.items() for b in targets
                  if part_of(a) and part_of(b) and part_of(a) != part_of(b))


def test_no_import_circle():
    circle = find_circle(import_edges(ROOT))
    assert not circle, "import circle: " + " -> ".join(circle)


def test_the_library_never_imports_the_experiments():
    assert upward_edges(import_edges(ROOT)) == []


def test_no_question_imports_another():
    assert cross_part_edges(import_edges(ROOT)) == []


# The checks themselves, on planted packages: each must see what it is there to see.
def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


@pytest.mark.parametrize("files", [
    {"experiments/a.py": "from experiments.b import x\n", "experiments/b.py": "def f():\n    import experiments.a\n"},
    {"experiments/a.py": "from experiments import b\n", "experiments/b.py": "from experiments import a\n"},
    {"modules/a.py": "from . import b\n", "modules/b.py": "def f():\n    from modules.a import g\n"},
    {"experiments/a.py": "import experiments.b.c\n", "experiments/b/__init__.py": "",
     "experiments/b/c.py": "from experiments.a import x\n"},
], ids=["function-level", "from-package", "relative", "subpackage"])
def test_a_planted_circle_is_found(tmp_path, files):
    assert find_circle(import_edges(write(tmp_path, files)))


@pytest.mark.parametrize("text", ["import experiments.cli\n", "def f():\n    from experiments import cli\n"])
def test_a_planted_library_to_experiments_import_is_found(tmp_path, text):
    edges = import_edges(write(tmp_path, {"modules/cli.py": text, "experiments/cli.py": ""}))
    assert ("modules.cli", "experiments.cli") in upward_edges(edges)


def test_a_layered_package_passes(tmp_path):
    edges = import_edges(write(tmp_path, {"modules/a.py": "", "modules/b.py": "from modules import a\n",
                                          "experiments/c.py": "import modules.b\nfrom experiments import d\n",
                                          "experiments/d.py": "def f():\n    from modules.a import x\n"}))
    assert find_circle(edges) == [] and upward_edges(edges) == []


@pytest.mark.parametrize("text", ["from experiments.q2_batch_size.sweep import x\n",
                                  "def f():\n    from experiments.c4_transfer import settings\n"])
def test_a_planted_import_between_questions_is_found(tmp_path, text):
    edges = import_edges(write(tmp_path, {"experiments/q3_conditioning/__init__.py": "",
                                          "experiments/q3_conditioning/ablation.py": text,
                                          "experiments/q2_batch_size/__init__.py": "",
                                          "experiments/q2_batch_size/sweep.py": "",
                                          "experiments/c4_transfer/__init__.py": "",
                                          "experiments/c4_transfer/settings.py": "",
                                          "experiments/core/__init__.py": "", "experiments/core/stats.py": ""}))
    found = cross_part_edges(edges)
    assert found and all(a == "experiments.q3_conditioning.ablation" for a, _ in found)


def test_questions_importing_the_core_pass(tmp_path):
    edges = import_edges(write(tmp_path, {"experiments/q1_game/__init__.py": "",
                                          "experiments/q1_game/rule.py": "from experiments.core import stats\n",
                                          "experiments/core/__init__.py": "", "experiments/core/stats.py": ""}))
    assert cross_part_edges(edges) == []
