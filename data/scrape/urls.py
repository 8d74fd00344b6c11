"""URLs of remote services: only absolute http(s) ones are fetched, and secrets never reach a log."""
from __future__ import annotations

import logging
from typing import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_PARAMS = {"api_key"}


def redact(url: str) -> str:
    """Hide secret query parameters (the API key) so URLs can go into logs and error messages."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [(k, "***" if k in _SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def is_http_url(url: str) -> bool:
    """True for an absolute http(s) URL with a host: no files, no other schemes, no relative paths."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def with_params(url: str, params: Mapping[str, str] | None) -> str:
    """``url`` with ``params`` appended to its query string."""
    if not params:
        return url
    return url + ("&" if urlsplit(url).query else "?") + urlencode(list(params.items()))


class RedactingFilter(logging.Filter):
    """Hides secrets in the URLs a library logs itself (urllib3 logs the URL of every retry)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_library_logs(name: str = "urllib3.connectionpool") -> None:
    """Put a :class:`RedactingFilter` on the logger ``name`` once (called when a client is made)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
