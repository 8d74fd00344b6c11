"""The request rate of whole runs, measured where NCBI would measure it: at the server."""
from __future__ import annotations

import scrape
from data.scrape.ratelimit import RateLimiter
from tests.pubmed_server import FakeNLM, max_in_window, populate

# Arrival times are taken in server threads; allow for a little scheduling jitter on a busy machine.
JITTER = 0.03


def run_cli(fake: FakeNLM, out, *extra: str) -> list[float]:
    args = ["--query", "brain MRI", "--num", "3", "--out", str(out), "--openi-url", fake.url, "--page-size", "3",
            "--no-progress", *extra]
    assert scrape.main(args) == 0
    return [s.time for s in fake.seen]


def test_at_most_three_requests_per_second_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    with FakeNLM() as fake:
        populate(fake)
        times = run_cli(fake, tmp_path / "out")
    # Searches and image downloads count alike: 3 search pages plus 5 images.
    assert len(times) == 8
    assert max_in_window(times, 1.0 - JITTER) <= 3
    assert times[-1] - times[0] >= 2.0 - JITTER  # 8 requests at 3/s need two full windows


def _limiter_waits(monkeypatch) -> list[float]:
    """The waits every rate limiter made from here on (a request held back), recorded as they happen."""
    waits: list[float] = []
    made = RateLimiter.__init__

    def init(self, *args, **kwargs):
        made(self, *args, **kwargs)
        sleep = self._sleep
        self._sleep = lambda seconds: (waits.append(seconds), sleep(seconds))

    monkeypatch.setattr(RateLimiter, "__init__", init)
    return waits


def test_at_most_ten_requests_per_second_with_a_key(tmp_path, monkeypatch):
    monkeypatch.setenv("NCBI_API_KEY", "from-the-environment")
    waits = _limiter_waits(monkeypatch)
    with FakeNLM() as fake:
        populate(fake)
        times = run_cli(fake, tmp_path / "out")
    assert len(times) == 8
    assert max_in_window(times, 1.0 - JITTER) <= 10
    assert waits == []  # the key lifted the limit: all 8 fit in one window, none was held back


def test_without_a_key_the_limiter_holds_requests_back(tmp_path, monkeypatch):
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    waits = _limiter_waits(monkeypatch)
    with FakeNLM() as fake:
        populate(fake)
        run_cli(fake, tmp_path / "out")
    assert waits and all(0 < w <= 1.0 for w in waits)  # 8 requests at 3/s cannot all go at once


def test_max_rps_slows_down(tmp_path):
    with FakeNLM() as fake:
        populate(fake)
        times = run_cli(fake, tmp_path / "out", "--api-key", "K", "--max-rps", "5")
    assert max_in_window(times, 1.0 - JITTER) <= 5 and times[-1] - times[0] >= 1.0 - JITTER
    with FakeNLM() as fake:
        assert scrape.main(["--query", "x", "--out", str(tmp_path / "o2"), "--max-rps", "5",
                            "--openi-url", fake.url]) == 2  # above the keyless limit
