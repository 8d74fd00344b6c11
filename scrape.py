"""Collect figure/caption pairs from PubMed Central by keyword (Open-i or E-utilities).

    python scrape.py --query "brain MRI" --num 1000 --out data/pubmed
    python scrape.py --source pmc --query "brain MRI" --num 1000 --email you@example.org

Writes ``<out>/images/``, ``<out>/captions.json`` and ``<out>/manifest.jsonl``; rerunning the same
command resumes an interrupted run. See ``data/scrape_job.py`` for the pieces.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from data.scrape_job import ScrapeConfig, describe, run_scrape

log = logging.getLogger("scrape")


def _codes(text: str) -> tuple[str, ...]:
    return tuple(c.strip().lower() for c in text.split(",") if c.strip())


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(description="Collect figure/caption pairs from PubMed Central by keyword.")
    p.add_argument("--query", required=True, help="search words, e.g. 'brain MRI'")
    p.add_argument("--num", type=int, default=1000, help="number of pairs to keep (default 1000)")
    p.add_argument("--out", default="data/pubmed", help="output folder (default data/pubmed)")
    p.add_argument("--source", choices=("openi", "pmc"), default="openi",
                   help="openi: NLM Open-i figure search (as the original); pmc: E-utilities + JATS")
    p.add_argument("--article-type", type=_codes, default=(), metavar="CODES",
                   help="Open-i article types, comma list (cr = case reports, as the original)")
    p.add_argument("--image-type", type=_codes, default=(), metavar="CODES",
                   help="Open-i image types, comma list (e.g. m = MRI, c = CT, xg = no graphics)")
    p.add_argument("--license", default="", metavar="NAMES",
                   help="keep only these licences, comma list: 'CC BY', 'CC0', 'CC BY-NC', ... "
                        "or 'commercial' (CC0, CC BY, CC BY-SA, CC BY-ND, public domain)")
    p.add_argument("--min-size", type=int, default=160,
                   help="drop images whose shorter side is below this many pixels (default 160)")
    p.add_argument("--max-image-mb", type=float, default=30.0, help="download cap per image (default 30)")
    p.add_argument("--api-key", default=os.environ.get("NCBI_API_KEY", ""),
                   help="NCBI API key (default: $NCBI_API_KEY); raises the limit from 3 to 10 requests/s")
    p.add_argument("--email", default=os.environ.get("NCBI_EMAIL", ""),
                   help="contact address sent to NCBI (default: $NCBI_EMAIL); required for --source pmc")
    p.add_argument("--tool", default="medvl_scrape", help="tool name sent to NCBI")
    p.add_argument("--max-rps", type=float, default=None, help="go slower than NCBI's limit (requests/s)")
    p.add_argument("--no-oa-filter", dest="oa_filter", action="store_false",
                   help="pmc: do not restrict the search to the open-access subset")
    p.add_argument("--page-size", type=int, default=100, help="Open-i hits per request (1-100)")
    p.add_argument("--batch-size", type=int, default=20, help="articles per efetch request")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--retries", type=int, default=4, help="retries on 429/5xx/timeouts (default 4)")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay in seconds, doubled each time")
    p.add_argument("--openi-url", default="https://openi.nlm.nih.gov", help="Open-i base URL")
    p.add_argument("--eutils-url", default="https://eutils.ncbi.nlm.nih.gov/entrez/eutils", help="E-utilities base URL")
    p.add_argument("--pmc-url", default="https://pmc.ncbi.nlm.nih.gov", help="host serving PMC articles and figures")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(args: argparse.Namespace) -> ScrapeConfig:
    """Map parsed arguments onto a :class:`ScrapeConfig`."""
    return ScrapeConfig(
        query=args.query, out=Path(args.out), num=args.num, source=args.source,
        article_types=args.article_type, image_types=args.image_type, license=args.license,
        min_size=args.min_size, max_image_bytes=int(args.max_image_mb * 1_000_000),
        openi_url=args.openi_url, eutils_url=args.eutils_url, pmc_url=args.pmc_url,
        api_key=args.api_key, email=args.email, tool=args.tool, oa_filter=args.oa_filter,
        page_size=args.page_size, batch_size=args.batch_size, max_rps=args.max_rps,
        http={"timeout": args.timeout, "retries": args.retries, "backoff_base": args.backoff},
        progress=args.progress,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the scraper; 0 on success, 1 when the search stopped on an error, 2 on bad settings."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    log.debug("settings: %s", describe(config))
    try:
        summary = run_scrape(config)
    except ValueError as err:
        log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        # Everything finished so far is in the manifest; the same command picks up from there.
        log.warning("interrupted; run the same command again to resume")
        return 130
    for line in summary.lines():
        print(line)
    if summary.kept_total < config.num and not summary.error:
        print(f"the search ran out of results before {config.num} pairs")
    print(f"captions: {config.out / 'captions.json'}")
    return 1 if summary.error else 0


if __name__ == "__main__":
    raise SystemExit(main())
