"""The figure candidate that both sources (Open-i, E-utilities) hand to the scraper."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

_PMCID = re.compile(r"^(?:PMC)?(\d{1,12})$", re.IGNORECASE)


def normalize_pmcid(value: str) -> str:
    """``PMC<digits>`` from ``"4911020"``, ``"PMC4911020"`` or ``"pmc4911020"``; ValueError otherwise."""
    match = _PMCID.match((value or "").strip())
    if not match:
        raise ValueError(f"not a PMCID: {value!r}")
    return f"PMC{int(match.group(1))}"


@dataclass(kw_only=True)
class ArticleMeta:
    """What a source knows of the article a figure comes from (each may be unknown: "")."""

    pmid: str = ""
    doi: str = ""
    title: str = ""
    journal: str = ""
    year: str = ""

    def article_meta(self) -> dict[str, str]:
        """These fields alone, to hand from an article to each of its figures."""
        return {f.name: getattr(self, f.name) for f in fields(ArticleMeta)}


@dataclass
class Candidate(ArticleMeta):
    """One figure found by a source, before its image is downloaded and checked.

    ``caption`` is already clean text. ``image_url`` may be empty (the figure has no graphic).
    """

    source: str
    pmcid: str
    figure_id: str
    label: str
    caption: str
    image_url: str
    license: str
    license_url: str = ""
    graphic: str = ""
    image_md5: str = ""  # the md5 the source states for the image file (PMC cloud), checked on download

    @property
    def key(self) -> str:
        """Identity of the figure across runs: article plus figure id."""
        return f"{self.pmcid}/{self.figure_id}"

    def as_record(self) -> dict:
        """The captions.json fields (``image`` is added once the file exists)."""
        record = asdict(self)
        record.pop("image_md5")  # a download check, not part of the record
        meta = {name: record.pop(name) for name in self.article_meta()}
        record.update(meta, url=record.pop("image_url"))  # the key order captions.json always had
        return record


@dataclass
class Rejected:
    """A hit a source could not turn into a candidate (e.g. not a PMC article), with the reason."""

    key: str
    reason: str


@dataclass
class Page:
    """One search page or fetch batch; ``next_cursor`` resumes right after it."""

    next_cursor: int
    items: list[Candidate | Rejected] = field(default_factory=list)

