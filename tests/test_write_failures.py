"""A write the file system refuses (disk full, quota, file too large) ends data.shards and split_figures
with one line and exit 74, loses nothing, and the same command run again finishes byte-identical to an
uninterrupted run; a merge with a crop missing is refused before anything is written.

The refusal is real: the commands run in a child process whose file-size limit (RLIMIT_FSIZE, with
SIGXFSZ ignored) makes the kernel fail the write with EFBIG, as a full disk fails it with ENOSPC."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import split_figures
from data.errors import WRITE_FAILED
from tests.test_split_scale import make_input, tree
from tiny import demo_set

ROOT = Path(__file__).resolve().parents[1]


def limited(max_bytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited across exec: writes fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def command(args: list[str], max_bytes: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"},
                          preexec_fn=limited(max_bytes) if max_bytes else None)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_data_shards_stops_at_a_refused_write_and_a_rerun_is_identical(tmp_path):
    demo = demo_set(tmp_path / "d")
    records = json.loads((demo / "pretrain.json").read_text())
    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(demo / "images" / "noise.png")  # ~270 kB: its shard exceeds the limit
    records[20] = {**records[20], "image": "images/noise.png"}
    (demo / "list.json").write_text(json.dumps(records))
    args = ["-m", "data.shards", str(demo / "list.json"), "--shard-size", "8", "--out"]
    cut = command(args + [str(tmp_path / "a")], max_bytes=150_000)
    assert cut.returncode == WRITE_FAILED, cut.stderr[-2000:]
    assert "data.shards: error: cannot write" in cut.stderr and "Traceback" not in cut.stderr
    written = files(tmp_path / "a")
    assert sorted(written) == ["shards-000000.tar", "shards-000001.tar", "sizes.json"]  # no temporary file, no lock
    assert command(args + [str(tmp_path / "a")]).returncode == 0
    assert command(args + [str(tmp_path / "b")]).returncode == 0
    again, clean = files(tmp_path / "a"), files(tmp_path / "b")
    assert again.pop("shards.json") != clean.pop("shards.json")  # it names its own folder
    assert again == clean


def test_split_figures_with_workers_stops_at_a_refused_write_and_a_rerun_is_identical(tmp_path, fixtures_dir):
    inp = make_input(tmp_path / "in", fixtures_dir, n=6, tile_w=300)  # crops of 40 to 150 kB
    args = ["split_figures.py", "--in", str(inp), "--ocr", "none", "--order-fallback", "--workers", "2",
            "--no-progress", "--out"]
    cut = command(args + [str(tmp_path / "a")], max_bytes=100_000)
    assert cut.returncode == WRITE_FAILED, cut.stderr[-2000:]
    assert "cannot write" in cut.stderr and "Traceback" not in cut.stderr
    assert command(args + [str(tmp_path / "a")]).returncode == 0
    assert not list((tmp_path / "a").rglob(".tmp-*"))  # what the stopped workers left is cleaned up
    assert command(args + [str(tmp_path / "b")]).returncode == 0
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


def test_merge_with_a_missing_crop_writes_nothing(tmp_path, fixtures_dir, caplog):
    inp = make_input(tmp_path / "in", fixtures_dir, n=4)
    a, b = tmp_path / "a", tmp_path / "b"
    for shard, folder in (("0/2", a), ("1/2", b)):
        assert split_figures.main(["--in", str(inp), "--out", str(folder), "--ocr", "none", "--order-fallback",
                                   "--no-progress", "--shard", shard]) == 0
    lost = sorted((b / "images").glob("*.png"))[0]
    lost.unlink()
    merged = tmp_path / "m"
    assert split_figures.main(["merge", str(a), str(b), "--out", str(merged)]) == 2
    assert f"crop(s) that the shard folders' manifests list are missing ({lost}" in caplog.text
    assert not merged.exists()
