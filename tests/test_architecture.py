"""The layering, read from the source (imports anywhere in a file, functions included):

    scripts -> engine.py -> utils.py -> models/, data/, transform/, configs/

- ``models/`` (the library) imports none of the other parts of the project;
- no package imports the app (engine.py, utils.py, a script, bench/, tests/), utils.py never imports
  engine.py, and no script imports another script;
- no import cycle between the project's modules;
- every file of the packages is used by the project itself (a script, engine.py, utils.py or a command of
  a package, ``python -m ...``), not only by tests and benchmarks: support code of those lives in bench/
  or tests/.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"pretrain", "train_retrieval", "scrape", "split_figures", "vis", "predict"}
APP = SCRIPTS | {"engine", "utils", "bench", "tests"}
PACKAGES = ("models", "data", "transform", "configs")


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports, wherever the import stands (functions included)."""
    return {name.split(".")[0] for name in imported_names(path)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Full dotted names of every module a file imports; ``from a.b import c`` gives ``a.b.c`` when that
    is a module of the project (then ``a.b`` itself is not needed), else ``a.b``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = module_name(path) if ROOT in path.parents else path.stem
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = {f"{module}.{alias.name}" for alias in node.names if _is_project_module(f"{module}.{alias.name}")}
            found |= submodules if len(submodules) == len(node.names) else submodules | {module}
    return {name for name in found if name}


def _is_project_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def files_of(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def project_modules() -> dict[str, Path]:
    """module name -> file, for the packages, the app and the scripts (not tests, not bench)."""
    files = files_of(*PACKAGES) + [ROOT / f"{name}.py" for name in sorted(SCRIPTS | {"engine", "utils"})]
    return {module_name(p): p for p in files}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path):
            # a name of the project, or the module that holds it (``from a.b import func`` -> ``a.b``)
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def test_the_parser_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "probe.py"
    sample.write_text("import torch.nn\n\ndef f():\n    from utils import log\n    import data.files\n")
    assert imported_modules(sample) == {"torch", "utils", "data"}


@pytest.mark.parametrize("path", files_of("models"), ids=lambda p: str(p.relative_to(ROOT)))
def test_models_import_no_other_part_of_the_project(path):
    forbidden = imported_modules(path) & (APP | {"data", "transform", "configs"})
    assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}: models/ is the library"


@pytest.mark.parametrize("path", files_of(*PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_package_imports_the_app(path):
    forbidden = imported_modules(path) & APP
    assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}: packages never import the app"


def test_the_app_is_layered():
    assert "engine" not in imported_modules(ROOT / "utils.py"), "utils.py is below engine.py"
    for name in sorted(SCRIPTS | {"engine", "utils"}):
        scripts = imported_modules(ROOT / f"{name}.py") & (SCRIPTS - {name})
        assert not scripts, f"{name}.py imports the scripts {sorted(scripts)}"


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(path[path.index(nxt):] + [nxt])}")
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_every_package_file_serves_the_project_itself():
    """Reachable through imports from a script, engine.py, utils.py or a package's own command."""
    graph, modules = import_graph(), project_modules()
    roots = {name for name in graph if name in SCRIPTS | {"engine", "utils"}}
    roots |= {name for name, path in modules.items()
              if path.name == "__main__.py" or "__name__ == \"__main__\"" in path.read_text(encoding="utf-8")}
    seen, todo = set(), list(roots)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo += graph[node]
        parent = node.rpartition(".")[0]  # importing a.b.c runs a/__init__.py and a/b/__init__.py
        while parent:
            todo.append(parent)
            parent = parent.rpartition(".")[0]
    unused = sorted(name for name in graph if name not in seen)
    assert not unused, f"only tests or benchmarks use {unused}: move them to bench/ or tests/"


def test_no_sys_path_inserts_in_tests_or_bench():
    offenders = [str(p.relative_to(ROOT)) for folder in ("tests", "bench") for p in files_of(folder)
                 if "sys.path.insert" in p.read_text(encoding="utf-8") and p.name != Path(__file__).name]
    assert not offenders, f"sys.path inserts in {offenders}: pyproject.toml and `python -m bench.X` make them needless"
