"""Files the project writes (checkpoints, shards, crops, JSON) are created with the user's umask, as
open() would create them, not mkstemp's 0600: a shared cluster folder must stay readable to the group."""
from __future__ import annotations

import os
import stat
from contextlib import contextmanager

import pytest
from PIL import Image

from data.files import atomic_write_bytes, atomic_write_json
from data.shards import write_shards
from data.records import PairRecord, write_records


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_writes_honour_the_umask(tmp_path, mask):
    with umask(mask):
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_json(tmp_path / "b.json", {"a": 1})
    assert mode(tmp_path / "a.bin") == mode(tmp_path / "b.json") == 0o666 & ~mask


def test_checkpoints_and_shards_are_readable_by_the_group(tmp_path):
    import torch

    from engine import save_atomic

    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "img.png")
    write_records(tmp_path / "pairs.json", [{"image": "img.png", "caption": "a small test image"}], PairRecord)
    with umask(0o022):
        save_atomic({"model": {"w": torch.zeros(2)}}, tmp_path / "checkpoint_00.pth")
        write_shards([tmp_path / "pairs.json"], tmp_path / "shards")
    written = [tmp_path / "checkpoint_00.pth", *sorted((tmp_path / "shards").iterdir())]
    assert {p.name: mode(p) for p in written} == {"checkpoint_00.pth": 0o644, "shards-000000.tar": 0o644,
                                                  "shards.json": 0o644, "sizes.json": 0o644}
