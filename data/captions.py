"""Caption cleaning: HTML removal and BLIP's ``pre_caption``."""
from __future__ import annotations

import html
import re
import unicodedata

_TAG = re.compile(r"<[^>]{0,200}>")
_BLIP_PUNCT = re.compile(r"[.!\"()*#:;~]")
_SPACES = re.compile(r"\s{2,}")


def strip_html(text: str) -> str:
    """Remove HTML/XML tags, decode entities and normalise Unicode spaces.

    Open-i wraps query terms in ``<b>`` tags and JATS captions carry inline markup; both must go
    before tokenization. Unicode space variants (no-break, thin, ...) become plain spaces and runs of
    whitespace collapse to one.
    """
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    # A second pass: entities such as "&lt;b&gt;" decode into tags.
    text = _TAG.sub(" ", text)
    text = "".join(" " if unicodedata.category(c) == "Zs" or c in "\t\r\n\u200b" else c for c in text)
    return " ".join(text.split())


def pre_caption(caption: str, max_words: int = 30) -> str:
    """BLIP's caption normalisation (lower case, some punctuation to spaces, word cap), after HTML removal."""
    caption = strip_html(caption).lower()
    caption = _BLIP_PUNCT.sub(" ", caption)
    caption = _SPACES.sub(" ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption


_SIDES = re.compile(r"\b(left|right)(?=\b|ward|-)", re.IGNORECASE)


def swap_left_right(caption: str) -> str:
    """Swap the words *left* and *right* (keeping their case) for a horizontally flipped image.

    Covers ``left``, ``leftward``, ``left-sided`` and their capitalised forms. Flipping an image
    without this would teach the model that a lesion on one side is described by the other side.
    """
    def swap(m: re.Match) -> str:
        word = m.group(0)
        other = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return other.upper()
        return other.capitalize() if word[0].isupper() else other

    return _SIDES.sub(swap, caption)
