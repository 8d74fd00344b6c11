"""Recall that a model knowing only each demo image's sequence (T1, T2, FLAIR, CT) would get, printed as JSON.

Such a model ranks the captions and images of the right sequence first, in random order among
themselves. Its expected R@K is computed exactly: the chance that a correct item is among the top K of
a random order of the items of the query's sequence. A demo model that does no better than this has
learnt the look of the sequences and nothing about the lesions.

    python bench/demo_baseline.py --demo data/demo [--split test]
"""
from __future__ import annotations

import argparse
import json
import sys
from math import comb
from pathlib import Path


def hit_chance(n: int, good: int, k: int) -> float:
    """P(at least one of ``good`` items is among the first ``k`` of a random order of ``n`` items)."""
    k = min(k, n)
    return 1.0 - comb(n - good, k) / comb(n, k)


def sequence_only_recall(records: list[dict], sequences: list[str], ks=(1, 5, 10)) -> dict[str, float]:
    """BLIP's metric names (txt_r* = image query, img_r* = text query) in percent, and r_mean."""
    n_caps = [len(r["caption"]) for r in records]
    texts_of = {s: sum(c for s2, c in zip(sequences, n_caps) if s2 == s) for s in set(sequences)}
    out = {}
    for k in ks:
        txt = [hit_chance(texts_of[s], n_caps[i], k) for i, s in enumerate(sequences)]
        img = [hit_chance(sequences.count(s), 1, k) for i, s in enumerate(sequences) for _ in range(n_caps[i])]
        out[f"txt_r{k}"] = 100 * sum(txt) / len(txt)
        out[f"img_r{k}"] = 100 * sum(img) / len(img)
    out["r_mean"] = sum(out.values()) / len(out)
    return {key: round(v, 2) for key, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default="data/demo", help="folder written by python -m data.demo")
    p.add_argument("--split", default="test", choices=("val", "test"))
    args = p.parse_args(argv)
    demo = Path(args.demo)
    if not (demo / "lesions.json").is_file():
        print(f"error: {demo / 'lesions.json'} does not exist; run python -m data.demo --out {demo}", file=sys.stderr)
        return 2
    meta = json.loads((demo / "lesions.json").read_text())
    records = json.loads((demo / f"{args.split}.json").read_text())
    sequences = [meta[r["image"]]["sequence"] for r in records]
    result = sequence_only_recall(records, sequences)
    print(json.dumps({"split": args.split, "images": len(records), "sequence_only": result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
