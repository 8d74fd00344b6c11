"""Caption text: HTML removal, whitespace normalisation, BLIP's ``pre_caption`` and the left/right swap."""
from __future__ import annotations

import html
import re

# A real tag starts with a letter (or "/" and a letter) right after "<": "p < 0.05" is not a tag.
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)(\s[^<>]{0,300})?/?>")
# Inline markup disappears without a trace ("MRI</b>." stays "MRI."); other tags separate words.
_INLINE = {"b", "i", "u", "em", "strong", "sup", "sub", "span", "a", "font", "small", "big", "tt", "sc",
           "italic", "bold", "mark", "abbr", "code"}
_BLIP_PUNCT = re.compile(r"[.!\"()*#:;~]")
_SPACES = re.compile(r"\s{2,}")


def _drop_tag(m: re.Match) -> str:
    return "" if m.group(2).lower() in _INLINE else " "


def strip_html(text: str) -> str:
    """Remove HTML/XML tags, decode entities and normalise Unicode spaces.

    Open-i wraps query terms in ``<b>`` tags and JATS captions carry inline markup; both must go
    before tokenization. Entities are decoded after the tags are gone, so escaped comparisons such as
    ``p &lt; 0.05`` survive as text. Unicode space variants become plain spaces and runs collapse.
    """
    return normalize_space(html.unescape(_TAG.sub(_drop_tag, text)))


def normalize_space(text: str) -> str:
    """Collapse every kind of whitespace (no-break, thin, tabs, newlines, zero-width) to single spaces.

    For text that is already plain (decoded XML, split captions); HTML goes through :func:`strip_html`.
    """
    # str.split() knows every Unicode space but not the zero-width space, which PMC puts in long words.
    return " ".join(text.replace("\u200b", " ").split())


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


def laterality_negative(caption: str) -> str | None:
    """The caption with *left* and *right* swapped, when every side word in it names the same side.

    A caption naming both sides ("left frontal mass with shift to the right", "lesions in the left and
    right thalami") is left alone (None): swapping could describe the same image, which would make a
    false negative. None also when the caption names no side.
    """
    sides = {m.group(0).lower() for m in _SIDES.finditer(caption)}
    return swap_left_right(caption) if len(sides) == 1 else None
