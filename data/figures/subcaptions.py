"""Splitting a figure caption into sub-captions, one per panel label or group of labels.

Markers are found in three forms: parenthesised letter lists (``(A)``, ``(a, b)``, ``(A and B)``,
``(A-C)``), bare letters at the start of a sentence (``A, ...``, ``A: ...``, ``A. ...``, Nature's
``a Linear ...`` and ``b, c The ...``) and position words (``Left: ...``, ``Top row: ...``). A marker
either opens the text that follows it (prefix style) or closes the text before it (``... lesion (A)``,
suffix style); the first marker decides. Text before the first sub-caption is the shared context.

Letter markers must start at A and bring new letters (a letter seen before is a back reference); a
group may come out of alphabetical order (``Axial (A, C) and coronal (B, D)``). Words that only look
like markers are skipped: the article in ``A 45-year-old man. A Axial CT ...`` (the panel "A" is the
last one before "B"), a lone letter defining an abbreviation (``riluzole (R)``) and symbol keys
(``n, nucleus``). Closing sentences that speak for the whole figure (sample sizes, statistics,
significance keys, scale bars, abbreviations) and the rest of a caption whose labels all sit in one
sentence go to the shared context too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from data.captions import normalize_space, strip_html

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
# Words that join a labelled phrase to the next one; they belong to neither.
_CONNECTIVES = {"and", "or", "but", "while", "whereas", "with", "versus", "vs", "compared"}
_LINK = r"(?:and|or|but|while|whereas|with|versus|vs\.?|compared\s+(?:with|to)|as\s+well\s+as)"
_LEAD_LINK = re.compile(rf"^{_LINK}(?=[\s,;:]|$)[\s,;:]*", re.I)
_TRAIL_LINK = re.compile(rf"(?:^|[\s,;:]+){_LINK}$", re.I)
_EDGE = " ,;:\u2013\u2014"
# A sentence ends at . ! ? before a space and a non-lower-case start (or "n = 8"), or right before a
# significance star ("ANOVA.*, p < 0.05").
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])(?:\s+(?=[^a-z\s]|n\s*=)|(?=[*#\u2020\u2021]))")
_WIDE_START = re.compile(
    r"(?:n\s*=\s*\d|[*#\u2020\u2021]+\s*,?\s*p\s*[<>=\u2264\u2265]|p\s*[<>=\u2264\u2265]\s*0?\.\d"
    r"|(?:results|data|values)\s+(?:are|were)\b|error\s+bars|scale\s+bars?\b|abbreviations?\b"
    r"|statistic)", re.I)
_WIDE_ANYWHERE = re.compile(r"\banova\b|\bt[- ]test|mann[-\u2013 ]whitney|wilcoxon|\bmean\s*(?:\u00b1|\+/-)", re.I)
_ABBREVIATION_KEY = re.compile(r"[A-Z][\w+/-]*[A-Z][\w+/-]*,\s+[a-z]")  # "CT, computed tomography"
_LONE_SCALE_BAR = re.compile(r"scale\s+bar\b", re.I)
_POS_NORMAL = {"upper": "TOP", "lower": "BOTTOM", "centre": "MIDDLE", "center": "MIDDLE"}


@dataclass
class SubCaption:
    """Text describing the panels in ``labels`` (upper-case letters or position words).

    ``labels`` is empty for a caption that names no panels. ``context`` is the caption's shared text:
    the lead before the first label, any text after the last suffix-style label, closing sentences
    about the whole figure (statistics, scale bars...) and sentence frames shared by several labels.
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
    """Drop bare capitals that are probably words ("A CT scan ..."): keep them only in an A, B, ... run.

    Of two bare candidates in a row with the same letter the first is the article ("A 45-year-old
    man. A Axial CT ..."): the panel marker is the last one before the next letter.
    """
    bare = [m for m in markers if m.kind == "bare"]
    letters = {lab for m in bare for lab in m.labels}
    repeated = {id(a) for a, b in zip(bare, bare[1:]) if a.labels == b.labels}
    keep = []
    for m in markers:
        if m.kind == "bare":
            token = text[m.start:m.end]
            delimited = bool(re.search(r"[,:.)]\s*$", token)) or token[0].islower()
            if id(m) in repeated or (not delimited and not ({"A", "B"} <= letters)):
                continue
        keep.append(m)
    return keep


