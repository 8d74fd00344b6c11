"""One ``split_figures.py`` run: its settings, its shard of the input, resume, workers and outputs.

:class:`SplitJob` holds the settings; :func:`run_job` locks the output folder, skips the figures its
manifest (:mod:`data.figures.store`) already holds, splits the rest (:mod:`data.figures.parallel`) and
writes the outputs (:mod:`data.figures.outputs`). ``--shard I/N`` keeps the figures whose index in the
input is ``I`` modulo ``N``: deterministic, balanced whatever the order of the input, and the same on
every machine, so ``N`` array tasks of a cluster job cover the input exactly once between them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from data.figures.ocr import CachedOcr
from data.figures.outputs import collect, write_output_shards, write_outputs
from data.figures.parallel import WorkerSetup, split_many, threads_per_worker
from data.figures.split import SplitOptions
from data.figures.store import SplitStore, file_sha256
from data.files import FolderLock
from data.records import FailedFigure, FigureRecord

log = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> (2, 8): shard ``I`` of ``N``, with 0 <= I < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard wants I/N such as 0/8, got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: I must be in 0..N-1 (shards are numbered from 0)")
    return i, n


@dataclass
class SplitJob:
    """Settings of one run; everything but ``workers``, ``ocr_cache`` and ``progress`` is its identity."""

    inp: Path
    out: Path
    ocr: str = "rapidocr"
    ocr_cache: Path | None = None
    opts: SplitOptions = field(default_factory=SplitOptions)
    fractions: tuple[float, float, float] | None = None
    seed: int = 0
    limit: int | None = None
    workers: int = 1
    shard: tuple[int, int] | None = None
    progress: bool = True
    shards: bool = False  # also write WebDataset shards of the outputs (not part of the identity)
    shard_size: int = 10_000

    @property
    def cache_dir(self) -> Path:
        return Path(self.ocr_cache) if self.ocr_cache else self.out / "ocr_cache"

    def identity(self, input_sha256: str) -> dict:
        """The settings that decide what the folder holds; a resumed run must have the same."""
        return {"input": str(Path(self.inp).resolve()), "input_sha256": input_sha256, "ocr": self.ocr,
                "context": self.opts.context, "order_fallback": self.opts.order_fallback,
                "crop_dir": self.opts.crop_dir, "limit": self.limit,
                "shard": f"{self.shard[0]}/{self.shard[1]}" if self.shard else None,
                "splits": list(self.fractions) if self.fractions else None,
                "seed": self.seed if self.fractions else None}

    def mine(self, index: int) -> bool:
        """Whether the input record at ``index`` belongs to this run's shard."""
        return self.shard is None or index % self.shard[1] == self.shard[0]


def run_job(job: SplitJob, figures: list[tuple[int, FigureRecord]], unreadable: list[FailedFigure],
            ocr: CachedOcr | None = None) -> dict:
    """Split this shard's figures that the folder does not hold yet, then write the outputs.

    ``figures`` are the usable ``(index, record)`` pairs of the whole input and ``unreadable`` the
    records that could not be read; ``ocr`` (prepared) is used when ``job.workers`` is 1.
    Returns the summary. Raises FolderLockedError, ManifestError or OcrError.
    """
    lock = FolderLock(job.out, "split_figures.py run")
    for note in lock.acquire():
        log.warning("%s", note)
    try:
        crop_dir = job.out / job.opts.crop_dir
        cache = job.cache_dir / job.ocr
        store = SplitStore(job.out, job.identity(file_sha256(job.inp)), temp_dirs=(crop_dir, cache, cache / "rec"))
        mine = [(i, r) for i, r in figures if job.mine(i)]
        todo = [(i, r) for i, r in mine if not store.is_done(i)]
        if len(todo) < len(mine):
            log.info("resuming in %s: %d of %d figures already done", job.out, len(mine) - len(todo), len(mine))
        store.start(len(todo))
        _split_todo(job, store, todo, ocr)
        results, failures, summary = collect({i: store.done[i] for i, _ in mine},
                                             [f for f in unreadable if job.mine(f["index"])])
        if job.shard:
            summary = {"shard": f"{job.shard[0]}/{job.shard[1]}", **summary}
        write_outputs(job.out, results, failures, summary, job.fractions, job.seed)
        if job.shards:
            for pattern in write_output_shards(job.out, job.fractions is not None, job.shard_size):
                log.info("shards: %s", pattern)
        store.complete(summary["figures"])
        return summary
    finally:
        lock.release()


def _split_todo(job: SplitJob, store: SplitStore, todo: list[tuple[int, FigureRecord]],
                ocr: CachedOcr | None) -> None:
    records = dict(todo)
    setup = WorkerSetup(root=Path(job.inp).parent, out=job.out, ocr=job.ocr, cache_dir=job.cache_dir, opts=job.opts,
                        threads=threads_per_worker(job.workers))
    with tqdm(total=len(todo), desc="figures", unit="fig", disable=not job.progress) as bar:
        for index, result in split_many(todo, setup, job.workers, ocr):
            if result.outcome == "failed":
                log.warning("record %d: %s", index, result.reason)
            store.add(index, result, records[index])
            bar.update(1)
