"""The training app's helpers, shared by ``pretrain.py`` and ``train_retrieval.py``: distributed set-up,
logging, seeds and RNG state, learning-rate schedules, metric meters, ``train_one_epoch``, checkpoint
save and resume.

The scripts write their own epoch loop on top of these; the library (``models/``) never imports this file.
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import inspect
import logging
import math
import os
import random
import signal
import sys
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from configs import ConfigError, dump_yaml, load_config  # noqa: F401  (ConfigError re-exported for the scripts)
from data.files import FolderLock, append_jsonl, atomic_copy, atomic_write, atomic_write_text, remove_temp_files
from models.checkpoint import CheckpointError, load_state
from models.config import ModelSetupError
from models.distributed import all_reduce_sum, get_rank, get_world_size, is_dist, is_main

log = logging.getLogger("medvl")

# --------------------------------------------------------------------------------------------------
# Distributed set-up
# --------------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    lock: FolderLock | None = None  # rank 0's claim on output_dir, released by cleanup_distributed

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def process_group_backend(device_type: str) -> str:
    """The backend string of the process group: on GPUs NCCL for CUDA tensors *and* gloo for CPU ones.

    NCCL alone refuses CPU tensors ("No backend type associated with device type cpu"), and some of the
    run's collectives carry CPU tensors (object gathers of RNG states, CPU-side counters), so a CUDA run
    registers both backends; a CPU run needs gloo only.
    """
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


def _launch_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's or SLURM's environment; (0, 1, 0) for a plain process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rank, world, local = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
        env.setdefault("RANK", str(rank))
        env.setdefault("WORLD_SIZE", str(world))
        if world > 1 and "MASTER_ADDR" not in env:
            raise RuntimeError("SLURM run with several tasks: set MASTER_ADDR and MASTER_PORT "
                               "(e.g. the first host of $SLURM_JOB_NODELIST and a free port)")
        return rank, world, local
    return 0, 1, 0


def spans_machines(env: Mapping[str, str]) -> bool:
    """Whether the launch described by ``env`` has processes on more than one machine."""
    world = int(env.get("WORLD_SIZE", "1"))
    if "LOCAL_WORLD_SIZE" in env:  # torchrun
        return world > int(env["LOCAL_WORLD_SIZE"])
    return int(env.get("SLURM_NNODES", env.get("SLURM_JOB_NUM_NODES", "1"))) > 1


def check_gloo_address(env: Mapping[str, str], hostname: str | None = None) -> None:
    """Refuse a multi-machine launch whose gloo group would bind to a loopback address.

    gloo (the backend of the CPU tensors, on GPUs too) takes this machine's address from its host name
    unless ``GLOO_SOCKET_IFNAME`` names an interface; many clusters map the host name to 127.0.1.1 in
    /etc/hosts, and then the first collective between machines hangs until the timeout.
    """
    if not spans_machines(env) or env.get("GLOO_SOCKET_IFNAME"):
        return
    import socket

    host = hostname or socket.gethostname()
    try:
        address = socket.gethostbyname(host)
    except OSError:
        return  # gloo will report the name it cannot resolve
    if address.startswith("127."):
        raise ConfigError(f"this run spans several machines, and the host name {host!r} resolves to the loopback "
                           f"address {address}: gloo would listen there, out of the other machines' reach, and "
                           f"the first collective would hang. Set GLOO_SOCKET_IFNAME to the network interface the "
                           f"machines share (e.g. ib0 or eth0; `ip -br addr` lists them) in the job script")


def init_distributed(device: str | None = None, timeout_s: int = 1800) -> DistInfo:
    """Join the process group that torchrun (or SLURM) describes; a single process needs nothing set.

    ``device`` is ``cuda``, ``cpu`` or None (CUDA when present). ``MEDVL_FORCE_DIST=1`` creates the
    process group even for one process, so that one GPU runs every collective of the distributed path.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} was asked for, but CUDA is not available")
    if not device.startswith(("cuda", "cpu")):
        raise ValueError(f"--device {device!r}: expected cuda or cpu")
    rank, world, local = _launch_env()
    if device.startswith("cuda"):
        torch.cuda.set_device(local % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    force = os.environ.get("MEDVL_FORCE_DIST", "") not in ("", "0")
    if (world > 1 or force) and not dist.is_initialized():
        check_gloo_address(os.environ)
        if world == 1:
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group(process_group_backend(dev.type), rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
    info = DistInfo(rank, world, local, dev)
    setup_logging(info.rank)
    return info


def setup_logging(rank: int) -> None:
    """INFO on rank 0, WARNING elsewhere, so that only one process narrates."""
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup_distributed(info: DistInfo | None = None) -> None:
    """Leave the process group and release ``output_dir`` (call in a ``finally``)."""
    if info is not None and info.lock is not None:
        info.lock.release()
    if is_dist():
        dist.destroy_process_group()


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

    def __init__(self, window: int = 20, count: int = 0, total: float = 0.0):
        self.values: deque[float] = deque(maxlen=window)
        self.total = total
        self.count = count

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
    """Meters plus a progress line with rate and ETA every ``print_freq`` iterations (rank 0 only).

    ``totals`` ({name: [count, total]}) restores the global averages of a resumed epoch.
    """

    def __init__(self, header: str, print_freq: int = 50, totals: Mapping[str, list] | None = None):
        self.meters: dict[str, SmoothedValue] = defaultdict(SmoothedValue)
        for k, (count, total) in (totals or {}).items():
            self.meters[k] = SmoothedValue(count=int(count), total=float(total))
        self.header = header
        self.print_freq = max(1, print_freq)
        self._pending: list[tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]] = []

    def update(self, **values: float) -> None:
        for k, v in values.items():
            self.meters[k].update(float(v))

    def record(self, counted: torch.Tensor, values: Mapping[str, torch.Tensor], **host: float) -> None:
        """Keep one step's values without reading them: ``counted`` (0-dim bool) and ``values`` (0-dim
        tensors) stay on the device until :meth:`flush`; ``host`` values (e.g. lr) are plain floats."""
        self._pending.append((counted.detach(), {k: v.detach() for k, v in values.items()}, host))

    def flush(self) -> list[bool]:
        """Read the recorded steps in one transfer, add the counted ones to the meters; returns each
        step's ``counted`` flag, in order."""
        if not self._pending:
            return []
        rows = torch.stack([torch.stack([c.float(), *(v.float() for v in values.values())])
                            for c, values, _ in self._pending]).tolist()
        flags = []
        for row, (_, values, host) in zip(rows, self._pending):
            flags.append(bool(row[0]))
            if row[0]:
                self.update(**host, **dict(zip(values, row[1:])))
        self._pending.clear()
        return flags

    def totals(self) -> dict[str, list]:
        return {k: [m.count, m.total] for k, m in self.meters.items()}

    def synchronize(self, device: torch.device) -> None:
        """Sum counts and totals over processes so that global averages cover every rank.

        One collective for all meters, on the training device (NCCL takes CUDA tensors only). Every
        rank logs the same meter names, since every rank runs the same model.
        """
        if not is_dist() or not self.meters:
            return
        names = sorted(self.meters)
        t = torch.tensor([[self.meters[k].count, self.meters[k].total] for k in names], dtype=torch.float64,
                         device=device)
        t = all_reduce_sum(t).cpu()
        for k, (count, total) in zip(names, t.tolist()):
            self.meters[k].count, self.meters[k].total = int(count), float(total)

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


# --------------------------------------------------------------------------------------------------
# Checkpoint files
# --------------------------------------------------------------------------------------------------


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file that is fsync'd and renamed: a crash or a full disk never
    leaves half a file under the real name, nor a temporary file behind."""
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: torch.save(obj, tmp))
    except (OSError, RuntimeError) as e:
        import shutil

        free = shutil.disk_usage(path.parent).free / 2**20
        raise OSError(f"could not write {path} ({free:.0f} MB free on its disk; is it full?): {e}") from e


def save_config(config: Mapping, path: str | Path) -> None:
    """Write the resolved run config as YAML, atomically."""
    atomic_write_text(path, dump_yaml(config))


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
    their times, so a run folder that was copied or restored resumes where it really stopped. A folder
    whose checkpoint files are all unusable is refused: starting afresh would overwrite them.
    """
    found, unusable = [], []
    for path in sorted(Path(output_dir).glob("checkpoint_*.pth")):
        step = _global_step(path)
        if step is None:
            unusable.append(path.name)
        else:
            found.append((step, path.stat().st_mtime_ns, path))
    if unusable and not found:
        raise RuntimeError(f"--resume auto: no checkpoint in {output_dir} can be resumed from ({', '.join(unusable)}: "
                           f"corrupt or not training checkpoints); name one with --resume PATH, move them away, "
                           f"or start afresh in another --output_dir")
    return max(found)[2] if found else None


def find_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """``--resume auto`` -> the furthest checkpoint in output_dir (None on a fresh start); a path -> itself."""
    if not resume:
        return None
    if resume == "auto":
        return newest_checkpoint(output_dir)
    return Path(resume)


# --------------------------------------------------------------------------------------------------
# Run set-up
# --------------------------------------------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The command line BLIP users know, plus ``--options key=value`` overrides."""
    parser.add_argument("--config", required=True, help="YAML run config")
    parser.add_argument("--output_dir", required=True, help="where logs, the resolved config and checkpoints go")
    parser.add_argument("--resume", "--checkpoint", dest="resume", default=None,
                        help="checkpoint to continue from, or 'auto' for the furthest one in output_dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh even if output_dir holds another run's checkpoints (they are replaced)")
    parser.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    parser.add_argument("--device", default=None, choices=("cuda", "cpu"),
                        help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides, values parsed as YAML (e.g. init_lr=1e-4 vit_grad_ckpt=true)")
    # Accepted for BLIP compatibility; torchrun's environment decides.
    for flag in ("--distributed", "--world_size", "--dist_url"):
        parser.add_argument(flag, default=None, help=argparse.SUPPRESS)


def set_tf32(enabled: bool, device: torch.device) -> None:
    """TensorFloat-32 for fp32 matmuls and convolutions on CUDA (the ``tf32`` key). On an A100/H100 an
    fp32 matmul runs several times faster with TF32; torch up to 1.11, which BLIP trained with, had it
    on by default. The CPU has no TF32: nothing changes there."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def make_deterministic() -> None:
    """Remove the run-to-run differences torch can remove: deterministic kernels (an error where an op
    has none), one intra-op thread (threaded CPU reductions round differently from run to run), and
    cuDNN/cuBLAS set for reproducibility. Must run before any CUDA work."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def claim_output_dir(out: Path, resume_arg: str | None, overwrite: bool) -> FolderLock:
    """Lock ``out`` for this run (rank 0), refuse a fresh start over another run's checkpoints, and
    remove the temporary files of writes that were killed. Returns the lock (released at exit too)."""
    lock = FolderLock(out, "training run")
    for note in lock.acquire():
        log.warning(note)
    atexit.register(lock.release)
    existing = sorted(p.name for p in out.glob("checkpoint_*.pth"))
    if existing and not resume_arg and not overwrite:
        lock.release()
        raise RuntimeError(f"{out} already holds checkpoints of a run ({', '.join(existing[:4])}"
                           f"{', ...' if len(existing) > 4 else ''}): continue it with --resume auto, choose "
                           f"another --output_dir, or pass --overwrite to start afresh and replace them")
    for leftover in remove_temp_files(out):
        log.info(f"removed {leftover}, left by a write that was interrupted")
    return lock


def setup_run(args: argparse.Namespace, task: str, trains: bool = True) -> tuple[dict, DistInfo]:
    """Load and validate the config, join the process group, seed, claim ``output_dir`` and write
    ``output_dir/config.yaml``. ``trains``: the run writes checkpoints (not a pure evaluation)."""
    options = list(args.options)
    if args.seed is not None:
        options.append(f"seed={args.seed}")
    config = load_config(args.config, task, options)
    if config["deterministic"]:
        make_deterministic()
    info = init_distributed(args.device, config["dist_timeout_s"])
    set_tf32(config["tf32"], info.device)
    seed_everything(config["seed"] + info.rank)
    out = Path(args.output_dir)
    if info.rank == 0:
        info.lock = claim_output_dir(out, args.resume, args.overwrite or not trains)
        save_config(config, out / "config.yaml")
    barrier()
    group = f", process group {dist.get_backend()}" if is_dist() else ""
    tf32 = f", TF32 {'on' if config['tf32'] else 'off'}" if info.device.type == "cuda" else ""
    log.info(f"{task}: {info.world_size} process(es) on {info.device}{group}; precision {config['precision']}"
             f"{tf32}; output in {out}")
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
    # Fused AdamW (one kernel over all tensors, CUDA and CPU; the same update): on a 2-core CPU it stepped
    # 5x faster than the per-tensor loop, and foreach was slower than the loop there (bench/README.md).
    fused = all(p.device.type in ("cuda", "cpu") and p.is_floating_point() for p in decay + skip)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config["init_lr"], fused=fused)


def lr_at(config: dict, epoch: int, step: int) -> float:
    """The learning rate at ``step`` of ``epoch``: linear warm-up in epoch 0, then per-epoch step or cosine."""
    warmup = config.get("warmup_steps", 0)  # retrieval has no warm-up key
    if epoch == 0 and step < warmup:
        return warmup_lr(step, warmup, config["warmup_lr"], config["init_lr"])
    if config["schedule"] == "cosine":
        return cosine_lr(epoch, config["max_epoch"], config["init_lr"], config["min_lr"])
    return step_lr(epoch, config["init_lr"], config["min_lr"], config["lr_decay_rate"])


def alpha_at(config: dict, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Distillation weight, ramped linearly over ``alpha_ramp_epochs`` (2 in pre-training, 1 in retrieval)."""
    ramp = config["alpha_ramp_epochs"] * steps_per_epoch
    return config["alpha"] if ramp <= 0 else config["alpha"] * min(1.0, (epoch * steps_per_epoch + step) / ramp)


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DDP that syncs buffers once, not before every forward.

    The only buffers are the ITC queues and their pointer. Each rank draws its initial queues from its
    own seed, so rank 0's are broadcast here; from then on every rank writes the same gathered features
    into them, so they stay equal by construction, and re-broadcasting them (about 120 MB at BLIP's queue
    size) would cost a collective per step.
    """
    if not is_dist():
        return model
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
    # torch 2.14 renamed the switch; ``broadcast_buffers`` still works there, with a deprecation warning.
    params = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, **no_sync)


def _drop_unreadable(pairs: list, problems: list[str], config: dict, info: DistInfo) -> list:
    """Check the header of every training image before step one (the ranks share the work), add the
    records that use a bad one to ``problems``, refuse the data above ``max_bad_fraction``, and return
    the pairs that remain. Records are counted, not images: 100 records of one broken image are 100."""
    from data.check import check_image_files, record_problems
    from data.datasets import report_problems

    records = len({p.where for p in pairs}) + len(problems)
    bad_images = check_image_files([p.image for p in pairs], max_pixels=config["max_image_pixels"],
                                   shard=(info.rank, info.world_size))
    if is_dist():
        found: list = [None] * info.world_size
        dist.all_gather_object(found, bad_images)
        bad_images = {image: reason for shard in found for image, reason in shard.items()}
    problems = problems + record_problems(pairs, bad_images)
    report_problems(problems, records, config["max_bad_fraction"], "train_file")
    return [p for p in pairs if str(p.image) not in bad_images]


def build_train_loader(config: dict, files: list[str], tokenizer: Any, info: DistInfo, batch_size: int):
    """The training loader both scripts use: pairs read and checked (or WebDataset shards streamed),
    augmentation, tokenization in the collate function, a resumable sampler sharded over ranks.
    Raises when no full batch can be made."""
    from data.datasets import PairDataset, load_pairs
    from data.loader import Collator, train_loader
    from data.shard_dataset import is_shard_spec, shard_train_loader
    from models.tokenizer import TextTokenizer
    from transform import build_transform

    transform = build_transform(config, train=True)
    collate = Collator(TextTokenizer(tokenizer, config["max_length"]), config["laterality_negatives"])
    if any(is_shard_spec(f) for f in files):
        return shard_train_loader(config, files, transform, collate, info.world_size, info.rank, batch_size)
    # Existence is checked with the headers, which the ranks split between them.
    pairs, problems = load_pairs(files, config["image_root"], config["max_words"], check_files=False)
    pairs = _drop_unreadable(pairs, problems, config, info)
    dataset = PairDataset(pairs, transform, seed=config["seed"], max_pixels=config["max_image_pixels"])
    loader = train_loader(dataset, batch_size, collate, info.world_size, info.rank, config["seed"],
                          config["num_workers"])
    if len(loader) == 0:
        raise ValueError(f"{len(pairs)} pairs make no full batch of {batch_size} per process "
                         f"on {info.world_size} process(es); lower the batch size")
    log.info(f"{len(pairs)} pairs, {len(loader)} steps per epoch")
    return loader


# --------------------------------------------------------------------------------------------------
# Training state, checkpoints and resume
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint so that a run resumes exactly."""

    epoch: int = 0
    step: int = 0  # batches done in ``epoch``
    global_step: int = 0
    bad: int = 0  # unreadable records replaced during this epoch (this rank)
    nonfinite: int = 0  # non-finite losses in a row
    epoch_done: bool = False  # the epoch's own work (checkpoint, log line, evaluation) is done
    meters: dict = field(default_factory=dict)  # this rank's {name: [count, total]} of the epoch so far

    def next_epoch(self) -> "TrainState":
        return TrainState(epoch=self.epoch + 1, global_step=self.global_step)


def _rank_state(state: TrainState) -> dict:
    """What differs between ranks: RNG states, bad-record counts and meter totals."""
    return {"rng": rng_state(), "bad": state.bad, "meters": state.meters}


def gathered_rank_states(state: TrainState) -> list[dict]:
    """Every rank's own state (a collective: all ranks must call it)."""
    mine = _rank_state(state)
    if not is_dist():
        return [mine]
    out: list = [None] * get_world_size()
    dist.all_gather_object(out, mine)
    return out


def save_checkpoint(paths: list[Path], model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: dict,
                    state: TrainState, extra: dict | None = None) -> None:
    """Every rank's state is gathered, then rank 0 writes ``{"model", "optimizer", "config", "epoch", "state",
    "rng", "ranks", "extra"}`` atomically to ``paths[0]`` and links (or copies) it to the other paths
    (a collective)."""
    ranks = gathered_rank_states(state)
    if not is_main():
        return
    ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": dict(config),
            "epoch": state.epoch, "state": asdict(state), "rng": [r["rng"] for r in ranks],
            "ranks": [{k: v for k, v in r.items() if k != "rng"} for r in ranks], "extra": extra or {}}
    save_atomic(ckpt, paths[0])
    for path in paths[1:]:
        atomic_copy(paths[0], path)


