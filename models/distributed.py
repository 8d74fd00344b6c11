"""Rank helpers and gathers for the models and their evaluation. Every function is a no-op (or the
identity) when no process group exists or the world has one process, so that a single process needs
neither torchrun nor ``init_process_group``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main() -> bool:
    return get_rank() == 0


@contextmanager
def local_main_first() -> Iterator[None]:
    """Run the block on each machine's first process (``LOCAL_RANK`` 0) before the others, so that it
    alone downloads what the block fetches into the machine's cache and the others find it there.

    A collective. The first process passes the barrier also when its block raises, so the others
    never wait for it until the timeout; they run the block themselves and meet the same error.
    """
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0
    if not is_dist():
        yield
        return
    if not first:
        dist.barrier()
    try:
        yield
    finally:
        if first:
            dist.barrier()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum a tensor over processes (returns a new tensor; identity without a process group)."""
    if not is_dist():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


@torch.no_grad()
def all_gather_no_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` from every process along dim 0; every process must pass the same shape (training
    batches do). Nothing is read back to the host. No gradient flows."""
    if not is_dist():
        return t
    out = [torch.empty_like(t) for _ in range(get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


@torch.no_grad()
def all_gather_uneven(t: Tensor) -> Tensor:
    """Concatenate ``t`` from every process along dim 0 when the sizes may differ (evaluation slices).
    The sizes are exchanged and read first: one host sync. No gradient flows."""
    if not is_dist():
        return t
    world = get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], device=t.device))
    sizes = torch.cat(sizes).tolist()
    padded = t.new_zeros((max(sizes), *t.shape[1:]))
    padded[: t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[:n] for o, n in zip(out, sizes)])


def all_gather_with_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` (equal sizes on every process) along dim 0, keeping gradients to each owner.

    ``torch.distributed.nn.functional.all_gather`` sums, in backward, every process's gradient of
    each slice and hands it to the slice's owner (a reduce-scatter), as open_clip relies on.
    """
    if not is_dist():
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t.contiguous()))
