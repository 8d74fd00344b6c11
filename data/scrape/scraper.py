"""Turning a source's candidates into kept figure/caption pairs, resumably and politely."""
from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Protocol

from tqdm import tqdm

from data.scrape.candidates import Candidate, Page, Rejected
from data.scrape.http import FetchError, PoliteClient
from data.scrape.image_check import ImageRejected, inspect_image
from data.scrape.store import ScrapeStore, sha256_of

if TYPE_CHECKING:
    from data.scrape.config import ScrapeConfig

log = logging.getLogger(__name__)


class Source(Protocol):
    """What the scraper needs from Open-i or E-utilities: pages of candidates from a cursor."""

    first_cursor: int

    def pages(self, start: int) -> Iterator[Page]: ...


@dataclass
class Summary:
    """Counts for the end-of-run report; ``error`` is set when the search itself had to stop."""

    kept_total: int = 0
    kept_new: int = 0
    skipped: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    error: str = ""
    shards: str = ""  # the train_file pattern of the tar shards, when --shards wrote them

    def lines(self) -> list[str]:
        """Human-readable report lines."""
        out = [f"kept {self.kept_total} pairs ({self.kept_new} new in this run)"]
        for title, counts in (("skipped", self.skipped), ("failed", self.failed)):
            detail = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "none"
            out.append(f"{title} {sum(counts.values())}: {detail}")
        if self.error:
            out.append(f"stopped early: {self.error}")
        if self.shards:
            out.append(f"shards: {self.shards}")
        return out


class Scraper:
    """Runs one collection into a :class:`ScrapeStore`; see :meth:`run`."""

    def __init__(self, source: Source, client: PoliteClient, store: ScrapeStore, config: ScrapeConfig) -> None:
        self.source = source
        self.client = client
        self.store = store
        self.config = config  # num, min_size, max_pixels, max_image_bytes, progress
        self.licenses = config.accepted_licenses()
        self.summary = Summary(kept_total=len(store.kept))
        self._seen: set[str] = set()
        self._bar: tqdm | None = None

    def run(self) -> Summary:
        """Retry pending figures, then walk the source from the saved cursor until ``num`` pairs are kept.

        A search page or batch that cannot be fetched stops the run with ``summary.error`` set; what
        was kept so far is saved and the next run resumes at that page.
        """
        store = self.store
        start = store.cursor if store.cursor is not None else self.source.first_cursor
        if store.kept or store.cursor is not None:
            log.info("resuming in %s: %d kept, cursor %s, %d pending", store.out, len(store.kept), start, len(store.pending))
        self._bar = tqdm(total=self.config.num, initial=min(len(store.kept), self.config.num), unit="pair",
                         desc="kept", disable=not self.config.progress)
        try:
            for candidate in store.pending_candidates():
                if self._full():
                    break
                self.handle(candidate)
            if not self._full():
                self._walk(start)
        except (FetchError, ValueError) as err:
            log.error("search stopped: %s", err)
            self.summary.error = str(err)
        finally:
            store.write_captions()
            self._bar.close()
        self.summary.kept_total = len(store.kept)
        return self.summary

    def _walk(self, start: int) -> None:
        for page in self.source.pages(start):
            finished = True
            for item in page.items:
                if self._full():
                    finished = False
                    break
                self.handle(item)
            if finished:
                self.store.checkpoint(page.next_cursor)
            if self._full():
                return

    def _full(self) -> bool:
        return len(self.store.kept) >= self.config.num

    def handle(self, item: Candidate | Rejected) -> None:
        """Decide on one candidate: skip it, fail it, defer it, or download, check and keep it."""
        if isinstance(item, Rejected):
            if not self.store.is_done(item.key):
                self._skip(item.key, item.reason)
            return
        if self.store.is_done(item.key):
            if item.key in self._seen:
                self.summary.skipped["duplicate_figure"] += 1
            return
        self._seen.add(item.key)
        reason = self._precheck(item)
        if reason:
            self._skip(item.key, reason)
            return
        self._fetch_and_keep(item)

    def _precheck(self, cand: Candidate) -> str:
        if not cand.caption:
            return "no_caption"
        if not cand.image_url:
            return "no_image"
        if self.licenses is not None and cand.license not in self.licenses:
            return "license"
        if self.store.is_duplicate_graphic(cand):
            return "duplicate_figure"
        return ""

    def _fetch_and_keep(self, cand: Candidate) -> None:
        stem = self.store.image_stem(cand)
        existing = self.store.existing_image(stem)
        # A file under the final name was completed by an interrupted run: reuse it, don't download.
        data = existing.read_bytes() if existing else self._download(cand)
        if data is None:
            return
        try:
            info = inspect_image(data, self.config.min_size, self.config.max_pixels)
        except ImageRejected as err:
            if existing:
                existing.unlink()
            self._skip(cand.key, err.reason, "skipped" if err.reason == "too_small" else "failed")
            return
        digest = sha256_of(data)
        if digest in self.store.hashes:
            if existing:
                existing.unlink()
            self._skip(cand.key, "duplicate_image")
            return
        path = existing or self.store.save_image(stem, info.extension, data)
        self.store.keep(cand, path, digest, {"width": info.width, "height": info.height, "sha256": digest})
        self.summary.kept_new += 1
        self._bar.update(1)

    def _download(self, cand: Candidate) -> bytes | None:
        """The image body (checked against the md5 the source gives, if any), or None when it failed."""

        def matching(body: bytes) -> bytes:
            if cand.image_md5 and hashlib.md5(body, usedforsecurity=False).hexdigest() != cand.image_md5.lower():
                raise ValueError("the image does not match the md5 its metadata gives")  # retried, then deferred
            return body

        try:
            return self.client.fetch(cand.image_url, matching, max_bytes=self.config.max_image_bytes)
        except FetchError as err:
            log.warning("image of %s: %s", cand.key, err)
            if err.transient:
                self.store.defer(cand, err.reason)
                self.summary.failed["image_unavailable_retry_later"] += 1
                self._postfix()
            else:
                self._skip(cand.key, f"image_{err.code}", "failed")
            return None

    def _skip(self, key: str, reason: str, event: str = "skipped") -> None:
        self.store.skip(key, reason, event)
        (self.summary.skipped if event == "skipped" else self.summary.failed)[reason] += 1
        self._postfix()

    def _postfix(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix(skipped=sum(self.summary.skipped.values()),
                                  failed=sum(self.summary.failed.values()), refresh=False)

