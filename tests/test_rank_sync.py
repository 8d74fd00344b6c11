"""Training steps in a real 2-process group (gloo): no host read per step, queues that start apart (each
rank seeds its own) and stay equal after DDP's one buffer sync, and no per-step buffer broadcast."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tiny import ListLoader, demo_set, tiny_config

pytestmark = [pytest.mark.distributed, pytest.mark.rehearsal]
STEPS = 3
# Reads that are meant to be on the host: the stop request, a CPU flag exchanged over gloo each step.
HOST_FLAGS = ("engine.py:stop_agreed",)


def _batches(model, captions: list[str], rank: int, max_length: int) -> list[dict]:
    from models.tokenizer import tokenize

    gen = torch.Generator().manual_seed(100 + rank)
    out = []
    for step in range(STEPS):
        enc = tokenize(model.tokenizer, captions[step * 4:(step + 1) * 4], max_length)
        out.append({"images": torch.randn(4, 3, 32, 32, generator=gen), **enc, "bad": 0,
                    "image_ids": torch.arange(4) + 4 * (step + STEPS * rank)})
    return out


def _worker(rank: int, world: int, init_file: str, results: str, cfg: dict, task: str, captions: list[str]) -> None:
    import os

    from host_reads import HostReads
    from models import build_model
    from engine import StopRequest, TrainState, build_optimizer, train_one_epoch, wrap_ddp
    from utils import DistInfo

    import models.text_fast

    # The accelerator's branch: on the CPU the text shortcuts may read masks to skip padding (free there).
    models.text_fast.host_reads = lambda device: False
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(cfg["seed"] + rank)  # as setup_run seeds: each rank draws its own queues
        model = build_model(cfg, task, load_weights=False)
        start_queue = model.image_queue.clone()
        ddp = wrap_ddp(model, DistInfo(rank, world, rank, torch.device("cpu")))
        optimizer = build_optimizer(model, cfg)
        loader = ListLoader(_batches(model, captions, rank, cfg["max_length"]), batch_size=4)
        counter = HostReads()

        def mark(state, meter, force_save=False):
            counter.step = state.step

        with counter.watching():
            train_one_epoch(ddp, loader, optimizer, cfg, TrainState(), torch.device("cpu"), mark, StopRequest())
        queues = {name: buf.clone() for name, buf in model.named_buffers() if "queue" in name}
        gathered = {}
        for name, q in queues.items():
            parts = [torch.empty_like(q) for _ in range(world)]
            dist.all_gather(parts, q)
            gathered[name] = all(torch.equal(parts[0], p) for p in parts[1:])
        start = [torch.empty_like(start_queue) for _ in range(world)]
        dist.all_gather(start, start_queue)
        Path(results, f"{rank}.json").write_text(json.dumps({
            "reads": counter.reads, "equal": gathered, "started_apart": not torch.equal(start[0], start[1]),
            "moved": not torch.equal(start_queue, model.image_queue),
            "sync_buffers": bool(getattr(ddp, "forward_sync_buffers", getattr(ddp, "broadcast_buffers", True)))}))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_set(tmp_path_factory.mktemp("data"), train=12, val=2, test=2)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["pretrain", "retrieval"])
def test_steps_read_nothing_back_and_queues_stay_equal_across_ranks(tmp_path, demo, task):
    extra = {"negative_all_rank": True} if task == "retrieval" else {"train_file": [str(demo / "pretrain.json")]}
    cfg = tiny_config(tmp_path, task, str(demo / "tokenizer"), print_freq=1000, **extra)
    captions = [r["caption"] for r in json.loads((demo / "pretrain.json").read_text())]
    world = 2
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path), cfg, task, captions), nprocs=world,
             join=True)
    for rank in range(world):
        out = json.loads((tmp_path / f"{rank}.json").read_text())
        # Steps before the last: only the stop flag. The last step reads the meters (the progress line).
        during = [(step, what, where) for step, what, where in out["reads"] if step < STEPS - 1]
        unexpected = sorted({(what, where) for _, what, where in during if not where.startswith(HOST_FLAGS)})
        assert unexpected == [], unexpected
        assert any(r[2].startswith(HOST_FLAGS) for r in during)  # the counter sees reads at all
        assert out["started_apart"] and out["moved"]
        assert all(out["equal"].values()) and len(out["equal"]) >= 2
        assert not out["sync_buffers"]
