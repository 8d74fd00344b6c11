"""Caption metrics of the COCO caption evaluation: BLEU-1..4, ROUGE-L and CIDEr-D, in plain Python.

Ports of the scorers in coco-caption / ``pycocoevalcap`` (``bleu_scorer.py`` with ``option="closest"``,
``rouge.py`` with beta 1.2, ``cider_scorer.py``, which is CIDEr-D: sigma 6, clipped counts, x10), which
are what BLIP reports. They are pure Python there too; the package is not used because its tokenizer and
METEOR/SPICE need Java. :func:`tokenize` stands in for the PTB tokenizer (lower case, punctuation tokens
dropped, contractions split), so figures match coco-caption's closely but not always to the last digit
on text with unusual punctuation. The tests check these ports against values pycocoevalcap 1.2 computes
and against the worked examples of the BLEU and ROUGE papers.

    scores = caption_scores({"img1": "a mass in the left frontal lobe"}, {"img1": ["...", "..."]})
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Mapping, Sequence

_CONTRACTION = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|n't|'(?:s|re|ve|ll|d|m)\b|[^\s.,!?;:()\[\]{}\"`']+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words; punctuation dropped as coco-caption's PTB tokenizer set-up drops it."""
    text = _CONTRACTION.sub(r" \1", text.lower())
    return [t for t in _TOKEN.findall(text) if t.strip("-_/")]


def ngrams(words: Sequence[str], n: int) -> Counter:
    """Counts of every k-gram, k = 1..n."""
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


# -- BLEU ---------------------------------------------------------------------------------------------


def bleu(hyps: Sequence[list[str]], refs: Sequence[Sequence[list[str]]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n (Papineni et al. 2002) of tokenized hypotheses against their references.

    Clipped n-gram counts and lengths are summed over the corpus; the brevity penalty uses, per
    sentence, the reference length closest to the hypothesis (the shorter on a tie), as coco-caption.
    """
    tiny, small = 1e-15, 1e-9
    correct, guess = [0] * n, [0] * n
    test_len = ref_len = 0
    for hyp, rs in zip(hyps, refs):
        max_ref: Counter = Counter()
        for r in rs:
            for gram, c in ngrams(r, n).items():
                max_ref[gram] = max(max_ref[gram], c)
        for gram, c in ngrams(hyp, n).items():
            correct[len(gram) - 1] += min(c, max_ref[gram])
        for k in range(n):
            guess[k] += max(len(hyp) - k, 0)
        test_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in rs)[1]
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


# -- ROUGE-L ------------------------------------------------------------------------------------------


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) * len(b)))."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyp: list[str], refs: Sequence[list[str]], beta: float = 1.2) -> float:
    """Sentence ROUGE-L (Lin 2004): F-measure of LCS precision and recall, each the best over references."""
    if not hyp:
        return 0.0
    precision = max(lcs_length(r, hyp) / len(hyp) for r in refs)
    recall = max(lcs_length(r, hyp) / len(r) if r else 0.0 for r in refs)
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision)


# -- CIDEr-D ------------------------------------------------------------------------------------------


def cider_d(hyps: Sequence[list[str]], refs: Sequence[Sequence[list[str]]], n: int = 4,
            sigma: float = 6.0) -> list[float]:
    """Per-image CIDEr-D (Vedantam et al. 2015, as coco-caption computes it); the corpus score is the mean.

    TF-IDF vectors of 1..n-grams, with document frequencies over the references of the evaluated images
    (so the score depends on the whole set, as in coco-caption); hypothesis weights clipped by the
    reference's, a Gaussian penalty on the length difference, mean over n, over references, times 10.
    """
    ref_counts = [[ngrams(r, n) for r in rs] for rs in refs]
    df: Counter = Counter()
    for rs in ref_counts:
        df.update(set(gram for r in rs for gram in r))
    log_images = math.log(float(len(refs))) if refs else 0.0

    def vector(counts: Counter):
        vec = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            vec[k][gram] = tf * (log_images - math.log(max(1.0, df[gram])))
            norm[k] += vec[k][gram] ** 2
            if k == 1:  # coco-caption measures length in bigrams
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    scores = []
    for hyp, rs in zip(hyps, ref_counts):
        vh, nh, lh = vector(ngrams(hyp, n))
        total = [0.0] * n
        for r in rs:
            vr, nr, lr = vector(r)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                val = sum(min(w, vr[k][gram]) * vr[k][gram] for gram, w in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * penalty
        scores.append(sum(total) / n / len(rs) * 10.0)
    return scores


# -- all together -------------------------------------------------------------------------------------


def caption_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of one predicted caption per key against that key's references."""
    keys = [k for k in predictions if k in references]
    if not keys:
        raise ValueError("no prediction has references to be scored against")
    empty = [k for k in keys if not references[k]]
    if empty:
        raise ValueError(f"{len(empty)} images have no reference caption (first: {empty[0]})")
    hyps = [tokenize(predictions[k]) for k in keys]
    refs = [[tokenize(r) for r in references[k]] for k in keys]
    b = bleu(hyps, refs)
    out = {f"bleu_{i + 1}": v for i, v in enumerate(b)}
    out["rouge_l"] = sum(rouge_l(h, r) for h, r in zip(hyps, refs)) / len(keys)
    out["cider_d"] = sum(cider_d(hyps, refs)) / len(keys)
    out["n"] = len(keys)
    return out
