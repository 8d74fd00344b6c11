"""Collect figure/caption pairs from PubMed Central by keyword (Open-i, E-utilities or the PMC Cloud).

    python scrape.py --query "brain MRI" --num 1000 --out datasets/pubmed
    python scrape.py --source pmc --query "brain MRI" --num 1000 --email you@example.org
    python scrape.py --source pmc-cloud --query "brain MRI" --num 1000 --email you@example.org
    python scrape.py --source pmc-cloud --pmcid-file pmcids.txt --num 100000 --out datasets/pmc

Writes ``<out>/images/``, ``<out>/captions.json`` and ``<out>/manifest.jsonl``; rerunning the same
command resumes an interrupted run. Every option is a field of ``data.scrape.config.ScrapeConfig``;
``data.scrape.job`` assembles the run.
"""
from __future__ import annotations

import argparse
import logging

from data.scrape.config import add_arguments, describe, from_args
from models.optional import MissingDependency, require

log = logging.getLogger("scrape")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface: the config's fields, and ``-v``."""
    p = argparse.ArgumentParser(description="Collect figure/caption pairs from PubMed Central by keyword or PMCID list.")
    add_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the scraper; 0 on success, 1 when the search stopped on an error, 2 on bad settings."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = from_args(args)
    log.debug("settings: %s", describe(config))
    try:
        require("scrape", "scrape.py")
    except MissingDependency as err:
        log.error("%s", err)
        return 2
    from data.scrape.job import run_scrape  # needs the scrape extra

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
