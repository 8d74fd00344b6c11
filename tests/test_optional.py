"""Optional dependencies: a feature whose packages are missing stops with the install line of its extra."""
from __future__ import annotations

import pytest

import models.optional as optional
from data import errors


@pytest.fixture
def without(monkeypatch):
    """Make the named modules look uninstalled."""
    def hide(*modules: str) -> None:
        real = optional._installed
        monkeypatch.setattr(optional, "_installed", lambda m: m not in modules and real(m))
    return hide


def test_reading_a_nifti_without_nibabel_names_the_extra(tmp_path, without):
    from data.volumes import read_nifti

    without("nibabel")
    with pytest.raises(optional.MissingDependency, match=r"reading NIfTI .*vol.nii.gz needs nibabel.*"
                                                          r"pip install 'medvl\[clinical\]'") as info:
        read_nifti(tmp_path / "vol.nii.gz")
    assert errors.exit_code(info.value) == errors.BAD_INPUT


def test_scrape_without_requests_is_one_line_and_exit_2(tmp_path, without, caplog):
    import scrape

    without("requests")
    assert scrape.main(["--query", "brain", "--out", str(tmp_path / "out")]) == 2
    assert "scrape.py needs requests" in caplog.text and "medvl[scrape]" in caplog.text


def test_ocr_back_end_without_its_package(without):
    from data.figures.ocr import make_ocr

    without("rapidocr_onnxruntime")
    with pytest.raises(optional.MissingDependency, match=r"medvl\[figures\]"):
        make_ocr("rapidocr").prepare()


def test_every_extra_names_modules_that_exist_here():
    """The extras list real import names (all installed in the test environment)."""
    for extra, modules in optional.EXTRAS.items():
        assert all(optional._installed(m) for m in modules), extra
