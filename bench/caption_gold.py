"""The real caption development set, ``bench/gold/caption_dev.json``: reading it, and its tuning / held-out split.

The set holds real figure captions of public JATS articles (PLOS, Wiley, Springer, MDPI and other journals
kept in GitHub repositories), labelled with the conventions of its ``conventions`` field. Each record names
its caption as ``github:<owner>/<repo>@<commit>:<path>#<fig id>`` (see :mod:`bench.gold_sets`). Where the
article's licence allows it (CC BY, CC0, public domain) the record carries the caption text itself; the
other records hold anchors only, and their captions are read from a local sources folder laid out as
``<owner>+<repo>/<path>`` (``$MEDVL_CAPTION_DEV``, default ``../shared/caption_dev``), which
``python -m bench.caption_dev --fetch-from DIR`` fills from fetched repository snapshots.

The split is fixed by a seeded rule on the article, not by hand: an article is held out when the SHA-256 of
``"caption-dev-held-out:<article>"`` is divisible by 3 (about a third of the articles). Rules and taggers are
tuned on the other articles only; held-out results are reported as totals.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from bench.gold_sets import GOLD_DIR, GoldCaption, GoldError, caption_records, github_caption, resolve_caption
from data.scrape import licenses

CAPTION_DEV_FILE = GOLD_DIR / "caption_dev.json"
SOURCES_ENV = "MEDVL_CAPTION_DEV"
HELD_OUT_SALT = "caption-dev-held-out"
# Licences under which the record may carry the caption text (with its source as attribution).
STORED_LICENCES = frozenset({"CC BY", "CC0", licenses.PUBLIC_DOMAIN})
POSITION_WORDS = frozenset({"LEFT", "RIGHT", "TOP", "BOTTOM", "MIDDLE"})


@dataclass
class DevCaption:
    """One gold caption of the set: the resolved gold, its article and which part of the split it is in."""

    gold: GoldCaption
    article: str
    licence: str
    style: str  # how the gold marks the first panel, see caption_style

    @property
    def held_out(self) -> bool:
        return is_held_out(self.article)


def is_held_out(article: str) -> bool:
    """The seeded split rule: held out when SHA-256("caption-dev-held-out:<article>") is divisible by 3."""
    digest = hashlib.sha256(f"{HELD_OUT_SALT}:{article}".encode("utf-8")).hexdigest()
    return int(digest, 16) % 3 == 0


def caption_style(record: dict) -> str:
    """How a gold record marks its first panel: ``none`` (no labels), ``position``, ``suffix`` (cited after
    its text), ``paren`` ``(A)``, ``closing`` ``A)``, ``bare_upper`` ``A``/``A.``/``A,`` or ``bare_lower``."""
    first = record["subs"][0]
    if not first["labels"]:
        return "none"
    if set(first["labels"][0].split()) <= POSITION_WORDS:
        return "position"
    marker = first.get("marker")
    if not marker:
        return "suffix"
    if marker.startswith("("):
        return "paren"
    if marker.endswith(")"):
        return "closing"
    return "bare_lower" if marker[0].islower() else "bare_upper"


def sources_dir() -> Path:
    """The local folder holding the source files of the anchor-only records (``$MEDVL_CAPTION_DEV``)."""
    return Path(os.environ.get(SOURCES_ENV, str(GOLD_DIR.parents[2] / "shared" / "caption_dev")))


def load_caption_dev(sources: Path | None = None, path: Path = CAPTION_DEV_FILE,
                     require_sources: bool = False) -> list[DevCaption]:
    """The records of ``path`` with their gold texts rebuilt.

    A record without caption text is read from ``sources`` (default :func:`sources_dir`); when that file
    is missing the record is skipped, or with ``require_sources`` raises ``GoldError``. A record whose
    text is stored although its licence does not allow it, a bad anchor or a duplicate source raises
    ``GoldError`` naming the record.
    """
    sources = Path(sources) if sources is not None else sources_dir()
    files: dict[Path, dict[str, str]] = {}
    out = []
    for record in caption_records(path):
        src = record["source"]
        licence, article = record.get("licence", licenses.UNKNOWN), record.get("article")
        if not article:
            raise GoldError(f"{src}: no article")
        caption = record.get("caption")
        if caption is not None and licence not in STORED_LICENCES:
            raise GoldError(f"{src}: caption text stored under licence {licence!r}; keep anchors only")
        if caption is None:
            caption = github_caption(src, sources, files, "bench.caption_dev", require_sources)
            if caption is None:
                continue
        gold_caption = resolve_caption(record, " ".join(caption.split()))
        out.append(DevCaption(gold_caption, article, licence, caption_style(record)))
    return out
