"""split_figures.py at scale: workers and shards give what one process gives, kill -9 and rerun
continues without redoing or duplicating anything, merge joins shards, folders refuse other settings."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


import split_figures
from data.shard_files import expand, raw_samples
from bench.compound_synth import LAYOUTS, build, load_tiles

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("subfigures.json", "failed.json", "summary.json")


def make_input(folder: Path, fixtures: Path, n: int, tile_w: int = 120, seed: int = 3) -> Path:
    """captions.json with ``n`` built compound figures (two per article), one single image and two bad records."""
    tiles = load_tiles(fixtures / "image_caption")
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True)
    records = []
    for i in range(n):
        fig = build(tiles, LAYOUTS[i % len(LAYOUTS)], rng, tile_w=tile_w)
        name = f"images/PMC{1000 + i // 2}_fig{i % 2 + 1}.png"
        fig.image.save(folder / name)
        caption = "MRI of the brain. " + " ".join(f"({x}) View {x.lower()}." for x in fig.labels)
        records.append({"image": name, "caption": caption, "pmcid": f"PMC{1000 + i // 2}"})
    tiles[0].save(folder / "images" / "PMC9_fig1.png")
    records.insert(1, {"image": "images/PMC9_fig1.png", "caption": "Axial CT.", "pmcid": "PMC9"})
    records.insert(3, {"image": "images/missing.png", "caption": "(A) x. (B) y.", "pmcid": "PMC8"})
    records.insert(4, {"caption": "no image key"})
    path = folder / "captions.json"
    path.write_text(json.dumps(records))
    return path


def tree(out: Path, extra: tuple[str, ...] = ()) -> dict[str, bytes]:
    """The outputs that must agree, by relative path: record files, summary, splits and every crop."""
    files = {name: (out / name).read_bytes() for name in OUTPUTS + extra}
    files.update({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "images").rglob("*"))
                  if p.is_file()})
    return files


def run(inp: Path, out: Path, *extra: str) -> int:
    return split_figures.main(["--in", str(inp), "--out", str(out), "--no-progress", *extra])


def figure_events(out: Path) -> list[dict]:
    lines = (out / "split_manifest.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip() and json.loads(line)["event"] == "figure"]


def test_workers_match_one_process(tmp_path, fixtures_dir):
    """Two worker processes, each with its own rapidocr engine, write what one process writes."""
    inp = make_input(tmp_path / "in", fixtures_dir, n=4)
    splits = ("--splits", "0.5,0.25,0.25", "--seed", "5")
    one, two = tmp_path / "one", tmp_path / "two"
    assert run(inp, one, "--ocr", "rapidocr", *splits) == 0
    assert run(inp, two, "--ocr", "rapidocr", "--workers", "2", *splits) == 0
    want = tree(one, ("train.json", "val.json", "test.json"))
    assert tree(two, ("train.json", "val.json", "test.json")) == want
    summary = json.loads(want["summary.json"])
    assert summary["figures"] == 7 and summary["failed"] == 2 and summary["matched"] >= 3
    assert any(name.startswith("images/") for name in want)  # crops were made and compared


def test_shards_merged_match_one_process(tmp_path, fixtures_dir):
    inp = make_input(tmp_path / "in", fixtures_dir, n=6)
    options = ("--ocr", "none", "--order-fallback")
    splits = ("--splits", "0.5,0.25,0.25", "--seed", "5")
    one = tmp_path / "one"
    assert run(inp, one, *options, *splits) == 0
    want = tree(one, ("train.json", "val.json", "test.json"))
    assert sum(name.startswith("images/") for name in want) >= 6
    shards = [tmp_path / f"shard{i}" for i in range(3)]
    for i, folder in enumerate(shards):
        assert run(inp, folder, *options, "--shard", f"{i}/3") == 0
    assert json.loads((shards[1] / "summary.json").read_text())["shard"] == "1/3"
    merged = tmp_path / "merged"
    assert split_figures.main(["merge", *map(str, reversed(shards)), "--out", str(merged), *splits,
                               "--webdataset", "--shard-size", "4"]) == 0
    assert tree(merged, ("train.json", "val.json", "test.json")) == want
    for name in ("subfigures", "train"):  # tar shards of the merged lists, one sample per pair
        rows = json.loads((merged / f"{name}.json").read_text())
        info = json.loads((merged / "shards" / name / "shards.json").read_text())
        assert info["samples"] == len(rows) and sum(1 for u in expand([info["pattern"]]) for _ in raw_samples(u)) == len(rows)


def test_merge_refuses_missing_repeated_and_foreign_shards(tmp_path, fixtures_dir, caplog):
    inp = make_input(tmp_path / "in", fixtures_dir, n=2)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert run(inp, a, "--ocr", "none", "--shard", "0/2") == 0
    assert run(inp, b, "--ocr", "none", "--shard", "1/2") == 0
    assert run(inp, c, "--ocr", "none", "--shard", "1/2", "--no-context") == 0
    merged = str(tmp_path / "m")
    assert split_figures.main(["merge", str(a), "--out", merged]) == 2
    assert "shard(s) 1/2 missing" in caplog.text
    assert split_figures.main(["merge", str(a), str(b), str(b), "--out", merged]) == 2
    assert "given twice" in caplog.text
    assert split_figures.main(["merge", str(a), str(c), "--out", merged]) == 2
    assert "different runs" in caplog.text and "context" in caplog.text
    assert split_figures.main(["merge", str(a), str(b), "--out", merged]) == 0
    assert run(inp, a, "--ocr", "none", "--shard", "0/2", "--splits", "0.8,0.1,0.1") == 2


def test_folder_refuses_other_settings_and_a_live_owner(tmp_path, fixtures_dir, caplog):
    inp = make_input(tmp_path / "in", fixtures_dir, n=2)
    out = tmp_path / "out"
    assert run(inp, out, "--ocr", "none") == 0
    before = tree(out)
    assert run(inp, out, "--ocr", "none", "--workers", "2") == 0  # workers are not a setting of the folder
    assert tree(out) == before and len(figure_events(out)) == 4
    assert run(inp, out, "--ocr", "none", "--order-fallback") == 2
    assert "other settings" in caplog.text and "order_fallback" in caplog.text
    (out / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))
    assert run(inp, out, "--ocr", "none") == 73  # the folder is held by another live run (data/errors.py)
    assert "in use by another" in caplog.text
    assert run(inp, out, "--ocr", "none", "--shard", "2/2") == 2 and "0..N-1" in caplog.text


def _start(inp: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "split_figures.py"), "--in", str(inp), "--out", str(out), "--ocr", "none",
           "--order-fallback", "--workers", "2", "--no-progress", "--log-level", "WARNING"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_after_first_figures(proc: subprocess.Popen, manifest: Path, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count('"event": "figure"') >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_sigkill_and_rerun_continue_without_redoing_or_duplicating(tmp_path, fixtures_dir):
    inp = make_input(tmp_path / "in", fixtures_dir, n=20, tile_w=160, seed=9)
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert run(inp, reference, "--ocr", "none", "--order-fallback") == 0

    proc = _start(inp, out)
    _kill_after_first_figures(proc, out / "split_manifest.jsonl")
    time.sleep(0.5)  # the workers die with their parent; give them a moment
    done_at_kill = {e["index"] for e in figure_events(out)}
    assert 2 <= len(done_at_kill) < 22

    proc = _start(inp, out)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    events = figure_events(out)
    assert len(events) == len({e["index"] for e in events}) == 22  # every figure once
    manifest = [json.loads(x) for x in (out / "split_manifest.jsonl").read_text().splitlines()]
    rerun_start = [e for e in manifest if e["event"] == "start"][-1]
    assert rerun_start["todo"] == 22 - len(done_at_kill)  # finished figures were not redone
    assert tree(out) == tree(reference)
    leftovers = [p for p in out.rglob(".tmp-*")]
    assert not leftovers and not (out / ".lock").exists()
    crops = {p.relative_to(out).as_posix() for p in (out / "images").rglob("*") if p.is_file()}
    used = {r["image"] for r in json.loads((out / "subfigures.json").read_text())}
    assert crops and crops <= used  # no crop of a killed figure is left over without a record


def test_tar_output_is_named_apart_from_work_shards():
    """``--webdataset`` (tar shards out) reads differently from ``--shard I/N`` (a share of the work);
    ``--shards`` still works, in both scripts."""
    import argparse

    from data.scrape.config import add_arguments

    for flag in ("--webdataset", "--shards"):
        assert split_figures.parse_args(["--in", "c.json", "--out", "o", flag]).shards
        assert add_arguments(argparse.ArgumentParser()).parse_args([flag]).shards
    assert not split_figures.parse_args(["--in", "c.json", "--out", "o", "--shard", "0/2"]).shards
