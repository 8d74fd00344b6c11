"""Every setting of a scrape, written once: :class:`ScrapeConfig`, whose fields make the command line.

Each field carries its default and, in ``metadata``, its ``help`` and how the command line spells it
(``flag``; ``parse`` for the argument type; ``env`` for a default read from the environment;
``cli=False`` for settings that only the Python API changes). :func:`add_arguments` builds argparse
options from the fields and :func:`from_args` turns the parsed options back into a config, so a new
setting is one new field. The HTTP client, the sources and the scraper all read this one object.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from data.scrape import licenses

# NCBI's published limits, which Open-i and image downloads are held to as well.
RATE_WITHOUT_KEY = 3
RATE_WITH_KEY = 10
TOOL = "medvl_scrape"
VERSION = "1.0"
DEFAULT_OUT = Path("datasets/pubmed")
SOURCES = ("openi", "pmc", "pmc-cloud")
# Open-i's codes of article and image types (``it=``, ``at=`` of its search API).
ARTICLE_TYPES = {"ab", "bf", "bk", "cr", "dp", "di", "ed", "ib", "in", "lt", "mr", "ma", "ne", "ob",
                 "or", "os", "hs", "pr", "ra", "re", "rr", "rw", "sr", "ot"}
IMAGE_TYPES = {"x", "c", "m", "p", "u", "mc", "ph", "g", "xg", "xm"}
# The PMC Cloud Service: the Open Access subset in a public S3 bucket, read over plain HTTPS.
BUCKET = "pmc-oa-opendata"
CLOUD_URL = f"https://{BUCKET}.s3.amazonaws.com"


def _codes(text: str) -> tuple[str, ...]:
    """``"cr, M"`` -> ``("cr", "m")``: Open-i's comma lists of type codes."""
    return tuple(c.strip().lower() for c in text.split(",") if c.strip())


def _option(default: Any, help_text: str, **cli: Any) -> Any:
    """A config field with its command-line description (see the module docstring)."""
    return field(default=default, metadata={"help": help_text, **cli})


