"""Polite HTTP: the rate limiter, retries, backoff, Retry-After, HTML pages, size caps, schemes."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from data.scrape.config import ScrapeConfig
from data.scrape.http import FetchError, PoliteClient
from data.scrape.ratelimit import RateLimiter
from data.scrape.retry import LimitedRetry
from data.scrape.urls import redact
from tests.pubmed_server import FakeNLM, max_in_window


class VirtualClock:
    """Time that only moves when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


def client(fast: bool = True, **overrides) -> PoliteClient:
    settings = {"timeout": 5.0, "retries": 2, "backoff": 0.01, "backoff_max": 0.05, **overrides}
    limiter = RateLimiter(1000) if fast else RateLimiter(3)
    return PoliteClient(limiter, ScrapeConfig(tool="medvl-test", **settings))


@pytest.mark.parametrize("rate, period", [(3, 1.0), (10, 1.0), (2, 0.5)])
def test_limiter_never_exceeds_rate_in_any_window(rate, period):
    clock = VirtualClock()
    limiter = RateLimiter(rate, period, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(60):
        limiter.wait()
        sent.append(clock.now)
    assert max_in_window(sent, period) == rate
    # And it is not needlessly slow: 60 requests take (60 / rate - 1) periods.
    assert clock.now == pytest.approx((60 // rate - 1) * period)


def test_limiter_rejects_nonsense():
    with pytest.raises(ValueError):
        RateLimiter(0)


def _recording_limiter(rate: int, period: float) -> tuple[RateLimiter, list[float]]:
    """A limiter on the real monotonic clock that records the clock reading of each grant."""
    readings: list[float] = []
    granted: list[float] = []

    def clock() -> float:
        readings.append(time.monotonic())
        return readings[-1]

    class Recording(RateLimiter):
        def wait(self) -> None:
            super().wait()
            granted.append(readings[-1])

    return Recording(rate, period, clock=clock), granted


def test_500_then_success_is_retried():
    with FakeNLM() as fake:
        fake.files["/x.bin"] = b"payload"
        fake.fault("/x.bin", "500")
        assert client().fetch(fake.url + "/x.bin", lambda b: b) == b"payload"
        assert len(fake.requests_to("/x.bin")) == 2


def test_every_retry_waits_for_the_limiter_and_the_backoff():
    with FakeNLM() as fake:
        fake.files["/x.bin"] = b"payload"
        fake.fault("/x.bin", "500", "500")  # retried inside urllib3, out of the client's sight
        limiter, granted = _recording_limiter(1, 0.25)
        http = PoliteClient(limiter, ScrapeConfig(timeout=5.0, retries=2, backoff=0.01))
        assert http.fetch(fake.url + "/x.bin", lambda b: b) == b"payload"
        times = [s.time for s in fake.requests_to("/x.bin")]
        assert http.requests_sent == len(times) == len(granted) == 3
        # One grant per 0.25 s window, and each request reached the server after its grant. (The gaps between
        # arrivals alone are not the limiter's: a request held up on its way shortens the gap after it.)
        assert all(b - a >= 0.25 for a, b in zip(granted, granted[1:]))
        assert all(t >= g for g, t in zip(granted, times))
    with FakeNLM() as fake:
        fake.files["/y.bin"] = b"payload"
        fake.fault("/y.bin", "500")
        assert client(backoff=0.4, backoff_max=1.0).fetch(fake.url + "/y.bin", lambda b: b) == b"payload"
        first, second = fake.requests_to("/y.bin")
        assert second.time - first.time >= 0.39  # --backoff is the first retry's delay


def test_429_waits_at_least_retry_after():
    with FakeNLM() as fake:
        fake.files["/x.bin"] = b"payload"
        fake.fault("/x.bin", "429:1")
        assert client().fetch(fake.url + "/x.bin", lambda b: b) == b"payload"
        first, second = fake.requests_to("/x.bin")
        assert second.time - first.time >= 0.99  # the backoff alone would be 0.01 s


def test_timeout_is_retried():
    with FakeNLM() as fake:
        fake.files["/slow"] = b"late"
        fake.fault("/slow", "sleep:1.5")
        assert client(timeout=0.3).fetch(fake.url + "/slow", lambda b: b) == b"late"
        assert len(fake.requests_to("/slow")) == 2


def test_html_page_instead_of_data_is_retried_then_reported():
    with FakeNLM() as fake:
        fake.files["/data.json"] = b"{}"
        fake.fault("/data.json", "html", "html", "html")
        with pytest.raises(FetchError) as err:
            client().fetch(fake.url + "/data.json", lambda b: b)
        assert "HTML page" in str(err.value) and "/data.json" in str(err.value)
        assert err.value.transient and len(fake.requests_to("/data.json")) == 3


def test_unparsable_body_is_retried_and_named():
    def parse(body: bytes) -> bytes:
        if body.startswith(b"<pmc"):
            raise ValueError("malformed XML")
        return body

    with FakeNLM() as fake:
        fake.files["/batch"] = b"fine"
        fake.fault("/batch", "garbage")
        assert client().fetch(fake.url + "/batch", parse) == b"fine"
        fake.fault("/batch", "garbage", "garbage", "garbage")
        with pytest.raises(FetchError, match="unreadable payload .malformed XML"):
            client().fetch(fake.url + "/batch", parse)


def test_4xx_is_not_retried():
    with FakeNLM() as fake:
        with pytest.raises(FetchError) as err:
            client().fetch(fake.url + "/missing.png", lambda b: b)
        assert err.value.code == "http_404" and not err.value.transient
        assert len(fake.requests_to("/missing.png")) == 1


def test_size_cap_stops_download():
    with FakeNLM() as fake:
        fake.files["/big"] = b"x" * 5000
        with pytest.raises(FetchError) as err:
            client().fetch(fake.url + "/big", lambda b: b, max_bytes=1000)
        assert err.value.code == "too_large"
        assert len(fake.requests_to("/big")) == 1


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "/relative/path", "http://"])
def test_only_http_urls_are_fetched(url):
    with pytest.raises(FetchError, match="only absolute http"):
        client().fetch(url, lambda b: b)


def test_redirect_hops_are_checked_and_counted():
    with FakeNLM() as fake:
        fake.files["/final"] = b"ok"
        fake.fault("/start", "redirect:/final")
        http = client()
        assert http.fetch(fake.url + "/start", lambda b: b) == b"ok"
        assert http.requests_sent == 2  # the redirect hop went through the limiter too
        fake.fault("/start", "redirect:file:///etc/passwd")
        with pytest.raises(FetchError, match="only absolute http"):
            http.fetch(fake.url + "/start", lambda b: b)


def test_api_key_never_appears_in_errors():
    with FakeNLM() as fake:
        with pytest.raises(FetchError) as err:
            client().fetch(fake.url + "/nothing", lambda b: b, params={"api_key": "SECRET123", "db": "pmc"})
        assert "SECRET123" not in str(err.value) and "db=pmc" in str(err.value)
    assert "SECRET" not in redact("https://x/e.fcgi?api_key=SECRET&db=pmc")


def test_retry_after_forms():
    parse = LimitedRetry().parse_retry_after
    later = (datetime.now(timezone.utc) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse("7") == 7.0
    assert parse(later) == pytest.approx(30.0, abs=2.0)
    assert parse("soon") is None and parse(None) is None  # a garbled header means an ordinary backoff
