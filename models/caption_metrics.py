"""Caption metrics of the COCO caption evaluation: BLEU-1..4, ROUGE-L and CIDEr-D, as pycocoevalcap computes them.

Ports of the scorers in coco-caption / ``pycocoevalcap`` (``bleu_scorer.py`` with ``option="closest"``,
``rouge.py`` with beta 1.2, ``cider_scorer.py``, which is CIDEr-D: sigma 6, clipped counts, x10), which
are what BLIP reports, fed by the same tokenization: Stanford's PTB tokenizer, lower-cased, punctuation
tokens removed. By default that tokenizer is :mod:`models.ptb_tokenizer`, a Python port of the Java one
(no Java needed); ``tokenizer="java"`` runs the Java tokenizer itself (the CoreNLP 3.4.1 jar that the
``pycocoevalcap`` package ships, or a jar given by path), as pycocoevalcap does. The tests check both
against the scores of pycocoevalcap's full pipeline recorded on a set of medical-style captions.

    scores = caption_scores({"img1": "A 3.5-cm mass (arrow)."}, {"img1": ["...", "..."]})
"""
from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Mapping, Sequence

from models.ptb_tokenizer import PUNCTUATIONS, ptb_tokenize_lines

CORENLP_JAR = "stanford-corenlp-3.4.1.jar"


def find_corenlp_jar() -> Path | None:
    """The CoreNLP jar inside an installed ``pycocoevalcap`` (located, not imported), or None."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        jar = Path(folder) / "tokenizer" / CORENLP_JAR
        if jar.is_file():
            return jar
    return None


def java_tokenize_lines(captions: Sequence[str], jar: str | Path | None = None) -> list[str]:
    """pycocoevalcap's tokenization itself: the Java PTBTokenizer run with ``-preserveLines -lowerCase`` on
    the newline-joined captions, punctuation tokens removed. Needs ``java`` and the CoreNLP 3.4.1 jar."""
    jar = Path(jar) if jar else find_corenlp_jar()
    if jar is None or not jar.is_file():
        raise RuntimeError(f"the {CORENLP_JAR} jar was not found: pip install pycocoevalcap, or pass its path")
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("the Java tokenizer needs a `java` executable on PATH (Java 8 or later)")
    text = "\n".join(c.replace("\n", " ") for c in captions)
    done = subprocess.run([java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
                           "-lowerCase"], input=text.encode("utf-8"), capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the Java PTBTokenizer failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    lines = done.stdout.decode("utf-8").split("\n")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS) for line in lines[:len(captions)]]


def coco_tokenize(captions: Sequence[str], tokenizer: str = "python", jar: str | Path | None = None) -> list[str]:
    """Each caption tokenized as the COCO evaluation does (lower-case tokens joined by spaces). The
    captions are lexed together, in order (the next caption can change how a final abbreviation splits)."""
    if tokenizer == "python":
        return ptb_tokenize_lines(captions)
    if tokenizer == "java":
        return java_tokenize_lines(captions, jar)
    raise ValueError(f"tokenizer must be 'python' or 'java', not {tokenizer!r}")


def tokenize(text: str) -> list[str]:
    """One caption's COCO tokens (see :func:`coco_tokenize`)."""
    return coco_tokenize([text])[0].split()


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


def caption_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                   tokenizer: str = "python", jar: str | Path | None = None) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of one predicted caption per key against that key's references.

    As pycocoevalcap's pipeline: the references (key by key, in the order of ``predictions``) and the
    predictions are tokenized as two runs (:func:`coco_tokenize`; ``tokenizer="java"`` uses the Java
    tokenizer itself); BLEU and CIDEr split the tokenized text on any whitespace, ROUGE-L on single spaces.
    """
    keys = [k for k in predictions if k in references]
    if not keys:
        raise ValueError("no prediction has references to be scored against")
    empty = [k for k in keys if not references[k]]
    if empty:
        raise ValueError(f"{len(empty)} images have no reference caption (first: {empty[0]})")
    flat = coco_tokenize([r for k in keys for r in references[k]], tokenizer, jar)
    hyp_text = coco_tokenize([predictions[k] for k in keys], tokenizer, jar)
    ref_text, start = [], 0
    for k in keys:
        ref_text.append(flat[start:start + len(references[k])])
        start += len(references[k])
    hyps = [h.split() for h in hyp_text]
    refs = [[r.split() for r in rs] for rs in ref_text]
    b = bleu(hyps, refs)
    out = {f"bleu_{i + 1}": v for i, v in enumerate(b)}
    rouge = [rouge_l(h.split(" "), [r.split(" ") for r in rs]) for h, rs in zip(hyp_text, ref_text)]
    out["rouge_l"] = math.fsum(rouge) / len(keys)
    out["cider_d"] = math.fsum(cider_d(hyps, refs)) / len(keys)
    out["n"] = len(keys)
    return out
