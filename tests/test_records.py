"""The records between the pipeline stages: one reader that names file, index and key, one writer."""
from __future__ import annotations

import json

import pytest

from data.files import JsonListError
from data.records import (BadRecord, FigureRecord, PairRecord, RecordError, SubFigureRecord, check_record,
                          indexed_records, read_records, subfigure_record, write_records)


def _write(tmp_path, entries) -> str:
    path = tmp_path / "list.json"
    path.write_text(json.dumps(entries))
    return str(path)


def test_reader_names_file_index_and_key(tmp_path):
    path = _write(tmp_path, [{"image": "a.png", "caption": "x"}, {"image": "b.png", "caption": 3}])
    with pytest.raises(RecordError, match=r"list.json\[1\]: 'caption' must be a string or a non-empty list"):
        read_records(path, PairRecord)
    bad: list[BadRecord] = []
    assert read_records(path, PairRecord, bad=bad) == [{"image": "a.png", "caption": "x"}]
    assert [(b.index, b.where.endswith("list.json[1]")) for b in bad] == [(1, True)]
    with pytest.raises(JsonListError, match="must hold a JSON list"):
        read_records(_write(tmp_path, {"image": "a.png"}), PairRecord)


def test_types_and_required_keys():
    assert check_record({"image": "a.png", "caption": ["one", "two"], "image_id": 7, "extra": None}, PairRecord) == ""
    assert "'image' is missing" in check_record({"caption": "x"}, PairRecord)
    assert "not an object" in check_record("a.png", PairRecord)
    assert "'image' must be a non-empty path string, not an empty string" in check_record(
        {"image": "", "caption": "x"}, FigureRecord)
    assert "'width' must be an integer" in check_record({"image": "a", "caption": "x", "width": True}, FigureRecord)
    assert "'panel_label' is missing" in check_record({"image": "a", "caption": "x", "parent_image": "p",
                                                       "box": [0, 0, 1, 1]}, SubFigureRecord)


def test_subfigure_keeps_article_keys_but_not_image_facts():
    parent: FigureRecord = {"image": "images/PMC1_F2.png", "caption": "(A) x. (B) y.", "pmcid": "PMC1",
                            "license": "CC BY", "width": 640, "height": 480, "sha256": "ab" * 32, "note": "kept"}
    sub = subfigure_record(parent, "images/PMC1_F2_A.png", "x.", "A", [0, 0, 320, 480])
    assert sub == {"image": "images/PMC1_F2_A.png", "caption": "x.", "pmcid": "PMC1", "license": "CC BY",
                   "note": "kept", "parent_image": "images/PMC1_F2.png", "panel_label": "A", "box": [0, 0, 320, 480]}
    assert check_record(sub, SubFigureRecord) == ""


def test_writer_refuses_a_bad_record_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "pairs.json"
    write_records(path, [{"image": "a.png", "caption": "x"}], PairRecord)
    with pytest.raises(RecordError, match=r"pairs.json\[1\] \(not written\): 'caption' is missing"):
        write_records(path, [{"image": "a.png", "caption": "y"}, {"image": "b.png"}], PairRecord)
    assert [i for i, _ in indexed_records(path, PairRecord)] == [0]
    assert read_records(path, PairRecord) == [{"image": "a.png", "caption": "x"}]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
