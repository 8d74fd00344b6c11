"""No file of the machine can reach a shard through a dataset list: image paths that leave the dataset's
folder are bad records in every layout and in data.shards (unless explicitly allowed), and a shard holds
only images that decode. Dataset specs work in data.shards; unreadable CSV lines are one-line errors."""
from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from data import adapters, check, shards
from data.adapters.__main__ import main as adapters_main
from data.datasets import load_pairs

SECRET = b"TOP SECRET: not an image"


def png(path: Path, colour=(40, 90, 160), size=(40, 30), fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


@pytest.fixture
def layout(tmp_path):
    """A secret text file named .png beside a dataset folder with one good image."""
    secret = tmp_path / "secret" / "private.png"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    png(tmp_path / "ds" / "img" / "good.png")
    return tmp_path


def tar_bytes(folder: Path) -> bytes:
    out = b""
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            out += b"".join(tar.extractfile(m).read() for m in tar.getmembers())
    return out


def test_a_csv_cannot_pull_files_from_outside_its_folder_into_a_shard(layout, capsys, caplog):
    rows = [["filepath", "title"], ["../secret/private.png", "a relative escape"],
            [str(layout / "secret" / "private.png"), "an absolute path elsewhere"], ["img/good.png", "a good pair"]]
    with open(layout / "ds" / "pairs.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    spec = f"csv:{layout / 'ds' / 'pairs.csv'}"
    assert adapters_main([spec, "--out", str(layout / "ds" / "pairs.json")]) == 0
    assert [r["caption"] for r in json.loads((layout / "ds" / "pairs.json").read_text())] == ["a good pair"]
    assert capsys.readouterr().err.count("leaves the dataset folder") == 2
    assert shards.main([spec, "--out", str(layout / "shards")]) == 0  # a dataset spec works in data.shards
    assert SECRET not in tar_bytes(layout / "shards")
    assert "1 samples in 1 shard(s); 2 record(s) skipped" in capsys.readouterr().out
    # explicitly allowed, an absolute path is read; a file that is no image still never enters a shard
    allowed = f"{spec}?outside=allow"
    assert shards.main([allowed, "--out", str(layout / "allowed")]) == 0
    assert SECRET not in tar_bytes(layout / "allowed")
    assert "private.png cannot be decoded" in caplog.text


def test_roco_and_rocov2_ids_that_are_paths_are_bad_records(layout):
    rad = layout / "ds" / "roco" / "radiology"
    rad.mkdir(parents=True)
    (rad / "captions.txt").write_text("/etc/shadow\t An absolute id.\n../../../secret/private\t A relative id.\n"
                                      "ROCO_00001\t Axial CT.\n")
    png(rad / "images" / "ROCO_00001.jpg", fmt="JPEG")
    pairs, problems = load_pairs([f"roco:{rad}"], None, 100)
    assert [p.caption for p in pairs] == ["axial ct"]
    assert [p.split("captions.txt")[1] for p in problems] == [":1: the id '/etc/shadow' is not a plain name",
                                                              ":2: the id '../../../secret/private' is not a plain name"]

    with open(layout / "ds" / "valid_captions.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["ID", "Caption"], ["ROCOv2_2023_valid_000001", "Head CT."],
                                  ["../secret/x", "An escape."]])
    png(layout / "ds" / "valid" / "ROCOv2_2023_valid_000001.jpg", fmt="JPEG")
    bad: list = []
    good = adapters.read_pairs(f"rocov2:{layout / 'ds' / 'valid_captions.csv'}", bad)
    assert len(good) == 1 and [str(b).split("valid_captions.csv")[1] for b in bad] == \
        [":3: the ID '../secret/x' is not a plain name"]


def test_data_shards_keeps_json_lists_inside_their_folder_and_stores_only_images_that_decode(layout, capsys):
    png(layout / "ds" / "img" / "really_png.jpg")  # PNG data under a .jpg name
    png(layout / "elsewhere" / "real.png", (200, 10, 10))
    records = [{"image": "../secret/private.png", "caption": "a relative escape"},
               {"image": str(layout / "elsewhere" / "real.png"), "caption": "an absolute path elsewhere"},
               {"image": "img/good.png", "caption": "a good pair"},
               {"image": "img/really_png.jpg", "caption": "a png named jpg"}]
    (layout / "ds" / "list.json").write_text(json.dumps(records))
    info = shards.write_shards([layout / "ds" / "list.json"], layout / "s")
    assert (info["samples"], info["skipped"]) == (2, 2)
    with tarfile.open(layout / "s" / "shards-000000.tar") as tar:
        assert sorted(n for n in tar.getnames() if not n.endswith((".json", ".txt"))) == \
            ["000000000.png", "000000001.png"]  # named by their real format
    info = shards.write_shards([layout / "ds" / "list.json"], layout / "t", allow_outside=True)
    assert (info["samples"], info["skipped"]) == (3, 1)  # the real image elsewhere; never the text file
    assert SECRET not in tar_bytes(layout / "t")
    (layout / "ds" / "only_bad.json").write_text(json.dumps(records[:1]))
    assert shards.main([str(layout / "ds" / "only_bad.json"), "--out", str(layout / "u")]) == 2
    assert "no sample was written" in capsys.readouterr().err


def test_a_csv_field_over_the_csv_limit_is_one_line_naming_the_file(tmp_path, capsys):
    png(tmp_path / "img" / "a.png")
    (tmp_path / "pairs.csv").write_text("filepath,title\nimg/a.png,fine\nimg/a.png,\"" + "x" * 140_000 + "\"\n")
    assert adapters_main([str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert "pairs.csv:3: not readable as CSV" in err and "field larger than field limit" in err
    assert "Traceback" not in err
    assert check.main([str(tmp_path / "pairs.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("data.check: error: ") and "pairs.csv:3" in err and len(err.strip().splitlines()) == 1
