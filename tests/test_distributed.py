"""Gathers and collectives with real torch.distributed processes (gloo on CPU).

- ``all_gather_with_grad`` (torch.distributed.nn's all_gather) gives every rank the same gradients as
  the hand-written autograd gather it replaced (kept here as the reference);
- ``all_gather_uneven`` concatenates slices of different sizes, ``all_gather_no_grad`` equal ones;
- the process group of a CUDA run serves CPU and CUDA tensors alike;
- the collectives of a training epoch, recorded in a 2-process run, are the expected ones;
- ``MEDVL_FORCE_DIST=1`` runs the distributed path (a process group) in one process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.distributed import all_gather_no_grad, all_gather_uneven, all_gather_with_grad, get_rank, get_world_size
from utils import process_group_backend

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.distributed


class ReferenceGather(torch.autograd.Function):
    """The gather this project used before: all_gather forward, all_reduce + own slice backward."""

    @staticmethod
    def forward(ctx, t):  # type: ignore[override]
        ctx.rank, ctx.n = get_rank(), t.shape[0]
        out = [torch.empty_like(t) for _ in range(get_world_size())]
        dist.all_gather(out, t.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def _gather_worker(rank: int, world: int, init_file: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)
        weights = torch.arange(1.0, 1 + world * 3 * 2).view(world * 3, 2) * (rank + 1)  # rank-dependent loss
        grads = []
        for gather in (all_gather_with_grad, ReferenceGather.apply):
            t = torch.randn(3, 2, generator=torch.Generator().manual_seed(rank)).requires_grad_(True)
            (gather(t) * weights).pow(2).sum().backward()
            grads.append(t.grad.tolist())
        uneven = all_gather_uneven(torch.full((rank + 1, 2), float(rank)))
        even = all_gather_no_grad(torch.full((2, 1), float(rank)))
        Path(results, f"{rank}.json").write_text(json.dumps({"grads": grads, "uneven": uneven.tolist(),
                                                             "even": even.tolist()}))
    finally:
        dist.destroy_process_group()


def test_gather_with_grad_matches_the_hand_written_autograd_gather(tmp_path):
    world = 2
    mp.spawn(_gather_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    for rank in range(world):
        out = json.loads((tmp_path / f"{rank}.json").read_text())
        library, reference = (torch.tensor(g) for g in out["grads"])
        assert torch.allclose(library, reference, rtol=1e-6, atol=1e-6)
        assert library.abs().sum() > 0
        assert out["uneven"] == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
        assert out["even"] == [[0.0], [0.0], [1.0], [1.0]]


def test_cuda_runs_register_a_cpu_backend_too():
    """NCCL alone refuses CPU tensors, which object gathers and CPU counters use: a CUDA run must
    create its group with gloo for CPU next to NCCL for CUDA."""
    assert process_group_backend("cuda") == "cpu:gloo,cuda:nccl"
    assert process_group_backend("cpu") == "gloo"
    devices = {part.split(":")[0] for part in process_group_backend("cuda").split(",")}
    assert devices == {"cpu", "cuda"}


def _record_worker(rank: int, world: int, init_file: str, results: str) -> None:
    """Run the epoch-level collectives of the training loop and record each one's tensors."""
    from engine import StopRequest, TrainState, _check_bad_records, _step_flags, gathered_rank_states
    from utils import MetricLogger

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    calls = []
    originals = {name: getattr(dist, name) for name in ("all_reduce", "all_gather", "all_gather_object")}

    def recorder(name):
        def call(*args, **kwargs):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            tensors += [x for a in args if isinstance(a, list) for x in a if isinstance(x, torch.Tensor)]
            calls.append({"op": name, "devices": sorted({t.device.type for t in tensors}),
                          "dtypes": sorted({str(t.dtype) for t in tensors})})
            return originals[name](*args, **kwargs)
        return call

    try:
        for name in originals:
            setattr(dist, name, recorder(name))
        device = torch.device("cpu")
        stop = StopRequest()
        stop.signal = 15 if rank == 0 else None  # only rank 0 got SIGTERM
        loss = torch.tensor(float("nan") if rank == 1 else 1.0)
        skip, stopping = _step_flags(loss, stop)
        assert skip.item() == 1.0 and stopping  # one rank is enough for either
        meter = MetricLogger("epoch 0", 10)
        meter.update(loss=1.0 + rank, itc=2.0)
        meter.synchronize(device)
        state = TrainState(step=4, bad=rank)

        class Loader:
            batch_size = 2

        bad = _check_bad_records(state, Loader(), {"max_bad_fraction": 1.0}, device)
        ranks = gathered_rank_states(state)
        Path(results, f"{rank}.json").write_text(json.dumps({
            "calls": calls, "bad": bad, "loss": meter.averages()["loss"], "count": meter.meters["loss"].count,
            "rank_bad": [r["bad"] for r in ranks]}))
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)
        dist.destroy_process_group()


def test_epoch_collectives_are_few_and_on_the_training_device(tmp_path):
    world = 2
    mp.spawn(_record_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    for rank in range(world):
        out = json.loads((tmp_path / f"{rank}.json").read_text())
        ops = [c["op"] for c in out["calls"]]
        # the step's flags (finite on the device, stop on the host), the meters (all in one tensor), the
        # bad count, the rank states
        assert ops == ["all_reduce", "all_reduce", "all_reduce", "all_reduce", "all_gather_object"]
        assert all(c["devices"] == ["cpu"] for c in out["calls"][:4])  # the device the loop was given
        assert out["calls"][2]["dtypes"] == ["torch.float64"]  # counts and totals exact beyond 2**24
        assert out["bad"] == 1 and out["rank_bad"] == [0, 1]
        assert out["count"] == 2 and out["loss"] == pytest.approx(1.5)


@pytest.mark.slow
def test_forced_process_group_at_world_size_one(tmp_path):
    """MEDVL_FORCE_DIST=1 makes a single process create its process group, so the distributed code path
    (gathers, DDP, object gathers) runs end to end on one device; here a demo pre-training epoch on CPU."""
    from tiny import demo_set, tiny_config

    demo = demo_set(tmp_path, train=8, val=2, test=2)
    cfg = tiny_config(tmp_path, "pretrain", _minilm(), train_file=[str(demo / "train.json")], image_size=32,
                      batch_size=4, max_epoch=1)
    from utils import save_config

    save_config(cfg, tmp_path / "run.yaml")
    args = ["pretrain.py", "--config", str(tmp_path / "run.yaml"), "--output_dir", str(tmp_path / "out")]
    env = dict(os.environ, MEDVL_FORCE_DIST="1", MASTER_PORT=str(_free_port()), PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 process(es) on cpu, process group gloo" in proc.stderr
    assert (tmp_path / "out" / "checkpoint_00.pth").is_file()


def _minilm() -> str:
    from tiny import minilm_folder

    return minilm_folder()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
