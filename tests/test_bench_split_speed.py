"""bench/split_speed.py: a figure that cannot be split stops the benchmark instead of passing for speed."""
from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw

from bench import split_speed


def _fixtures(root, with_images: bool):
    (root / "image_caption").mkdir(parents=True)
    (root / "image_caption" / "sample.jsonl").write_text("")
    (root / "compound_figures").mkdir()
    if with_images:
        for name in split_speed.REAL:
            image = Image.new("RGB", (200, 100), "white")
            draw = ImageDraw.Draw(image)
            draw.rectangle([5, 5, 90, 95], fill=(60, 60, 60))
            draw.rectangle([110, 5, 195, 95], fill=(60, 60, 60))
            image.save(root / "compound_figures" / name)


def test_a_missing_image_stops_the_run_and_is_named(tmp_path):
    _fixtures(tmp_path / "fx", with_images=False)
    with pytest.raises(SystemExit, match=split_speed.REAL[0]):
        split_speed.main(["--sets", "real", "--ocr", "none", "--workers", "1", "--fixtures", str(tmp_path / "fx")])


def test_a_relative_fixtures_folder_is_read(tmp_path, monkeypatch, capsys):
    _fixtures(tmp_path / "fx", with_images=True)
    monkeypatch.chdir(tmp_path)
    split_speed.main(["--sets", "real", "--ocr", "none", "--workers", "1", "--fixtures", "fx"])
    report = json.loads(capsys.readouterr().out)["real_fixture_figures"]
    assert report["profile_1_process"]["figures"] == 3 and report["throughput"][0]["figures"] == 3
