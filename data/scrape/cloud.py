"""The PMC Cloud Service (2026): JATS XML and figure files of Open Access articles from the public
``pmc-oa-opendata`` bucket, read over plain HTTPS without credentials.

Layout (PMC's "Accessing PMC Article Datasets Using AWS" page and the bucket's README.txt, 2026):

- every article *version* has its own prefix, ``PMC<id>.<version>/``, holding the article's files one
  by one: ``PMC<id>.<version>.xml`` (the same JATS that efetch returns), ``.txt``, ``.pdf`` and the
  media and supplementary files under their original names (``<graphic href>.jpg``, ...);
- ``metadata/PMC<id>.<version>.json`` describes a version: ``pmcid``, ``version``, ``is_pmc_openaccess``,
  ``is_manuscript``, ``is_retracted``, ``license_code``, ``xml_url``, ``media_urls`` (``s3://`` URIs, with
  an ``md5`` query), ...;
- the versions of an article are found with an S3 listing,
  ``GET /?list-type=2&prefix=PMC<id>.&delimiter=/`` (``<CommonPrefixes><Prefix>PMC<id>.2/``).

PMCIDs come from an E-utilities search (as ``--source pmc``: the open-access filter, ``tool``/``email``,
the shared rate limit) or from a file (``--pmcid-file``: one PMCID per line, or a CSV with a ``pmcid``,
``AccessionID`` or ``Accession ID`` column). The cursor is the index of the next article in that list.
Only URLs inside ``--cloud-url`` are fetched (a metadata file cannot send the scraper elsewhere), each
key must stay under the article's own prefix, and the ``md5`` the metadata gives for the XML and for each
media file is checked against what is downloaded (a mismatch is retried, then left for the next run).
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Iterator
from urllib.parse import parse_qs, quote, unquote, urlsplit

from data.scrape import licenses
from data.scrape.candidates import Candidate, Page, Rejected, normalize_pmcid
from data.scrape.config import BUCKET, CLOUD_URL
from data.scrape.eutils import OA_FILTER, parse_esearch
from data.scrape.http import FetchError, PoliteClient
from data.scrape.jats import Article, panel_fields, parse_jats
from data.scrape.panel_images import FigureImage
from data.scrape.pmcid_list import read_pmcid_file
from data.scrape.safe_xml import parse_xml

if TYPE_CHECKING:
    from data.scrape.config import ScrapeConfig

_IMAGE_PREFERENCE = (".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff")
_MAX_XML_BYTES = 100_000_000


def parse_listing(body: bytes, pmcid: str) -> list[int]:
    """Version numbers of ``pmcid`` in an S3 ``ListBucketResult`` (prefixes ``PMC<id>.<n>/``)."""
    root = parse_xml(body, "malformed bucket listing")
    versions = []
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.rsplit("}", 1)[-1] == "Prefix" and el.getparent() is not None \
                and el.getparent().tag.rsplit("}", 1)[-1] == "CommonPrefixes":
            name = (el.text or "").strip().rstrip("/")
            head, _, number = name.rpartition(".")
            if head == pmcid and number.isdigit():
                versions.append(int(number))
    return sorted(set(versions))


def parse_metadata(body: bytes) -> dict:
    """An article version's metadata JSON; ValueError when it is not a JSON object."""
    try:
        meta = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"unreadable metadata JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError("metadata JSON is not an object")
    return meta


