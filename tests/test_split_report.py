"""``split_figures.py report OUT``: pages per flag, escaped text, paging, and, in a real headless browser
(Debian's chromium; skipped where it is not installed), figures and panel boxes actually drawn."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import split_figures
from data.figures.report import figure_flags

BLUE, GREEN = (20, 40, 230), (30, 200, 60)  # the figures' panels
BOX_RED = (0xE6, 0x19, 0x4B)  # the report's first panel colour


def _figure(path: Path) -> None:
    im = Image.new("RGB", (400, 200), "white")
    d = ImageDraw.Draw(im)
    d.rectangle((10, 10, 190, 190), fill=BLUE)
    d.rectangle((210, 10, 390, 190), fill=GREEN)
    im.save(path)


@pytest.fixture
def split_out(tmp_path) -> Path:
    (tmp_path / "images").mkdir()
    captions = ["Two scans. (A) Left scan. (B) Right scan, p < 0.05 & n > 3.",  # paired in reading order
                "Three scans. (A) One. (B) Two. (C) Three.",  # one letter too many: whole-figure fallback
                "Two scans of one patient."]  # no letters at all
    records = []
    for i, caption in enumerate(captions):
        _figure(tmp_path / "images" / f"PMC7{i}_f1.png")
        records.append({"image": f"images/PMC7{i}_f1.png", "caption": caption, "pmcid": f"PMC7{i}"})
    (tmp_path / "captions.json").write_text(json.dumps(records))
    out = tmp_path / "out"
    assert split_figures.main(["--in", str(tmp_path / "captions.json"), "--out", str(out), "--ocr", "none",
                               "--order-fallback", "--no-progress"]) == 0
    return out


def test_report_lists_every_flag_and_escapes_text(split_out):
    assert split_figures.main(["report", str(split_out), "--per-page", "2"]) == 0
    report = split_out / "report"
    index = (report / "index.html").read_text("utf-8")
    # the caption without letters and the one naming a letter too many fall back to the whole figure;
    # the first figure's letters are paired in reading order, so only the second's are never found
    assert "all figures</a>: 3" in index and "whole-figure fallback</a>: 2" in index
    assert "caption letters never found</a>: 1" in index and "caption labels without a panel</a>: 1" in index
    first, second = (report / "all-00001.html").read_text("utf-8"), (report / "all-00002.html").read_text("utf-8")
    assert first.count('class="fig"') == 2 and second.count('class="fig"') == 1
    assert "p &lt; 0.05 &amp; n &gt; 3" in first and "p < 0.05" not in first
    assert 'href="all-00002.html">next' in first and "<rect" in first
    assert (report / "fallback-00001.html").read_text("utf-8").count('class="fig"') == 2


def test_flags_of_an_event():
    event = {"outcome": "matched", "letters": ["A", "B", "C"], "counts": {"labels_without_panel": 1},
             "panels": [[0, 0, 10, 10, "A"], [10, 0, 20, 10, None]], "records": []}
    assert figure_flags(event) == ["letters_not_found", "panels_without_letter", "labels_without_panel"]
    assert figure_flags({"outcome": "fallback", "letters": [], "panels": [[0, 0, 9, 9, None]]}) == ["fallback"]


def test_report_of_a_folder_without_a_run_is_refused(tmp_path):
    assert split_figures.main(["report", str(tmp_path)]) == 2


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_report_draws_figures_and_boxes_in_a_headless_browser(split_out, tmp_path):
    assert split_figures.main(["report", str(split_out)]) == 0
    shot = tmp_path / "shot.png"
    page = (split_out / "report" / "all-00001.html").resolve()
    run = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int).reshape(-1, 3)

    def share(colour) -> float:
        return float((np.abs(pixels - np.array(colour)).max(axis=1) <= 40).mean())

    assert share(BLUE) > 0.01 and share(GREEN) > 0.01  # the figures' images are drawn
    assert share(BOX_RED) > 0.0005  # and so are the panel boxes over them
    assert share((255, 255, 255)) < 0.97  # not a blank page
