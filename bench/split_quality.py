"""Quality of figure splitting, printed as JSON.

- Panels and letters on the real compound figures of ../shared/fixtures/compound_figures/ (boxes and
  letters from nature_closed_expected.json) and on compound figures built from real single images
  (bench.compound_synth): precision/recall/F1 at IoU >= 0.5, and letter accuracy (share of true panels
  whose matched detection carries the right letter).
- "rich_built_figures": the same on rich compound figures (bench.compound_rich: grids up to
  5 x 5, irregular layouts, gutters 0-20 px, eight label styles in five places, R/L markers, scale bars
  and arrows), built from ``--seed`` (the tuning seeds, default 1,2,3) or, with ``--held-out``, from
  the held-out seed alone; ``--failures`` lists the wrong panels of tuning seeds (never of the held-out
  seed).
- The same on the MedICaT sample figures (boxes and letters from bench/gold/real_panels.json):
  "real_medicat_figures" for the lettered ones, "real_medicat_single_panel" for the one-image ones
  (share returned as exactly one panel at IoU >= 0.5).
- Sub-captions on the labelled captions of tests/data/subcaptions_gold.json: label-set accuracy
  (share of captions whose list of label groups is exactly right) and mean token F1 of the texts.
- "real_captions": the same scores on every real caption of the fixtures, against the independent
  gold of bench/gold/real_subcaptions.json (texts rebuilt by bench/gold_sets.py), with the wrong records.
  Shared lead and trailing text (statistics, scale bars) are not part of the gold sub-caption texts.

    python -m bench.split_quality [--fixtures DIR] [--ocr rapidocr|gcv|none] [--per-layout N]
        [--seed 1,2,3 | --held-out] [--rich-n N] [--sets real,medicat,built,rich,captions] [--failures]
        [--caption-letters]

``--caption-letters`` passes each figure's true letters to find_panels as its caption would name them
(split_figures.py splits with the caption's letters); without it the letters are read from the image
alone.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from PIL import Image

from data.figures import find_panels, split_caption
from bench.gold_sets import load_real_captions, load_real_panels
from data.figures.ocr import make_ocr
from bench.compound_rich import build_rich_set
from bench.compound_synth import build_set

REAL = ("s41467-018-06211-3_fig1.jpg", "s41467-018-06211-3_fig3.jpg", "s41467-018-06211-3_fig5.jpg")
TUNING_SEEDS = (1, 2, 3)  # the rich figures the letter rules were tuned on
HELD_OUT_SEED = 12345  # never looked at while tuning: scored once, as totals only
SETS = ("real", "medicat", "built", "rich", "captions")


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def match(truth: list[tuple], pred: list) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (truth index, prediction index) at IoU >= 0.5, best IoU first."""
    cands = sorted(((iou(t, p.box), i, j) for i, t in enumerate(truth) for j, p in enumerate(pred)), reverse=True)
    used_t, used_p, pairs = set(), set(), []
    for v, i, j in cands:
        if v >= 0.5 and i not in used_t and j not in used_p:
            used_t.add(i), used_p.add(j), pairs.append((i, j))
    return pairs


def figure_results(items: list[tuple[Image.Image, list[tuple], list[str]]], ocr,
                   caption_letters: bool = False) -> list[dict]:
    """Per figure: true, detected and matched panels (IoU >= 0.5), right letters, what was read at each
    true panel ("-": no match), and the seconds find_panels took. With ``caption_letters`` each figure is
    split as if its caption named its true letters."""
    results = []
    for image, boxes, labels in items:
        t0 = time.perf_counter()
        pred = find_panels(image, ocr, letters=sorted({x for x in labels if x}) if caption_letters else None)
        seconds = time.perf_counter() - t0
        pairs = match(boxes, pred)
        read = {i: pred[j].label for i, j in pairs}
        results.append({"true": len(boxes), "detected": len(pred), "matched": len(pairs),
                        "right": sum(1 for i, j in pairs if pred[j].label == labels[i]), "seconds": seconds,
                        "want": " ".join(labels), "read": " ".join(str(read.get(i, "-")) for i in range(len(labels)))})
    return results


def totals(results: list[dict]) -> dict:
    """Panel P/R/F1 and letter accuracy (share of true panels whose match carries the right letter)."""
    tp, n_pred, n_true = (sum(r[k] for r in results) for k in ("matched", "detected", "true"))
    p, r = tp / max(n_pred, 1), tp / max(n_true, 1)
    return {"figures": len(results), "true_panels": n_true, "detected": n_pred, "precision": round(p, 3),
            "recall": round(r, 3), "f1": round(2 * p * r / max(p + r, 1e-9), 3),
            "label_accuracy": round(sum(r["right"] for r in results) / max(n_true, 1), 3),
            "seconds_per_figure": round(sum(r["seconds"] for r in results) / max(len(results), 1), 2)}