def resume(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[TrainState, dict]:
    """Restore model, optimizer, position and this rank's RNG state, bad count and meters.

    Returns the state and the checkpoint's ``extra`` (e.g. the best validation score so far).
    """
    ckpt = load_state(path)
    missing = [k for k in ("model", "optimizer", "state") if k not in ckpt]
    if missing:
        raise RuntimeError(f"{path} is not a training checkpoint of this project (no {missing}); "
                           f"use `pretrained:` in the config to start from its weights instead")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    state = TrainState(**ckpt["state"])
    rngs, ranks = ckpt.get("rng") or [], ckpt.get("ranks") or []
    if len(rngs) == get_world_size():
        set_rng_state(rngs[get_rank()])
        if len(ranks) == len(rngs):
            state.bad, state.meters = ranks[get_rank()]["bad"], ranks[get_rank()]["meters"]
    else:
        log.warning(f"{path} holds RNG states for {len(rngs)} processes, not {get_world_size()}: not restored")
    log.info(f"resumed from {path} at epoch {state.epoch}, step {state.step}")
    return state, ckpt.get("extra") or {}


def start_state(resume_arg: str | None, output_dir: str | Path, model: torch.nn.Module,
                optimizer: torch.optim.Optimizer) -> tuple[TrainState, dict]:
    """A fresh state, or the one ``--resume`` names; a checkpoint whose epoch's work is done moves on."""
    path = find_resume(resume_arg, output_dir)
    if path is None:
        return TrainState(), {}
    state, extra = resume(path, model, optimizer)
    return (state.next_epoch() if state.epoch_done else state), extra


def _start_epoch(loader, state: TrainState) -> None:
    """Seed the epoch's augmentation and order; a resumed epoch skips the batches already done."""
    loader.dataset.set_epoch(state.epoch)
    loader.sampler.set_epoch(state.epoch)
    loader.sampler.set_start(min(state.step, len(loader.sampler) // loader.batch_size) * loader.batch_size)


def _check_bad_records(state: TrainState, loader, config: dict, device: torch.device) -> int:
    """The epoch's replaced records over all ranks; too many stop the run with a clear error."""
    bad = int(all_reduce_sum(torch.tensor([state.bad], device=device)).item())
    seen = state.step * loader.batch_size * get_world_size()  # samples drawn this epoch, all ranks
    if bad:
        log.warning(f"epoch {state.epoch}: {bad} unreadable records were replaced by other samples")
    if bad > config["max_bad_fraction"] * seen:
        raise RuntimeError(f"epoch {state.epoch}: {bad} of about {seen} records were unreadable, more than "
                           f"max_bad_fraction {config['max_bad_fraction']}; run `python -m data.check`")
    return bad


class RunLog:
    """``log.txt`` (one JSON line per record, numbers as numbers) and, with ``report_to: tensorboard``,
    the same numbers as TensorBoard scalars under ``output_dir/tensorboard``. Rank 0 only."""

    def __init__(self, output_dir: Path, report_to: str = "none"):
        self.path = Path(output_dir) / "log.txt"
        self.writer = None
        if report_to == "tensorboard" and is_main():
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ConfigError(f"report_to: tensorboard needs the tensorboard package ({e}); "
                                  f"pip install tensorboard") from None
            self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def write(self, record: dict) -> None:
        """Append ``record``; step records (with ``global_step``) plot by step, epoch records by epoch."""
        if not is_main():
            return
        append_jsonl(self.path, record)
        if self.writer is not None:
            per_step = "global_step" in record
            x = record["global_step"] if per_step else record["epoch"]
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "step"):
                    self.writer.add_scalar(f"{'step' if per_step else 'epoch'}/{key}", value, x)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def log_epoch(run_log: RunLog, state: TrainState, stats: dict, bad: int, seconds: float,
              extra: dict | None = None) -> None:
    """One record per epoch: the epoch's training means, bad records, time, and ``extra`` (metrics)."""
    run_log.write({"epoch": state.epoch, **{f"train_{k}": v for k, v in stats.items()}, "bad_records": bad,
                   "epoch_time_s": round(seconds, 2), **(extra or {})})


class StepHook:
    """After each optimizer step: a ``log.txt`` line every ``log_every_steps`` and ``checkpoint_last.pth``
    every ``save_every_steps`` (with ``extra`` from ``get_extra()``, e.g. the best score so far)."""

    def __init__(self, output_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: dict,
                 run_log: RunLog, get_extra: Callable[[], dict] = dict):
        self.out, self.model, self.optimizer, self.config = Path(output_dir), model, optimizer, config
        self.run_log, self.get_extra = run_log, get_extra

    def __call__(self, state: TrainState, meter: MetricLogger, force_save: bool = False) -> None:
        log_every, save_every = self.config["log_every_steps"], self.config["save_every_steps"]
        if log_every and state.global_step % log_every == 0:
            self.run_log.write({"epoch": state.epoch, "step": state.step, "global_step": state.global_step,
                                **{f"train_{k}": m.avg for k, m in meter.meters.items()}})
        if force_save or (save_every and state.global_step % save_every == 0):
            save_checkpoint([self.out / "checkpoint_last.pth"], self.model, self.optimizer, self.config, state,
                            self.get_extra())


# --------------------------------------------------------------------------------------------------
# One epoch
# --------------------------------------------------------------------------------------------------


def autocast(config: dict, device: torch.device):
    enabled = config["precision"] == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped on request with a checkpoint written; requeue to continue


class Preempted(Exception):
    """SIGTERM or SIGINT arrived; every rank wrote ``checkpoint_last.pth`` at a step boundary, or with the
    end-of-epoch checkpoint when the request came during the epoch's own work (retrieval's evaluation)."""


class StopRequest:
    """Turns SIGTERM (what SLURM and Kubernetes send before a kill) and SIGINT into a request that the
    loop honours at the next step boundary (or at the end of the epoch's evaluation, which is not cut
    short), on every rank together. A second SIGINT stops at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def install(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        log.warning(f"received {signal.Signals(signum).name}: stopping with a checkpoint after this step "
                    f"(or when the current evaluation ends)")

    @property
    def requested(self) -> bool:
        return self.signal is not None


def stop_agreed(stop: StopRequest | None) -> bool:
    """Whether some rank was asked to stop: a collective (every rank calls it at the same point, and every
    script installs its StopRequest or none does), on the CPU tensors' (gloo) group, so it waits for no GPU."""
    if stop is None:
        return False
    return all_reduce_sum(torch.tensor([float(stop.requested)])).item() > 0


def _step_flags(loss: torch.Tensor, stop: StopRequest | None) -> tuple[torch.Tensor, bool]:
    """(skip, stopping): ``skip`` (0-dim float on the loss's device) is 1 when the loss is not finite on
    some rank; it stays on the device, so the step never waits for its own work. ``stopping``: some rank
    was asked to stop (:func:`stop_agreed`)."""
    skip = all_reduce_sum((~torch.isfinite(loss.detach())).float()).clamp_(max=1.0)
    return skip, stop_agreed(stop)


def _step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``skip`` is 1. Fused AdamW takes the flag on the device (``found_inf``,
    as torch's GradScaler hands it over) and leaves parameters, moments and step counts alone; other
    optimizers read the flag to the host."""
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = skip
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not skip.item():
        optimizer.step()


def _step_counts(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Counts the model keeps about its last step (0-dim tensors), logged beside the losses:
    ``itm_dropped``, the ITM pairs left out for want of a valid negative."""
    dropped = getattr(getattr(model, "module", model), "itm_dropped", None)  # ``module``: under DDP
    return {} if dropped is None else {"itm_dropped": dropped}


def _meters_read_at(config: dict, state: TrainState, steps: int, stopping: bool) -> bool:
    """Whether anything reads the meters after this step: the progress line (``print_freq``, the last
    step), the step hook's log line or checkpoint, or a stop."""
    every = [config["log_every_steps"], config["save_every_steps"]]
    return (stopping or state.step == steps or state.step % max(1, config["print_freq"]) == 0
            or any(n and state.global_step % n == 0 for n in every))


def _count_nonfinite(meter: MetricLogger, state: TrainState, config: dict) -> None:
    """Read the steps recorded since the last read; warn about skipped ones and stop the run after
    ``max_nonfinite_steps`` in a row. (Skipped steps changed nothing, so stopping a few steps after the
    limit was reached loses nothing; no checkpoint is written before this check.)"""
    flags = meter.flush()
    first = state.step - len(flags)
    for i, counted in enumerate(flags):
        if counted:
            state.nonfinite = 0
            continue
        state.nonfinite += 1
        log.warning(f"non-finite loss at epoch {state.epoch} step {first + i}: step skipped "
                    f"({state.nonfinite} in a row)")
        if state.nonfinite >= config["max_nonfinite_steps"]:
            raise FloatingPointError(f"{state.nonfinite} non-finite losses in a row; the last good checkpoint "
                                     f"is kept. Lower init_lr or use grad_clip")
    state.meters = meter.totals()


def train_one_epoch(model: torch.nn.Module, loader, optimizer: torch.optim.Optimizer, config: dict,
                    state: TrainState, device: torch.device, step_hook: StepHook | None = None,
                    stop: StopRequest | None = None) -> dict[str, float]:
    """One epoch of ``loss = sum(model(...).values())`` from ``state.step`` on; returns the epoch's means.

    A batch whose loss is not finite on any rank is skipped by every rank (on the device: the step
    reads nothing back to the host); ``max_nonfinite_steps`` in a row stop the run, found when the
    meters are next read (progress line, log line, checkpoint). ``step_hook(state, meter)`` runs after
    every step (step checkpoints, logs). When ``stop`` was requested on any rank, every rank writes
    ``checkpoint_last.pth`` (through the hook) after the current step and raises :class:`Preempted`.
    """
    model.train()
    steps = state.step + len(loader)  # a resumed epoch's loader holds only the batches not yet seen
    meter = MetricLogger(f"epoch {state.epoch}", config["print_freq"], state.meters)
    for batch in meter.log_every(loader, total=steps, start=state.step):
        lr = lr_at(config, state.epoch, state.step)
        set_lr(optimizer, lr)
        alpha = alpha_at(config, state.epoch, state.step, steps)
        images = batch["images"].to(device, non_blocking=True)
        text = {k: v.to(device, non_blocking=True) for k, v in batch.items()
                if k != "images" and isinstance(v, torch.Tensor)}
        with autocast(config, device):
            losses = model(images, text, alpha=alpha)
        loss = sum(losses.values())
        state.bad += batch["bad"]
        skip, stopping = _step_flags(loss, stop)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # also when skipped: every rank runs the same collectives (DDP's gradient reduce)
        if config["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        _step_unless(optimizer, skip)
        meter.record(skip == 0, {"loss": loss, **losses, **_step_counts(model)}, lr=lr)
        state.step += 1
        state.global_step += 1
        if _meters_read_at(config, state, steps, stopping):
            _count_nonfinite(meter, state, config)
        if step_hook is not None:
            step_hook(state, meter, force_save=stopping)
        if stopping:
            raise Preempted(f"stopped on request at epoch {state.epoch}, step {state.step}; "
                            f"resume with --resume auto")
    _count_nonfinite(meter, state, config)
    meter.synchronize(device)
    return meter.averages()


def train_epoch(model: torch.nn.Module, loader, optimizer: torch.optim.Optimizer, config: dict, state: TrainState,
                device: torch.device, step_hook: StepHook | None = None,
                stop: StopRequest | None = None) -> tuple[dict[str, float], int]:
    """The training part of epoch ``state.epoch`` (from ``state.step`` on): seed the loader, run
    :func:`train_one_epoch`, and check the epoch's replaced records over all ranks.

    Returns the epoch's means and the number of replaced records; too many stop the run.
    """
    _start_epoch(loader, state)
    stats = train_one_epoch(model, loader, optimizer, config, state, device, step_hook, stop)
    return stats, _check_bad_records(state, loader, config, device)


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def run_cli(main: Callable[[], int], prog: str) -> int:
    """A training script's entry point. A bad config or dataset prints its message alone (exit 2); a
    stop on request exits with ``PREEMPTED_EXIT`` after its checkpoint; a collective that timed out
    says which key sets the limit. Anything else keeps its traceback."""
    from data.datasets import DatasetError

    try:
        return main()
    except (ConfigError, DatasetError, ModelSetupError, CheckpointError, FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        log.warning(str(e))
        return PREEMPTED_EXIT
    except RuntimeError as e:
        if "timed out" in str(e).lower() or "timeout" in str(e).lower():
            log.error(f"{prog}: a collective waited longer than dist_timeout_s for the other processes "
                      f"(a rank is dead or frozen): {e}")
        raise
