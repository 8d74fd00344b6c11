"""A sliding-window request limiter shared by every request to NLM/NCBI hosts."""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable


class RateLimiter:
    """Allow at most ``max_requests`` calls to :meth:`wait` in any window of ``period`` seconds.

    NCBI counts requests per second across all of its services, so one limiter instance is shared
    by the Open-i, E-utilities and image-download clients. ``clock`` and ``sleep`` are injectable so
    that tests can drive the limiter with a virtual clock instead of waiting.
    """

    def __init__(
        self,
        max_requests: int,
        period: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_requests < 1 or period <= 0:
            raise ValueError(f"rate limit needs max_requests >= 1 and period > 0, got {max_requests}/{period}")
        self.max_requests = max_requests
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until one more request fits in the window, then record it as sent."""
        with self._lock:
            while True:
                now = self._clock()
                # Forget requests that left the window; a request exactly `period` ago has left it.
                while self._sent and now - self._sent[0] >= self.period:
                    self._sent.popleft()
                if len(self._sent) < self.max_requests:
                    self._sent.append(now)
                    return
                self._sleep(self.period - (now - self._sent[0]))