def panel_scores(items: list[tuple[Image.Image, list[tuple], list[str]]], ocr, caption_letters: bool = False) -> dict:
    return totals(figure_results(items, ocr, caption_letters))


def real_items(fixtures: Path) -> list:
    expected = json.loads((fixtures / "compound_figures" / "nature_closed_expected.json").read_text())
    items = []
    for name in REAL:
        boxes, labels = [], []
        for m in expected[name]["master_images"]:
            xs, ys = [g["x"] for g in m["geometry"]], [g["y"] for g in m["geometry"]]
            boxes.append((min(xs), min(ys), max(xs), max(ys)))
            labels.append(m["subfigure_label"]["text"].upper())
        with Image.open(fixtures / "compound_figures" / name) as im:
            items.append((im.convert("RGB"), boxes, labels))
    return items


def medicat_items(fixtures: Path) -> tuple[list, list]:
    """(lettered figures, one-image figures) of bench/gold/real_panels.json as (image, boxes, labels)."""
    lettered, single = [], []
    for fig in load_real_panels(fixtures):
        with Image.open(fig.path) as im:
            item = (im.convert("RGB"), [p.box for p in fig.panels], [p.label for p in fig.panels])
        (single if fig.single else lettered).append(item)
    return lettered, single


def single_panel_scores(items: list, ocr, caption_letters: bool = False) -> dict:
    one = found = n_pred = 0
    for image, boxes, _ in items:
        pred = find_panels(image, ocr, letters=[] if caption_letters else None)
        n_pred += len(pred)
        hit = bool(match(boxes, pred))
        found += hit
        one += hit and len(pred) == 1
    return {"figures": len(items), "exactly_one_panel": round(one / max(len(items), 1), 3),
            "whole_found": round(found / max(len(items), 1), 3),
            "mean_detected": round(n_pred / max(len(items), 1), 2)}


def token_f1(a: str, b: str) -> float:
    ta, tb = Counter(a.lower().split()), Counter(b.lower().split())
    common = sum((ta & tb).values())
    if not ta and not tb:
        return 1.0
    if common == 0:
        return 0.0
    p, r = common / sum(ta.values()), common / sum(tb.values())
    return 2 * p * r / (p + r)


def score_caption(caption: str, subs: list) -> tuple[bool, list[str], list[float]]:
    """Split ``caption`` and compare with the gold ``subs`` [(labels, text), ...]: (label lists all
    right, the label groups found, token F1 of each gold sub-caption's text)."""
    pred = split_caption(caption)
    by_labels = {tuple(s.labels): s.text for s in pred}
    f1s = [token_f1(by_labels.get(tuple(labels), ""), text) for labels, text in subs]
    return [s.labels for s in pred] == [labels for labels, _ in subs], ["".join(s.labels) or "-" for s in pred], f1s


def caption_scores(path: Path) -> dict:
    gold = json.loads(path.read_text())
    exact, f1s, failures = 0, [], []
    for row in gold:
        right, _, row_f1s = score_caption(row["caption"], row["subs"])
        exact += right
        f1s += row_f1s
        if not right:
            failures.append(row["syntax"])
    return {"captions": len(gold), "syntaxes": len({r["syntax"] for r in gold}),
            "label_set_accuracy": round(exact / len(gold), 3),
            "token_f1": round(sum(f1s) / len(f1s), 3), "wrong": failures}


def real_caption_scores(fixtures: Path) -> dict:
    gold = load_real_captions(fixtures)
    exact = exact_clear = n_clear = 0
    f1s, wrong = [], []
    for g in gold:
        right, got, row_f1s = score_caption(g.caption, g.subs)
        f1s += row_f1s
        n_clear += not g.ambiguous
        exact += right
        exact_clear += right and not g.ambiguous
        if not right:
            wrong.append({"source": g.source, "got": got, "want": ["".join(x) or "-" for x, _ in g.subs],
                          "ambiguous": bool(g.ambiguous)})
    return {"captions": len(gold), "sub_captions": len(f1s), "ambiguous_captions": len(gold) - n_clear,
            "label_set_accuracy": round(exact / len(gold), 3),
            "label_set_accuracy_unambiguous": round(exact_clear / max(n_clear, 1), 3),
            "token_f1": round(sum(f1s) / len(f1s), 3), "wrong": wrong}


