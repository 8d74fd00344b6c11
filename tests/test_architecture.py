"""The import rule, read from the source: scripts -> utils.py -> models/, data/, transform/, configs/;
models/ (the library) imports none of the others; no package imports the app (utils.py or a script);
nothing in tests/ imports from bench/."""
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
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            # A relative import stays inside the file's own package.
            found.add(path.relative_to(ROOT).parts[0])
    return found


def files_of(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_the_parser_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "probe.py"
    sample.write_text("import torch.nn\n\ndef f():\n    from utils import log\n    import data.files\n")
    assert imported_modules(sample) == {"torch", "utils", "data"}


@pytest.mark.parametrize("path", files_of("models"), ids=lambda p: str(p.relative_to(ROOT)))
def test_models_import_no_other_part_of_the_project(path):
    forbidden = imported_modules(path) & (APP | {"data", "transform", "configs"})
    assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}: models/ is the library"


@pytest.mark.parametrize("path", [p for pkg in PACKAGES for p in files_of(pkg)], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_package_imports_the_app(path):
    forbidden = imported_modules(path) & APP
    assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}: packages never import the app"


def test_tests_do_not_import_bench():
    offenders = {str(p.relative_to(ROOT)) for p in files_of("tests") if "bench" in imported_modules(p)}
    assert not offenders, f"tests import bench scripts: {sorted(offenders)}; move what both need into the library"


def test_no_sys_path_inserts_in_tests_or_bench():
    offenders = [str(p.relative_to(ROOT)) for folder in ("tests", "bench") for p in files_of(folder)
                 if "sys.path.insert" in p.read_text(encoding="utf-8") and p.name != Path(__file__).name]
    assert not offenders, f"sys.path inserts in {offenders}: pyproject.toml and `python -m bench.X` make them needless"
