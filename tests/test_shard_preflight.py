"""Shards are checked before step one: sample counts from the tar headers against sizes.json (an under-
or over-count stops the run with both numbers), truncated, empty and image-less shards counted against
max_bad_fraction with the list, the work split over ranks; captions that are not UTF-8 are bad samples."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from data import check, shards
from data.datasets import DatasetError
from data.shard_files import raw_samples
from data.shard_dataset import open_sample, shard_train_loader
from tiny import demo_set, tiny_config
from transform import build_transform
from utils import save_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_set(tmp_path_factory.mktemp("data"))


def collate(samples: list[dict]) -> dict:
    return {"images": torch.stack([s["image"] for s in samples]), "captions": [s["caption"] for s in samples],
            "bad": sum(s["bad"] for s in samples)}


def loader_for(tmp_path, demo, pattern: str, **overrides):
    config = {**tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"), **overrides), "num_workers": 0}
    return shard_train_loader(config, [pattern], build_transform(config, train=True), collate, 1, 0, 4)


def write(demo: Path, out: Path) -> dict:
    return shards.write_shards([demo / "pretrain.json"], out, shard_size=8)  # 32 samples in 4 shards


def set_sizes(out: Path, count: int) -> None:
    sizes = json.loads((out / "sizes.json").read_text())
    (out / "sizes.json").write_text(json.dumps({name: count for name in sizes}))


@pytest.mark.parametrize("claimed", [2, 1000])
def test_a_sizes_json_that_miscounts_stops_the_run_with_both_counts(tmp_path, demo, claimed, capsys):
    out = tmp_path / "s"
    info = write(demo, out)
    set_sizes(out, claimed)  # 2: an epoch of 8 of the 32 samples; 1000: 250 steps re-reading the same 32
    with pytest.raises(DatasetError, match=rf"sizes.json says \S*shards-000000.tar holds {claimed} samples, but "
                                           rf"it is a complete tar with 8"):
        loader_for(tmp_path, demo, info["pattern"])
    assert check.main([info["pattern"]]) == 1
    printed = capsys.readouterr().out
    assert printed.count(f"holds {claimed} samples, but it is a complete tar with 8") == 4
    assert "unreadable" not in printed  # the cause is the count, not the shards


def test_pretrain_refuses_a_miscounting_sizes_json_in_one_line_with_exit_2(tmp_path, demo):
    out = tmp_path / "s"
    info = write(demo, out)
    set_sizes(out, 2)
    save_config(tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"), train_file=[info["pattern"]]),
                tmp_path / "run.yaml")
    run = subprocess.run([sys.executable, "pretrain.py", "--config", str(tmp_path / "run.yaml"), "--output_dir",
                          str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 2, run.stderr[-2000:]
    assert "sizes.json says" in run.stderr and "Traceback" not in run.stderr
    assert not list((tmp_path / "run").glob("checkpoint_*.pth"))


def _drop_member(shard: Path, name: str) -> None:
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.name != name]
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data))


def test_broken_shards_are_counted_against_max_bad_fraction_before_step_one(tmp_path, demo, caplog):
    out = tmp_path / "s"
    info = write(demo, out)
    first, second, third = (out / f"shards-{i:06d}.tar" for i in range(3))
    _drop_member(first, "000000003.png")  # a sample without its image
    second.write_bytes(b"")  # a 0-byte shard
    data = third.read_bytes()
    third.write_bytes(data[:len(data) // 2])  # cut in the middle
    with pytest.raises(DatasetError, match="max_bad_fraction") as err:
        loader_for(tmp_path, demo, info["pattern"])
    message = str(err.value)
    assert "shards-000000.tar#000000003: no image" in message
    assert "shards-000001.tar: an empty file (0 bytes); 8 sample(s) lost" in message
    assert "shards-000002.tar: cut short" in message
    caplog.clear()
    loader = loader_for(tmp_path, demo, info["pattern"], max_bad_fraction=0.6)  # tolerated: trains on the rest
    assert "12 of 32 shard samples are bad" in caplog.text  # 1 without image, 8 + 3 lost
    assert len(loader) == (8 + 5 + 8) // 4  # the samples that are there: no padding, no re-reading


def test_without_a_process_group_a_rank_scans_every_shard(tmp_path, demo):
    from data.shard_check import scan_shards
    from data.shard_files import expand

    info = write(demo, tmp_path / "s")
    urls = expand([info["pattern"]])
    scans = scan_shards(urls, rank=1, world_size=3, progress=False)  # no exchange possible: all of them
    assert [s.url for s in scans] == urls and all(s.samples == 8 and not s.fault and not s.bad for s in scans)


def _scan_worker(rank: int, world: int, init_file: str, urls: list[str], results: str) -> None:
    import torch.distributed as dist

    from data.shard_check import preflight_shards, scan_shards

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        scans = scan_shards(urls, rank=rank, world_size=world, progress=False)
        sizes = preflight_shards(urls, 0.01, rank=rank, world_size=world, progress=False)
        Path(results, f"{rank}.json").write_text(json.dumps({"urls": [s.url for s in scans], "sizes": sizes}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_scan_their_share_and_all_get_every_count(tmp_path, demo):
    import torch.multiprocessing as mp

    from data.shard_files import expand

    info = write(demo, tmp_path / "s")
    urls = expand([info["pattern"]])
    mp.spawn(_scan_worker, args=(2, str(tmp_path / "init"), urls, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"{rank}.json").read_text())
        assert got == {"urls": urls, "sizes": [8, 8, 8, 8]}


def test_a_caption_that_is_not_utf8_is_a_bad_sample(tmp_path, demo, capsys):
    out = tmp_path / "s"
    info = write(demo, out)
    shard = out / "shards-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            if m.name == "000000002.txt":
                data = bytes(range(128, 256))  # random bytes, not a caption
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    sample = next(s for s in raw_samples(str(shard)) if s["__key__"] == "000000002")
    with pytest.raises(ValueError, match="not UTF-8"):
        open_sample(sample, 30)
    assert check.main([info["pattern"]]) == 1
    assert "shards-000000.tar#000000002: the caption is not UTF-8 text" in capsys.readouterr().out
