"""The training loader both scripts use, built from the run config: the pairs of ``train_file`` read and
their images checked before step one (the ranks split the check), or WebDataset shards streamed; then
augmentation, tokenization in the collate function and a resumable sampler sharded over ranks."""
from __future__ import annotations

import logging
from typing import Any

import torch.distributed as dist

from data.check import check_image_files, record_problems
from data.datasets import DatasetError, Pair, PairDataset, load_pairs, report_problems
from data.loader import Collator, train_loader
from data.shard_files import is_shard_spec
from data.shard_dataset import shard_train_loader
from models.tokenizer import TextTokenizer
from transform import build_transform

log = logging.getLogger("medvl")


def drop_unreadable(pairs: list[Pair], problems: list[str], config: dict, rank: int, world_size: int) -> list[Pair]:
    """Check the header of every training image before step one (each rank checks its share, then the
    findings are gathered), add the records that use a bad one to ``problems``, refuse the data above
    ``max_bad_fraction``, and return the pairs that remain. Records are counted, not images: 100
    records of one broken image are 100. A collective when a process group exists."""
    records = len({p.where for p in pairs}) + len(problems)
    bad_images = check_image_files([p.image for p in pairs], max_pixels=config["max_image_pixels"],
                                   shard=(rank, world_size))
    if dist.is_available() and dist.is_initialized():
        found: list = [None] * world_size
        dist.all_gather_object(found, bad_images)
        bad_images = {image: reason for shard in found for image, reason in shard.items()}
    problems = problems + record_problems(pairs, bad_images)
    report_problems(problems, records, config["max_bad_fraction"], "train_file")
    return [p for p in pairs if str(p.image) not in bad_images]


def build_train_loader(config: dict, files: list[str], tokenizer: Any, rank: int, world_size: int, batch_size: int):
    """The training loader of ``files`` (JSON lists, dataset layouts or WebDataset shards) for this rank.
    Raises :class:`DatasetError` when no full batch can be made."""
    transform = build_transform(config, train=True)
    collate = Collator(TextTokenizer(tokenizer, config["max_length"]), config["laterality_negatives"])
    if any(is_shard_spec(f) for f in files):
        return shard_train_loader(config, files, transform, collate, world_size, rank, batch_size)
    # Existence is checked with the headers, which the ranks split between them.
    pairs, problems = load_pairs(files, config["image_root"], config["max_words"], check_files=False)
    pairs = drop_unreadable(pairs, problems, config, rank, world_size)
    dataset = PairDataset(pairs, transform, seed=config["seed"], max_pixels=config["max_image_pixels"])
    loader = train_loader(dataset, batch_size, collate, world_size, rank, config["seed"], config["num_workers"])
    if len(loader) == 0:
        raise DatasetError(f"{len(pairs)} pairs make no full batch of {batch_size} per process "
                           f"on {world_size} process(es); lower the batch size")
    log.info(f"{len(pairs)} pairs, {len(loader)} steps per epoch")
    return loader
