"""A trained sequence tagger for sub-captions, measured against the rules of data/figures/subcaptions.py.

A linear-chain CRF (python-crfsuite) tags every token of a caption as a panel marker (``M``), text after its
marker (``TA``), text before its marker (``TB``, labels cited after their description) or shared text
(``S``); the tags are decoded into sub-captions (a marker's labels read from its token, ``TA`` runs given to
the marker before them, ``TB`` runs to the marker after them). Features: the token's form (a letter in
parentheses, a bare letter and its delimiter, position words, case), whether it opens a sentence, whether
its letter follows the last letter-like token seen, words around it, and figure-wide cue words.

It is trained on the tuning part of bench/gold/caption_dev.json plus the labelled captions of
tests/data/subcaptions_gold.json and (where the fixtures are present) bench/gold/real_subcaptions.json.
``--cv K`` scores it by K-fold cross-validation over the tuning articles, next to the rules on the same
folds; ``--held-out`` trains on all of the above and scores the held-out part, totals only.

    python -m bench.caption_tagger [--cv 5 | --held-out] [--c1 0.05 --c2 0.05]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
from pathlib import Path

from bench.caption_dev import scores
from data.figures import SubCaption, split_caption
from data.figures.caption_markers import candidates
from data.figures.subcaptions import marker_roles
from bench.caption_gold import DevCaption, load_caption_dev
from data.figures.caption_markers import expand_labels, position_labels
from bench.gold_sets import GoldCaption, load_real_captions

ROOT = Path(__file__).resolve().parents[1]
_TOKEN = re.compile(r"\([^()]{1,24}\)[.,;:]?|[^\s(]+|\(")
_LETTERS = re.compile(r"^\(?\s*([A-Za-z](?:\s*(?:[-\u2010-\u2015\u2212,]|and|&)\s*[A-Za-z])*)\s*\)?[.,:;)]*$")
_POSITION = re.compile(r"^\(?(left|right|top|bottom|upper|lower|middle)(?:\s+(?:row|column|panels?|images?))?\)?[.,:]*$",
                       re.I)
_WIDE = re.compile(r"^(?:\*+p|p|n|scale|error|bars?|abbreviations?|statistic\w*|data|results|values|mean|sem|sd|"
                   r"anova|t-test|copyright|reprinted|reproduced|created)$", re.I)


def tokens(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group(0)) for m in _TOKEN.finditer(text)]


def _letter(token: str) -> str:
    m = _LETTERS.match(token)
    return m.group(1)[0] if m else ""


def rule_tags(text: str) -> list[str]:
    """The rules' reading of each token: marker (M), sub-caption text (T) or shared (S)."""
    markers, _ = marker_roles(text, candidates(text))
    spans, pos = [], 0
    for sub in split_caption(text):
        start = text.find(sub.text, pos) if sub.labels and sub.text else -1
        if start >= 0:
            spans.append((start, start + len(sub.text)))
            pos = start + len(sub.text)
    out = []
    for a, b, _ in tokens(text):
        if any(m.start <= a < m.end for m in markers):
            out.append("M")
        else:
            out.append("T" if any(s <= a < e for s, e in spans) else "S")
    return out