@dataclass
class ScrapeConfig:
    """Everything a run needs; ``scrape.py`` fills it from the command line, tests and scripts directly."""

    query: str = _option("", "search words, e.g. 'brain MRI' (not needed with --source pmc-cloud --pmcid-file)")
    num: int = _option(1000, "number of pairs to keep (default %(default)s)")
    out: Path = _option(DEFAULT_OUT, "output folder (default %(default)s)", parse=Path)
    source: str = _option("openi", "openi: NLM Open-i figure search (as the original); pmc: E-utilities + JATS; "
                                   "pmc-cloud: PMC Cloud Service bucket (JATS + figure files), PMCIDs from "
                                   "E-utilities or --pmcid-file", choices=SOURCES)
    article_types: tuple[str, ...] = _option((), "Open-i article types, comma list (cr = case reports, as the "
                                                 "original)", flag="--article-type", parse=_codes, metavar="CODES")
    image_types: tuple[str, ...] = _option((), "Open-i image types, comma list (e.g. m = MRI, c = CT, xg = no "
                                               "graphics)", flag="--image-type", parse=_codes, metavar="CODES")
    license: str = _option("", "keep only these licences, comma list: 'CC BY', 'CC0', 'CC BY-NC', ... or "
                               "'commercial' (CC0, CC BY, CC BY-SA, CC BY-ND, public domain)", metavar="NAMES")
    min_size: int = _option(160, "drop images whose shorter side is below this many pixels (default %(default)s)")
    max_image_mb: float = _option(30.0, "download cap per image in MB (default %(default)s)")
    api_key: str = _option("", "NCBI API key (default: $NCBI_API_KEY); raises the limit from 3 to 10 requests/s",
                           env="NCBI_API_KEY")
    email: str = _option("", "contact address sent to NCBI (default: $NCBI_EMAIL); required for --source pmc",
                         env="NCBI_EMAIL")
    tool: str = _option(TOOL, "tool name sent to NCBI")
    max_rps: float | None = _option(None, "go slower than NCBI's limit (requests/s)", parse=float)
    oa_filter: bool = _option(True, "pmc: do not restrict the search to the open-access subset",
                              flag="--no-oa-filter")
    page_size: int = _option(100, "Open-i hits per request (1-100)")
    batch_size: int = _option(20, "articles per efetch request")
    timeout: float = _option(60.0, "seconds per request (default %(default)s)")  # Open-i takes ~30 s per 100 hits
    # --timeout bounds each socket read only; a server trickling bytes needs a total limit
    deadline: float = _option(300.0, "seconds one try of a request may take in all, headers and body (a server "
                                     "that trickles bytes is cut off and the try retried; default %(default)s)")
    retries: int = _option(4, "retries on 429/5xx/timeouts (default %(default)s)")
    backoff: float = _option(2.0, "first retry delay in seconds, doubled each time")
    openi_url: str = _option("https://openi.nlm.nih.gov", "Open-i base URL")
    eutils_url: str = _option("https://eutils.ncbi.nlm.nih.gov/entrez/eutils", "E-utilities base URL")
    pmc_url: str = _option("https://pmc.ncbi.nlm.nih.gov", "host serving PMC articles and figures")
    # the PMC Cloud Service (data/scrape/cloud.py)
    cloud_url: str = _option(CLOUD_URL, "pmc-cloud: HTTPS address of the pmc-oa-opendata bucket")
    pmcid_file: str = _option("", "pmc-cloud: take PMCIDs from this file (one a line, or a CSV with a pmcid "
                                  "column) instead of an E-utilities search", metavar="FILE")
    shards: bool = _option(False, "also write WebDataset tar shards of captions.json under <out>/shards/",
                           flag="--webdataset", aliases=("--shards",))
    shard_size: int = _option(10_000, "samples per tar shard with --webdataset (default %(default)s)")
    progress: bool = _option(True, "hide the progress bar", flag="--no-progress")
    backoff_max: float = _option(60.0, "longest delay between two tries, in seconds", cli=False)
    max_retry_after: float = _option(600.0, "longest wait a server may ask for with Retry-After, in seconds; a "
                                            "request asked to wait longer fails at once (default %(default)s)")
    max_redirects: int = _option(5, "redirect hops followed per request", cli=False)
    max_pixels: int = _option(100_000_000, "images with more pixels are refused (decompression bombs)", cli=False)

    def validate(self) -> None:
        """Raise ValueError with a readable message for settings that cannot work."""
        if not self.query.strip() and not (self.source == "pmc-cloud" and self.pmcid_file):
            raise ValueError("--query is empty (give --query, or --source pmc-cloud with --pmcid-file)")
        if self.num < 1:
            raise ValueError(f"--num must be at least 1, got {self.num}")
        if self.source not in SOURCES:
            raise ValueError(f"--source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        searches_eutils = self.source == "pmc" or (self.source == "pmc-cloud" and not self.pmcid_file)
        if searches_eutils and "@" not in self.email:
            raise ValueError(f"--source {self.source} needs --email (or NCBI_EMAIL): NCBI asks every E-utilities "
                             f"call to name a contact")
        if self.max_rps is not None and not 0 < self.max_rps <= allowed_rate(self.api_key):
            raise ValueError(f"--max-rps must be in (0, {allowed_rate(self.api_key)}] "
                             f"({'with' if self.api_key else 'without'} an API key)")
        if self.min_size < 0 or self.max_image_mb <= 0:
            raise ValueError("--min-size must be >= 0 and --max-image-mb > 0")
        bad = [c for c in self.article_types if c not in ARTICLE_TYPES]
        bad += [c for c in self.image_types if c not in IMAGE_TYPES]
        if bad:  # Open-i answers unknown codes with an error page, so they are refused before any request
            raise ValueError(f"unknown Open-i article/image type code(s): {', '.join(bad)}")
        if not 1 <= self.page_size <= 100:
            raise ValueError(f"Open-i page size must be 1..100, got {self.page_size}")
        self._validate_network()
        if self.shard_size < 1:
            raise ValueError(f"--shard-size must be at least 1, got {self.shard_size}")
        self.accepted_licenses()  # an unknown licence name raises here, before the folder is opened

    def _validate_network(self) -> None:
        """The HTTP settings, checked here so that the message names the option (``--retries -1``
        ended in an AssertionError inside urllib3, ``--timeout 0`` and ``--backoff -5`` in library messages)."""
        for option, value, zero_ok in (("--timeout", self.timeout, False), ("--deadline", self.deadline, False),
                                       ("--backoff", self.backoff, True), ("backoff_max", self.backoff_max, True),
                                       ("--max-retry-after", self.max_retry_after, True)):
            if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
                raise ValueError(f"{option} must be a number of seconds {'>= 0' if zero_ok else '> 0'}, got {value}")
        for option, value, low in (("--retries", self.retries, 0), ("max_redirects", self.max_redirects, 0),
                                   ("--batch-size", self.batch_size, 1), ("max_pixels", self.max_pixels, 1)):
            if value < low:
                raise ValueError(f"{option} must be at least {low}, got {value}")

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_mb * 1_000_000)

    @property
    def user_agent(self) -> str:
        """A real User-Agent naming the tool and, when given, a contact address."""
        contact = f"; mailto:{self.email}" if self.email else ""
        return f"{self.tool}/{VERSION} (MedVL PubMed Central figure collector{contact})"

    def accepted_licenses(self) -> frozenset[str] | None:
        """The licences ``--license`` keeps; None keeps every figure."""
        return licenses.parse_filter(self.license)

    def ncbi_params(self) -> dict[str, str]:
        """What NCBI asks every E-utilities call to carry: ``tool``, ``email`` and the key if any."""
        params = {"tool": self.tool, "email": self.email}
        if self.api_key:
            params["api_key"] = self.api_key
        return params

    def identity(self) -> dict:
        """The settings that decide which pairs a folder holds; a resumed run must match them."""
        accepted = self.accepted_licenses()
        identity = {"source": self.source, "query": self.query, "article_types": list(self.article_types),
                    "image_types": list(self.image_types), "oa_filter": self.oa_filter,
                    "licenses": sorted(accepted) if accepted else None, "min_size": self.min_size}
        if self.source == "pmc-cloud":  # which articles a PMCID list names
            from data.scrape.pmcid_list import pmcid_list_digest

            identity["pmcid_list"] = pmcid_list_digest(self.pmcid_file) if self.pmcid_file else None
        return identity


