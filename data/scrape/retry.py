"""urllib3's ``Retry``, held to the shared rate limit: the retry policy of every NLM/NCBI request.

urllib3 retries connection failures, timeouts and 408/429/5xx answers itself, inside the requests
adapter, honouring ``Retry-After``. :class:`LimitedRetry` makes each of those retries wait for the
shared :class:`~data.scrape.ratelimit.RateLimiter` first, so no attempt escapes the limit, and keeps
the ``--backoff`` meaning of the command line: the first retry waits ``backoff`` seconds, each next
one twice as long, never more than ``backoff_max``.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

from urllib3 import BaseHTTPResponse
from urllib3.exceptions import InvalidHeader
from urllib3.util import Retry

from data.scrape.urls import redact

log = logging.getLogger(__name__)

# 408 and 429 say "later"; 5xx are the server's own trouble. Other 4xx answers are final.
RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})


class RetryAfterTooLong(Exception):
    """The server asked (``Retry-After``) for a longer wait than ``--max-retry-after`` allows: the request
    fails at once, named, instead of sleeping for hours . Not an ``OSError``, so that requests
    hands it through unchanged."""

    def __init__(self, seconds: float, cap: float, status: int) -> None:
        super().__init__(f"HTTP {status}: the server asks to wait {seconds:.0f} s before the next try (Retry-After), "
                         f"more than --max-retry-after {cap:g} s; giving up on this request (run again later)")
        self.seconds, self.cap, self.status = seconds, cap, status


# urllib3 from 2.6.3 on silently cuts every Retry-After to its retry_after_max (earlier releases have no
# such cap); the cap is applied here instead, loudly.
_NO_SILENT_CAP = ({"retry_after_max": 10**9} if "retry_after_max" in inspect.signature(Retry.__init__).parameters
                  else {})


class LimitedRetry(Retry):
    """A ``Retry`` that calls ``before_attempt`` (the limiter) before each retry urllib3 makes, and waits
    what ``Retry-After`` asks (with a warning saying so) up to ``max_retry_after`` seconds, failing with
    :class:`RetryAfterTooLong` beyond."""

    def __init__(self, *args: Any, before_attempt: Callable[[], None] | None = None,
                 max_retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_attempt = before_attempt
        self.max_retry_after = max_retry_after

    def new(self, **kwargs: Any) -> LimitedRetry:
        """urllib3 copies the policy after every attempt; the copy must keep the limiter and the cap."""
        retry = super().new(**kwargs)
        retry.before_attempt = self.before_attempt
        retry.max_retry_after = self.max_retry_after
        return retry

    def get_backoff_time(self) -> float:
        """``backoff * 2 ** (n - 1)`` before the n-th retry (urllib3 would not wait before the first)."""
        if not self.history:
            return 0.0
        return min(self.backoff_max, self.backoff_factor * 2 ** (len(self.history) - 1))

    def parse_retry_after(self, retry_after: str | None) -> float | None:
        """Seconds a ``Retry-After`` value asks for (delta seconds or an HTTP date); None when the value
        is absent or unreadable, so that a garbled header means an ordinary backoff, not a crash."""
        if not retry_after:
            return None
        try:
            return super().parse_retry_after(retry_after)
        except InvalidHeader:
            return None

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        """Back off (or wait as ``Retry-After`` asks), then wait for the limiter: urllib3 sends next."""
        wanted = self.get_retry_after(response) if response is not None and self.respect_retry_after_header else None
        if wanted:
            if self.max_retry_after is not None and wanted > self.max_retry_after:
                raise RetryAfterTooLong(wanted, self.max_retry_after, response.status)
            log.warning("HTTP %d: waiting %.0f s before the next try, as the server asks (Retry-After)",
                        response.status, wanted)
        super().sleep(response)
        if self.before_attempt is not None:
            self.before_attempt()

    def increment(self, method: str | None = None, url: str | None = None, response: BaseHTTPResponse | None = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> LimitedRetry:
        """Count a failed try (urllib3's or the client's own) and log it; raises MaxRetryError at the end."""
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        cause = f"HTTP {response.status}" if response is not None and not error else str(error) or type(error).__name__
        log.warning("%s: %s (attempt %d of %d)", redact(url or ""), cause, len(retry.history),
                    len(retry.history) + (retry.total or 0) + 1)
        return retry


def retry_policy(retries: int, backoff: float, backoff_max: float, max_retry_after: float,
                 before_attempt: Callable[[], None]) -> LimitedRetry:
    """The policy of one request: ``retries`` retries in all, on connection errors, timeouts and
    :data:`RETRY_STATUSES`, for GETs (requests leaves redirects to the client, which checks every hop)."""
    return LimitedRetry(
        total=retries, status_forcelist=RETRY_STATUSES, allowed_methods=frozenset({"GET"}),
        backoff_factor=backoff, backoff_max=backoff_max, **_NO_SILENT_CAP,
        max_retry_after=max_retry_after, respect_retry_after_header=True, raise_on_status=False,
        before_attempt=before_attempt)
