"""NCBI E-utilities client for PMC: ``esearch`` on the history server, ``efetch`` of JATS in batches.

Figure images come from the article host (``--pmc-url``) at ``/articles/<PMCID>/bin/<href>.jpg``,
the JPEG rendition PMC serves for each ``<graphic xlink:href>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator
from urllib.parse import quote, urlsplit

from data.scrape.candidates import Candidate, Page
from data.scrape.http import PoliteClient, RejectedPayload
from data.scrape.jats import Article, parse_jats, panel_fields
from data.scrape.panel_images import FigureImage
from data.scrape.safe_xml import parse_xml

if TYPE_CHECKING:
    from data.scrape.config import ScrapeConfig

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".eps", ".bmp", ".webp")
_MAX_BATCH_BYTES = 200_000_000
OA_FILTER = '"open access"[filter]'


@dataclass
class SearchResult:
    """An ``esearch`` answer: the hit count and, with the history server, where the list is kept."""

    count: int
    ids: list[str]
    webenv: str = ""
    query_key: str = ""


def parse_esearch(body: bytes) -> SearchResult:
    """Parse an ``eSearchResult`` XML document; ValueError if malformed, RejectedPayload on ``<ERROR>``."""
    root = parse_xml(body, "malformed esearch XML")
    if root.tag != "eSearchResult":
        raise ValueError(f"expected <eSearchResult>, got <{root.tag}>")
    error = root.findtext("ERROR")
    if error:
        raise RejectedPayload(error.strip())
    count = (root.findtext("Count") or "").strip()
    if not count.isdigit():
        raise ValueError("esearch reply has no numeric <Count>")
    return SearchResult(
        count=int(count),
        ids=[(el.text or "").strip() for el in root.iterfind("IdList/Id")],
        webenv=(root.findtext("WebEnv") or "").strip(),
        query_key=(root.findtext("QueryKey") or "").strip(),
    )


def pmc_image_url(pmc_url: str, pmcid: str, href: str) -> str:
    """URL of a figure's image on the article host; "" when the href cannot be one."""
    href = href.strip()
    if not href:
        return ""
    if urlsplit(href).scheme:
        return href if urlsplit(href).scheme in ("http", "https") else ""
    stem = href
    if stem.lower().endswith(_IMAGE_EXTENSIONS):
        stem = stem.rsplit(".", 1)[0]
    # quote(safe="") keeps the href one path segment: "../x" cannot climb out of bin/.
    return f"{pmc_url.rstrip('/')}/articles/{pmcid}/bin/{quote(stem, safe='')}.jpg"


def article_candidates(article: Article, pmc_url: str) -> list[Candidate]:
    """One candidate per figure image (several for a figure split into one file per panel); a figure's
    own licence wins over the article's."""
    return [
        Candidate(
            source="pmc",
            pmcid=article.pmcid,
            figure_id=fig.fig_id,
            label=fig.label,
            caption=fig.caption,
            image_url=pmc_image_url(pmc_url, article.pmcid, image.href),
            license=fig.license or article.license,
            license_url=fig.license_url if fig.license else article.license_url,
            graphic=image.href,
            **panel_fields(fig, part),
            **article.article_meta(),
        )
        for fig in article.figures
        for part, image in enumerate(fig.images or [FigureImage("")])
    ]


class EutilsSource:
    """Batches of PMC articles for a query; the cursor is the ``retstart`` of the next batch."""

    first_cursor = 0

    def __init__(self, client: PoliteClient, config: ScrapeConfig) -> None:
        self.client = client
        self.config = config
        self.term = f"({config.query}) AND {OA_FILTER}" if config.oa_filter else config.query

    def pages(self, start: int) -> Iterator[Page]:
        """Batches from ``start`` on. A fresh search each run: history-server sessions expire."""
        search = self.search()
        for retstart in range(start, search.count, self.config.batch_size):
            articles = self._efetch(search, retstart)
            items = [c for article in articles for c in article_candidates(article, self.config.pmc_url)]
            yield Page(next_cursor=retstart + self.config.batch_size, items=items)

    def search(self) -> SearchResult:
        """Run ``esearch`` with ``usehistory=y`` so that batches are fetched from the server's list."""
        params = {"db": "pmc", "term": self.term, "usehistory": "y", "retmax": "0", **self.config.ncbi_params()}
        result = self.client.fetch(self._url("esearch.fcgi"), parse_esearch, params=params)
        if result.count and not (result.webenv and result.query_key):
            raise ValueError(f"esearch for {self.term!r} returned no WebEnv/QueryKey")
        return result

    def _efetch(self, search: SearchResult, retstart: int) -> list[Article]:
        url = self._url("efetch.fcgi")
        params = {"db": "pmc", "WebEnv": search.webenv, "query_key": search.query_key,
                  "retstart": str(retstart), "retmax": str(self.config.batch_size), "retmode": "xml",
                  **self.config.ncbi_params()}
        return self.client.fetch(url, lambda body: parse_jats(body, f"efetch batch at retstart={retstart}"),
                                 params=params, max_bytes=_MAX_BATCH_BYTES)

    def _url(self, name: str) -> str:
        return f"{self.config.eutils_url.rstrip('/')}/{name}"
