"""Assembling a scrape from its config: the limiter, the HTTP client, the source and the output store."""
from __future__ import annotations

from data.scrape.cloud import CloudSource
from data.scrape.config import ScrapeConfig, allowed_rate
from data.scrape.eutils import EutilsSource
from data.scrape.http import PoliteClient
from data.scrape.openi import OpenISource
from data.scrape.ratelimit import RateLimiter
from data.scrape.scraper import Scraper, Summary
from data.scrape.store import ScrapeStore


def build_limiter(config: ScrapeConfig, period: float = 1.0) -> RateLimiter:
    """One limiter for every NLM/NCBI request of the run. A fractional ``--max-rps`` spreads the
    window: 0.5 means one request per two seconds."""
    rate = config.max_rps or allowed_rate(config.api_key)
    if rate >= 1:
        return RateLimiter(int(rate), period)
    return RateLimiter(1, period / rate)


def build_source(config: ScrapeConfig, client: PoliteClient) -> OpenISource | EutilsSource | CloudSource:
    """The Open-i, E-utilities or PMC Cloud source the config asks for."""
    if config.source == "pmc-cloud":
        return CloudSource(client, config)
    return OpenISource(client, config) if config.source == "openi" else EutilsSource(client, config)


def run_scrape(config: ScrapeConfig, limiter: RateLimiter | None = None) -> Summary:
    """Validate ``config``, open the output folder and run the scrape to its end."""
    config.validate()
    client = PoliteClient(limiter or build_limiter(config), config)
    store = ScrapeStore(config.out, config.identity())
    summary = Scraper(build_source(config, client), client, store, config).run()
    if config.shards and not summary.error:  # tar shards of the finished collection
        from data.shards import write_shards

        info = write_shards([config.out / "captions.json"], config.out / "shards", prefix="captions",
                            shard_size=config.shard_size, replace=True)
        summary.shards = info["pattern"]
    return summary
