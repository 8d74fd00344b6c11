"""A total time limit for each HTTP request of the scraper .

urllib3's read timeout applies to each socket read, so a server that sends one byte a second keeps a
request alive forever: ``--timeout 60`` never fires. :class:`Deadline` bounds one try of a request as a
whole (headers and body): a timer shuts down the socket of the connection the try uses when its time is
up, so that the blocked read returns at once and the try fails like a broken connection, which the
client retries from its budget and reports with the deadline named (``expired``).

Connections find the deadline of their thread through :func:`current` (one client serves one thread);
:class:`DeadlineAdapter` is the requests adapter whose connections register with it.
"""
from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


class Deadline:
    """``seconds`` for each try: :meth:`restart` before a try, :meth:`stop` when its body is read."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False  # the last try was cut off by this deadline
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._generation = 0  # a timer of an earlier try that fires late must not cut the current one
        self._connections: list[Any] = []

    def restart(self) -> None:
        """A new try: the whole time again, from now."""
        with self._lock:
            self._cancel()
            self.expired = False
            self._generation += 1
            self._timer = threading.Timer(self.seconds, self._fire, args=(self._generation,))
            self._timer.daemon = True
            self._timer.start()

    def stop(self) -> None:
        """The try is over (its body read, or it failed): nothing is cut off any more."""
        with self._lock:
            self._cancel()

    def watch(self, connection: Any) -> None:
        """Called by a connection about to send a request in this thread: shut it down at the deadline."""
        with self._lock:
            if self._timer is None:
                return
            if connection not in self._connections:
                self._connections.append(connection)
            if self.expired:
                _shutdown(connection)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._connections = []

    def _fire(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation or self._timer is None:
                return
            self.expired = True
            for connection in self._connections:
                _shutdown(connection)


def _shutdown(connection: Any) -> None:
    """Shut the connection's socket down (both ways), which wakes a read blocked on it in another thread.

    ``socket.socket.shutdown`` is called on TLS sockets too, bypassing ``SSLSocket.shutdown``, which would
    drop the TLS state under the reading thread's feet."""
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        if isinstance(sock, socket.socket):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        else:  # urllib3's SSLTransport (TLS inside a TLS proxy)
            sock.socket.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass  # already closed


def current() -> Deadline | None:
    """The deadline of the request this thread is making, if any."""
    return getattr(_local, "deadline", None)


@contextmanager
def active(deadline: Deadline) -> Iterator[Deadline]:
    """Make ``deadline`` the one this thread's connections register with; stopped on the way out."""
    previous = current()
    _local.deadline = deadline
    try:
        yield deadline
    finally:
        deadline.stop()
        _local.deadline = previous


class _Watched:
    """Mixin for urllib3 connections: register with the thread's deadline before each request is sent
    (a kept-alive connection serves several requests, each with its own deadline)."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        deadline = current()
        if deadline is not None:
            deadline.watch(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connection pools make :class:`Deadline`-aware connections."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": WatchedHTTPConnectionPool,
                                                   "https": WatchedHTTPSConnectionPool}
