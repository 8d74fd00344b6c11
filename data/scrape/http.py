"""Polite HTTP for NLM/NCBI services: one shared rate limit, retries with backoff, size caps.

Every request (each retry and each redirect hop included) waits for the shared
:class:`~data.scrape.ratelimit.RateLimiter`, so the Open-i search, E-utilities and image downloads
together stay under NCBI's per-second limit. urllib3 retries connection errors, timeouts and
408/429/5xx answers inside the requests adapter, honouring ``Retry-After`` (``data.scrape.retry``).
Failures that only the client can see (an HTML page where data was expected, a body that does not
parse, a connection that breaks while the body is read) are retried here, from the same budget: a
request is tried ``retries + 1`` times in all, whatever went wrong.

``--timeout`` bounds each socket read; ``--deadline`` bounds each try as a whole (``data.scrape.deadline``),
so that a server trickling bytes is cut off, and a ``Retry-After`` longer than ``--max-retry-after`` fails
the request at once with the wait named, while a shorter one is waited with a warning .
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Mapping, TypeVar
from urllib.parse import urljoin

import requests
from urllib3.exceptions import MaxRetryError, ReadTimeoutError

from data.scrape import deadline
from data.scrape.ratelimit import RateLimiter
from data.scrape.retry import RETRY_STATUSES, LimitedRetry, RetryAfterTooLong, retry_policy
from data.scrape.urls import is_http_url, redact, redact_library_logs, with_params

if TYPE_CHECKING:
    from data.scrape.config import ScrapeConfig

T = TypeVar("T")

_REDIRECTS = {301, 302, 303, 307, 308}


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
    """Internal: this try failed in a way only the client sees; ``retry`` is the budget it left."""

    def __init__(self, reason: str, retry: LimitedRetry) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


def looks_like_html(body: bytes) -> bool:
    """True for an HTML page (error pages, anti-bot challenges) served in place of data."""
    head = body[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def check_http_url(url: str) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host, else raise ``FetchError``."""
    if not is_http_url(url):
        raise FetchError(url, "only absolute http(s) URLs are fetched")
    return url


