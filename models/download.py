"""Downloading a file over HTTP(S) within a total deadline (checkpoint and weight URLs).

A socket timeout bounds each read only, so a server that trickles one byte a second would hold
``torch.hub.download_url_to_file`` forever. :func:`download` bounds the whole transfer: a watchdog timer
shuts down the connection's socket at the deadline, which wakes a read blocked in the headers or the
body at once, and the loop also checks the deadline between chunks. urllib's own handlers stay in charge
of redirects (hub URLs redirect to a CDN) and of ``http(s)_proxy`` settings.

The limits come from the environment, so that a config or a launch command needs no new key:
``MEDVL_DOWNLOAD_DEADLINE`` (seconds for the whole file, default 3600: a 1 GB checkpoint at 2.4 Mbit/s)
and ``MEDVL_DOWNLOAD_TIMEOUT`` (seconds one read may wait, default 60).
"""
from __future__ import annotations

import http.client
import os
import socket
import threading
import time
import urllib.request
from typing import Any

DEFAULT_DEADLINE_S = 3600.0
DEFAULT_READ_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class DownloadTimeout(TimeoutError):
    """The download did not finish within its deadline."""


def _seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``name``, else ``default``."""
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name}={text!r}: expected a positive number of seconds")
    return value


def deadline_from_env() -> float:
    return _seconds("MEDVL_DOWNLOAD_DEADLINE", DEFAULT_DEADLINE_S)


def read_timeout_from_env() -> float:
    return _seconds("MEDVL_DOWNLOAD_TIMEOUT", DEFAULT_READ_TIMEOUT_S)


class _Watchdog:
    """Shuts down the sockets of the connections it watches when ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._done = False
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
            self._timer.cancel()
            self._connections.clear()

    def watch(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)
            if self.fired:
                _shutdown(connection)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            for connection in self._connections:
                _shutdown(connection)


def _shutdown(connection: http.client.HTTPConnection) -> None:
    """Wake a read blocked on the connection (``socket.socket.shutdown`` bypasses ``SSLSocket.shutdown``,
    which would tear the TLS state down under the reading thread)."""
    sock = connection.sock
    if sock is None:
        return
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # closed already


class _WatchedHTTP(http.client.HTTPConnection):
    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        self._watchdog.watch(self)  # before connecting: every read of this connection is watched
        super().connect()


class _WatchedHTTPS(http.client.HTTPSConnection):
    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        self._watchdog.watch(self)
        super().connect()


class _WatchedOpen:
    """Mixin for urllib's HTTP(S) handlers: their connections register with the watchdog."""

    watchdog: _Watchdog

    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> Any:
        watched = _WatchedHTTPS if issubclass(http_class, http.client.HTTPSConnection) else _WatchedHTTP
        watchdog = self.watchdog

        def connection(*args: Any, **kw: Any) -> http.client.HTTPConnection:
            return watched(*args, watchdog=watchdog, **kw)

        return super().do_open(connection, req, **kwargs)  # type: ignore[misc]


class _HTTPHandler(_WatchedOpen, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_WatchedOpen, urllib.request.HTTPSHandler):
    pass


def download(url: str, dest: str | os.PathLike, deadline_s: float | None = None,
             read_timeout_s: float | None = None) -> int:
    """GET ``url`` into ``dest`` (created or truncated) within ``deadline_s`` seconds in all, each read
    waiting at most ``read_timeout_s``; returns the number of bytes written.

    Raises :class:`DownloadTimeout` at the deadline, ``urllib.error.HTTPError`` for an error status and
    ``OSError`` for a connection that broke or a body shorter than its ``Content-Length``. The caller
    owns ``dest`` and removes it on failure.
    """
    deadline_s = deadline_from_env() if deadline_s is None else deadline_s
    read_timeout_s = read_timeout_from_env() if read_timeout_s is None else read_timeout_s
    watchdog = _Watchdog(deadline_s)
    handlers = [_HTTPHandler(), _HTTPSHandler()]
    for h in handlers:
        h.watchdog = watchdog
    opener = urllib.request.build_opener(*handlers)
    end = time.monotonic() + deadline_s
    written = 0
    too_slow = DownloadTimeout(f"no complete download within the deadline of {deadline_s:g} s "
                               f"(MEDVL_DOWNLOAD_DEADLINE; the server sends too slowly)")
    try:
        with watchdog, opener.open(urllib.request.Request(url, headers={"User-Agent": "medvl"}),
                                   timeout=min(read_timeout_s, deadline_s)) as resp, open(dest, "wb") as out:
            while True:
                chunk = resp.read1(_CHUNK)  # what one read brings: the deadline is checked after each
                if time.monotonic() > end:
                    raise too_slow
                if not chunk:
                    break
                out.write(chunk)
                written += len(chunk)
            left = getattr(resp, "length", None)  # http.client counts down Content-Length; EOF before 0 is a cut
            if left:
                raise OSError(f"the connection closed after {written} bytes, {left} bytes short of Content-Length")
    except DownloadTimeout:
        raise
    except (OSError, http.client.HTTPException) as e:
        if watchdog.fired:
            raise too_slow from e
        if isinstance(e, http.client.HTTPException):  # IncompleteRead, RemoteDisconnected, ...: not OSErrors
            raise OSError(f"{type(e).__name__}: {e}") from e
        raise
    return written


__all__ = ["DEFAULT_DEADLINE_S", "DEFAULT_READ_TIMEOUT_S", "DownloadTimeout", "download", "deadline_from_env",
           "read_timeout_from_env"]
