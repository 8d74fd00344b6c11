"""python -m data.resize: images pre-resized once, the list rewritten to point at them."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from data.datasets import load_pairs
from data.resize import main, resized


def test_resized_keeps_aspect_and_never_enlarges():
    assert resized(Image.new("RGB", (900, 600)), 448).size == (672, 448)
    assert resized(Image.new("RGB", (300, 1200)), 448).size == (300, 1200)


def test_resize_command_writes_copies_and_a_list_that_trains(tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (600, 900, 3), dtype=np.uint8)).save(src / "images" / "big.png")
    Image.fromarray(rng.integers(0, 255, (80, 100), dtype=np.uint8), mode="L").save(src / "images" / "small.png")
    records = [{"image": "images/big.png", "caption": "a mass", "pmcid": "PMC1"},
               {"image": "images/big.png", "caption": "the same figure, another caption"},
               {"image": "images/small.png", "caption": ["two", "captions"]},
               {"image": "images/missing.png", "caption": "gone"}]
    (src / "captions.json").write_text(json.dumps(records))
    out = tmp_path / "out"
    assert main(["--in", str(src / "captions.json"), "--out", str(out), "--side", "224"]) == 0
    new = json.loads((out / "captions.json").read_text())
    assert [r["caption"] for r in new] == [r["caption"] for r in records] and new[0]["pmcid"] == "PMC1"
    assert new[0]["image"] == new[1]["image"] != new[2]["image"]  # one copy per distinct image
    with Image.open(out / new[0]["image"]) as img:
        assert img.size == (336, 224) and img.mode == "RGB"
    with Image.open(out / new[2]["image"]) as img:
        assert img.size == (100, 80)
    assert new[3]["image"] == str((src / "images" / "missing.png").resolve())  # unreadable: left as it was
    pairs, problems = load_pairs([out / "captions.json"], None, 30)
    assert len(pairs) == 4 and len(problems) == 1
    assert pairs[0].image_id == pairs[1].image_id != pairs[2].image_id
