"""Shared helpers for the scripts: config loading (from :mod:`configs`), distributed set-up and
collectives, seeds and RNG state, LR schedules, metric logging and atomic checkpoint I/O.
"""
from __future__ import annotations

import argparse
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


def load_state(path: str | Path, mmap: bool = False) -> dict:
    """Load a checkpoint dict with ``weights_only=True`` (no arbitrary code from pickles).

    ``mmap``: map the file instead of reading it, so that looking at a large checkpoint's metadata is cheap.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001  (pickle errors come in many types)
        raise RuntimeError(f"checkpoint {path} could not be loaded safely (weights_only=True): {e}") from e
    if not isinstance(obj, dict):
        raise RuntimeError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    return obj


def _global_step(path: Path) -> int | None:
    """The ``global_step`` a training checkpoint was written at; None for other files (with a warning)."""
    try:
        state = load_state(path, mmap=True).get("state")
    except RuntimeError as e:
        log.warning(f"--resume auto passes over {path}: {e}")
        return None
    step = state.get("global_step") if isinstance(state, dict) else None
    if not isinstance(step, int):
        log.warning(f"--resume auto passes over {path}: it is not a training checkpoint (no state.global_step)")
        return None
    return step


def newest_checkpoint(output_dir: str | Path) -> Path | None:
    """The training checkpoint in ``output_dir`` that is furthest along, for ``--resume auto``.

    Progress is read from the files (their ``global_step``; the newest file among equals), not from
    their times, so a run folder that was copied or restored resumes where it really stopped.
    """
    found = []
    for path in Path(output_dir).glob("checkpoint_*.pth"):
        step = _global_step(path)
        if step is not None:
            found.append((step, path.stat().st_mtime_ns, path))
    return max(found)[2] if found else None


# --------------------------------------------------------------------------------------------------
# Training loop shared by pretrain.py and train_retrieval.py
# --------------------------------------------------------------------------------------------------


def add_common_args(parser) -> None:
    """The command line BLIP users know, plus ``--options key=value`` overrides."""
    parser.add_argument("--config", required=True, help="YAML run config")
    parser.add_argument("--output_dir", required=True, help="where logs, the resolved config and checkpoints go")
    parser.add_argument("--resume", "--checkpoint", dest="resume", default=None,
                        help="checkpoint to continue from, or 'auto' for the newest one in output_dir")
    parser.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides, values parsed as YAML (e.g. init_lr=1e-4 vit_grad_ckpt=true)")
    # Accepted for BLIP compatibility; torchrun's environment decides.
    for flag in ("--distributed", "--world_size", "--dist_url"):
        parser.add_argument(flag, default=None, help=argparse.SUPPRESS)


def setup_run(args, task: str) -> tuple[dict, DistInfo]:
    """Load and validate the config, join the process group, seed, write ``output_dir/config.yaml``."""
    options = list(args.options)
    if args.seed is not None:
        options.append(f"seed={args.seed}")
    config = load_config(args.config, task, options)
    info = init_distributed(args.device)
    seed_everything(config["seed"] + info.rank)
    out = Path(args.output_dir)
    if info.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    barrier()
    log.info(f"{task}: {info.world_size} process(es) on {info.device}; output in {out}")
    return config, info


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Biases, norms, the temperature and position/class tables are not decayed (as nanoGPT/timm do)."""
    return param.ndim < 2 or name.endswith(("pos_embed", "cls_token", "position_embeddings.weight"))


