"""Cut compound figures into panels and captions into sub-captions; optionally write retrieval splits.

    python split_figures.py --in data/pubmed/captions.json --out data/pubmed/subfigures --ocr rapidocr \
        --splits 0.8,0.1,0.1 --seed 42
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from data.ocr import BACKENDS, OcrError, atomic_write_text, make_ocr
from data.splits import karpathy_splits, parse_fractions
from data.subfigures import SplitOptions, split_figure

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


def load_records(path: Path) -> list:
    """The JSON list of figure records; a clear error for anything else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot read {path}: {e}")
    if not isinstance(data, list):
        raise SystemExit(f"{path} must hold a JSON list of records, got {type(data).__name__}")
    return data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    inp, out = Path(args.inp), Path(args.out)
    fractions = None
    if args.splits:
        try:
            fractions = parse_fractions(args.splits)
        except ValueError as e:
            log.error("%s", e)
            return 2
    records = load_records(inp)[: args.limit]
    ocr = make_ocr(args.ocr, args.ocr_cache or out / "ocr_cache")
    try:
        ocr.prepare()
    except OcrError as e:
        log.error("%s", e)
        return 2
    opts = SplitOptions(context=not args.no_context, order_fallback=args.order_fallback)
    outcomes, counts = Counter(), Counter()
    results, failures = [], []
    for i, record in enumerate(tqdm(records, desc="figures", unit="fig")):
        if not isinstance(record, dict):
            res_outcome, reason, recs = "failed", f"record {i} is not an object", []
        else:
            res = split_figure(record, inp.parent, out, ocr, opts)
            res_outcome, reason, recs = res.outcome, res.reason, res.records
            counts.update(res.counts)
        outcomes[res_outcome] += 1
        results.extend(recs)
        if res_outcome == "failed":
            log.warning("record %d: %s", i, reason)
            failures.append({"index": i, "record": record, "reason": reason})
    atomic_write_text(out / "subfigures.json", json.dumps(results, indent=1, ensure_ascii=False))
    atomic_write_text(out / "failed.json", json.dumps(failures, indent=1, ensure_ascii=False))
    if fractions is not None:
        for name, rows in karpathy_splits(results, fractions, args.seed).items():
            atomic_write_text(out / f"{name}.json", json.dumps(rows, indent=1, ensure_ascii=False))
    summary = {"figures": len(records), **{k: outcomes[k] for k in ("matched", "fallback", "failed")},
               "subfigures": len(results), **dict(sorted(counts.items()))}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    log.info("summary: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
