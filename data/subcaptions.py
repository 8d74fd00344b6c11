"""Splitting a figure caption into sub-captions, one per panel label or group of labels.

Markers are found in three forms: parenthesised letter lists (``(A)``, ``(a, b)``, ``(A and B)``,
``(A-C)``), bare letters at the start of a sentence (``A, ...``, ``A: ...``, ``A. ...``, Nature's
``a Linear ...`` and ``b, c The ...``) and position words (``Left: ...``, ``Top row: ...``). A marker
either opens the text that follows it (prefix style) or closes the text before it (``... lesion (A)``,
suffix style); the first marker decides. Text before the first sub-caption is the shared context.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .captions import strip_html

_DASH = r"[-\u2010-\u2015\u2212]"
_ITEM = rf"[A-Za-z](?:\s*{_DASH}\s*[A-Za-z])?"
_LIST = rf"{_ITEM}(?:\s*(?:,|and|&)\s*{_ITEM})*"
_PAREN = re.compile(rf"\(\s*({_LIST})\s*\)")
_POS_WORD = r"(?:left|right|top|bottom|upper|lower|middle|center|centre)"
_POSITION = rf"{_POS_WORD}(?:\s+{_POS_WORD})?(?:\s+(?:row|column|panel|panels|image|images))?"
_POS_PAREN = re.compile(rf"\(\s*({_POSITION}(?:\s*(?:,|and)\s*{_POSITION})*)\s*\)", re.I)
_BOUNDARY = r"(?:^|(?<=[.;!?]\s)|(?<=[.;!?]\)\s))"
_BARE = re.compile(rf"{_BOUNDARY}({_LIST})(?=(?:[,:.)]\s)|(?:\s+[A-Z0-9]))")
_BARE_COMMA = re.compile(rf"(?<=,\s)({_LIST})(?=:\s)")
_POS_BARE = re.compile(rf"{_BOUNDARY}({_POSITION}(?:\s*(?:,|and)\s*{_POSITION})*)\s*(?=:)", re.I)
_FIG_PREFIX = re.compile(r"^\s*(?:fig(?:ure)?\.?\s*\d+[A-Za-z]?\s*[.:|-]?\s*)", re.I)
_CONNECTIVES = {"and", "or", "while", "whereas", "with"}
_POS_NORMAL = {"upper": "TOP", "lower": "BOTTOM", "centre": "MIDDLE", "center": "MIDDLE"}


@dataclass
class SubCaption:
    """Text describing the panels in ``labels`` (upper-case letters or position words).

    ``labels`` is empty for a caption that names no panels. ``context`` is the caption's shared text
    (the lead before the first label, and any text after the last suffix-style label).
    """

    labels: list[str]
    text: str
    context: str = field(default="", compare=False)

    def with_context(self) -> str:
        """The sub-caption with the shared context in front, for training on self-contained text."""
        return f"{self.context} {self.text}".strip() if self.context else self.text


@dataclass
class _Marker:
    start: int
    end: int
    labels: list[str]
    kind: str  # "paren", "bare" or "position"
    paren: bool = False


def expand_labels(spec: str) -> list[str] | None:
    """``"A-C, E"`` -> ``["A", "B", "C", "E"]``; None if the letters mix case or a range runs backwards."""
    letters = re.findall(r"[A-Za-z]", re.sub(r"\band\b", " ", spec))
    if len({c.isupper() for c in letters}) > 1:
        return None
    out: list[str] = []
    for item in re.split(r"\s*(?:,|and|&)\s*", spec.strip()):
        ends = re.split(rf"\s*{_DASH}\s*", item.strip())
        if len(ends) == 1 and len(ends[0]) == 1:
            out.append(ends[0].upper())
        elif len(ends) == 2 and len(ends[0]) == len(ends[1]) == 1:
            a, b = ord(ends[0].upper()), ord(ends[1].upper())
            if not 0 < b - a <= 12:
                return None
            out.extend(chr(c) for c in range(a, b + 1))
        else:
            return None
    return out


def _position_labels(spec: str) -> list[str]:
    labels = []
    for part in re.split(r"\s*(?:,|and)\s*", spec.strip()):
        words = [w.lower() for w in part.split() if w.lower() not in {"row", "column", "panel", "panels", "image", "images"}]
        labels.append(" ".join(_POS_NORMAL.get(w, w.upper()) for w in words))
    return labels


def _find_markers(text: str) -> list[_Marker]:
    markers: list[_Marker] = []
    for m in _PAREN.finditer(text):
        labels = expand_labels(m.group(1))
        if labels:
            markers.append(_Marker(m.start(), m.end(), labels, "paren", True))
    for m in _POS_PAREN.finditer(text):
        markers.append(_Marker(m.start(), m.end(), _position_labels(m.group(1)), "position", True))
    for m in list(_BARE.finditer(text)) + list(_BARE_COMMA.finditer(text)):
        labels = expand_labels(m.group(1))
        if labels and not _inside_any(m.start(), markers):
            end = m.end()
            while end < len(text) and text[end] in ",:.)":
                end += 1
            markers.append(_Marker(m.start(), end, labels, "bare"))
    for m in _POS_BARE.finditer(text):
        end = m.end() + 1  # past the colon
        markers.append(_Marker(m.start(), end, _position_labels(m.group(1)), "position"))
    return sorted(markers, key=lambda k: k.start)


def _inside_any(pos: int, markers: list[_Marker]) -> bool:
    return any(m.start <= pos < m.end for m in markers)


def _plausible_bare(markers: list[_Marker], text: str) -> list[_Marker]:
    """Drop bare capitals that are probably words ("A CT scan ..."): keep them only in an A, B, ... run."""
    bare = [m for m in markers if m.kind == "bare"]
    letters = {lab for m in bare for lab in m.labels}
    keep = []
    for m in markers:
        if m.kind == "bare":
            token = text[m.start:m.end]
            delimited = bool(re.search(r"[,:.)]\s*$", token)) or token[0].islower()
            if not delimited and not ({"A", "B"} <= letters):
                continue
        keep.append(m)
    return keep


def _in_order(markers: list[_Marker]) -> list[_Marker]:
    """Keep letter markers whose letters come after every earlier one (back references are not splits)."""
    out, last = [], ""
    for m in markers:
        if m.kind == "position":
            out.append(m)
        elif m.labels[0] > last:
            out.append(m)
            last = max(m.labels)
    return out


def _is_prefix(m: _Marker, text: str) -> bool:
    """Does the marker open the text after it?"""
    if not m.paren:
        return True
    before = text[:m.start].rstrip()
    if not before or before[-1] in ".;:":
        return True
    after = text[m.end:].lstrip()
    word = re.match(r"[A-Za-z][\w-]*", after)
    return bool(word) and word.group(0).lower() not in _CONNECTIVES


def _clean(segment: str) -> str:
    """Remove label markers and dangling joiners and punctuation from a piece of caption."""
    segment = _PAREN.sub(lambda m: " " if expand_labels(m.group(1)) else m.group(0), segment)
    segment = _POS_PAREN.sub(" ", segment)
    segment = re.sub(r"\s+([,.;:])", r"\1", " ".join(segment.split()))
    segment = segment.strip(" ,;:")
    if not re.search(r"\w", segment):
        return ""
    while True:
        words = segment.split()
        if words and words[0].lower() in _CONNECTIVES:
            segment = " ".join(words[1:]).lstrip(" ,;:")
        elif words and words[-1].lower().strip(",;") in _CONNECTIVES:
            segment = " ".join(words[:-1]).rstrip(" ,;:")
        else:
            return segment.strip()


def _sentence_start(text: str, pos: int, floor: int) -> int:
    """Start of the sentence holding ``pos``, but not before ``floor``."""
    starts = [floor + m.end() for m in re.finditer(r"[.;!?]\s", text[floor:pos])]
    return starts[-1] if starts else floor


def split_caption(caption: str) -> list[SubCaption]:
    """Sub-captions of a figure caption (see the module docstring for the syntaxes handled)."""
    text = _FIG_PREFIX.sub("", strip_html(caption), count=1).strip()
    markers = _in_order(_plausible_bare(_find_markers(text), text))
    if not markers:
        return [SubCaption([], _clean(text) or text)]
    if _is_prefix(markers[0], text):
        return _split_prefix(text, [m for m in markers if _is_prefix(m, text) or not m.paren])
    return _split_suffix(text, [m for m in markers if m.paren])


def _split_prefix(text: str, markers: list[_Marker]) -> list[SubCaption]:
    context = _clean(text[:markers[0].start])
    subs = []
    for i, m in enumerate(markers):
        end = markers[i + 1].start if i + 1 < len(markers) else len(text)
        subs.append(SubCaption(m.labels, _clean(text[m.end:end]), context))
    return _merge_empty(subs)


def _split_suffix(text: str, markers: list[_Marker]) -> list[SubCaption]:
    subs, pos = [], 0
    first_start = None
    for m in markers:
        start = _sentence_start(text, m.start, pos)
        if first_start is None:
            first_start = start
        subs.append(SubCaption(m.labels, _clean(text[start:m.start])))
        pos = m.end
    context = " ".join(p for p in (_clean(text[:first_start or 0]), _clean(text[pos:])) if p)
    for s in subs:
        s.context = context
    return _merge_empty(subs)


def _merge_empty(subs: list[SubCaption]) -> list[SubCaption]:
    """``(A) and (B) ...`` gives an empty text for A: A then shares B's text."""
    out: list[SubCaption] = []
    pending: list[str] = []
    for s in subs:
        if not s.text:
            pending.extend(s.labels)
            continue
        out.append(SubCaption(pending + s.labels, s.text, s.context))
        pending = []
    if pending and out:
        out[-1].labels.extend(pending)
    elif pending:
        out.append(SubCaption(pending, "", subs[0].context))
    return out