def build_optimizer(model: torch.nn.Module, config: dict) -> torch.optim.AdamW:
    decay, skip = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (skip if not config["weight_decay_all"] and no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": config["weight_decay"]}, {"params": skip, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config["init_lr"])


def lr_at(config: dict, epoch: int, step: int) -> float:
    """The learning rate at ``step`` of ``epoch``: linear warm-up in epoch 0, then per-epoch step or cosine."""
    warmup = config.get("warmup_steps", 0)
    if epoch == 0 and step < warmup:
        return warmup_lr(step, warmup, config["warmup_lr"], config["init_lr"])
    if config["schedule"] == "cosine":
        return cosine_lr(epoch, config["max_epoch"], config["init_lr"], config["min_lr"])
    return step_lr(epoch, config["init_lr"], config["min_lr"], config["lr_decay_rate"])


def alpha_at(config: dict, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Distillation weight, ramped linearly over ``alpha_ramp_epochs`` (2 in pre-training, 1 in retrieval)."""
    ramp = config["alpha_ramp_epochs"] * steps_per_epoch
    return config["alpha"] if ramp <= 0 else config["alpha"] * min(1.0, (epoch * steps_per_epoch + step) / ramp)


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint so that a run resumes exactly."""

    epoch: int = 0
    step: int = 0  # batches done in ``epoch``
    global_step: int = 0
    bad: int = 0  # unreadable records replaced during this epoch
    nonfinite: int = 0  # non-finite losses in a row


def gathered_rng_states() -> list[dict]:
    """Every rank's RNG state (a collective: all ranks must call it)."""
    state = rng_state()
    if get_world_size() == 1:
        return [state]
    out: list = [None] * get_world_size()
    dist.all_gather_object(out, state)
    return out


def save_training_checkpoint(path: Path, model, optimizer, config: dict, state: TrainState, extra: dict | None = None,
                             rng_states: list[dict] | None = None) -> None:
    """Rank 0 writes ``{"model", "optimizer", "config", "epoch", "state", "rng", ...}`` atomically."""
    if not is_main():
        return
    save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": dict(config),
                 "epoch": state.epoch, "state": vars(state).copy(), "rng": rng_states, **(extra or {})}, path)


def resume_training(path: str | Path, model, optimizer) -> tuple[TrainState, dict]:
    """Restore model, optimizer, position and this rank's RNG state from a training checkpoint."""
    ckpt = load_state(path)
    missing = [k for k in ("model", "optimizer", "state") if k not in ckpt]
    if missing:
        raise RuntimeError(f"{path} is not a training checkpoint of this project (no {missing}); "
                           f"use `pretrained:` in the config to start from its weights instead")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    state = TrainState(**ckpt["state"])
    rngs = ckpt.get("rng") or []
    if len(rngs) == get_world_size():
        set_rng_state(rngs[get_rank()])
    else:
        log.warning(f"{path} holds RNG states for {len(rngs)} processes, not {get_world_size()}: not restored")
    log.info(f"resumed from {path} at epoch {state.epoch}, step {state.step}")
    return state, ckpt


def autocast(config: dict, device: torch.device):
    enabled = config["precision"] == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def train_one_epoch(model, loader, optimizer, config: dict, state: TrainState, device: torch.device,
                    step_hook=None) -> dict[str, float]:
    """One epoch of ``loss = sum(model(...).values())`` from ``state.step`` on.

    A batch whose loss is not finite on any rank is skipped by every rank; ``max_nonfinite_steps`` in
    a row stop the run. ``step_hook(state)`` runs after every optimizer step (step checkpoints, logs).
    """
    model.train()
    steps = state.step + len(loader)  # a resumed epoch's loader holds only the batches not yet seen
    meter = MetricLogger(f"epoch {state.epoch}", config["print_freq"])
    for batch in meter.log_every(loader, total=steps, start=state.step):
        lr = lr_at(config, state.epoch, state.step)
        set_lr(optimizer, lr)
        alpha = alpha_at(config, state.epoch, state.step, steps)
        images = batch["images"].to(device, non_blocking=True)
        text = {k: v.to(device) for k, v in batch.items() if k != "images" and isinstance(v, torch.Tensor)}
        with autocast(config, device):
            losses = model(images, text, alpha=alpha)
        loss = sum(losses.values())
        finite = all_reduce_sum(torch.tensor([float(torch.isfinite(loss).item())], device=device))
        state.bad += batch["bad"]
        if finite.item() < get_world_size():
            state.nonfinite += 1
            log.warning(f"non-finite loss at epoch {state.epoch} step {state.step}: step skipped "
                        f"({state.nonfinite} in a row)")
            if state.nonfinite >= config["max_nonfinite_steps"]:
                raise FloatingPointError(f"{state.nonfinite} non-finite losses in a row; the last good checkpoint "
                                         f"is kept. Lower init_lr or use grad_clip")
            optimizer.zero_grad(set_to_none=True)
        else:
            state.nonfinite = 0
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
            optimizer.step()
            meter.update(lr=lr, loss=loss.item(), **{k: v.item() for k, v in losses.items()})
        state.step += 1
        state.global_step += 1
        if step_hook is not None:
            step_hook(state, meter)
    meter.synchronize()
    return meter.averages()


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def find_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """``--resume auto`` -> newest checkpoint in output_dir (None on a fresh start); a path -> itself."""
    if not resume:
        return None
    if resume == "auto":
        return newest_checkpoint(output_dir)
    return Path(resume)


