"""Check datasets before a long run: list every bad record with its file and index.

    python -m data.check datasets/pubmed/captions.json more.json [--image_root DIR]

A record is bad when it is not an object with an ``image`` path, its image is missing or cannot be
decoded (truncated, not an image), or its caption is empty after cleaning. Exit status 1 when any is bad.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from data.datasets import DatasetError, load_pairs
from data.images import BadImageError, load_rgb


def decode_problems(pairs, workers: int = 4) -> list[str]:
    """Decode every distinct image once; return one message per undecodable image."""
    first = {}
    for p in pairs:
        first.setdefault(p.image, p.where)

    def check(item):
        image, where = item
        try:
            load_rgb(image)
        except BadImageError as e:
            return f"{where}: {e}"
        return None

    with ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(check, first.items()), total=len(first), desc="decoding images",
                            disable=not sys.stderr.isatty()))
    return [r for r in results if r]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="JSON lists of {image, caption} records")
    parser.add_argument("--image_root", default=None, help="folder that relative image paths resolve against")
    parser.add_argument("--max_words", type=int, default=300, help="caption word cap used for cleaning")
    parser.add_argument("--workers", type=int, default=4, help="threads decoding images")
    args = parser.parse_args(argv)
    try:
        pairs, problems = load_pairs(args.files, args.image_root, args.max_words)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    problems += decode_problems(pairs, args.workers)
    for p in problems:
        print(p)
    images = len({p.image for p in pairs})
    print(f"{len(pairs)} pairs over {images} images checked; {len(problems)} bad records", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
