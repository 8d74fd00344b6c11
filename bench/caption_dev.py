"""Sub-caption quality on the real caption development set (bench/gold/caption_dev.json), printed as JSON.

The set and its seeded tuning / held-out split are described in bench/caption_gold.py. By default the
tuning part is scored: totals, scores by caption style (how the gold marks its first panel) and counts of
failure kinds; ``--failures`` adds every tuning caption whose label groups are wrong or with a gold
sub-caption below ``--f1-below`` token F1. ``--held-out`` scores the held-out part and prints totals only
(it refuses ``--failures``), so that no held-out caption is looked at while the rules are tuned.

Scores: label-set accuracy (share of captions whose list of label groups is exactly right), the same on the
captions with panel labels, and the mean token F1 of the gold sub-caption texts (all, and those with labels).

    python -m bench.caption_dev [--held-out | --failures] [--repo OWNER/NAME] [--sources DIR] [--fetch-from DIR]
                                [--f1-below 0.9]
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from bench.split_quality import token_f1
from bench.unseen_captions import add_source_arguments, load_gold
from data.figures import SubCaption, split_caption
from bench.caption_gold import CAPTION_DEV_FILE, DevCaption, load_caption_dev, sources_dir
from bench.gold_sets import GoldCaption

Splitter = Callable[[str], list[SubCaption]]


def score_one(gold: GoldCaption, split: Splitter) -> dict:
    """Compare one caption's split with its gold: label groups, token F1 per gold sub, failure kinds."""
    pred = split(gold.caption)
    got, want = [s.labels for s in pred], [labels for labels, _ in gold.subs]
    by_labels = {tuple(s.labels): s.text for s in pred}
    f1s = [token_f1(by_labels.get(tuple(labels), ""), text) for labels, text in gold.subs]
    kinds = failure_kinds(got, want, [(by_labels.get(tuple(lab), ""), text) for lab, text in gold.subs], f1s)
    return {"right": got == want, "got": ["".join(x) if all(len(y) == 1 for y in x) else "+".join(x) or "-"
                                          for x in got],
            "want": ["".join(x) if all(len(y) == 1 for y in x) else "+".join(x) or "-" for x in want],
            "f1s": f1s, "kinds": kinds}


def failure_kinds(got: list[list[str]], want: list[list[str]], texts: list[tuple[str, str]],
                  f1s: list[float], f1_below: float = 0.9) -> list[str]:
    """Why a caption is wrong: labels read where the gold has none (``false_labels``), gold labels not
    found (``missed_labels``), the right letters grouped or ordered differently (``grouping``); with the
    right groups, a text longer than the gold (``text_too_long``: a tail or a neighbour kept), shorter
    (``text_too_short``: own words cut off) or overlapping it only partly (``text_misplaced``)."""
    kinds = []
    got_set, want_set = {x for g in got for x in g}, {x for g in want for x in g}
    if got_set - want_set:
        kinds.append("false_labels")
    if want_set - got_set:
        kinds.append("missed_labels")
    if got_set == want_set and got != want:
        kinds.append("grouping")
    if got == want:
        for (pred, gold), f1 in zip(texts, f1s):
            if f1 >= f1_below:
                continue
            p, g = Counter(pred.lower().split()), Counter(gold.lower().split())
            kinds.append("text_too_long" if not g - p else "text_too_short" if not p - g else "text_misplaced")
    return sorted(set(kinds))


def scores(items: list[DevCaption], split: Splitter = split_caption, f1_below: float = 0.9,
           details: bool = True) -> dict:
    """Totals over ``items``; with ``details`` also by style, by failure kind and the failing captions."""
    start = time.process_time()
    rows = [(item, score_one(item.gold, split)) for item in items]
    cpu_ms = (time.process_time() - start) * 1000 / max(len(items), 1)
    labelled = [(i, r) for i, r in rows if i.gold.subs[0][0]]
    out = _totals(rows)
    out["labelled"] = _totals(labelled)
    out["articles"] = len({i.article for i in items})
    out["cpu_ms_per_caption"] = round(cpu_ms, 3)  # splitting and scoring, one process
    if not details:
        return out
    styles: dict[str, list] = {}
    for item, row in rows:
        styles.setdefault(item.style, []).append((item, row))
    out["by_style"] = {k: _totals(v) for k, v in sorted(styles.items())}
    out["failure_kinds"] = dict(sorted(Counter(k for _, r in rows for k in r["kinds"]).items()))
    out["failures"] = [{"source": i.gold.source, "style": i.style, "got": r["got"], "want": r["want"],
                        "token_f1": [round(f, 3) for f in r["f1s"]], "kinds": r["kinds"],
                        "ambiguous": bool(i.gold.ambiguous)}
                       for i, r in rows if not r["right"] or min(r["f1s"]) < f1_below]
    return out


def _totals(rows: list) -> dict:
    f1s = [f for _, r in rows for f in r["f1s"]]
    return {"captions": len(rows), "sub_captions": len(f1s),
            "label_set_accuracy": round(sum(r["right"] for _, r in rows) / max(len(rows), 1), 3),
            "token_f1": round(sum(f1s) / max(len(f1s), 1), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--held-out", action="store_true", help="score the held-out part (totals only)")
    ap.add_argument("--failures", action="store_true", help="list the failing tuning captions")
    ap.add_argument("--repo", default=None,
                    help="score only the records drawn from this repository (owner/name), e.g. one draw of the set")
    add_source_arguments(ap, "$MEDVL_CAPTION_DEV, else ../shared/caption_dev", CAPTION_DEV_FILE)
    args = ap.parse_args(argv)
    if args.held_out and args.failures:
        ap.error("--failures lists tuning captions only; the held-out part is reported as totals")
    sources, items = load_gold(args, sources_dir(), load_caption_dev, "caption_dev")
    if items is None:
        return 2
    part = [i for i in items if i.held_out == args.held_out
            and (args.repo is None or i.gold.source.startswith(f"github:{args.repo}@"))]
    result = scores(part, f1_below=args.f1_below, details=not args.held_out)
    if not args.failures:
        result.pop("failures", None)
    skipped = len(json.loads(Path(args.gold).read_text("utf-8"))["captions"]) - len(items)
    out = {"gold": Path(args.gold).name, "part": "held_out" if args.held_out else "tuning", "repo": args.repo,
           "sources": str(sources), "records_without_source": skipped, **result}
    print(json.dumps(out, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