def rich_scores(fixtures: Path, seeds: list[int], n: int, ocr, failures: bool, caption_letters: bool = False) -> dict:
    """Scores of ``n`` rich figures per seed, in total; with ``failures`` also the figures that are not all
    right and the scores by label style, placement, ink and background."""
    items, names, looks = [], [], []
    for seed in seeds:
        for i, c in enumerate(build_rich_set(fixtures / "image_caption", n, seed)):
            items.append((c.image, c.boxes, c.labels))
            names.append(f"{seed}:{i} {c.layout} {c.look['style']} {c.look['placement']} {c.look['ink']} "
                         f"{c.look['background']} g{c.look['gutter']}")
            looks.append(c.look)
    results = figure_results(items, ocr, caption_letters)
    out = {"seeds": seeds, **totals(results)}
    if failures:
        out["failures"] = [{"figure": name, "want": r["want"], "read": r["read"], "missed": r["true"] - r["matched"],
                            "extra": r["detected"] - r["matched"]}
                           for name, r in zip(names, results) if r["right"] < r["true"] or r["detected"] != r["true"]]
        out["by"] = {}
        for key in ("style", "placement", "ink", "background"):
            groups: dict[str, list[dict]] = {}
            for look, r in zip(looks, results):
                groups.setdefault(str(look[key]), []).append(r)
            out["by"][key] = {value: {k: sub[k] for k in ("true_panels", "f1", "label_accuracy")}
                              for value, sub in ((v, totals(rs)) for v, rs in sorted(groups.items()))}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_fx = os.environ.get("MEDVL_FIXTURES", str(ROOT.parent / "shared" / "fixtures"))
    ap.add_argument("--fixtures", default=default_fx)
    ap.add_argument("--ocr", default="rapidocr", choices=("rapidocr", "gcv", "none"))
    ap.add_argument("--per-layout", type=int, default=10, help="built figures per layout")
    ap.add_argument("--built-seed", type=int, default=0, help="seed of the (old) built set")
    ap.add_argument("--seed", default=",".join(map(str, TUNING_SEEDS)),
                    help="seeds of the rich built set, comma list (the tuning seeds by default)")
    ap.add_argument("--held-out", action="store_true",
                    help=f"score the rich set of the held-out seed {HELD_OUT_SEED} instead, totals only")
    ap.add_argument("--rich-n", type=int, default=50, help="rich built figures per seed")
    ap.add_argument("--sets", default=",".join(SETS), help=f"sets to score, comma list of {', '.join(SETS)}")
    ap.add_argument("--failures", action="store_true",
                    help="list the rich figures with wrong panels or letters, and scores by label look")
    ap.add_argument("--ocr-cache", default=None, help="folder of an OCR cache kept between runs")
    ap.add_argument("--caption-letters", action="store_true",
                    help="split each figure as if its caption named its true letters (as split_figures.py does)")
    args = ap.parse_args(argv)
    sets = set(args.sets.split(","))
    if sets - set(SETS):
        ap.error(f"unknown sets {sorted(sets - set(SETS))}")
    seeds = [int(x) for x in args.seed.split(",")]
    if args.held_out:
        if args.failures:
            ap.error("--failures lists figures; the held-out figures are scored as totals only")
        seeds = [HELD_OUT_SEED]
    elif HELD_OUT_SEED in seeds:
        ap.error(f"seed {HELD_OUT_SEED} is held out: use --held-out, which prints totals only")
    fixtures = Path(args.fixtures)
    ocr = make_ocr(args.ocr, args.ocr_cache)
    out: dict = {"ocr": args.ocr, "caption_letters": args.caption_letters}
    cl = args.caption_letters
    if "real" in sets:
        out["real_compound_figures"] = panel_scores(real_items(fixtures), ocr, cl)
    if "medicat" in sets:
        medicat, medicat_single = medicat_items(fixtures)
        out["real_medicat_figures"] = panel_scores(medicat, ocr, cl)
        out["real_medicat_single_panel"] = single_panel_scores(medicat_single, ocr, cl)
    if "built" in sets:
        synth = [(c.image, c.boxes, c.labels) for c in
                 build_set(fixtures / "image_caption", args.per_layout, seed=args.built_seed)]
        out["built_compound_figures"] = panel_scores(synth, ocr, cl)
    if "rich" in sets:
        key = "rich_built_figures_held_out" if args.held_out else "rich_built_figures"
        out[key] = rich_scores(fixtures, seeds, args.rich_n, ocr, args.failures, cl)
    if "captions" in sets:
        out["subcaptions"] = caption_scores(ROOT / "tests" / "data" / "subcaptions_gold.json")
        out["real_captions"] = real_caption_scores(fixtures)
    out["targets"] = {"panel_f1": 0.9, "label_accuracy": 0.85, "rich_label_accuracy": 0.9,
                      "subcaption_label_set_accuracy": 0.9}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
