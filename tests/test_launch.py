"""What a many-GPU launch needs from the start-up and the loaders: a refused loopback gloo address across
machines, TF32 on CUDA, each machine's first rank building the model first, loader workers that live
for the whole run with one OpenCV thread, and the image check split over ranks."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from configs import ConfigError
from data.loader import Collator, train_loader
from tiny import demo_set, tiny_config
from utils import check_gloo_address, set_tf32, spans_machines

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.rehearsal


@pytest.mark.parametrize("env,many", [
    ({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}, True),
    ({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"}, False),
    ({"WORLD_SIZE": "16", "SLURM_NNODES": "2"}, True),
    ({"WORLD_SIZE": "4"}, False),
])
def test_a_launch_over_several_machines_is_recognised(env, many):
    assert spans_machines(env) is many


def test_a_loopback_host_address_is_refused_across_machines():
    env = {"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}
    with pytest.raises(ConfigError, match="resolves to the loopback address 127.*GLOO_SOCKET_IFNAME"):
        check_gloo_address(env, hostname="localhost")
    check_gloo_address({**env, "GLOO_SOCKET_IFNAME": "ib0"}, hostname="localhost")  # the documented fix
    check_gloo_address({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"}, hostname="localhost")  # one machine


def test_tf32_is_set_on_cuda_only():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        set_tf32(True, torch.device("cpu"))
        assert not torch.backends.cuda.matmul.allow_tf32
        set_tf32(True, torch.device("cuda"))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        set_tf32(False, torch.device("cuda"))
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_tf32_is_a_config_key_on_by_default(tmp_path):
    cfg = tiny_config(tmp_path, "pretrain", "unused")
    assert cfg["tf32"] is True


def _first_worker(rank: int, world: int, init_file: str, folder: str) -> None:
    import os

    from models.distributed import local_main_first

    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        with local_main_first():
            if rank == 0:
                time.sleep(0.5)  # a download
                Path(folder, "cache").write_text("downloaded")
            else:
                Path(folder, "seen").write_text(str(Path(folder, "cache").exists()))
    finally:
        dist.destroy_process_group()


def test_each_machines_first_rank_runs_the_block_first(tmp_path):
    mp.spawn(_first_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "seen").read_text() == "True"


class _OpenCVThreads(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        import cv2

        return cv2.getNumThreads()


def test_loader_workers_use_one_opencv_thread_without_hanging():
    """Set in the parent before the fork, also after the parent ran OpenCV's thread pool (a child that
    reconfigured the pool could wait forever)."""
    import cv2

    cv2.GaussianBlur(np.zeros((512, 512), np.float32), (9, 9), 2)  # the parent's pool is running
    loader = train_loader(_OpenCVThreads(), 1, lambda rows: rows[0], 1, 0, seed=0, num_workers=2)
    assert [batch for batch in loader] == [1, 1]


def _epoch_batches(loader, epoch: int) -> list[torch.Tensor]:
    loader.dataset.set_epoch(epoch)
    loader.sampler.set_epoch(epoch)
    return [b["images"] for b in loader]


@pytest.mark.slow
def test_persistent_workers_see_each_epochs_augmentation(tmp_path):
    """Workers forked once still draw each epoch's own crops: the epoch travels with each sample's key."""
    from data.datasets import PairDataset, load_pairs
    from transform import build_transform

    demo = demo_set(tmp_path, train=8, val=1, test=1)
    cfg = tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"), train_file=[str(demo / "pretrain.json")])
    pairs, _ = load_pairs([demo / "pretrain.json"], None, 30)
    ds = PairDataset(pairs, build_transform(cfg, train=True), seed=3)
    collate = Collator(lambda texts: {"input_ids": torch.zeros(len(texts), 2, dtype=torch.long),
                                      "attention_mask": torch.ones(len(texts), 2, dtype=torch.long)})
    serial = train_loader(ds, 4, collate, 1, 0, seed=3, num_workers=0)
    workers = train_loader(ds, 4, collate, 1, 0, seed=3, num_workers=2)
    assert workers.persistent_workers and not serial.persistent_workers
    expected = [_epoch_batches(serial, e) for e in (0, 1)]
    got = [_epoch_batches(workers, e) for e in (0, 1)]
    pids = set(w.pid for w in workers._iterator._workers)
    assert len(pids) == 2  # the same two workers served both epochs
    for e in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(expected[e], got[e]))
    assert not all(torch.equal(a, b) for a, b in zip(got[0], got[1]))  # each epoch its own crops


def test_training_start_checks_existence_with_the_split_header_check(tmp_path, monkeypatch):
    """Every rank used to stat every image while reading the lists; the header check, which the ranks
    split, finds a missing image as well, with its record."""
    import data.datasets
    from data.train_data import build_train_loader

    demo = demo_set(tmp_path, train=8, val=1, test=1)
    records = json.loads((demo / "pretrain.json").read_text())
    records[0]["image"] = "images/absent.png"
    (demo / "broken.json").write_text(json.dumps(records))
    monkeypatch.setattr(data.datasets, "image_exists", lambda path: pytest.fail(f"stat of {path} on every rank"))
    cfg = tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"), train_file=[str(demo / "broken.json")],
                      max_bad_fraction=0.5)
    from models import init_tokenizer

    loader = build_train_loader(cfg, cfg["train_file"], init_tokenizer(str(demo / "tokenizer")), 0, 1, 4)
    assert "absent.png" not in {Path(p.image).name for p in loader.dataset.pairs}
    assert len(loader.dataset.pairs) == sum(len(r["caption"]) if isinstance(r["caption"], list) else 1
                                            for r in records[1:])
