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

    A figure its authors split into one image file per panel gives one candidate per file:
    ``panel_count`` files, this one at ``panel_index`` (from 0), with its ``panel_letter`` when the file
    names or the panel labels tell it. ``part`` numbers the files of one ``<fig>`` element (several
    ``<graphic>``), so that each has its own key; the panels of a ``<fig-group>`` have their own ids.
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
    panel_letter: str | None = None
    panel_index: int = 0
    panel_count: int = 1
    part: int = 0

    @property
    def key(self) -> str:
        """Identity of the figure across runs: article plus figure id (plus the file's number after the
        first of a ``<fig>`` with several graphics)."""
        return f"{self.pmcid}/{self.figure_id}" + (f"/{self.part + 1}" if self.part else "")

    def as_record(self) -> dict:
        """The captions.json fields (``image`` is added once the file exists); the panel fields only for
        a figure split into several files."""
        record = asdict(self)
        record.pop("image_md5")  # a download check, not part of the record
        meta = {name: record.pop(name) for name in self.article_meta()}
        panel = {name: record.pop(name) for name in ("panel_letter", "panel_index", "panel_count", "part")}
        record.update(meta, url=record.pop("image_url"))  # the key order captions.json always had
        if self.panel_count > 1:
            record.update({k: panel[k] for k in ("panel_letter", "panel_index", "panel_count")})
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