def _symbol_key_form(m: _Marker, text: str) -> bool:
    """``n, nucleus``: a bare letter, a comma and a lower-case word, as in keys to symbols in an image."""
    after = text[m.end:].lstrip()
    return m.kind == "bare" and text[m.start:m.end].rstrip().endswith(",") and after[:1].islower()


def _defines_abbreviation(m: _Marker, text: str) -> bool:
    """``riluzole (R)``: one parenthesised letter right after a word starting with that letter."""
    if not m.paren or m.kind != "paren" or len(m.labels) != 1:
        return False
    word = re.search(r"([A-Za-z][\w-]*)\W*$", text[:m.start])
    return bool(word) and len(word.group(1)) > 1 and word.group(1)[0].upper() == m.labels[0]


def _label_sequence(markers: list[_Marker], text: str) -> list[_Marker]:
    """Keep the letter markers that make up the panel letters, and every position marker.

    Letters start at A; a marker whose letters were all unseen is kept even out of alphabetical order
    (``(A, C) ... (B, D)``), one repeating a letter is a back reference. A marker that skips ahead of
    the next letter is not kept when it looks like an abbreviation or a symbol key; a symbol-key form
    is kept only where the caption's letters already use bare markers.
    """
    out: list[_Marker] = []
    seen: set[str] = set()
    last_kind = ""
    for m in markers:
        if m.kind == "position":
            out.append(m)
            continue
        if (not seen and m.labels[0] != "A") or seen & set(m.labels):
            continue
        successor = m.labels[0] == (chr(ord(max(seen)) + 1) if seen else "A")
        if not successor and _defines_abbreviation(m, text):
            continue
        if _symbol_key_form(m, text) and not (successor and last_kind in ("", "bare")):
            continue
        out.append(m)
        seen |= set(m.labels)
        last_kind = m.kind
    return out


def _is_prefix(m: _Marker, text: str) -> bool:
    """Does the marker open the text after it?"""
    if not m.paren:
        return True
    before = text[:m.start].rstrip()
    if not before or before[-1] in ".;:":
        return True
    after = text[m.end:].lstrip(" :\u2013\u2014")
    word = re.match(r"[A-Za-z0-9][\w-]*", after)
    return bool(word) and word.group(0).lower() not in _CONNECTIVES


def _clean(segment: str, letters: set[str]) -> str:
    """Remove panel markers, dangling joiners and punctuation from a piece of caption.

    Parenthesised letters are removed only when they are panel letters of the caption (``letters``):
    other ones, such as an abbreviation's ``(R)``, are part of the text.
    """
    def drop(m: re.Match) -> str:
        labels = expand_labels(m.group(1))
        return " " if labels and set(labels) <= letters else m.group(0)

    segment = _PAREN.sub(drop, segment)
    segment = _POS_PAREN.sub(" ", segment)
    segment = re.sub(r"\s+([,.;:])", r"\1", normalize_space(segment))
    segment = segment.strip(_EDGE)
    if not re.search(r"\w", segment):
        return ""
    while True:
        stripped = _TRAIL_LINK.sub("", _LEAD_LINK.sub("", segment)).strip(_EDGE)
        if stripped == segment:
            return segment
        segment = stripped


def _sentence_start(text: str, pos: int, floor: int) -> int:
    """Start of the sentence holding ``pos``, but not before ``floor``."""
    starts = [floor + m.end() for m in re.finditer(r"[.;!?]\s", text[floor:pos])]
    return starts[-1] if starts else floor


def _opens_sentence(text: str, pos: int) -> bool:
    """Is ``pos`` at the start of the caption or right after a sentence or clause end?"""
    before = text[:pos].rstrip()
    return not before or before[-1] in ".;:!?"


def _sentence_starts(text: str, start: int, end: int) -> list[int]:
    """Where sentences begin inside ``text[start:end]`` (``start`` itself not included)."""
    return [start + m.end() for m in _SENTENCE_BREAK.finditer(text[start:end]) if start + m.end() < end]


