"""load_pairs: image ids of several training files never merge different images."""
from __future__ import annotations

import json

from PIL import Image

from data.datasets import load_pairs


def test_equal_image_ids_in_two_files_are_two_images_but_one_path_is_one_image(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    # Both files number their images from 0: a.png and b.png are different images with the same id.
    (tmp_path / "one.json").write_text(json.dumps([{"image": "a.png", "caption": "first", "image_id": 0},
                                                   {"image": "a.png", "caption": "again a", "image_id": 0}]))
    (tmp_path / "two.json").write_text(json.dumps([{"image": "b.png", "caption": "second", "image_id": 0},
                                                   {"image": "c.png", "caption": "third"}]))
    (tmp_path / "three.json").write_text(json.dumps([{"image": "c.png", "caption": "c once more"}]))
    pairs, problems = load_pairs([tmp_path / f for f in ("one.json", "two.json", "three.json")], None, 30)
    assert not problems
    ids = [p.image_id for p in pairs]
    assert ids[0] == ids[1]  # one image, two captions, in one file
    assert ids[2] != ids[0]  # id 0 of another file is another image
    assert ids[3] == ids[4] != ids[2]  # the same path without ids is the same image, in any file