class PoliteClient:
    """GETs through the shared limiter, retrying transient failures; see the module docstring.

    ``config`` gives the network settings (``timeout``, ``retries``, ``backoff``, ``backoff_max``,
    ``max_retry_after``, ``max_redirects``, ``user_agent``). One client serves one thread.
    """

    def __init__(self, limiter: RateLimiter, config: ScrapeConfig, session: requests.Session | None = None) -> None:
        self.limiter = limiter
        self.config = config
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = config.user_agent
        # a total --deadline per try, which per-read timeouts are not (data/scrape/deadline.py)
        self._adapter = deadline.DeadlineAdapter(max_retries=self._policy())
        self._deadline = deadline.Deadline(config.deadline)
        self.session.mount("http://", self._adapter)
        self.session.mount("https://", self._adapter)
        redact_library_logs()
        self.requests_sent = 0

    def fetch(self, url: str, parse: Callable[[bytes], T], params: Mapping[str, str] | None = None,
              max_bytes: int = 50_000_000, allow_html: bool = False) -> T:
        """GET ``url`` and return ``parse(body)``.

        ``parse`` raising ``ValueError`` counts as a transient failure (truncated or garbled payloads
        are usually a server hiccup), so it is retried like a 5xx and reported clearly at the end.
        """
        full_url = with_params(check_http_url(url), params)
        retry = self._policy()
        with deadline.active(self._deadline):
            while True:
                try:
                    return self._attempt(full_url, parse, max_bytes, allow_html, retry)
                except _Retry as failure:
                    try:
                        retry = failure.retry.increment(method="GET", url=full_url, error=failure)
                    except MaxRetryError:
                        raise self._gave_up(full_url, failure.reason) from None
                    time.sleep(retry.get_backoff_time())  # no Retry-After here: these came with a 200

    def _policy(self) -> LimitedRetry:
        c = self.config
        return retry_policy(c.retries, c.backoff, c.backoff_max, c.max_retry_after, self._before_request)

    def _before_request(self) -> None:
        self.limiter.wait()
        self.requests_sent += 1
        self._deadline.restart()  # every try (the client's and urllib3's own) has the whole --deadline

    def _attempt(self, url: str, parse: Callable[[bytes], T], max_bytes: int, allow_html: bool,
                 retry: LimitedRetry) -> T:
        body, retry = self._get(url, max_bytes, retry)
        if not allow_html and looks_like_html(body):
            raise _Retry("an HTML page came back instead of data", retry)
        try:
            return parse(body)
        except RejectedPayload as err:
            raise FetchError(url, f"the service refused the request: {err}", code="refused") from err
        except ValueError as err:
            raise _Retry(f"unreadable payload ({err})", retry) from err

    def _get(self, url: str, max_bytes: int, retry: LimitedRetry) -> tuple[bytes, LimitedRetry]:
        """The body at ``url``, following redirects by hand so that each hop is rate-limited and checked."""
        for _ in range(self.config.max_redirects + 1):
            with self._send(url, retry) as resp:
                retry = getattr(resp.raw, "retries", None) or retry  # what urllib3 spent counts from here on
                if resp.status_code in _REDIRECTS and resp.headers.get("Location"):
                    url = check_http_url(urljoin(url, resp.headers["Location"]))
                    continue
                self._check_status(url, resp)
                try:
                    body = _read_capped(url, resp, max_bytes, retry)
                except _Retry as failure:
                    raise _Retry(self._deadline_reason() or failure.reason, failure.retry) from None
                finally:
                    self._deadline.stop()  # parsing the body is not the server's time
                return body, retry
        raise FetchError(url, f"more than {self.config.max_redirects} redirects", code="redirects")

    def _send(self, url: str, retry: LimitedRetry) -> requests.Response:
        self._before_request()
        # requests hands the adapter's Retry to urllib3 when it sends: giving it what is left of this
        # request's budget makes urllib3's retries and the client's own draw on the same count.
        self._adapter.max_retries = retry
        try:
            return self.session.get(url, timeout=self.config.timeout, stream=True, allow_redirects=False)
        except (requests.ConnectionError, requests.Timeout) as err:  # urllib3 retried until the budget ran out
            raise self._gave_up(url, self._network_reason(err)) from err
        except RetryAfterTooLong as err:  # asked to wait longer than --max-retry-after
            raise FetchError(url, str(err), status=err.status, transient=True, code="retry_after_too_long") from None

    def _check_status(self, url: str, resp: requests.Response) -> None:
        status = resp.status_code
        if status in RETRY_STATUSES:  # urllib3 retried it until the budget ran out
            raise self._gave_up(url, f"HTTP {status}", status)
        if status >= 400:
            raise FetchError(url, f"HTTP {status}", status=status)

    def _deadline_reason(self) -> str:
        """The reason of a try that the deadline cut off; "" for any other failure."""
        if not self._deadline.expired:
            return ""
        return (f"no complete reply within the --deadline of {self.config.deadline:g} s (the server sends too "
                f"slowly; each read stayed within --timeout)")

    def _network_reason(self, err: requests.RequestException) -> str:
        if self._deadline_reason():
            return self._deadline_reason()
        cause = getattr(err.args[0], "reason", None) if err.args else None
        if isinstance(err, requests.Timeout) or isinstance(cause, ReadTimeoutError):
            return f"timed out after {self.config.timeout:g} s"
        return f"connection failed ({type(cause or err).__name__})"

    def _gave_up(self, url: str, reason: str, status: int | None = None) -> FetchError:
        return FetchError(url, f"{reason}; gave up after {self.config.retries + 1} attempts", status=status,
                          transient=True, code="gave_up")


def _read_capped(url: str, resp: requests.Response, max_bytes: int, retry: LimitedRetry) -> bytes:
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
        raise _Retry(f"connection broke while reading ({type(err).__name__})", retry) from err
    return b"".join(chunks)