def _figure_wide(sentence: str) -> bool:
    """Is this sentence about the whole figure (statistics, sample sizes, scale bars, abbreviations)?"""
    return bool(_WIDE_START.match(sentence) or _WIDE_ANYWHERE.search(sentence)
                or _ABBREVIATION_KEY.match(sentence))


def _tail_start(text: str, start: int, end: int) -> int:
    """Start of the closing run of figure-wide sentences in ``text[start:end]`` (``end`` if none).

    The first sentence always stays, and a lone "Scale bar, 5 nm." stays with the panel it follows.
    """
    starts = _sentence_starts(text, start, end)
    cut = end
    for s in reversed(starts):
        if not _figure_wide(text[s:cut]):
            break
        cut = s
    if cut < end and all(_LONE_SCALE_BAR.match(text[s:]) for s in starts if s >= cut):
        return end
    return cut


def _frame_start(text: str, start: int, marker: int) -> int:
    """End of the sub-caption in ``text[start:marker]`` when the next marker sits inside a sentence.

    The words from that sentence's start up to the marker are a frame shared by later panels
    ("... solution. Sizes of (c) ...") rather than part of the text before them.
    """
    if _opens_sentence(text, marker):
        return marker
    starts = _sentence_starts(text, start, marker)
    return starts[-1] if starts else marker


def _one_sentence(text: str, markers: list[_Marker]) -> bool:
    """Do all markers sit in one sentence (``... for (A) 24 hours and (B) 48 hours.``)?"""
    # + 1: a sentence starting right at the last marker counts.
    return len(markers) > 1 and not _sentence_starts(text, markers[0].start, markers[-1].start + 1)


def split_caption(caption: str) -> list[SubCaption]:
    """Sub-captions of a figure caption (see the module docstring for the syntaxes handled).

    Captions of the pipeline's records are clean text already; markup is still removed here because
    the function also serves raw JATS captions (the gold sets, callers outside the pipeline).
    """
    text = _FIG_PREFIX.sub("", strip_html(caption), count=1).strip()
    markers = _label_sequence(_plausible_bare(_find_markers(text), text), text)
    if not markers:
        return [SubCaption([], normalize_space(text))]
    letters = {lab for m in markers for lab in m.labels}
    if _is_prefix(markers[0], text):
        return _split_prefix(text, [m for m in markers if _is_prefix(m, text) or not m.paren], letters)
    return _split_suffix(text, [m for m in markers if m.paren], letters)


def _split_prefix(text: str, markers: list[_Marker], letters: set[str]) -> list[SubCaption]:
    """Each marker opens the text up to the next marker.

    Shared text besides the lead: a sentence frame before a marker inside a sentence (``... nodes.
    Sizes of (c) the ...``: "Sizes of" belongs to no single panel) and the closing figure-wide text.
    """
    shared = [text[:markers[0].start]]
    spans = []
    for m, nxt in zip(markers, markers[1:]):
        cut = _frame_start(text, m.end, nxt.start)
        shared.append(text[cut:nxt.start])
        spans.append((m.end, cut))
    start, end = markers[-1].end, len(text)
    cut = end
    if len(markers) > 1:  # a single marker covers all panels: nothing is shared after it
        breaks = _sentence_starts(text, start, end)
        cut = breaks[0] if breaks and _one_sentence(text, markers) else _tail_start(text, start, end)
    shared.append(text[cut:end])
    spans.append((start, cut))
    context = " ".join(p for p in (_clean(s, letters) for s in shared) if p)
    subs = [SubCaption(m.labels, _clean(text[a:b], letters), context) for m, (a, b) in zip(markers, spans)]
    return _merge_empty(subs)


def _split_suffix(text: str, markers: list[_Marker], letters: set[str]) -> list[SubCaption]:
    subs, pos = [], 0
    first_start = None
    for m in markers:
        start = _sentence_start(text, m.start, pos)
        if first_start is None:
            first_start = start
        subs.append(SubCaption(m.labels, _clean(text[start:m.start], letters)))
        pos = m.end
    context = " ".join(p for p in (_clean(text[:first_start or 0], letters), _clean(text[pos:], letters)) if p)
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
