"""A local stand-in for Open-i, E-utilities and the PMC article host, for the scraper tests.

It serves real fixture payloads where the project has them (JATS articles wrapped in the real
``efetch`` envelope) and Open-i replies built on the documented structure. Every request is logged
with its arrival time, and faults (429, 500, slow replies, HTML pages, garbage) can be queued per path.
"""
from __future__ import annotations

import io
import json
import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

WEBENV = "MCID_fake_history_1"
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Service unavailable</title></head><body>Try later</body></html>"


@dataclass
class Seen:
    """One request as the server saw it."""

    time: float
    path: str
    params: dict[str, str]
    user_agent: str


def make_image(seed: int, size: tuple[int, int] = (220, 180), fmt: str = "PNG") -> bytes:
    """A small noise image; the seed makes every image's bytes different."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def openi_hit(pmcid: int, fig: str, caption: str, href: str, licence: str = "by", **extra) -> dict:
    """An Open-i hit with the real key names, types and URL shapes."""
    hit = {
        "uid": f"PMC{pmcid}", "pmcid": str(pmcid), "pmid": str(30000000 + pmcid % 1000), "docSource": "PMC",
        "articleType": "cr", "pmc_url": f"http://www.ncbi.nlm.nih.gov/pmc/articles/PMC{pmcid}",
        "title": f"Splenial lesion in patient {pmcid}: a <i>case</i> report", "journal_title": "Journal of example neuroradiology",
        "journal_date": {"day": "14", "month": "01", "year": "2019"}, "ccLicense": licence,
        "licenseURL": f"http://creativecommons.org/licenses/{licence}/4.0/", "licenseType": "open-access",
        "image": {"id": fig, "caption": caption, "modalityMajor": "m", "mention": ""},
        "imgLarge": f"/imgs/512/88/{pmcid}/PMC{pmcid}_{href}.png",
        "imgThumb": f"/imgs/100/88/{pmcid}/PMC{pmcid}_{href}.png",
    }
    hit.update(extra)
    return hit


class FakeNLM:
    """The fake services. Use as a context manager; ``url`` is the base for all three services."""

    def __init__(self) -> None:
        self.openi_hits: list[dict] = []
        self.articles: list[tuple[str, bytes]] = []  # (PMCID digits, <article> XML)
        self.files: dict[str, bytes] = {}  # path -> body (images)
        self.faults: dict[str, deque] = defaultdict(deque)
        self.seen: list[Seen] = []
        self.on_request: Callable[[Seen], None] | None = None
        self.envelope = ('<?xml version="1.0" ?>\n<pmc-articleset>', "</pmc-articleset>\n")
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeNLM":
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- content -------------------------------------------------------------------------------

    def add_openi_hit(self, hit: dict, image: bytes | None = None) -> None:
        """Serve ``hit`` in searches and ``image`` at its ``imgLarge`` path."""
        self.openi_hits.append(hit)
        if image is not None:
            self.files[hit["imgLarge"]] = image

    def add_article(self, xml: bytes, images: dict[str, bytes] | None = None) -> str:
        """Serve a JATS ``<article>`` (DOCTYPE stripped) through efetch; returns its PMCID digits."""
        text = re.sub(rb"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>", b"", xml).strip()
        pmcid = re.search(rb'<article-id pub-id-type="pmc">(?:PMC)?(\d+)<', text).group(1).decode()
        self.articles.append((pmcid, text))
        for href, body in (images or {}).items():
            self.files[f"/articles/PMC{pmcid}/bin/{href}.jpg"] = body
        return pmcid

    def use_envelope(self, efetch_fixture: bytes) -> None:
        """Wrap efetch batches in the prologue and root element of a real efetch reply."""
        text = efetch_fixture.decode("utf-8")
        self.envelope = (text[: text.index("<article")], text[text.index("</article>") + len("</article>"):])

    def fault(self, path: str, *actions: str) -> None:
        """Queue faults for the next requests to ``path``: '429:<secs>', '500', '404', 'sleep:<secs>',
        'html', 'garbage', 'redirect:<location>'."""
        self.faults[path].extend(actions)

    def requests_to(self, prefix: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.startswith(prefix)]

    # --- replies -------------------------------------------------------------------------------

    def _openi(self, params: dict[str, str]) -> tuple[int, str, bytes]:
        start, end = int(params.get("m", 1)), int(params.get("n", 10))
        window = self.openi_hits[start - 1:end]
        reply = {"min": start, "max": start + len(window) - 1, "count": len(window),
                 "total": len(self.openi_hits), "approximage": "false", "list": window}
        return 200, "application/json;charset=UTF-8", json.dumps(reply).encode()

    def _esearch(self, params: dict[str, str]) -> tuple[int, str, bytes]:
        ids = "".join(f"<Id>{pmcid}</Id>\n" for pmcid, _ in self.articles[: int(params.get("retmax", 20))])
        body = ('<?xml version="1.0" encoding="UTF-8" ?>\n<!DOCTYPE eSearchResult PUBLIC "-//NLM//DTD esearch 20060628//EN" '
                '"https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20060628/esearch.dtd">\n'
                f"<eSearchResult><Count>{len(self.articles)}</Count><RetMax>{params.get('retmax', 20)}</RetMax>"
                f"<RetStart>0</RetStart><QueryKey>1</QueryKey><WebEnv>{WEBENV}</WebEnv><IdList>\n{ids}</IdList>"
                "</eSearchResult>\n")
        return 200, "text/xml; charset=UTF-8", body.encode()

    def _efetch(self, params: dict[str, str]) -> tuple[int, str, bytes]:
        if params.get("WebEnv") != WEBENV or params.get("query_key") != "1":
            return 400, "text/xml", b"<eFetchResult><ERROR>Unknown WebEnv</ERROR></eFetchResult>"
        start = int(params.get("retstart", 0))
        batch = self.articles[start: start + int(params.get("retmax", 20))]
        body = self.envelope[0].encode() + b"\n".join(xml for _, xml in batch) + self.envelope[1].encode()
        return 200, "text/xml; charset=UTF-8", body

    def _reply(self, path: str, params: dict[str, str]) -> tuple[int, str, bytes, dict[str, str]]:
        with self._lock:
            queue = self.faults.get(path)
            action = queue.popleft() if queue else ""
        if action.startswith("sleep:"):
            time.sleep(float(action.split(":")[1]))
        elif action.startswith("429"):
            return 429, "text/plain", b"Too Many Requests", {"Retry-After": action.split(":")[1]}
        elif action in ("500", "404"):
            return int(action), "text/plain", b"error", {}
        elif action.startswith("redirect:"):
            return 302, "text/plain", b"", {"Location": action.split(":", 1)[1]}
        elif action == "html":
            return 200, "text/html", HTML_PAGE, {}
        elif action == "garbage":
            return 200, "text/xml", b"<pmc-articleset><article><front>", {}
        if path.endswith("/api/search"):
            return (*self._openi(params), {})
        if path.endswith("/esearch.fcgi"):
            return (*self._esearch(params), {})
        if path.endswith("/efetch.fcgi"):
            return (*self._efetch(params), {})
        if path in self.files:
            return 200, "image/jpeg", self.files[path], {}
        return 404, "text/plain", b"not found", {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                parts = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                seen = Seen(time.monotonic(), parts.path, params, self.headers.get("User-Agent", ""))
                with fake._lock:
                    fake.seen.append(seen)
                if fake.on_request is not None:
                    fake.on_request(seen)
                status, ctype, body, headers = fake._reply(parts.path, params)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


RAW_CAPTION = ("Follow-up <b>brain</b> <b>MRI</b>.(A) Axial DWI shows an oval focus in the splenium; H&amp;E of a "
               "comparable lesion (p\u00a0&lt;\u00a00.05) is shown in (B).")


def populate(fake: FakeNLM) -> None:
    """Eight hits: three good pairs and one of each reason to drop a hit."""
    shared = make_image(3)
    fake.add_openi_hit(openi_hit(7000123, "F2", RAW_CAPTION, "jen-12-34-g002"), make_image(1))
    fake.add_openi_hit(openi_hit(7000123, "F3", "", "jen-12-34-g003"), make_image(2))
    fake.add_openi_hit(openi_hit(7000200, "F1", "Axial T2 <b>MRI</b> of the brain.", "a-g001", "bync"), shared)
    fake.add_openi_hit(openi_hit(1, "F1", "Chest film.", "CXR1_1_IM-0001-3001", docSource="CXR", uid="CXR1"),
                       make_image(4))
    fake.add_openi_hit(openi_hit(7000300, "F1", "A tiny icon.", "b-g001"), make_image(5, (100, 90)))
    fake.add_openi_hit(openi_hit(7000400, "F1", "Figure without an image.", "c-g001", imgLarge=""))
    fake.add_openi_hit(openi_hit(7000500, "F4", "Same picture, other article.", "d-g004"), shared)
    fake.add_openi_hit(openi_hit(7000600, "F1", "Sagittal FLAIR.", "e-g001", "byncnd"), make_image(6))


def max_in_window(times: list[float], window: float) -> int:
    """The most events inside any half-open window [t, t + window)."""
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u - t < window) for i, t in enumerate(times))


def fixture_articles(fixtures: Path) -> list[Path]:
    """The real JATS files of the fixtures folder."""
    return sorted((fixtures / "pmc_xml").iterdir())