def allowed_rate(api_key: str) -> int:
    """Requests per second NCBI allows: 10 with an API key, 3 without."""
    return RATE_WITH_KEY if api_key else RATE_WITHOUT_KEY


def describe(config: ScrapeConfig) -> dict:
    """The config as a dict without the API key, for logs."""
    shown = asdict(config)
    shown["api_key"] = "***" if config.api_key else ""
    shown["out"] = str(config.out)
    return shown


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """One option per command-line field of :class:`ScrapeConfig`, in field order."""
    for f in _cli_fields():
        meta = f.metadata
        flags = [meta.get("flag", "--" + f.name.replace("_", "-")), *meta.get("aliases", ())]
        if isinstance(f.default, bool):  # a switch: its flag turns the default around
            parser.add_argument(*flags, dest=f.name, action="store_false" if f.default else "store_true",
                                help=meta["help"])
            continue
        default = os.environ.get(meta["env"], f.default) if "env" in meta else f.default
        options = {k: meta[k] for k in ("choices", "metavar", "required") if k in meta}
        parser.add_argument(*flags, dest=f.name, type=meta.get("parse", type(f.default)),
                            default=None if options.get("required") else default, help=meta["help"], **options)
    return parser


def from_args(args: argparse.Namespace) -> ScrapeConfig:
    """The config that parsed command-line options describe."""
    return ScrapeConfig(**{f.name: getattr(args, f.name) for f in _cli_fields()})


def _cli_fields() -> list[Field]:
    return [f for f in fields(ScrapeConfig) if f.metadata.get("cli", True) and f.default is not MISSING]
