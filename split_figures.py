"""Cut compound figures into panels and captions into sub-captions; optionally write retrieval splits.

    python split_figures.py --in datasets/pubmed/captions.json --out datasets/pubmed/subfigures --ocr rapidocr \
        --splits 0.8,0.1,0.1 --seed 42

Writes ``subfigures.json`` (sub-figure records), ``failed.json`` (figures that could not be used, with
the reason), ``summary.json`` (counts), the crops under ``images/`` and, with ``--splits``,
``train.json``/``val.json``/``test.json`` grouped by article. The record types are in ``data.records``.

Scale-out (``data.figures.job``): ``--workers N`` splits in N processes with the same results as one;
``--shard I/N`` splits only the I-th of N shards of the input (cluster array jobs), and

    python split_figures.py merge OUT_0 OUT_1 ... --out MERGED [--splits 0.8,0.1,0.1 --seed 42]

joins the shard folders as if one process had split the whole input. A killed run resumes when it is
run again with the same arguments (``split_manifest.jsonl``); other arguments on the folder are refused.

    python split_figures.py report OUT [--per-page 100]

writes ``OUT/report/index.html``: every figure with its panels drawn, their sub-captions and flags to
look at (``data.figures.report``).
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from data.figures.job import SplitJob, parse_shard, run_job
from data.figures.merge import merge_folders
from data.figures.ocr import BACKENDS, OcrError, make_ocr
from data.figures.report import write_report
from data.figures.split import SplitOptions
from data.figures.splits import parse_fractions
from data.errors import exit_code, one_line
from data.files import FolderLockedError, JsonListError
from data.image_limits import DEFAULT_MAX_PIXELS
from data.images import parse_pixel_limit
from data.records import BadRecord, FailedFigure, FigureRecord, read_records

log = logging.getLogger("split_figures")


def _non_negative(text: str) -> int:
    """argparse type of ``--limit``: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


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
    # --limit must not be negative (a slice [:-5] would process all but 5); pixel limit
    p.add_argument("--limit", type=_non_negative, default=None, help="only the first N records (smoke runs)")
    p.add_argument("--max-image-pixels", "--max_image_pixels", dest="max_image_pixels", type=parse_pixel_limit,
                   default=DEFAULT_MAX_PIXELS, metavar="N", help="figures with more pixels fail, named in "
                   "failed.json (decompression bombs; default %(default)s)")
    # scale-out: data/figures/job.py
    p.add_argument("--workers", type=int, default=1, help="processes splitting figures (default 1); the "
                   "output is the same for any number")
    p.add_argument("--shard", default=None, metavar="I/N", help="split only shard I of N of the input "
                   "(records whose index is I mod N); join the N folders with `split_figures.py merge`")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_shard_options(p)
    # -- end scale-out --------------------------------------------------------------------------------
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def add_shard_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--webdataset", "--shards", dest="shards", action="store_true",
                   help="also write WebDataset tar shards of subfigures.json (and train.json) under <out>/shards/ "
                        "(data.shards); not to be confused with --shard I/N, which splits the work")
    p.add_argument("--shard-size", type=int, default=10_000, help="samples per tar shard (default 10000)")


def parse_merge_args(argv: list[str]) -> argparse.Namespace:
    """``split_figures.py merge OUT ... --out MERGED [--splits F --seed S]``."""
    p = argparse.ArgumentParser(prog="split_figures.py merge",
                                description="Join the output folders of --shard 0/N ... N-1/N into one.")
    p.add_argument("folders", nargs="+", help="the output folders of every shard")
    p.add_argument("--out", required=True, help="merged output folder")
    p.add_argument("--splits", default=None, help="train,val,test fractions, e.g. 0.8,0.1,0.1")
    p.add_argument("--seed", type=int, default=0, help="seed of the article shuffle for --splits")
    add_shard_options(p)
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


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _run(job: SplitJob, figures, unreadable, ocr) -> dict:
    """``run_job`` with SIGTERM (what schedulers send before a kill) ending it like Ctrl-C: the lock is
    released, the workers are stopped, and what is done stays in the manifest."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run_job(job, figures, unreadable, ocr)
    finally:
        signal.signal(signal.SIGTERM, previous)


def job_from_args(args: argparse.Namespace) -> SplitJob:
    """The run the options describe; ValueError names a bad option."""
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    shard = parse_shard(args.shard) if args.shard else None
    fractions = parse_fractions(args.splits) if args.splits else None
    if shard and (fractions or args.shards):
        raise ValueError("--splits or --webdataset with --shard: the splits and tar shards are written once over "
                         "the whole input, by `split_figures.py merge ... --splits ... --webdataset`")
    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {args.shard_size}")
    opts = SplitOptions(context=not args.no_context, order_fallback=args.order_fallback,
                        max_pixels=args.max_image_pixels)
    return SplitJob(inp=Path(args.inp), out=Path(args.out), ocr=args.ocr,
                    ocr_cache=Path(args.ocr_cache) if args.ocr_cache else None, opts=opts, fractions=fractions,
                    seed=args.seed, limit=args.limit, workers=args.workers, shard=shard,
                    progress=not args.no_progress, shards=args.shards, shard_size=args.shard_size)


def _refused(err: Exception) -> int:
    """Log a refusal or a failed write in one line and return its exit code (data/errors.py); any other
    OSError is re-raised with its traceback."""
    code = exit_code(err) or (2 if not isinstance(err, OSError) else None)
    if code is None:
        raise err
    log.error("%s", one_line(err))
    return code


def merge_main(argv: list[str]) -> int:
    args = parse_merge_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        fractions = parse_fractions(args.splits) if args.splits else None
        if args.shard_size < 1:
            raise ValueError(f"--shard-size must be at least 1, got {args.shard_size}")
        summary = merge_folders([Path(f) for f in args.folders], Path(args.out), fractions, args.seed,
                                args.shard_size if args.shards else None)
    except (ValueError, FolderLockedError, OSError) as e:
        return _refused(e)
    log.info("summary: %s", json.dumps(summary))
    return 0


def report_main(argv: list[str]) -> int:
    """``split_figures.py report OUT [--per-page N]``."""
    p = argparse.ArgumentParser(prog="split_figures.py report",
                                description="Write OUT/report/: the figures with their panels, sub-captions and flags.")
    p.add_argument("out", help="an output folder of split_figures.py (or of split_figures.py merge)")
    p.add_argument("--per-page", type=int, default=100, help="figures per page (default 100)")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    try:
        index = write_report(Path(args.out), args.per_page)
    except ValueError as e:
        log.error("%s", e)
        return 2
    log.info("report: %s", index)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        job = job_from_args(args)
    except ValueError as e:
        log.error("%s", e)
        return 2
    figures, unreadable = load_figures(job.inp, args.limit)
    ocr = make_ocr(args.ocr, job.cache_dir)
    try:
        ocr.prepare()
    except OcrError as e:
        log.error("%s", e)
        return 2
    try:
        summary = _run(job, figures, unreadable, ocr)
    except (OcrError, ValueError, FolderLockedError, OSError) as e:  # ManifestError, DatasetError are ValueErrors
        return _refused(e)
    except KeyboardInterrupt:
        log.warning("interrupted; run the same command again to resume")
        return 130
    log.info("summary: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
