"""Cut compound figures into panels and captions into sub-captions; optionally write retrieval splits.

    python split_figures.py --in datasets/pubmed/captions.json --out datasets/pubmed/subfigures --ocr rapidocr \
        --splits 0.8,0.1,0.1 --seed 42

Writes ``subfigures.json`` (sub-figure records), ``failed.json`` (figures that could not be used, with
the reason), ``summary.json`` (counts), the crops under ``images/`` and, with ``--splits``,
``train.json``/``val.json``/``test.json`` grouped by article. The record types are in ``data.records``.
"""
from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from data.figures.ocr import BACKENDS, CachedOcr, OcrError, make_ocr
from data.figures.split import SplitOptions, split_figure
from data.figures.splits import karpathy_splits, parse_fractions
from data.files import JsonListError, atomic_write_json
from data.records import (BadRecord, FailedFigure, FigureRecord, PairRecord, SubFigureRecord, read_records,
                          write_records)

log = logging.getLogger("split_figures")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--in", dest="inp", required=True, help="captions.json written by scrape.py")
    p.add_argument("--out", required=True, help="output folder (subfigures.json, images/, splits)")
    p.add_argument("--ocr", choices=BACKENDS, default="rapidocr", help="panel-letter OCR back-end")
    p.add_argument("--ocr-cache", default=None, help="OCR cache folder (default: <out>/ocr_cache)")
    p.add_argument("--no-context", action="store_true", help="do not prepend the caption's shared lead")
    p.add_argument("--order-fallback", action="store_true",
                   help="when no letters are read, pair caption letters with panels in reading order "
                        "if their numbers agree")
    p.add_argument("--splits", default=None, help="train,val,test fractions, e.g. 0.8,0.1,0.1")
    p.add_argument("--seed", type=int, default=0, help="seed of the article shuffle for --splits")
    p.add_argument("--limit", type=int, default=None, help="only the first N records (smoke runs)")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def load_figures(path: Path, limit: int | None) -> tuple[list[tuple[int, FigureRecord]], list[FailedFigure]]:
    """(index, record) for every usable figure record, and a failure entry for every other one."""
    bad: list[BadRecord] = []
    try:
        records = read_records(path, FigureRecord, bad=bad, limit=limit, what="figure list")
    except JsonListError as e:
        raise SystemExit(f"split_figures.py: error: {e}") from None
    # read_records keeps file order, so the good records fill the indices the bad ones leave free.
    taken = {b.index for b in bad}
    indices = [i for i in range(len(records) + len(bad)) if i not in taken]
    failures = [FailedFigure(index=b.index, record=b.record, reason=str(b)) for b in bad]
    for failure in failures:
        log.warning("record %d: %s", failure["index"], failure["reason"])
    return list(zip(indices, records)), failures


def split_all(figures: list[tuple[int, FigureRecord]], root: Path, out: Path, ocr: CachedOcr,
              opts: SplitOptions) -> tuple[list[SubFigureRecord], list[FailedFigure], Counter, Counter]:
    """Sub-figure records of every figure, the figures that failed, outcome counts and detail counts."""
    outcomes, counts = Counter(), Counter()
    results: list[SubFigureRecord] = []
    failures: list[FailedFigure] = []
    for index, record in tqdm(figures, desc="figures", unit="fig"):
        res = split_figure(record, root, out, ocr, opts)
        outcomes[res.outcome] += 1
        counts.update(res.counts)
        results.extend(res.records)
        if res.outcome == "failed":
            log.warning("record %d: %s", index, res.reason)
            failures.append(FailedFigure(index=index, record=record, reason=res.reason))
    return results, failures, outcomes, counts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    inp, out = Path(args.inp), Path(args.out)
    try:
        fractions = parse_fractions(args.splits) if args.splits else None
    except ValueError as e:
        log.error("%s", e)
        return 2
    figures, unreadable = load_figures(inp, args.limit)
    ocr = make_ocr(args.ocr, args.ocr_cache or out / "ocr_cache")
    try:
        ocr.prepare()
    except OcrError as e:
        log.error("%s", e)
        return 2
    opts = SplitOptions(context=not args.no_context, order_fallback=args.order_fallback)
    results, failures, outcomes, counts = split_all(figures, inp.parent, out, ocr, opts)
    failures = sorted(unreadable + failures, key=lambda f: f["index"])
    outcomes["failed"] += len(unreadable)
    write_records(out / "subfigures.json", results, SubFigureRecord)
    write_records(out / "failed.json", failures, FailedFigure)
    if fractions is not None:
        for name, rows in karpathy_splits(results, fractions, args.seed).items():
            write_records(out / f"{name}.json", rows, PairRecord)
    summary = {"figures": len(figures) + len(unreadable), **{k: outcomes[k] for k in ("matched", "fallback", "failed")},
               "subfigures": len(results), **dict(sorted(counts.items()))}
    atomic_write_json(out / "summary.json", summary)
    log.info("summary: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