def features(text: str, stacked: bool = False) -> list[dict]:
    toks = tokens(text)
    rules = rule_tags(text) if stacked else None
    last_letter = ""
    feats = []
    for i, (a, b, tok) in enumerate(toks):
        prev_tok = toks[i - 1][2] if i else "<s>"
        next_tok = toks[i + 1][2] if i + 1 < len(toks) else "</s>"
        letter = _letter(tok)
        f = {
            "bias": 1.0, "lower": tok.lower()[:12], "paren": tok.startswith("("),
            "letter": bool(letter), "upper": letter.isupper(), "lower_letter": letter.islower(),
            "is_a": letter.lower() == "a", "multi": bool(letter) and len(re.findall(r"[A-Za-z]", tok)) > 1,
            "delim": tok[-1] if tok[-1] in ".,:;)" else "none", "position": bool(_POSITION.match(tok)),
            "opens": prev_tok == "<s>" or prev_tok[-1] in ".;:!?",
            "next_cap": next_tok[:1].isupper(), "next_lower": next_tok[:1].islower(),
            "prev_word": prev_tok.lower()[:10], "next_word": next_tok.lower()[:10],
            "successor": bool(letter) and (ord(letter.upper()) == ord(last_letter.upper()) + 1 if last_letter
                                           else letter.upper() == "A"),
            "wide": bool(_WIDE.match(tok.strip(".,;:()*"))), "ends_sentence": tok[-1] in ".!?",
            "rel": round(a / max(len(text), 1), 1),
            "glued": a > 0 and text[a - 1].isalnum(),
        }
        if rules:
            f.update({"rule": rules[i], "rule_prev": rules[i - 1] if i else "<s>",
                      "rule_next": rules[i + 1] if i + 1 < len(rules) else "</s>"})
        if letter and (not last_letter or ord(letter.upper()) > ord(last_letter.upper())):
            last_letter = letter
        feats.append(f)
    for i, f in enumerate(feats):  # a window of neighbours
        for d in (-2, -1, 1, 2):
            if 0 <= i + d < len(feats):
                o = feats[i + d]
                for k in ("letter", "paren", "opens", "wide", "delim", "position", "ends_sentence"):
                    f[f"{d}:{k}"] = o[k]
    return [{k: (str(v) if isinstance(v, str) else float(v)) for k, v in f.items()} for f in feats]


def gold_tags(gold: GoldCaption) -> list[str]:
    tags = []
    for a, b, _ in tokens(gold.caption):
        tag = "S"
        for (labels, _), (s, e), m in zip(gold.subs, gold.spans, gold.markers):
            if m and m[0] <= a < m[1]:
                tag = "M"
            elif labels and s <= a < e:
                tag = "TA" if m else "TB"
        tags.append(tag)
    return tags


def decode(text: str, tags: list[str]) -> list[SubCaption]:
    toks = tokens(text)
    groups = []  # (kind, start, end)
    for (a, b, _), tag in zip(toks, tags):
        if groups and groups[-1][0] == tag and tag != "S":
            groups[-1][2] = b
        else:
            groups.append([tag, a, b])
    subs, pending, shared = [], [], []
    for kind, a, b in groups:
        if kind == "M":
            labels = _labels(text[a:b])
            if labels:
                subs.append([labels, []])
                if pending:  # text cited before this marker
                    subs[-1][1].extend(pending)
                    pending = []
            continue
        if kind == "TA" and subs:
            subs[-1][1].append((a, b))
        elif kind in ("TA", "TB"):
            pending.append((a, b))
        else:
            shared.append((a, b))
    if not subs:
        return [SubCaption([], " ".join(text.split()))]
    context = " ".join(text[a:b] for a, b in shared + pending).strip()
    out = []
    for labels, spans in subs:
        body = text[min(a for a, _ in spans):max(b for _, b in spans)].strip(" ,;:") if spans else ""
        if out and not out[-1].text:
            out[-1] = SubCaption(out[-1].labels + labels, body, context)
        else:
            out.append(SubCaption(labels, body, context))
    return out


def _labels(marker: str) -> list[str]:
    inner = marker.strip(" .,;:()")
    if _POSITION.match(marker.strip()):
        return position_labels(inner)
    return expand_labels(inner) or []


def training_items(tuning: list[DevCaption]) -> list[GoldCaption]:
    items = [t.gold for t in tuning]
    for row in json.loads((ROOT / "tests" / "data" / "subcaptions_gold.json").read_text("utf-8")):
        items.append(_from_texts(row["caption"], row["subs"]))
    fixtures = Path(os.environ.get("MEDVL_FIXTURES", str(ROOT.parent / "shared" / "fixtures")))
    if (fixtures / "pmc_xml").is_dir():
        items.extend(load_real_captions(fixtures))
    return [g for g in items if g is not None and g.spans]


