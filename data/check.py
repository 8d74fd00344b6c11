"""Check datasets before a long run: list every bad record with its file and index.

    python -m data.check datasets/pubmed/captions.json more.json [--image_root DIR] [--max-image-pixels N]
    python -m data.check "datasets/pmc/shards/shards-{000000..000123}.tar"

WebDataset shards (any ``train_file`` shard pattern) are read sample by sample: a sample is bad when it
has no image, an empty caption or one that is not UTF-8, or an image that cannot be decoded; a shard
that is not whole (truncated, empty, not a tar) is named with what it still holds, and a ``sizes.json``
entry that its tar contradicts is named with both counts.

A record is bad when it is not an object with an ``image`` path, its image is missing, cannot be decoded
(truncated, not an image) or has more pixels than ``--max-image-pixels`` (a decompression bomb), or its
caption is empty after cleaning. Counts are of records: 100 records that share one broken image are 100
bad records. Exit status 1 when any is bad, 2 when an input cannot be read at all (see
:mod:`data.errors`).

The same module holds the pre-flight check that training runs before its first step
(:func:`check_images`): the header of every distinct image, read in parallel threads (``Image.open`` and
``verify()``, no decoding), so that broken files are found in minutes instead of after an epoch.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tqdm import tqdm

from data.datasets import DatasetError, load_pairs
from data.errors import BAD_INPUT
from data.image_limits import DEFAULT_MAX_PIXELS, BadImageError
from data.images import check_header, load_rgb, parse_pixel_limit

log = logging.getLogger("medvl")

# Threads reading headers: the work is file-system latency (network file systems above all), not CPU.
DEFAULT_WORKERS = 16
_BLOCK = 4096  # images submitted to the pool at a time, so that a million-image list holds no million futures


def _where_image(record) -> tuple[str, str]:
    """(``"file.json[i]"``, image path) of a :class:`data.datasets.Pair` or of a ``(where, image)`` tuple."""
    if isinstance(record, tuple):
        return record[0], str(record[1])
    return record.where, str(record.image)


def check_image_files(images: Iterable[str | Path], workers: int = DEFAULT_WORKERS,
                      max_pixels: int = DEFAULT_MAX_PIXELS, shard: tuple[int, int] = (0, 1),
                      full_decode: bool = False, desc: str = "checking image headers") -> dict[str, str]:
    """``{image: reason}`` for every distinct image of ``images`` that cannot be used.

    Only every ``shard[1]``-th distinct image from the ``shard[0]``-th is checked, so that the ranks of a
    distributed run can split the work and gather the results. ``full_decode`` decodes every pixel
    (``python -m data.check``) instead of reading the header only.
    """
    rank, world = shard
    distinct = list(dict.fromkeys(str(i) for i in images))[rank::world]
    check: Callable = load_rgb if full_decode else check_header

    def one(image: str) -> tuple[str, str | None]:
        try:
            check(image, max_pixels)
        except BadImageError as e:
            return image, str(e)
        except Exception as e:  # noqa: BLE001  (a bug in a PIL plugin must not hide the other files)
            return image, f"image file {image} cannot be checked: {type(e).__name__}: {e}"
        return image, None

    bad: dict[str, str] = {}
    t0 = time.monotonic()
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(distinct), desc=desc, unit="img", disable=not sys.stderr.isatty()) as bar:
        for start in range(0, len(distinct), _BLOCK):
            for image, reason in pool.map(one, distinct[start:start + _BLOCK]):
                if reason:
                    bad[image] = reason
                bar.update(1)
    log.info(f"{desc}: {len(distinct)} images in {time.monotonic() - t0:.1f} s, {len(bad)} unusable")
    return bad


def record_problems(records: Sequence, bad_images: dict[str, str]) -> list[str]:
    """One ``"file.json[i]: reason"`` per record (not per image, not per caption) whose image is bad."""
    seen: set[str] = set()
    problems = []
    for record in records:
        where, image = _where_image(record)
        if image in bad_images and where not in seen:
            seen.add(where)
            problems.append(f"{where}: {bad_images[image]}")
    return problems


def check_images(records: Sequence, workers: int = DEFAULT_WORKERS, max_pixels: int = DEFAULT_MAX_PIXELS,
                 desc: str = "checking image headers") -> list[str]:
    """The pre-flight check of one process: a problem line per record whose image header is unusable.

    ``records`` are :class:`data.datasets.Pair` objects or ``(where, image)`` tuples. Cheap: the header of
    each distinct image is read once, in ``workers`` threads, with a progress bar on a terminal.
    """
    images = [_where_image(r)[1] for r in records]
    return record_problems(records, check_image_files(images, workers, max_pixels, desc=desc))


def check_eval_images(dataset, what: str, workers: int = DEFAULT_WORKERS,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse an evaluation set (a :class:`data.datasets.RetrievalEvalDataset`) with any unusable image,
    before training starts: replacing an evaluation image would change the metrics, and finding it only
    at the first evaluation costs an epoch. Raises :class:`DatasetError` with the list."""
    records = list(zip(dataset.where, dataset.images))
    problems = check_images(records, workers, max_pixels, desc=f"checking {what} images")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DatasetError(f"{what}: {len(problems)} of {len(records)} records have an unusable image (evaluation "
                           f"images are never replaced, since that would change the metrics): {shown}. "
                           f"Run `python -m data.check` for the list")


