"""The output folder of ``split_figures.py``: what is done, kept in a manifest, so a killed run resumes.

``split_manifest.jsonl`` is an append-only log (:mod:`data.manifest`), one JSON object per line:

- ``{"event": "start", "identity": {...}, "todo": N}`` at every run; the identity (input file and its
  hash, OCR back-end, options, shard) must match the first run's, so one folder never mixes two runs;
- ``{"event": "figure", "index", "outcome", "records", "counts"[, "panels", "letters", "size"][, "reason",
  "record"]}`` once a figure is finished and its crops are in place (crops are written atomically,
  before the line is appended); ``panels`` (every panel found), ``letters`` (the caption's) and
  ``size`` are what ``split_figures.py report`` draws;
- ``{"event": "complete", "figures": N}`` when the folder's outputs were written for all its figures.

A figure whose line is in the manifest is never split again; one that was being split when the run
was killed is split again from the start and writes the same crops under the same names. Temporary
files of killed writes are removed when the folder is opened. The folder is locked
(:class:`data.files.FolderLock`) while a run or a merge writes it.
"""
from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from pathlib import Path

from data.figures.split import FigureResult
from data.files import append_jsonl, remove_temp_files
from data.manifest import check_identity, first_identity, read_manifest

log = logging.getLogger(__name__)

MANIFEST = "split_manifest.jsonl"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def figure_event(index: int, result: FigureResult, record: dict) -> dict:
    """The manifest line of one finished figure (a failed one keeps its input record and reason)."""
    event = {"event": "figure", "index": index, "outcome": result.outcome, "records": result.records,
             "counts": dict(sorted(result.counts.items()))}
    if result.outcome == "failed":
        event.update(reason=result.reason, record=record)
    else:
        event.update(panels=result.panels, letters=result.letters, size=result.size)
    return event


class SplitStore:
    """State of one output folder, loaded from its manifest; see the module docstring."""

    def __init__(self, out: Path, identity: dict, temp_dirs: tuple[Path, ...] = ()) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.manifest = self.out / MANIFEST
        entries = read_manifest(self.manifest)
        check_identity(self.manifest, first_identity(entries), identity, what="split_figures.py run")
        self.identity = identity
        self.done: dict[int, dict] = {}
        for entry in entries:
            if entry.get("event") == "figure":
                self.done.setdefault(int(entry["index"]), entry)  # a figure counts once, whatever happened
        for folder in (self.out, *temp_dirs):
            for leftover in remove_temp_files(folder) if folder.is_dir() else []:
                log.info("removed partial file %s left by an interrupted run", leftover)

    def start(self, todo: int) -> None:
        """Log the start of a run that has ``todo`` figures left."""
        append_jsonl(self.manifest, {"event": "start", "identity": self.identity, "todo": todo, "time": _now()})

    def is_done(self, index: int) -> bool:
        return index in self.done

    def add(self, index: int, result: FigureResult, record: dict) -> None:
        """Log a finished figure; its crops must already be in place."""
        if index in self.done:
            return
        event = figure_event(index, result, record)
        append_jsonl(self.manifest, event)
        self.done[index] = event

    def complete(self, figures: int) -> None:
        """Log that the folder's outputs cover all of its ``figures``."""
        append_jsonl(self.manifest, {"event": "complete", "figures": figures, "time": _now()})


def read_folder(out: Path) -> tuple[dict | None, dict[int, dict], bool]:
    """(identity, finished figure events by index, whether the last run completed) of a folder."""
    entries = read_manifest(Path(out) / MANIFEST, repair=False)
    done: dict[int, dict] = {}
    complete = False
    for entry in entries:
        if entry.get("event") == "figure":
            done.setdefault(int(entry["index"]), entry)
        elif entry.get("event") == "start":
            complete = False
        elif entry.get("event") == "complete":
            complete = True
    return first_identity(entries), done, complete


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
