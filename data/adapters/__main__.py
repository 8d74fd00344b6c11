"""Datasets in their public layouts written as the project's JSON lists.

    python -m data.adapters roco:datasets/roco/data/train/radiology --out datasets/roco/train.json
    python -m data.adapters medicat-subfigures subfigure_subcaption.jsonl --images figures/ --out datasets/medicat_sub

The first form writes the pairs the spec names (see :mod:`data.adapters`) with image paths relative to
the output file; the second cuts MedICaT's annotated sub-figures out (:func:`.medicat.write_subfigures`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from data.adapters import read_pairs
from data.adapters.medicat import write_subfigures
from data.errors import run_command
from data.records import BadRecord, PairRecord, write_records


def convert(spec: str, out: Path) -> tuple[int, int]:
    """Write the pairs of ``spec`` to ``out``; returns (written, bad rows)."""
    bad: list[BadRecord] = []
    pairs = read_pairs(spec, bad)
    for problem in bad[:20]:
        print(f"skipping {problem}", file=sys.stderr)
    rows = [{**r, "image": Path(os.path.relpath(r["image"], out.parent.resolve())).as_posix()} for _, r in pairs]
    write_records(out, rows, PairRecord)
    return len(rows), len(bad)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m data.adapters", description=__doc__.splitlines()[0])
    if argv[:1] == ["medicat-subfigures"]:
        parser.add_argument("annotations", help="MedICaT sub-figure/sub-caption JSON lines")
        parser.add_argument("--images", default=None, help="folder of the figure images")
        parser.add_argument("--out", required=True, help="output folder (images/, subfigures.json)")
        args = parser.parse_args(argv[1:])

        def run() -> int:
            images = Path(args.images) if args.images else None
            records = write_subfigures(Path(args.annotations), Path(args.out), images)
            print(f"{len(records)} sub-figures in {Path(args.out) / 'subfigures.json'}")
            return 0
    else:
        parser.add_argument("spec", help="a dataset spec: roco:DIR, rocov2:FILE, pmc-oa:FILE, medicat:FILE, csv:FILE")
        parser.add_argument("--out", required=True, help="JSON list to write")
        args = parser.parse_args(argv)

        def run() -> int:
            written, bad = convert(args.spec, Path(args.out).resolve())
            print(f"{written} pairs written to {args.out}; {bad} row(s) skipped")
            return 0

    # exit codes: data/errors.py (2 for a dataset that cannot be read, 74 for a write that failed)
    return run_command(run, "data.adapters", bad_input=(ValueError, PermissionError, IsADirectoryError))


if __name__ == "__main__":
    raise SystemExit(main())
