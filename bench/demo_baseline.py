"""Recall that a model knowing only each demo image's sequence (T1, T2, FLAIR, CT) would get, printed as JSON.

Such a model ranks the captions and images of the right sequence first, in random order among
themselves. Its expected R@K is computed exactly: the chance that a correct item is among the top K of
a random order of the items of the query's sequence. A demo model that does no better than this has
learnt the look of the sequences and nothing about the lesions.

    python -m bench.demo_baseline --demo datasets/demo [--split test]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.probes import sequence_only_recall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default="datasets/demo", help="folder written by python -m data.synthetic.demo")
    p.add_argument("--split", default="test", choices=("val", "test"))
    args = p.parse_args(argv)
    demo = Path(args.demo)
    if not (demo / "lesions.json").is_file():
        print(f"error: {demo / 'lesions.json'} does not exist; run python -m data.synthetic.demo --out {demo}", file=sys.stderr)
        return 2
    meta = json.loads((demo / "lesions.json").read_text())
    records = json.loads((demo / f"{args.split}.json").read_text())
    sequences = [meta[r["image"]]["sequence"] for r in records]
    result = sequence_only_recall(records, sequences)
    print(json.dumps({"split": args.split, "images": len(records), "sequence_only": result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
