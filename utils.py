"""Shared helpers for the scripts: config loading (from :mod:`configs`), distributed set-up and
collectives, seeds and RNG state, LR schedules, metric logging and atomic checkpoint I/O.
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
import random
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from configs import ConfigError, load_config, save_config  # noqa: F401  (re-exported for the scripts)

log = logging.getLogger("medvl")

# --------------------------------------------------------------------------------------------------
# Distributed
# --------------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None, timeout_min: int = 30) -> DistInfo:
    """Join the process group that torchrun (or SLURM) describes; a single process needs nothing set.

    Backend: nccl on CUDA, gloo on CPU. ``device`` is ``cuda``, ``cpu`` or None (CUDA when present).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} was asked for, but CUDA is not available")
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rank, world, local = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
        env.setdefault("RANK", str(rank))
        env.setdefault("WORLD_SIZE", str(world))
        if world > 1 and "MASTER_ADDR" not in env:
            raise RuntimeError("SLURM run with several tasks: set MASTER_ADDR and MASTER_PORT "
                               "(e.g. the first host of $SLURM_JOB_NODELIST and a free port)")
    else:
        rank, world, local = 0, 1, 0
    if device.startswith("cuda"):
        torch.cuda.set_device(local % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=timeout_min))
    info = DistInfo(rank, world, local, dev)
    setup_logging(info.rank)
    return info


def setup_logging(rank: int) -> None:
    """INFO on rank 0, WARNING elsewhere, so that only one process narrates."""
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (returns a new tensor; identity at world size 1)."""
    if get_world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


@torch.no_grad()
def all_gather_no_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every process along dim 0 (sizes may differ). No gradient flows."""
    world = get_world_size()
    if world == 1:
        return t
    sizes = [torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], device=t.device))
    sizes = [int(s.item()) for s in sizes]
    padded = t.new_zeros((max(sizes), *t.shape[1:]))
    padded[: t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[:n] for o, n in zip(out, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each process the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.n = get_rank(), t.shape[0]
        out = [torch.empty_like(t) for _ in range(get_world_size())]
        dist.all_gather(out, t.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (equal sizes on every process) along dim 0, keeping gradients to each owner."""
    if get_world_size() == 1:
        return t
    return _GatherWithGrad.apply(t)


# --------------------------------------------------------------------------------------------------
# Seeds and RNG state
# --------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global RNG state as tensors and plain types (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": [py[0], list(py[1]), py[2]],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------
# Learning-rate schedules (pure functions of the position in training)
# --------------------------------------------------------------------------------------------------


def cosine_lr(epoch: int, max_epoch: int, init_lr: float, min_lr: float) -> float:
    return (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / max_epoch)) + min_lr


def warmup_lr(step: int, max_step: int, init_lr: float, max_lr: float) -> float:
    return min(max_lr, init_lr + (max_lr - init_lr) * step / max(max_step, 1))


def step_lr(epoch: int, init_lr: float, min_lr: float, decay_rate: float) -> float:
    return max(min_lr, init_lr * decay_rate ** epoch)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --------------------------------------------------------------------------------------------------
# Metric logging
# --------------------------------------------------------------------------------------------------


class SmoothedValue:
    """A running average over a window plus a global average."""

    def __init__(self, window: int = 20):
        self.values: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.values.append(value)
        self.total += value * n
        self.count += n

    @property
    def avg(self) -> float:
        return sum(self.values) / max(len(self.values), 1)

    @property
    def global_avg(self) -> float:
        return self.total / max(self.count, 1)


class MetricLogger:
    """Meters plus a progress line with rate and ETA every ``print_freq`` iterations (rank 0 only)."""

    def __init__(self, header: str, print_freq: int = 50):
        self.meters: dict[str, SmoothedValue] = defaultdict(SmoothedValue)
        self.header = header
        self.print_freq = max(1, print_freq)

    def update(self, **values: float) -> None:
        for k, v in values.items():
            self.meters[k].update(float(v))

    def synchronize(self) -> None:
        """Sum counts and totals over processes so that global averages cover every rank."""
        if get_world_size() == 1:
            return
        for meter in self.meters.values():
            t = all_reduce_sum(torch.tensor([meter.count, meter.total], dtype=torch.float64))
            meter.count, meter.total = int(t[0].item()), float(t[1].item())

    def averages(self) -> dict[str, float]:
        return {k: m.global_avg for k, m in self.meters.items()}

    def log_every(self, iterable: Iterable, total: int, start: int = 0) -> Iterator:
        t0 = time.time()
        for i, item in enumerate(iterable, start=start):
            yield item
            done = i + 1 - start
            if (i + 1) % self.print_freq == 0 or i + 1 == total:
                rate = done / max(time.time() - t0, 1e-9)
                eta = datetime.timedelta(seconds=int((total - i - 1) / max(rate, 1e-9)))
                meters = "  ".join(f"{k}: {m.avg:.4f}" for k, m in self.meters.items())
                log.info(f"{self.header} [{i + 1}/{total}]  {meters}  {rate:.2f} it/s  eta {eta}")


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line (numbers stay numbers) and flush it to disk."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------------------------
# Checkpoint I/O
# --------------------------------------------------------------------------------------------------


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_state(path: str | Path) -> dict:
    """Load a checkpoint dict with ``weights_only=True`` (no arbitrary code from pickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (pickle errors come in many types)
        raise RuntimeError(f"checkpoint {path} could not be loaded safely (weights_only=True): {e}") from e
    if not isinstance(obj, dict):
        raise RuntimeError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    return obj


def newest_checkpoint(output_dir: str | Path) -> Path | None:
    """The most recently written ``checkpoint_*.pth`` in ``output_dir`` (for ``--resume auto``)."""
    found = sorted(Path(output_dir).glob("checkpoint_*.pth"), key=lambda p: p.stat().st_mtime_ns)
    return found[-1] if found else None
