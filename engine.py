"""The training engine both scripts run: where training stands (``TrainState``), one epoch
(``train_one_epoch``) with its non-finite guard and stop on request, the per-step hook (log lines and step
checkpoints), the optimizer and DDP wrapper, and checkpoint save and resume.

``pretrain.py`` and ``train_retrieval.py`` write their epoch loop in plain sight on top of these; the
small helpers below this layer (distributed set-up, RNG, schedules, meters, logging, the command line)
are in ``utils.py``.
"""
from __future__ import annotations

import functools
import inspect
import logging
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from data.files import atomic_copy, atomic_write
from models.checkpoint import load_state
from models.distributed import all_reduce_sum, get_rank, get_world_size, is_dist, is_main
from data.errors import RunFolderError
from utils import (CheckpointWriteError, DistInfo, MetricLogger, Preempted, RunLog, TrainingDataError, alpha_at, lr_at,
                   rng_state, set_lr, set_rng_state)

log = logging.getLogger("medvl")


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


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file that is fsync'd and renamed: a crash or a full disk never
    leaves half a file under the real name, nor a temporary file behind."""
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: torch.save(obj, tmp))
    except (OSError, RuntimeError) as e:
        import shutil

        free = shutil.disk_usage(path.parent).free / 2**20
        raise CheckpointWriteError(f"could not write {path} ({free:.0f} MB free on its disk; is it full, or a file "
                                   f"size limit reached?): {e}. The checkpoints written before are intact: free "
                                   f"space and rerun with --resume auto") from e


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
        raise RunFolderError(f"--resume auto: no checkpoint in {output_dir} can be resumed from ({', '.join(unusable)}: "
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


def start_state(resume_arg: str | None, output_dir: str | Path, model: torch.nn.Module,
                optimizer: torch.optim.Optimizer) -> tuple[TrainState, dict]:
    """A fresh state, or the one ``--resume`` names; a checkpoint whose epoch's work is done moves on."""
    path = find_resume(resume_arg, output_dir)
    if path is None:
        return TrainState(), {}
    state, extra = resume(path, model, optimizer)
    return (state.next_epoch() if state.epoch_done else state), extra


# --------------------------------------------------------------------------------------------------
# Optimizer, DDP, the per-step hook
# --------------------------------------------------------------------------------------------------


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Biases, norms, the temperature and position/class tables are not decayed (as nanoGPT/timm do)."""
    return param.ndim < 2 or name.endswith(("pos_embed", "cls_token", "position_embeddings.weight"))


def build_optimizer(model: torch.nn.Module, config: dict) -> torch.optim.AdamW:
    decay, skip = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (skip if not config["weight_decay_all"] and no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": config["weight_decay"]}, {"params": skip, "weight_decay": 0.0}]
    # Fused AdamW: one kernel over all tensors, on CUDA and on the CPU, with the same update as the loop.
    fused = all(p.device.type in ("cuda", "cpu") and p.is_floating_point() for p in decay + skip)
    if fused and not fused_adamw_skips_on_found_inf():
        log.warning("this torch's fused AdamW does not skip a step on found_inf: each step reads its "
                    "non-finite flag to the host")
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config["init_lr"], fused=fused)


@functools.cache
def fused_adamw_skips_on_found_inf() -> bool:
    """Whether fused AdamW leaves everything alone when ``found_inf`` is set, the way torch's GradScaler
    skips a step without reading the flag to the host. ``found_inf`` is torch's private API, so it is
    probed (one tiny step) rather than trusted: a torch that drops it makes the loop read the flag."""
    param = torch.nn.Parameter(torch.ones(1))
    param.grad = torch.ones(1)
    opt = torch.optim.AdamW([param], lr=1.0, fused=True)
    if not getattr(opt, "_step_supports_amp_scaling", False):
        return False
    opt.found_inf = torch.ones(())
    try:
        opt.step()
    except (RuntimeError, TypeError):
        return False
    finally:
        del opt.found_inf
    return bool(param.detach().eq(1.0).all()) and float(opt.state[param].get("step", 0)) == 0.0


def _step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``skip`` is 1. Fused AdamW takes the flag on the device (``found_inf``)
    and leaves parameters, moments and step counts alone; other optimizers read the flag to the host."""
    if optimizer.defaults.get("fused") and fused_adamw_skips_on_found_inf():
        optimizer.found_inf = skip
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not skip.item():
        optimizer.step()


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
# Stop on request (preemption)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# One epoch
# --------------------------------------------------------------------------------------------------


def autocast(config: dict, device: torch.device):
    enabled = config["precision"] == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _step_flags(loss: torch.Tensor, stop: StopRequest | None) -> tuple[torch.Tensor, bool]:
    """(skip, stopping): ``skip`` (0-dim float on the loss's device) is 1 when the loss is not finite on
    some rank; it stays on the device, so the step never waits for its own work. ``stopping``: some rank
    was asked to stop (:func:`stop_agreed`)."""
    skip = all_reduce_sum((~torch.isfinite(loss.detach())).float()).clamp_(max=1.0)
    return skip, stop_agreed(stop)


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
            raise TrainingDataError(f"{state.nonfinite} non-finite losses in a row; the last good checkpoint "
                                    f"is kept. Lower init_lr or use grad_clip")
    state.meters = meter.totals()


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
        raise TrainingDataError(f"epoch {state.epoch}: {bad} of about {seen} records were unreadable, more than "
                           f"max_bad_fraction {config['max_bad_fraction']}; run `python -m data.check`")
    return bad


def train_one_epoch(model: torch.nn.Module, loader, optimizer: torch.optim.Optimizer, config: dict,
                    state: TrainState, device: torch.device, step_hook: StepHook | None = None,
                    stop: StopRequest | None = None) -> tuple[dict[str, float], int]:
    """Train epoch ``state.epoch`` from ``state.step`` on: seed the loader's order and augmentation, run
    the steps of ``loss = sum(model(...).values())``, and count the replaced (unreadable) records over
    all ranks. Returns the epoch's mean losses and that count; too many stop the run.

    A batch whose loss is not finite on any rank is skipped by every rank (on the device: the step
    reads nothing back to the host); ``max_nonfinite_steps`` in a row stop the run, found when the
    meters are next read (progress line, log line, checkpoint). ``step_hook(state, meter)`` runs after
    every step (step checkpoints, logs). When ``stop`` was requested on any rank, every rank writes
    ``checkpoint_last.pth`` (through the hook) after the current step and raises :class:`Preempted`.
    """
    _start_epoch(loader, state)
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
    return meter.averages(), _check_bad_records(state, loader, config, device)
