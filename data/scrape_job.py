"""Assembling a scrape from plain settings: limiter, HTTP client, source and output store."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from data import licenses
from data.eutils import OA_FILTER, EutilsConfig, EutilsSource
from data.http import HttpConfig, PoliteClient
from data.openi import OpenISearch, OpenISource
from data.ratelimit import RateLimiter
from data.scrape_store import ScrapeStore
from data.scraper import ScrapeOptions, Scraper, Summary

# NCBI's published limits, which Open-i and image downloads are held to as well.
RATE_WITHOUT_KEY = 3
RATE_WITH_KEY = 10
TOOL = "medvl_scrape"
VERSION = "1.0"


@dataclass
class ScrapeConfig:
    """Everything a run needs; ``scrape.py`` fills it from the command line."""

    query: str
    out: Path
    num: int = 1000
    source: str = "openi"
    article_types: tuple[str, ...] = ()
    image_types: tuple[str, ...] = ()
    license: str = ""
    min_size: int = 160
    max_image_bytes: int = 30_000_000
    openi_url: str = "https://openi.nlm.nih.gov"
    eutils_url: str = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils"
    pmc_url: str = "https://pmc.ncbi.nlm.nih.gov"
    api_key: str = ""
    email: str = ""
    tool: str = TOOL
    oa_filter: bool = True
    page_size: int = 100
    batch_size: int = 20
    max_rps: float | None = None
    http: dict = field(default_factory=dict)  # HttpConfig overrides: timeout, retries, backoff_base...
    progress: bool = True

    def validate(self) -> None:
        """Raise ValueError with a readable message for settings that cannot work."""
        if not self.query.strip():
            raise ValueError("--query is empty")
        if self.num < 1:
            raise ValueError(f"--num must be at least 1, got {self.num}")
        if self.source not in ("openi", "pmc"):
            raise ValueError(f"--source must be 'openi' or 'pmc', got {self.source!r}")
        if self.source == "pmc" and "@" not in self.email:
            raise ValueError("--source pmc needs --email (or NCBI_EMAIL): NCBI asks every E-utilities call to name a contact")
        if self.max_rps is not None and not 0 < self.max_rps <= allowed_rate(self.api_key):
            raise ValueError(f"--max-rps must be in (0, {allowed_rate(self.api_key)}] "
                             f"({'with' if self.api_key else 'without'} an API key)")
        if self.min_size < 0 or self.max_image_bytes < 1:
            raise ValueError("--min-size must be >= 0 and --max-image-mb > 0")

    def identity(self) -> dict:
        """The settings that decide which pairs a folder holds; a resumed run must match them."""
        accepted = licenses.parse_filter(self.license)
        return {"source": self.source, "query": self.query, "article_types": list(self.article_types),
                "image_types": list(self.image_types), "oa_filter": self.oa_filter,
                "licenses": sorted(accepted) if accepted else None, "min_size": self.min_size}


def allowed_rate(api_key: str) -> int:
    """Requests per second NCBI allows: 10 with an API key, 3 without."""
    return RATE_WITH_KEY if api_key else RATE_WITHOUT_KEY


def user_agent(config: ScrapeConfig) -> str:
    """A real User-Agent naming the tool and, when given, a contact address."""
    contact = f"; mailto:{config.email}" if config.email else ""
    return f"{config.tool}/{VERSION} (MedVL PubMed Central figure collector{contact})"


def build_limiter(config: ScrapeConfig, period: float = 1.0) -> RateLimiter:
    """One limiter for every NLM/NCBI request of the run. A fractional ``--max-rps`` spreads the
    window: 0.5 means one request per two seconds."""
    rate = config.max_rps or allowed_rate(config.api_key)
    if rate >= 1:
        return RateLimiter(int(rate), period)
    return RateLimiter(1, period / rate)


def run_scrape(config: ScrapeConfig, limiter: RateLimiter | None = None) -> Summary:
    """Validate ``config``, open the output folder and run the scrape to its end."""
    config.validate()
    accepted = licenses.parse_filter(config.license)
    client = PoliteClient(limiter or build_limiter(config), HttpConfig(user_agent=user_agent(config), **config.http))
    store = ScrapeStore(config.out, config.identity())
    options = ScrapeOptions(num=config.num, min_size=config.min_size, licenses=accepted,
                            max_image_bytes=config.max_image_bytes, progress=config.progress)
    return Scraper(build_source(config, client), client, store, options).run()


def build_source(config: ScrapeConfig, client: PoliteClient) -> OpenISource | EutilsSource:
    """The Open-i or E-utilities source the config asks for."""
    if config.source == "openi":
        search = OpenISearch(config.openi_url, config.query, config.article_types, config.image_types, config.page_size)
        return OpenISource(client, search)
    eutils = EutilsConfig(config.eutils_url, config.pmc_url, config.tool, config.email, config.api_key, config.batch_size)
    term = f"({config.query}) AND {OA_FILTER}" if config.oa_filter else config.query
    return EutilsSource(client, eutils, term)


def describe(config: ScrapeConfig) -> dict:
    """The config as a dict without the API key, for logs."""
    shown = asdict(config)
    shown["api_key"] = "***" if config.api_key else ""
    shown["out"] = str(config.out)
    return shown