_WHERE = re.compile(r"^(.*?\[\d+\]): ")


def _record_of(problem: str) -> str:
    """The ``file.json[i]`` a problem line names (the whole line if it names none)."""
    m = _WHERE.match(problem)
    return m.group(1) if m else problem


def decode_problems(pairs, workers: int = 4, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[str]:
    """Decode every distinct image once; return one message per record whose image cannot be decoded."""
    bad = check_image_files([p.image for p in pairs], workers, max_pixels, full_decode=True, desc="decoding images")
    return record_problems(pairs, bad)


def shard_problems(specs: Sequence[str], max_words: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, list[str]]:
    """(samples read, one message per bad sample or shard) over the shards of ``specs``: every sample is
    decoded; the tar headers of local shards say whether a shard is whole and whether ``sizes.json``
    counts it right (:mod:`data.shard_check`); remote shards are checked against their ``sizes.json``
    count only (tar streams end quietly where they are cut)."""
    from data.shard_check import scan_shards
    from data.shard_files import expand, raw_samples, shard_sizes
    from data.shard_dataset import open_sample

    urls = expand(specs)
    scans = {s.url: s for s in scan_shards(urls)}
    remote = [u for u in urls if u not in scans]
    expected = dict(zip(remote, shard_sizes(remote)))
    count, problems = 0, []
    for url in urls:
        scan = scans.get(url)
        if scan is not None and scan.mismatch:
            problems.append(scan.mismatch)
        if scan is not None and scan.fault:
            problems.append(f"{url}: {scan.fault}; {scan.samples} whole sample(s), {scan.lost} lost")
        read, fault = 0, ""
        try:
            for sample in raw_samples(url):
                read += 1
                try:
                    open_sample(sample, max_words, max_pixels)
                except ValueError as e:
                    problems.append(f"{url}#{sample.get('__key__')}: {e}")
        except Exception as e:  # a corrupt tar: webdataset raises from deep inside tarfile
            fault = f" ({type(e).__name__}: {e})"
        if (scan is None and (fault or read < expected[url])) or (scan is not None and fault and not scan.fault):
            total = expected[url] if scan is None else scan.samples
            problems.append(f"{url}: unreadable after {read} of {total} samples{fault}")
        count += read
    return count, problems


def _check_shards(specs: Sequence[str], args: argparse.Namespace) -> list[str]:
    count, problems = shard_problems(specs, args.max_words, args.max_image_pixels)
    print(f"{count} shard samples checked; {len(problems)} problems", file=sys.stderr)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="JSON lists of {image, caption} records, or shard patterns")
    parser.add_argument("--image-root", "--image_root", dest="image_root", default=None,
                        help="folder that relative image paths resolve against")
    parser.add_argument("--max-words", "--max_words", dest="max_words", type=int, default=300,
                        help="caption word cap used for cleaning")
    parser.add_argument("--workers", type=int, default=4, help="threads decoding images")
    parser.add_argument("--max-image-pixels", "--max_image_pixels", dest="max_image_pixels", type=parse_pixel_limit,
                        default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="images with more pixels are bad records (the max_image_pixels config key; "
                             "default %(default)s)")
    args = parser.parse_args(argv)
    from data.shard_files import is_shard_spec

    shards = [f for f in args.files if is_shard_spec(f)]
    lists = [f for f in args.files if not is_shard_spec(f)]
    try:
        problems = _check_shards(shards, args) if shards else []
        pairs, list_problems = load_pairs(lists, args.image_root, args.max_words) if lists else ([], [])
    except DatasetError as e:
        print(f"data.check: error: {e}", file=sys.stderr)
        return BAD_INPUT
    problems += list_problems + decode_problems(pairs, args.workers, args.max_image_pixels)
    for p in problems:
        print(p)
    if not lists:
        return 1 if problems else 0
    bad = {_record_of(p) for p in problems}  # a record with several empty captions is one bad record
    records = {p.where for p in pairs} | bad
    images = len({p.image for p in pairs})
    print(f"{len(records)} records ({len(pairs)} pairs over {images} images) checked; {len(bad)} bad records",
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
