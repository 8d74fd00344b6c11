"""Polite HTTP for NLM/NCBI services: one shared rate limit, retries with backoff, size caps.

Every request (including each redirect hop) passes through the shared :class:`RateLimiter`, so the
Open-i search, E-utilities and image downloads together stay under NCBI's per-second limit.
Transient failures (connection errors, timeouts, 408/429/5xx, an HTML page where data was expected,
a body that does not parse) are retried with exponential backoff, honouring ``Retry-After``.
"""
from __future__ import annotations

import email.utils
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Mapping, TypeVar
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

from data.ratelimit import RateLimiter

log = logging.getLogger(__name__)
T = TypeVar("T")

_REDIRECTS = {301, 302, 303, 307, 308}
_SECRET_PARAMS = {"api_key"}


class FetchError(Exception):
    """A request that failed for good; ``transient`` tells whether a later run may succeed."""

    def __init__(self, url: str, reason: str, status: int | None = None, transient: bool = False,
                 code: str = "") -> None:
        super().__init__(f"{redact(url)}: {reason}")
        self.url = redact(url)
        self.reason = reason
        self.status = status
        self.transient = transient
        # A short counter name for summaries: "http_404", "too_large", "refused", "gave_up", ...
        self.code = code or (f"http_{status}" if status else "bad_url")


class RejectedPayload(Exception):
    """Raised by a ``parse`` callback when the service answered with an explicit error: not retried."""


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


@dataclass
class HttpConfig:
    """Network settings; the defaults suit the real services, tests shrink the delays."""

    user_agent: str
    timeout: float = 60.0  # Open-i takes up to ~30 s for a 100-hit page.
    retries: int = 4
    backoff_base: float = 2.0
    backoff_max: float = 60.0
    max_retry_after: float = 600.0
    max_redirects: int = 5


def redact(url: str) -> str:
    """Hide secret query parameters (the API key) so URLs can go into logs and error messages."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [(k, "***" if k in _SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def check_http_url(url: str) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host, else raise ``FetchError``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FetchError(url, "only absolute http(s) URLs are fetched")
    return url


def looks_like_html(body: bytes) -> bool:
    """True for an HTML page (error pages, anti-bot challenges) served in place of data."""
    head = body[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class PoliteClient:
    """GETs through the shared limiter, retrying transient failures; see the module docstring."""

    def __init__(
        self,
        limiter: RateLimiter,
        config: HttpConfig,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limiter = limiter
        self.config = config
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = config.user_agent
        self._sleep = sleep
        self.requests_sent = 0

    def fetch(
        self,
        url: str,
        parse: Callable[[bytes], T],
        params: Mapping[str, str] | None = None,
        max_bytes: int = 50_000_000,
        allow_html: bool = False,
    ) -> T:
        """GET ``url`` and return ``parse(body)``.

        ``parse`` raising ``ValueError`` counts as a transient failure (truncated or garbled payloads
        are usually a server hiccup), so it is retried like a 5xx and reported clearly at the end.
        """
        check_http_url(url)
        full_url = _with_params(url, params)
        last: _Retry | None = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                self._pause(attempt, last)
            try:
                body = self._get_once(full_url, max_bytes)
                if not allow_html and looks_like_html(body):
                    raise _Retry("an HTML page came back instead of data")
                try:
                    return parse(body)
                except RejectedPayload as err:
                    raise FetchError(full_url, f"the service refused the request: {err}", code="refused") from err
                except ValueError as err:
                    raise _Retry(f"unreadable payload ({err})") from err
            except _Retry as err:
                last = err
                log.warning("%s: %s (attempt %d of %d)", redact(full_url), err.reason, attempt + 1, self.config.retries + 1)
        assert last is not None
        raise FetchError(full_url, f"{last.reason}; gave up after {self.config.retries + 1} attempts",
                         status=last.status, transient=True, code="gave_up")

    def _pause(self, attempt: int, last: _Retry | None) -> None:
        delay = min(self.config.backoff_max, self.config.backoff_base * 2 ** (attempt - 1))
        if last is not None and last.retry_after is not None:
            # The server knows best when it can take us again; never wait less than it asked.
            delay = max(delay, min(last.retry_after, self.config.max_retry_after))
        self._sleep(delay)

    def _get_once(self, url: str, max_bytes: int) -> bytes:
        """One request, following redirects by hand so that each hop is rate-limited and checked."""
        for _ in range(self.config.max_redirects + 1):
            self.limiter.wait()
            self.requests_sent += 1
            try:
                resp = self.session.get(url, timeout=self.config.timeout, stream=True, allow_redirects=False)
            except requests.Timeout as err:
                raise _Retry(f"timed out after {self.config.timeout:g} s") from err
            except requests.ConnectionError as err:
                raise _Retry(f"connection failed ({type(err).__name__})") from err
            with resp:
                if resp.status_code in _REDIRECTS and resp.headers.get("Location"):
                    url = check_http_url(urljoin(url, resp.headers["Location"]))
                    continue
                _check_status(url, resp)
                return _read_capped(url, resp, max_bytes)
        raise FetchError(url, f"more than {self.config.max_redirects} redirects", code="redirects")


def _with_params(url: str, params: Mapping[str, str] | None) -> str:
    if not params:
        return url
    return url + ("&" if urlsplit(url).query else "?") + urlencode(list(params.items()))


def _check_status(url: str, resp: requests.Response) -> None:
    status = resp.status_code
    if status == 429 or status == 408 or status >= 500:
        raise _Retry(f"HTTP {status}", parse_retry_after(resp.headers.get("Retry-After")), status)
    if status >= 400:
        raise FetchError(url, f"HTTP {status}", status=status)


def _read_capped(url: str, resp: requests.Response, max_bytes: int) -> bytes:
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(url, f"response of {declared} bytes exceeds the {max_bytes}-byte cap", code="too_large")
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in resp.iter_content(chunk_size=65536):
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(url, f"response exceeds the {max_bytes}-byte cap", code="too_large")
            chunks.append(chunk)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
        raise _Retry(f"connection broke while reading ({type(err).__name__})") from err
    return b"".join(chunks)
