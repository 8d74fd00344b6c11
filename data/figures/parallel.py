"""Splitting figures in worker processes, each with its own OCR engine made once.

``split_many`` yields ``(index, FigureResult)`` as figures finish. With one worker everything runs in
this process; with more, a pool of *spawned* processes (not forked: ONNX Runtime and cloud clients keep
threads that a fork would copy half-alive) each make their OCR engine once, in the pool initialiser,
and split whole figures. A figure's result depends only on the figure (the splitter keeps no state
between figures and OCR results are cached by image content), so the records and crops are the same
whatever the number of workers; only the order in which figures finish differs, and the caller puts
the results back in input order. Workers die with their parent (``PR_SET_PDEATHSIG`` on Linux), so a
killed run leaves no process writing into its folder.
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from data.figures.ocr import CachedOcr, OcrError, make_ocr
from data.figures.split import FigureResult, SplitOptions, split_figure
from data.records import FigureRecord

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker needs to split a figure (picklable: it crosses the process boundary)."""

    root: Path  # the input file's folder: figure image paths resolve against it
    out: Path
    ocr: str
    cache_dir: Path | None
    opts: SplitOptions
    threads: int | None = None  # OCR threads per worker; None lets the back-end decide


_worker: tuple[WorkerSetup, CachedOcr | None, OcrError | None] | None = None


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _init_worker(setup: WorkerSetup) -> None:
    """Pool initialiser: make this worker's OCR engine once. A failure is kept and raised by the first
    task, since an initialiser that raises makes the pool start workers forever."""
    global _worker
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    try:
        ocr = make_ocr(setup.ocr, setup.cache_dir, threads=setup.threads)
        ocr.prepare()
        _worker = (setup, ocr, None)
    except OcrError as err:
        _worker = (setup, None, err)


def _split_in_worker(item: tuple[int, FigureRecord]) -> tuple[int, FigureResult]:
    assert _worker is not None, "worker not initialised"
    setup, ocr, error = _worker
    if error is not None:
        raise error
    index, record = item
    return index, split_figure(record, setup.root, setup.out, ocr, setup.opts)


def threads_per_worker(workers: int) -> int | None:
    """OCR threads for each of ``workers`` processes: the cores shared out (None for one worker)."""
    if workers <= 1:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


def split_many(todo: list[tuple[int, FigureRecord]], setup: WorkerSetup, workers: int,
               ocr: CachedOcr | None = None) -> Iterator[tuple[int, FigureResult]]:
    """``(index, result)`` for every figure of ``todo``, in the order they finish.

    With ``workers == 1`` the figures are split here with ``ocr`` (made from ``setup`` if None).
    Raises :class:`OcrError` when a worker cannot make its OCR engine.
    """
    if workers <= 1 or len(todo) <= 1:
        engine = ocr or make_ocr(setup.ocr, setup.cache_dir)
        for index, record in todo:
            yield index, split_figure(record, setup.root, setup.out, engine, setup.opts)
        return
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(setup,))
    try:
        yield from pool.imap_unordered(_split_in_worker, todo, chunksize=1)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