def run_epochs(model, loader, optimizer, config: dict, info: DistInfo, output_dir: str | Path,
               resume: str | None, end_of_epoch, extra_state: dict | None = None) -> TrainState:
    """The epoch loop shared by pre-training and retrieval fine-tuning.

    Resumes (model, optimizer, queues, epoch, step, RNG) from ``resume``; runs ``train_one_epoch``;
    writes ``checkpoint_last.pth`` every ``save_every_steps`` and per-step log lines every
    ``log_every_steps``; after each epoch calls ``end_of_epoch(epoch, train_stats, state)``, which
    returns extra numbers for ``log.txt`` and saves the epoch's checkpoints. ``extra_state`` (e.g. the
    best validation score) is saved in step checkpoints under ``extra`` and restored on resume.
    """
    out = Path(output_dir)
    state = TrainState()
    path = find_resume(resume, out)
    if path is not None:
        state, ckpt = resume_training(path, model, optimizer)
        if extra_state is not None:
            extra_state.update(ckpt.get("extra", {}))
        if state.step >= len(loader):  # the checkpoint closed an epoch
            state = TrainState(epoch=state.epoch + 1, global_step=state.global_step)
    ddp_model = wrap_ddp(model, info)
    save_every, log_every = config["save_every_steps"], config["log_every_steps"]

    def step_hook(st: TrainState, meter: MetricLogger) -> None:
        if log_every and st.global_step % log_every == 0 and is_main():
            append_jsonl(out / "log.txt", {"epoch": st.epoch, "step": st.step, "global_step": st.global_step,
                                           **{f"train_{k}": m.avg for k, m in meter.meters.items()}})
        if save_every and st.global_step % save_every == 0:
            rngs = gathered_rng_states()
            save_training_checkpoint(out / "checkpoint_last.pth", model, optimizer, config, st,
                                     extra={"extra": extra_state or {}}, rng_states=rngs)

    for epoch in range(state.epoch, config["max_epoch"]):
        state.epoch = epoch
        loader.dataset.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        loader.sampler.set_start(state.step * loader.batch_size)
        t0 = time.time()
        stats = train_one_epoch(ddp_model, loader, optimizer, config, state, info.device, step_hook)
        bad = int(all_reduce_sum(torch.tensor([state.bad])).item())
        seen = state.step * loader.batch_size * get_world_size()  # samples drawn this epoch, all ranks
        if bad:
            log.warning(f"epoch {epoch}: {bad} unreadable records were replaced by other samples")
        if bad > config["max_bad_fraction"] * seen:
            raise RuntimeError(f"epoch {epoch}: {bad} of about {seen} records were unreadable, more than "
                               f"max_bad_fraction {config['max_bad_fraction']}; run `python -m data.check`")
        extra = end_of_epoch(epoch, stats, state)
        if is_main():
            append_jsonl(out / "log.txt", {"epoch": epoch, **{f"train_{k}": v for k, v in stats.items()},
                                           "bad_records": bad, "epoch_time_s": round(time.time() - t0, 2),
                                           **(extra or {})})
        state = TrainState(epoch=epoch + 1, global_step=state.global_step)
        barrier()
    return state
