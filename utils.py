"""The training app's small helpers: distributed set-up, seeds and RNG state, learning-rate schedules,
metric meters and the run log, the command line and run set-up, and the exit codes.

The training engine (``engine.py``) and the scripts build on these; the library (``models/``) and the
data packages never import this file.
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import logging
import math
import os
import random
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from configs import ConfigError, dump_yaml, load_config
from data import errors
from data.errors import RunFolderError
from data.files import FolderLock, append_jsonl, atomic_write_text, remove_temp_files
from models.distributed import all_reduce_sum, is_dist, is_main

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
            raise ConfigError("SLURM run with several tasks: set MASTER_ADDR and MASTER_PORT "
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
        raise ConfigError(f"--device {device} was asked for, but CUDA is not available")
    if not device.startswith(("cuda", "cpu")):
        raise ConfigError(f"--device {device!r}: expected cuda or cpu")
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
# Learning-rate schedules and the distillation ramp (pure functions of the position in training)
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


# --------------------------------------------------------------------------------------------------
# Metric meters and the run log
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


def log_epoch(run_log: RunLog, epoch: int, stats: dict, bad: int, seconds: float, extra: dict | None = None) -> None:
    """One record per epoch: the epoch's training means, bad records, time, and ``extra`` (metrics)."""
    run_log.write({"epoch": epoch, **{f"train_{k}": v for k, v in stats.items()}, "bad_records": bad,
                   "epoch_time_s": round(seconds, 2), **(extra or {})})


# --------------------------------------------------------------------------------------------------
# Run set-up and the command line
# --------------------------------------------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The command line BLIP users know, plus ``--options key=value`` overrides."""
    parser.add_argument("--config", required=True, help="YAML run config")
    parser.add_argument("--output-dir", "--output_dir", dest="output_dir", required=True,
                        help="where logs, the resolved config and checkpoints go")
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
        raise RunFolderError(f"{out} already holds checkpoints of a run ({', '.join(existing[:4])}"
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


def trained_model(checkpoint: str, config_path: str | None = None, options: list[str] | None = None,
                  device: str = "cpu"):
    """(model in eval mode, run config) of a trained checkpoint, for the commands that use one: the run
    config is ``config_path`` if given, else the one saved in the checkpoint, with ``options`` applied."""
    from configs import checkpoint_config
    from models import load_trained

    def resolve(stored, task):
        return checkpoint_config(stored, f"checkpoint {checkpoint}", task, config_path, options)

    return load_trained(checkpoint, resolve, device)


def save_config(config: Mapping, path: str | Path) -> None:
    """Write the resolved run config as YAML, atomically."""
    atomic_write_text(path, dump_yaml(config))


# --------------------------------------------------------------------------------------------------
# Exit codes
# --------------------------------------------------------------------------------------------------


class Preempted(Exception):
    """SIGTERM or SIGINT arrived; every rank wrote ``checkpoint_last.pth`` at a step boundary, or with the
    end-of-epoch checkpoint when the request came during the epoch's own work (retrieval's evaluation)."""

    exit_code = errors.PREEMPTED


class TrainingDataError(RuntimeError):
    """Training met more bad data than the config allows: unreadable records, non-finite losses."""

    exit_code = errors.BAD_DATA


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous one under that name is intact."""

    exit_code = errors.WRITE_FAILED


def run_cli(main: Callable[[], int], prog: str) -> int:
    """A script's entry point: ``main()``'s status, or the status of what it raised (the table of
    ``data/errors.py``), with the message on one line. A collective that timed out says which key sets
    the limit. Anything else keeps its traceback."""
    try:
        return errors.run_command(main, prog)
    except RuntimeError as e:
        if "timeout" in str(e).lower().replace("timed out", "timeout"):
            log.error(f"{prog}: a collective waited longer than dist_timeout_s for the other processes "
                      f"(a rank is dead or frozen): {e}")
        raise