class CloudSource:
    """Batches of articles from the cloud bucket; see the module docstring."""

    first_cursor = 0

    def __init__(self, client: PoliteClient, config: ScrapeConfig) -> None:
        self.client = client
        self.config = config
        self.base = config.cloud_url.rstrip("/")
        self._ids = read_pmcid_file(config.pmcid_file) if config.pmcid_file else None

    # --- which articles ---------------------------------------------------------------------------

    def pages(self, start: int) -> Iterator[Page]:
        """Batches of ``batch_size`` articles from ``start`` on."""
        size = self.config.batch_size
        cursor = start
        while True:
            ids, more = self._id_batch(cursor, size)
            if not ids:
                return
            items: list[Candidate | Rejected] = []
            for pmcid in ids:
                items.extend(self.article_items(pmcid))
            yield Page(next_cursor=cursor + size, items=items)
            cursor += size
            if not more:
                return

    def _id_batch(self, start: int, size: int) -> tuple[list[str], bool]:
        """(PMCIDs ``start`` .. ``start + size``, whether more may follow)."""
        if self._ids is not None:
            return self._ids[start:start + size], start + size < len(self._ids)
        term = f"({self.config.query}) AND {OA_FILTER}" if self.config.oa_filter else self.config.query
        params = {"db": "pmc", "term": term, "retstart": str(start), "retmax": str(size),
                  **self.config.ncbi_params()}
        url = f"{self.config.eutils_url.rstrip('/')}/esearch.fcgi"
        result = self.client.fetch(url, parse_esearch, params=params)
        return [normalize_pmcid(i) for i in result.ids], start + size < result.count

    # --- one article ------------------------------------------------------------------------------

    def article_items(self, pmcid: str) -> list[Candidate | Rejected]:
        """The figures of the newest version of ``pmcid`` in the bucket, or why there are none.

        A transient failure (5xx, timeouts after the retries) raises, so that the batch is tried again by
        the next run; a permanent one (404, a bad file) rejects the article with the reason."""
        key = f"{pmcid}/*"
        try:
            found = self._version(pmcid)
            if isinstance(found, str):
                return [Rejected(key, found)]
            version, meta = found
            article = self._article(pmcid, version, meta)
        except FetchError as err:
            if err.transient:
                raise
            return [Rejected(key, f"cloud_{err.code}")]
        except ValueError as err:  # a file that does not parse or names files outside the article
            return [Rejected(key, f"cloud_bad_file: {err}"[:200])]
        if article is None:
            return [Rejected(key, "cloud_no_article")]
        media, md5s = self._media(meta, pmcid, version)
        return self._candidates(article, meta, media, md5s)

    def _version(self, pmcid: str) -> tuple[int, dict] | str:
        """(version, metadata) to use: the newest that is not an author manuscript, else the newest;
        or the reason to skip the article."""
        params = {"list-type": "2", "prefix": f"{pmcid}.", "delimiter": "/"}
        versions = self.client.fetch(f"{self.base}/", lambda b: parse_listing(b, pmcid), params=params)
        if not versions:
            return "not_in_cloud"
        chosen: tuple[int, dict] | None = None
        for version in sorted(versions, reverse=True):
            meta = self.client.fetch(f"{self.base}/metadata/{pmcid}.{version}.json", parse_metadata)
            if chosen is None or (chosen[1].get("is_manuscript") and not meta.get("is_manuscript")):
                chosen = (version, meta)
            if not meta.get("is_manuscript"):
                break
        version, meta = chosen
        if meta.get("is_retracted"):
            return "retracted"
        if self.config.oa_filter and meta.get("is_pmc_openaccess") is False:
            return "not_open_access"
        return version, meta

    def _article(self, pmcid: str, version: int, meta: dict) -> Article | None:
        default = f"s3://{BUCKET}/{pmcid}.{version}/{pmcid}.{version}.xml"
        url, md5 = self.https_url(meta.get("xml_url") or default, pmcid, version)

        def parse(body: bytes) -> list[Article]:
            if md5 and hashlib.md5(body, usedforsecurity=False).hexdigest() != md5:
                raise ValueError("the XML does not match the md5 its metadata gives")  # retried, then reported
            return parse_jats(body, url)

        articles = self.client.fetch(url, parse, max_bytes=_MAX_XML_BYTES)
        return next((a for a in articles if a.pmcid == pmcid), articles[0] if articles else None)

    def https_url(self, uri: str, pmcid: str, version: int) -> tuple[str, str]:
        """(HTTPS URL under ``--cloud-url``, md5 or "") of a ``s3://`` URI or bucket URL in the metadata.

        ValueError for anything outside the bucket or outside the article version's own prefix."""
        parts = urlsplit(uri.strip())
        if parts.scheme == "s3" and parts.netloc == BUCKET:
            key = parts.path.lstrip("/")
        elif parts.scheme in ("http", "https") and f"{parts.scheme}://{parts.netloc}" in (self.base, CLOUD_URL):
            key = parts.path.lstrip("/")
        else:
            raise ValueError(f"{uri!r} is not a file of the {BUCKET} bucket")
        prefix = f"{pmcid}.{version}/"
        if not key.startswith(prefix) or ".." in key.split("/") or key == prefix:
            raise ValueError(f"{uri!r} lies outside {prefix}")
        md5 = (parse_qs(parts.query).get("md5") or [""])[0]
        return f"{self.base}/{quote(key)}", md5

    def _media(self, meta: dict, pmcid: str, version: int) -> tuple[dict[str, str], dict[str, str]]:
        """(file name -> HTTPS URL, URL -> md5 where given) of the version's media files (those outside
        the bucket are dropped)."""
        urls = meta.get("media_urls") or []
        media: dict[str, str] = {}
        md5s: dict[str, str] = {}
        for uri in urls if isinstance(urls, list) else []:
            try:
                url, md5 = self.https_url(str(uri), pmcid, version)
            except ValueError:
                continue
            media[unquote(url.rsplit("/", 1)[-1])] = url
            if md5:
                md5s[url] = md5
        return media, md5s

    def _candidates(self, article: Article, meta: dict, media: dict[str, str],
                    md5s: dict[str, str]) -> list[Candidate | Rejected]:
        fallback = _licence_of(meta.get("license_code"))
        items: list[Candidate | Rejected] = []
        for fig in article.figures:
            licence = fig.license or article.license
            if licence == licenses.UNKNOWN and fallback:
                licence = fallback
            for part, image in enumerate(fig.images or [FigureImage("")]):
                url = media_file(media, image.href)
                items.append(Candidate(
                    source="pmc-cloud", pmcid=article.pmcid, figure_id=fig.fig_id, label=fig.label,
                    caption=fig.caption, image_url=url, license=licence,
                    license_url=fig.license_url if fig.license else article.license_url, graphic=image.href,
                    image_md5=md5s.get(url, ""), **panel_fields(fig, part), **article.article_meta()))
        return items


def media_file(media: dict[str, str], href: str) -> str:
    """The URL of the media file a ``<graphic xlink:href>`` names ("" when the version has none).

    Hrefs usually have no extension: the file with the same stem is taken, JPEG first."""
    href = href.strip()
    if not href:
        return ""
    if href in media:
        return media[href]
    stem = href.rsplit(".", 1)[0] if href.lower().endswith(_IMAGE_PREFERENCE) else href
    found = {name[len(stem):].lower(): url for name, url in media.items() if name.startswith(stem + ".")}
    return next((found[ext] for ext in _IMAGE_PREFERENCE if ext in found), "")


def _licence_of(code: object) -> str:
    """The metadata's ``license_code`` ("CC BY", "CC BY-NC-ND", "CC0", ...) in the project's spelling."""
    if not isinstance(code, str) or not code.strip():
        return ""
    try:
        return licenses.normalize_name(code)
    except ValueError:
        return ""
