"""The output folder of a scrape: images, ``captions.json`` and the resumable manifest.

``manifest.jsonl`` is an append-only log, one JSON object per line, flushed and fsynced per line, read
(a half-written last line cut off) and checked against this run's identity by ``data.manifest``:

- ``{"event": "start", "identity": {...}}`` at every run; the identity (source, query, filters) must
  match the first run's, so that one folder never mixes two different collections;
- ``{"event": "kept", "key", "sha256", "record"}`` once the image file is in place;
- ``{"event": "skipped" | "failed", "key", "reason"}`` for figures that will not be retried;
- ``{"event": "pending", "key", "candidate"}`` for figures whose download failed transiently: the
  next run tries them first;
- ``{"event": "cursor", "next": N}`` once a whole search page or fetch batch has been handled.

Images and ``captions.json`` (a list of :class:`~data.records.FigureRecord`) are written to a
temporary file and moved into place (``data.files``), so a kill never leaves a partial file under its
final name.
"""
from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from pathlib import Path

from data.files import append_jsonl, atomic_write_bytes, remove_temp_files
from data.manifest import ManifestError, check_identity, first_identity, numbered_entries
from data.records import FigureRecord, write_records
from data.scrape.candidates import Candidate
from data.scrape.image_check import EXTENSIONS
from data.scrape.safe_paths import path_inside, safe_component

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
CAPTIONS = "captions.json"
IMAGES = "images"


class ScrapeStore:
    """State of one output folder, loaded from its manifest; see the module docstring."""

    def __init__(self, out: Path, identity: dict) -> None:
        self.out = Path(out)
        self.images = self.out / IMAGES
        self.images.mkdir(parents=True, exist_ok=True)
        self.manifest = self.out / MANIFEST
        self.kept: list[FigureRecord] = []
        self.done: set[str] = set()
        self.hashes: set[str] = set()
        self.graphics: set[str] = set()
        self.pending: dict[str, dict] = {}
        self.cursor: int | None = None
        self._load(identity)
        self._remove_temp_files()
        self._append({"event": "start", "identity": identity, "time": _now()})

    # --- reading -------------------------------------------------------------------------------

    def _load(self, identity: dict) -> None:
        entries = numbered_entries(self.manifest)
        check_identity(self.manifest, first_identity([e for _, e in entries]), identity, what="scrape")
        for number, entry in entries:
            self._apply(entry, number)

    def _apply(self, entry: dict, number: int) -> None:
        event = entry.get("event")
        if event == "start":
            pass  # its identity was checked in _load
        elif event == "kept":
            self.kept.append(entry["record"])
            self.hashes.add(entry["sha256"])
            self.graphics.add(_graphic_key(entry["record"]))
            self._resolve(entry["key"])
        elif event in ("skipped", "failed"):
            self._resolve(entry["key"])
        elif event == "pending":
            self.pending[entry["key"]] = entry["candidate"]
        elif event == "cursor":
            self.cursor = int(entry["next"])
        else:
            raise ManifestError(f"{self.manifest}:{number}: unknown manifest event {event!r}")

    def _resolve(self, key: str) -> None:
        self.done.add(key)
        self.pending.pop(key, None)

    # --- queries -------------------------------------------------------------------------------

    def is_done(self, key: str) -> bool:
        """True when the figure was kept, skipped or failed for good in this or an earlier run."""
        return key in self.done

    def is_duplicate_graphic(self, candidate: Candidate) -> bool:
        """True when the same article's same graphic was already kept under another figure id."""
        return bool(candidate.graphic) and _graphic_key(candidate.as_record()) in self.graphics

    def pending_candidates(self) -> list[Candidate]:
        """Figures whose download failed transiently in an earlier run."""
        return [Candidate(**fields) for fields in self.pending.values()]

    def image_stem(self, candidate: Candidate) -> str:
        """The image file name without extension: ``PMC123_F2`` (remote id made safe), ``PMC123_F2_3``
        for the third image file of a figure split into several."""
        part = f"_{candidate.part + 1}" if candidate.part else ""
        return f"{candidate.pmcid}_{safe_component(candidate.figure_id)}{part}"

    def existing_image(self, stem: str) -> Path | None:
        """An image saved by a run that was killed before it could log it, if any."""
        for ext in sorted(set(EXTENSIONS.values())):
            path = self.images / f"{stem}{ext}"
            if path.is_file():
                return path
        return None

    # --- writing -------------------------------------------------------------------------------

    def save_image(self, stem: str, extension: str, data: bytes) -> Path:
        """Write image bytes atomically under ``images/``; returns the final path."""
        return atomic_write_bytes(path_inside(self.images, stem + extension), data)

    def keep(self, candidate: Candidate, image: Path, sha256: str, extra: dict) -> FigureRecord:
        """Log a kept pair; the image must already be in place."""
        record: FigureRecord = {"image": image.relative_to(self.out).as_posix(), **candidate.as_record(), **extra}
        self._append({"event": "kept", "key": candidate.key, "sha256": sha256, "record": record})
        self.kept.append(record)
        self.hashes.add(sha256)
        self.graphics.add(_graphic_key(record))
        self._resolve(candidate.key)
        return record

    def skip(self, key: str, reason: str, event: str = "skipped") -> None:
        """Log a figure that is not kept and must not be tried again (``event`` skipped/failed)."""
        self._append({"event": event, "key": key, "reason": reason})
        self._resolve(key)

    def defer(self, candidate: Candidate, reason: str) -> None:
        """Log a figure to retry in the next run (its download failed transiently)."""
        if candidate.key not in self.pending:
            self._append({"event": "pending", "key": candidate.key, "reason": reason, "candidate": vars(candidate)})
            self.pending[candidate.key] = vars(candidate)

    def checkpoint(self, next_cursor: int) -> None:
        """Log that the search can resume at ``next_cursor`` and refresh ``captions.json``."""
        self._append({"event": "cursor", "next": next_cursor})
        self.cursor = next_cursor
        self.write_captions()

    def write_captions(self) -> None:
        """Write ``captions.json`` (the kept records, in order) atomically."""
        write_records(self.out / CAPTIONS, self.kept, FigureRecord)

    def _append(self, entry: dict) -> None:
        append_jsonl(self.manifest, entry)

    def _remove_temp_files(self) -> None:
        for folder in (self.out, self.images):
            for leftover in remove_temp_files(folder):
                log.info("removed partial file %s left by an interrupted run", leftover)


def sha256_of(data: bytes) -> str:
    """Hex SHA-256 of image bytes, used to drop byte-identical figures."""
    return hashlib.sha256(data).hexdigest()


def _graphic_key(record: dict) -> str:
    return f"{record.get('pmcid')}/{record.get('graphic')}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
