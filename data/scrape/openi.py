"""NLM Open-i search client: PMC figures with captions and 512-px image renditions.

The API facts (``m``/``n`` are a 1-based inclusive window, ``pmcid`` is digits only, captions carry
``<b>`` highlight tags and HTML entities) are documented in the project's reference notes.
"""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urljoin

from data.captions import strip_html
from data.scrape import licenses
from data.scrape.candidates import Candidate, Page, Rejected, normalize_pmcid
from data.scrape.http import PoliteClient, RejectedPayload

if TYPE_CHECKING:
    from data.scrape.config import ScrapeConfig

_HIGHLIGHT = re.compile(r"</?b>", re.IGNORECASE)
_YEAR = re.compile(r"\b(1[89]\d\d|2\d\d\d)\b")
_MAX_PAGE_BYTES = 100_000_000


class OpenISource:
    """Pages of Open-i hits turned into candidates; the cursor is the next 1-based start index."""

    first_cursor = 1

    def __init__(self, client: PoliteClient, config: ScrapeConfig) -> None:
        self.client = client
        self.config = config  # query, type codes, page size and base URL; checked by config.validate()

    def pages(self, start: int) -> Iterator[Page]:
        """Pages from ``start`` on, until Open-i has no more hits."""
        while True:
            reply = self.client.fetch(self._url(), parse_reply, params=self._params(start), max_bytes=_MAX_PAGE_BYTES)
            hits = reply.get("list") or []
            if not hits:
                return
            # Read the window Open-i actually served instead of trusting the one we asked for.
            last = _as_int(reply.get("max"), None) or start + len(hits) - 1
            yield Page(next_cursor=last + 1, items=[hit_to_candidate(h, self.config.openi_url) for h in hits])
            # `total` may be missing or overstate what paging reaches; empty pages end the loop too.
            total = _as_int(reply.get("total"), None)
            if (total is not None and last >= total) or last < start:
                return
            start = last + 1

    def _url(self) -> str:
        return self.config.openi_url.rstrip("/") + "/api/search"

    def _params(self, start: int) -> dict[str, str]:
        config = self.config
        params = {"query": config.query, "coll": "pmc", "m": str(start), "n": str(start + config.page_size - 1)}
        if config.article_types:
            params["at"] = ",".join(config.article_types)
        if config.image_types:
            params["it"] = ",".join(config.image_types)
        return params


def parse_reply(body: bytes) -> dict:
    """A search reply as a dict; ValueError when it is not the JSON object Open-i sends."""
    try:
        reply = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON ({err})") from err
    if not isinstance(reply, dict):
        raise ValueError(f"expected a JSON object, got {type(reply).__name__}")
    if "Query-Error" in reply:
        raise RejectedPayload(str(reply["Query-Error"]))
    if "list" in reply and not isinstance(reply["list"], list):
        raise ValueError("'list' is not an array")
    if "list" not in reply and "total" not in reply:
        raise ValueError("neither 'list' nor 'total' in the reply")
    return reply


def clean_caption(raw: str) -> str:
    """Caption text from Open-i's HTML: highlight tags out, then tags, entities and spaces."""
    # Open-i wraps matched words in <b>; dropping them without a space keeps "MRI</b>." as "MRI.".
    return strip_html(_HIGHLIGHT.sub("", raw or ""))


def hit_to_candidate(hit: object, base_url: str) -> Candidate | Rejected:
    """One Open-i hit as a candidate, or the reason it cannot be one."""
    if not isinstance(hit, dict):
        return Rejected(key="?", reason="malformed_hit")
    image = hit.get("image") if isinstance(hit.get("image"), dict) else {}
    img_large = str(hit.get("imgLarge") or "")
    raw_key = f"{hit.get('uid', '?')}/{image.get('id') or img_large}"
    if str(hit.get("docSource", "PMC")).upper() != "PMC":
        return Rejected(key=raw_key, reason="not_pmc")
    try:
        pmcid = normalize_pmcid(str(hit.get("pmcid") or ""))
    except ValueError:
        return Rejected(key=raw_key, reason="bad_pmcid")
    lic_url = str(hit.get("licenseURL") or "")
    lic = licenses.from_openi_code(str(hit.get("ccLicense") or "")) or licenses.from_url(lic_url)
    return Candidate(
        source="openi",
        pmcid=pmcid,
        figure_id=str(image.get("id") or "") or _graphic(img_large, pmcid) or "unknown",
        label="",
        caption=clean_caption(str(image.get("caption") or "")),
        image_url=urljoin(base_url, img_large) if img_large else "",
        license=lic or licenses.UNKNOWN,
        license_url=lic_url,
        graphic=_graphic(img_large, pmcid),
        pmid=str(hit.get("pmid") or ""),
        title=strip_html(str(hit.get("title") or "")),
        journal=strip_html(str(hit.get("journal_title") or "")),
        year=_year(hit.get("journal_date")),
    )


def _graphic(img_large: str, pmcid: str) -> str:
    """The JATS graphic href inside an Open-i file name: ``PMC123_<href>.png`` gives ``<href>``."""
    name = img_large.rsplit("/", 1)[-1]
    name = name[: -len(".png")] if name.lower().endswith(".png") else name
    prefix = pmcid + "_"
    return name[len(prefix):] if name.startswith(prefix) else name


def _year(journal_date: object) -> str:
    if isinstance(journal_date, dict):
        match = _YEAR.search(str(journal_date.get("year") or ""))
        return match.group(1) if match else ""
    return ""


def _as_int(value: object, default: int | None) -> int | None:
    """Open-i's numbers can arrive as strings or floats ("347.0")."""
    try:
        return int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
