"""Batching: tokenization in the collate function, a resumable distributed sampler, and loaders."""
from __future__ import annotations

import signal
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from data.captions import laterality_negative


def ignore_stop_signals(worker_id: int) -> None:
    """In a loader worker: ignore SIGTERM and SIGINT.

    SLURM signals every process of a job step, torchrun the process group of each rank, and Ctrl-C the
    whole foreground group, so the workers get the stop request too. A worker that died of it (torch's
    workers die of SIGTERM) makes the main process raise a DataLoader error from its SIGCHLD handler,
    wherever it stands, instead of stopping at the next step boundary with a checkpoint. So the main
    process alone honours the request. A worker still ends with its parent (torch's worker loop exits
    when the parent is gone) and, as usual, when the loader shuts its workers down.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the project's loaders: stop signals ignored (:func:`ignore_stop_signals`)."""
    ignore_stop_signals(worker_id)


def one_opencv_thread() -> None:
    """Make OpenCV run single-threaded in this process and in the loader workers it forks next.

    RandAugment's OpenCV calls would otherwise start a thread per core in every worker (8 ranks x 4
    workers x all cores), oversubscribing the machine; torch already limits its own workers to one
    thread. It is set in the parent, before the fork: a forked child that reconfigures OpenCV's thread
    pool, which the parent may have started, can wait forever for threads that were not forked."""
    import cv2  # here: it is slow to import

    cv2.setNumThreads(1)


class Collator:
    """Stack images and tokenize captions for a training batch.

    ``tokenize(captions) -> {"input_ids", "attention_mask"}`` is the model's tokenizer bound to its
    length (``models.tokenizer.TextTokenizer``), so that text is tokenized here, in the loader workers,
    exactly as the model tokenizes elsewhere.

    With ``laterality_negatives`` the batch also holds, for every caption that names one side only, the
    caption with *left* and *right* swapped (``swap_input_ids``, ``swap_attention_mask`` (S, L)) and the
    batch row it belongs to (``swap_index`` (S,)): extra ITM negatives that only a model which sees where
    the finding is can tell apart.
    """

    def __init__(self, tokenize: Callable[[list[str]], dict], laterality_negatives: bool = False):
        self._tokenize = tokenize
        self.laterality_negatives = laterality_negatives

    def __call__(self, samples: list[dict]) -> dict:
        captions = [s["caption"] for s in samples]
        enc = self._tokenize(captions)
        batch = {
            "images": torch.stack([s["image"] for s in samples]),
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "image_ids": torch.tensor([s["image_id"] for s in samples], dtype=torch.long),
            "bad": sum(s["bad"] for s in samples),
            "captions": captions,
        }
        if self.laterality_negatives:
            swapped = [(i, neg) for i, c in enumerate(captions) if (neg := laterality_negative(c)) is not None]
            enc = self._tokenize([neg for _, neg in swapped] or [""])
            batch["swap_index"] = torch.tensor([i for i, _ in swapped], dtype=torch.long)
            batch["swap_input_ids"] = enc["input_ids"][: len(swapped)]
            batch["swap_attention_mask"] = enc["attention_mask"][: len(swapped)]
        return batch


class ResumableSampler(DistributedSampler):
    """DistributedSampler (a seeded permutation per epoch, sharded by rank) that can start mid-epoch.

    ``set_start(n)`` skips this rank's first ``n`` samples of the current epoch, which is how a resumed
    run sees exactly the batches that the interrupted one had not yet seen. ``with_epoch``: yield
    ``(epoch, index)`` keys, for datasets whose samples depend on the epoch and live in persistent workers.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, with_epoch: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0
        self.with_epoch = with_epoch

    def set_start(self, start: int) -> None:
        self.start = start

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def __iter__(self):
        indices = list(super().__iter__())[self.start:]
        return iter([(self.epoch, i) for i in indices] if self.with_epoch else indices)

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


def train_loader(dataset: Dataset, batch_size: int, collate, world_size: int, rank: int, seed: int,
                 num_workers: int) -> DataLoader:
    """Shuffled (per-epoch seed), sharded across ranks, last short batch dropped.

    The workers live for the whole run (not forked again each epoch): the sampler hands them
    ``(epoch, index)`` keys, so the epoch reaches a worker's copy of the dataset with each sample.
    """
    sampler = ResumableSampler(dataset, world_size, rank, seed, with_epoch=True)
    if num_workers > 0:
        one_opencv_thread()
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, drop_last=True, pin_memory=torch.cuda.is_available(),
                      persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed),
                      worker_init_fn=worker_init)