def _from_texts(caption: str, subs: list) -> GoldCaption | None:
    """A gold caption from (labels, text) pairs: spans found in order, markers as the letter token before."""
    text = " ".join(re.sub(r"<[^>]+>", "", caption).split())
    pos, spans, markers = 0, [], []
    for labels, sub in subs:
        start = text.find(sub, pos)
        if start < 0:
            return None
        before = tokens(text[pos:start])
        last = before[-1] if before else None
        markers.append((pos + last[0], pos + last[1]) if last and _labels(last[2]) else None)
        spans.append((start, start + len(sub)))
        pos = start + len(sub)
    return GoldCaption("tests/data", text, [(x, y) for x, y in subs], spans=spans, markers=markers)


def train(items: list[GoldCaption], c1: float, c2: float, path: str, stacked: bool) -> None:
    import pycrfsuite

    trainer = pycrfsuite.Trainer(verbose=False)
    for g in items:
        trainer.append(features(g.caption, stacked), gold_tags(g))
    trainer.set_params({"c1": c1, "c2": c2, "max_iterations": 200, "feature.possible_transitions": True})
    trainer.train(path)


def tagger_split(path: str, stacked: bool):
    import pycrfsuite

    tagger = pycrfsuite.Tagger()
    tagger.open(path)

    def split(caption: str) -> list[SubCaption]:
        text = " ".join(caption.split())
        return decode(text, tagger.tag(features(text, stacked)) if text else [])
    return split


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=int, default=5, help="folds of the cross-validation over tuning articles")
    ap.add_argument("--held-out", action="store_true", help="train on everything tunable, score the held-out part")
    ap.add_argument("--c1", type=float, default=0.05)
    ap.add_argument("--c2", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stacked", action="store_true", help="give the CRF the rules' reading of each token as features")
    args = ap.parse_args(argv)
    items = load_caption_dev(require_sources=True)
    tuning = [i for i in items if not i.held_out]
    with tempfile.TemporaryDirectory() as tmp:
        model = str(Path(tmp) / "crf.model")
        if args.held_out:
            train(training_items(tuning), args.c1, args.c2, model, args.stacked)
            held = [i for i in items if i.held_out]
            out = {"part": "held_out", "crf": scores(held, tagger_split(model, args.stacked), details=False),
                   "rules": scores(held, details=False)}
        else:
            articles = sorted({i.article for i in tuning})
            random.Random(args.seed).shuffle(articles)
            crf_rows, rule_rows = [], []
            for k in range(args.cv):
                test_articles = set(articles[k::args.cv])
                train_part = [i for i in tuning if i.article not in test_articles]
                test_part = [i for i in tuning if i.article in test_articles]
                train(training_items(train_part), args.c1, args.c2, model, args.stacked)
                crf_rows.append(scores(test_part, tagger_split(model, args.stacked), details=False))
                rule_rows.append(scores(test_part, details=False))
            out = {"part": f"tuning, {args.cv}-fold cross-validation by article", "crf": _pool(crf_rows),
                   "rules": _pool(rule_rows)}
    print(json.dumps(out, indent=1))
    return 0


def _pool(rows: list[dict]) -> dict:
    """Fold results pooled by caption and sub-caption counts."""
    def pooled(key: str, part: str | None = None) -> dict:
        rs = [r[part] if part else r for r in rows]
        n, m = sum(r["captions"] for r in rs), sum(r["sub_captions"] for r in rs)
        return {"captions": n, "sub_captions": m,
                "label_set_accuracy": round(sum(r["label_set_accuracy"] * r["captions"] for r in rs) / max(n, 1), 3),
                "token_f1": round(sum(r["token_f1"] * r["sub_captions"] for r in rs) / max(m, 1), 3)}
    return {**pooled("all"), "labelled": pooled("labelled", "labelled")}


if __name__ == "__main__":
    sys.exit(main())
