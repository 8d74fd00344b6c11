"""COCO-exact caption metrics: the PTB tokenization and the scores of pycocoevalcap's full pipeline, recorded
by tests/data/make_ptb_fixture.py (pycocoevalcap 1.2 with Java), matched here without Java."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from models.caption_metrics import caption_scores, coco_tokenize, find_corenlp_jar, java_tokenize_lines, tokenize
from models.ptb_tokenizer import ptb_tokenize_lines, ptb_tokens

FIXTURE = json.loads((Path(__file__).parent / "data" / "ptb_fixture.json").read_text(encoding="utf-8"))
KEYS = FIXTURE["keys"]
JAVA = shutil.which("java") is not None and find_corenlp_jar() is not None
needs_java = pytest.mark.skipif(not JAVA, reason="needs java and pycocoevalcap's CoreNLP jar")


def _flat_references() -> list[str]:
    return [c for k in KEYS for c in FIXTURE["references"][k]]


def test_tokenization_equals_pycocoevalcap_on_every_recorded_caption():
    refs = ptb_tokenize_lines(_flat_references())
    expected = [c for k in KEYS for c in FIXTURE["tokenized_references"][k]]
    assert refs == expected
    preds = ptb_tokenize_lines([FIXTURE["predictions"][k] for k in KEYS])
    assert preds == [FIXTURE["tokenized_predictions"][k] for k in KEYS]
    assert ptb_tokenize_lines(FIXTURE["extra"]) == FIXTURE["tokenized_extra"]
    assert len(refs) + len(preds) + len(FIXTURE["extra"]) >= 100


def test_medical_punctuation_is_tokenized_as_coco_does():
    one = dict(zip(_flat_references(), [c for k in KEYS for c in FIXTURE["tokenized_references"][k]]))
    assert one["A 3.5-cm mass (arrow) in the left frontal lobe."] == "a 3.5-cm mass -lrb- arrow -rrb- in the left frontal lobe"
    assert one["Fig. 2: PET/CT with SUVmax=4.2 in the right lung."] == "fig. 2 pet/ct with suvmax = 4.2 in the right lung"
    assert tokenize("Lesion at 3 o'clock, e.g., ratio 1:2 [inset].") == [
        "lesion", "at", "3", "o'clock", "e.g.", "ratio", "1:2", "-lsb-", "inset", "-rsb-"]


def test_scores_equal_pycocoevalcap_full_pipeline():
    refs = {k: FIXTURE["references"][k] for k in KEYS}
    preds = {k: FIXTURE["predictions"][k] for k in KEYS}
    scores = caption_scores(preds, refs)
    for name, value in FIXTURE["scores"].items():
        assert scores[name] == pytest.approx(value, abs=1e-9), name
    assert scores["n"] == len(KEYS)


def test_the_next_caption_decides_a_final_abbreviation_as_in_java():
    """Captions are lexed as one newline-joined text: "etc." before a capital is also a sentence end."""
    assert ptb_tokenize_lines(["the etc.", "A b"]) == ["the etc.", "a b"]
    assert ptb_tokens("the etc.\nA b")[:3] == ["the", "etc.", "."]
    assert ptb_tokens("the etc.\na b")[:3] == ["the", "etc.", "*NL*"]


def test_unknown_tokenizer_is_refused():
    with pytest.raises(ValueError, match="python' or 'java"):
        coco_tokenize(["a"], tokenizer="perl")


def _random_captions(seed: int, n: int) -> list[str]:
    pieces = (["a", "The", "U.S.", "etc.", "e.g.", "Fig.", "No.", "Dr.", "I.", "3.5-cm", "1:2", "1,000", "1 1/2", "½",
               "$", "€", "(", ")", "[", "]", "{", "}", "<b>", '"', "'", "‘", "’", "“", "”", "...", "…", "--", "—",
               "–", "*", "/", "=", "?!", ",", ";", ":", "don't", "cannot", "gonna", "'tis", "o'clock", "patient's",
               "x-ray", "T2-weighted", "C5–C6", "PET/CT", "SUVmax=4.2", "p<0.05", "×400", "µm", "±", "≥", "²",
               "α", "МРТ", "🧠", "www.x.org", "a@b.com", "http://x.org/a?b=1", "C++", "H&E", "AT&T", "(555) 123-4567",
               ":)", "Ph.D.", "Calif.", "co.", "soft\u00adhyphen", "nb\u00a0sp", "&amp;", "&quot;"])
    rng = random.Random(seed)
    seps = [" "] * 8 + ["", "\u00a0", "  "]
    return ["".join(rng.choice(pieces) + rng.choice(seps) for _ in range(rng.randint(1, 12))).strip(" ")
            for _ in range(n)]


@needs_java
def test_python_tokenizer_equals_the_java_one_on_random_captions():
    captions = _random_captions(0, 400)
    assert ptb_tokenize_lines(captions) == java_tokenize_lines(captions)


@needs_java
def test_java_option_gives_the_recorded_scores():
    refs = {k: FIXTURE["references"][k] for k in KEYS}
    preds = {k: FIXTURE["predictions"][k] for k in KEYS}
    scores = caption_scores(preds, refs, tokenizer="java")
    for name, value in FIXTURE["scores"].items():
        assert scores[name] == pytest.approx(value, abs=1e-9), name


def test_java_option_names_what_is_missing(tmp_path):
    with pytest.raises(RuntimeError, match="jar was not found"):
        java_tokenize_lines(["a"], jar=tmp_path / "absent.jar")
