"""Splitting a figure caption into sub-captions, one per panel label or group of labels.

The markers that name panels are found by ``data.figures.caption_markers``. A marker either opens the
text that follows it (prefix style, ``(A) Axial CT ...``) or closes the text before it (suffix style,
``... lesion (A)``); the first marker decides the caption's style, and a later marker of the other style
is taken as such where its place says so: a parenthesised label that ends a sentence in a prefix caption
(``... was presented as mean ± SEM (N = 30), (D).``), a label opening a sentence in a suffix caption
(``Photograph (A) and X-ray (B) ... (C)— explanatory drawing.``). Text before the first sub-caption is
the shared context.

Closing sentences that speak for the whole figure (sample sizes, statistics, significance keys, scale
bars, abbreviations, credit lines, data availability, sentences about all panels or citing several
panels) and the rest of a caption whose labels all sit in one sentence go to the shared context too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from data.captions import normalize_space, strip_html
from data.figures.caption_markers import Marker, candidates, expand_labels, panel_markers

_FIG_PREFIX = re.compile(r"^\s*(?:fig(?:ure)?\.?\s*\d+[A-Za-z]?\s*[.:|-]?\s*)", re.I)
# Words that join a labelled phrase to the next one; they belong to neither.
_CONNECTIVES = {"and", "or", "but", "while", "whereas", "with", "versus", "vs", "compared"}
_LINK = r"(?:and|or|but|while|whereas|with|versus|vs\.?|compared\s+(?:with|to)|as\s+well\s+as)"
_LEAD_LINK = re.compile(rf"^{_LINK}(?=[\s,;:]|$)[\s,;:]*", re.I)
_TRAIL_LINK = re.compile(rf"(?:^|[\s,;:]+){_LINK}$", re.I)
_EDGE = " ,;:\u2013\u2014"
_LIST_JOINER = re.compile(r"\b(?:and|or)$")
# A word before a marker that makes the marker part of a sentence: "Comparison of binding by C) CL-K1".
_FRAME_WORD = re.compile(r"\b(?:by|of|for|from|in|with|between|to|on|at|and|or)$")
# A sentence ends at . ! ? before a space and a non-lower-case start (or "n = 8"), or right before a
# significance star ("ANOVA.*, p < 0.05").
# A lower-case start counts when it is a panel letter: "... vesicle. b) Two ...", "... curves. b The ...".
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])(?:\s+(?=[^a-z\s]|n\s*=|[a-z](?:[.)]\s|,?\s+[A-Z]))|(?=[*#\u2020\u2021]))")
_WIDE_START = re.compile(
    r"\[?(?:n\s*=\s*\d|[*#\u2020\u2021]+\s*,?\s*p\s*[<>=\u2264\u2265]|p\s*[<>=\u2264\u2265]\s*0?\.\d"
    r"|(?:results|data|values)\s+(?:are|were)\b|(?:the\s+)?error\s+bars|scale\s+bars?\b|bars?\s*[:=]\s|abbreviations?\b"
    r"|statistic|all\s+(?:data|experiments|panels|images|are|results|values)\b|see\s+(?:the\s+)?text\b"
    r"|(?:reprinted|reproduced|adapted)\s+(?:with|from)\b|(?:figure\s+)?created\s+(?:in|with)\b|illustration\s+by\b"
    r"|photos?\s+(?:are\s+)?courtesy|this\s+figure\s+(?:was\s+)?originally|data\s+used\s+in\s+the\s+generation"
    r"|(?:the\s+)?(?:source\s+)?data\s+(?:are|is)\s+available|\(?(?:the\s+|an?\s+)?(?:online|colou?r)\s+(?:version|figure)\b)", re.I)
_WIDE_ANYWHERE = re.compile(
    r"\banova\b|\bt[- ]test|mann[-\u2013 ]whitney|wilcoxon|log[- ]rank|kruskal|fisher'?s\s+exact|chi[- ]squared?\s+test"
    r"|\bmean\s*(?:\u00b1|\+/-)|copyright\b|\u00a9|\bin\s+all\s+(?:cases|panels|experiments)\b"
    r"|\ball\s+(?:panels|images|plots|graphs)\b|\bthis\s+figure\b|\bn\s*=\s*\d[^.]*\bn\s*=\s*\d"
    r"|\brepresentative\s+of\s+(?:at\s+least\s+)?\w+\s+(?:independent\s+|separate\s+)?(?:experiments|replicates)", re.I)
# Panel letters cited in a sentence: "(A) and (C)", "(A/B)", "in D and E", "in F, G".
_CITED = re.compile(r"\(([A-Za-z](?:\s*(?:[/,\u2013-]|and|&)\s*[A-Za-z])*)\)|\bin\s+([A-Z](?:\s*(?:,|and|&)\s*[A-Z])+)\b")
# "CT, computed tomography", "EdU, 5-ethynyl...", "AQ: amodiaquine", "GM = gray matter"
_ABBREVIATION_KEY = re.compile(
    r"[A-Z][\w+/-]*[A-Z][\w+/-]*(?:,\s+[a-z0-9]|:\s+[a-z]|\s*=\s*[a-z]|[,:]\s+[^;.]+;\s+[A-Z][\w+/-]*[,:]\s)")
_LONE_SCALE_BAR = re.compile(r"scale\s+bar\b", re.I)
# The verb that follows the last of several labelled phrases in one sentence: "for (a) X and (b) Y are shown".
_SHARED_PREDICATE = re.compile(r"\s(?:are|is|were|was)\s")


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


def _is_prefix(m: Marker, text: str) -> bool:
    """Does the marker open the text after it?"""
    if not m.paren:
        return True
    before = text[:m.start].rstrip()
    if not before or before[-1] in ".;:":
        return True
    after = text[m.end:].lstrip(" :\u2013\u2014")
    word = re.match(r"[A-Za-z0-9][\w-]*|[+\u2212-]/[+\u2212-]", after)  # a word or a genotype ("+/+ mice")
    if word and _LIST_JOINER.search(before) and word.group(0).lower() not in ("and", "or"):
        return True  # "..., (b) fast pacing and (c) with combined data": a joiner introduces the label
    return bool(word) and word.group(0).lower() not in _CONNECTIVES and not _LEAD_LINK.match(after)


def _clean(segment: str) -> str:
    """Remove dangling joiners and punctuation from the edges of a piece of caption.

    The markers that delimit sub-captions lie outside the pieces; panel letters cited inside a piece
    (``before (A) and after (B)``, ``Scale bars: 1 mm (A)``) and position words (``from 0 (left) to 2
    (right)``) are part of its text and stay.
    """
    segment = re.sub(r"\s+([,.;:])(?!\d)", r"\1", normalize_space(segment)).strip(_EDGE)
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
    i = pos - 1
    while i >= 0 and text[i].isspace():
        i -= 1
    return i < 0 or text[i] in ".;:!?"


def _sentence_starts(text: str, start: int, end: int) -> list[int]:
    """Where sentences begin inside ``text[start:end]`` (``start`` itself not included); the words after
    ``end`` are seen, as a break before a panel letter ("... vesicle. b) Two ...") needs them."""
    out = []
    for m in _SENTENCE_BREAK.finditer(text, start):
        if m.end() >= end:
            break
        if text[start:m.end()].strip(" .,;:"):
            out.append(m.end())
    return out


def _figure_wide(sentence: str, letters: set[str], own: set[str] = frozenset()) -> bool:
    """Is this sentence about the whole figure (statistics, sample sizes, scale bars, abbreviations,
    credits, data availability, all panels), or does it cite two or more of the caption's panels
    (``letters``, as printed), not only the sub-caption's own ones (``own``)?"""
    if _WIDE_START.match(sentence) or _WIDE_ANYWHERE.search(sentence) or _ABBREVIATION_KEY.match(sentence):
        return True
    cited = set()
    for m in _CITED.finditer(sentence):
        spec = (m.group(1) or m.group(2)).replace("/", ",")
        cited |= {x.lower() if spec[0].islower() else x for x in (expand_labels(spec) or [])}
    cited &= letters
    return len(cited) >= 2 and bool(cited - own)


def _opening(sentence: str) -> str:
    """The first two words of a sentence, lower case: what parallel per-panel sentences share."""
    return " ".join(re.findall(r"\w+", sentence.lower())[:2])


def _openings(text: str, spans: list[tuple[int, int]]) -> set[str]:
    """The openings of the sentences in the given spans of ``text``."""
    out = set()
    for a, b in spans:
        bounds = [a, *_sentence_starts(text, a, b), b]
        out |= {_opening(text[s:e]) for s, e in zip(bounds, bounds[1:])}
    return out


def _tail_start(text: str, start: int, end: int, letters: set[str], own: set[str] = frozenset(),
                earlier: set[str] = frozenset()) -> int:
    """Start of the closing figure-wide text in ``text[start:end]`` (``end`` if none): the first
    figure-wide sentence after the panel's first one, with everything after it.

    The first sentence always stays, a lone "Scale bar, 5 nm." stays with the panel it follows, and so
    does a sentence that opens like one inside an earlier sub-caption (``earlier``): the caption then
    gives such a sentence to every panel ("Reproduced from ...", "Data were analyzed by ...").
    """
    starts = _sentence_starts(text, start, end)
    bounds = starts + [end]
    cut = next((s for s, e in zip(bounds, bounds[1:])
                if _figure_wide(text[s:e], letters, own) and _opening(text[s:e]) not in earlier), end)
    if cut < end and all(_LONE_SCALE_BAR.match(text[s:]) for s in starts if s >= cut):
        return end
    return cut


def _frame_start(text: str, start: int, nxt: Marker) -> int:
    """End of the sub-caption in ``text[start:nxt.start]`` when the next marker sits inside a sentence.

    The words from that sentence's start up to the marker are a frame shared by later panels
    ("... solution. Sizes of (c) the ...") rather than part of the text before them; a marker followed by a
    capital starts a sentence whose full stop is missing ("... in more detail (C) Dependence of ...").
    """
    capital = text[nxt.end:].lstrip(" :\u2013\u2014")[:1].isupper()
    if _opens_sentence(text, nxt.start) or (capital and not _FRAME_WORD.search(text[:nxt.start].rstrip())):
        return nxt.start
    starts = _sentence_starts(text, start, nxt.start)
    return starts[-1] if starts else nxt.start


def _one_sentence(text: str, markers: list[Marker]) -> bool:
    """Do all markers sit in one sentence (``... for (A) 24 hours and (B) 48 hours.``)?"""
    # + 1: a sentence starting right at the last marker counts.
    return len(markers) > 1 and not _sentence_starts(text, markers[0].start, markers[-1].start + 1)


def _last_end(text: str, markers: list[Marker], letters: set[str], earlier: set[str]) -> int:
    """End of the last prefix sub-caption: before the closing figure-wide text; when all labels sit in
    one sentence, at its end, or at its verb when the sentence opens with a frame shared by the labelled
    phrases (``The average probability for (a) X and (b) Y are shown as ...``)."""
    last, end = markers[-1], len(text)
    if not _one_sentence(text, markers):
        own = {x.lower() if last.lower else x for x in last.labels}
        cut = _tail_start(text, last.end, end, letters, own, earlier)
        # The last sentence may itself list labelled phrases before a shared verb: "The species in (d) the
        # positive mode and (e) the negative mode were evaluated using ...".
        listed = [m for m in markers if _one_sentence(text, [m, last])]
        verb = _shared_verb(text, listed)
        return min(cut, verb) if verb is not None else cut
    breaks = _sentence_starts(text, last.end, end)
    verb = _shared_verb(text, markers)
    return verb if verb is not None else (breaks[0] if breaks else end)


def _shared_verb(text: str, listed: list[Marker]) -> int | None:
    """Where the verb shared by labelled phrases of one sentence starts (``for (a) X and (b) Y are shown``):
    two or more markers inside a sentence (not opening it), no verb between them, one after the last."""
    if len(listed) < 2 or _opens_sentence(text, listed[0].start):
        return None
    if _SHARED_PREDICATE.search(text, listed[0].end, listed[-1].start):
        return None
    breaks = _sentence_starts(text, listed[-1].end, len(text))
    verb = _SHARED_PREDICATE.search(text, listed[-1].end, breaks[0] if breaks else len(text))
    return verb.start() if verb else None


def _closes_sentence(m: Marker, text: str) -> bool:
    """A parenthesised label right before a sentence end: ``... (N = 30), (D). *P < 0.05``."""
    after = text[m.end:].lstrip()
    return m.paren and (not after or after[0] in ".;")


def marker_roles(text: str, cands: list[Marker]) -> tuple[list[Marker], list[str]]:
    """The panel markers among ``cands`` (``caption_markers.candidates(text)``) and whether each opens
    (``prefix``) or closes (``suffix``) its text.

    The first marker sets the caption's style. In a prefix caption a parenthesised label that is not
    prefix-like counts only where no prefix marker names its letter (else it is a reference to a panel
    described elsewhere) and it closes a sentence or carries the run of letters on (:func:`_continues_run`);
    in a suffix caption a label opening a sentence is a prefix marker. The letters are then sequenced again over the markers that count.
    """
    markers = panel_markers(text, cands)
    if not markers:
        return [], []
    if _is_prefix(markers[0], text):
        prefix = [c for c in cands if not c.paren or _is_prefix(c, text)]
        named = {x for c in prefix for x in c.labels}
        keep = [c for c in cands if c in prefix or (not set(c.labels) & named and (
            _closes_sentence(c, text) or _continues_run(c, cands, named)))]
        markers = panel_markers(text, keep)
        return markers, ["prefix" if not m.paren or _is_prefix(m, text) else "suffix" for m in markers]
    keep = [c for c in cands if c.paren or (c.kind == "bare" and _opens_sentence(text, c.start))]
    markers = panel_markers(text, keep)
    return markers, ["prefix" if _opens_sentence(text, m.start) and _is_prefix(m, text) else "suffix"
                     for m in markers]


def _continues_run(c: Marker, cands: list[Marker], named: set[str]) -> bool:
    """Does a letter cited inside a sentence carry the prefix markers' run on, the letter before it named
    by them and the next candidate naming the letter after it (``(D) ... p63high (E) and p63low (F)``)?
    A lone cited letter (``muscular layer (C) and ... layer (L)``) abbreviates a word."""
    first, last = c.labels[0], c.labels[-1]
    if len(first) != 1 or len(last) != 1 or chr(ord(first) - 1) not in named:
        return False
    later = [d for d in cands if d.start > c.start]
    return bool(later) and later[0].labels[0] == chr(ord(last) + 1)


def split_caption(caption: str) -> list[SubCaption]:
    """Sub-captions of a figure caption (see the module docstring for the syntaxes handled).

    Captions of the pipeline's records are clean text already; markup is still removed here because
    the function also serves raw JATS captions (the gold sets, callers outside the pipeline).
    """
    text = _FIG_PREFIX.sub("", strip_html(caption), count=1).strip()
    markers, roles = marker_roles(text, candidates(text))
    if len(markers) == 1 and len(markers[0].labels) == 1 and not _opens_sentence(text, markers[0].start):
        markers = []  # a lone letter inside a sentence refers to a panel; it does not split the caption
    if not markers:
        return [SubCaption([], normalize_space(text))]
    printed = {x.lower() if m.lower else x for m in markers for x in m.labels}
    spans, shared = _spans(text, markers, roles, printed)
    context = " ".join(p for p in (_clean(s) for s in shared) if p)
    subs = [SubCaption(m.labels, _clean(text[a:b]), context) for m, (a, b) in zip(markers, spans)]
    return _merge_empty(subs)


def _spans(text: str, markers: list[Marker], roles: list[str],
           letters: set[str]) -> tuple[list[tuple[int, int]], list[str]]:
    """Each marker's text span and the shared pieces (lead, frames, tail); ``letters`` as printed.

    A suffix marker's text runs from its sentence's start (not before the text already used) to the
    marker. A prefix marker's text runs to the next prefix marker (less a sentence frame shared with it,
    ``... nodes. Sizes of (c) ...``), to the sentence holding the next suffix marker, or, for the last
    one, to the closing figure-wide text; when all labels sit in one sentence, that sentence ends it.
    """
    spans: list[tuple[int, int]] = []
    shared: list[str] = []
    pos = 0
    for i, (m, role) in enumerate(zip(markers, roles)):
        if role == "suffix":
            start = _sentence_start(text, m.start, pos)
            shared.append(text[pos:start])
            spans.append((start, m.start))
            pos = m.end
            continue
        shared.append(text[pos:m.start])
        nxt = markers[i + 1] if i + 1 < len(markers) else None
        if nxt is None:
            cut = len(text)
            if len(markers) > 1:  # a single marker covers all panels: nothing is shared after it
                cut = _last_end(text, markers, letters, _openings(text, spans))
        elif roles[i + 1] == "prefix":
            cut = _frame_start(text, m.end, nxt)
        else:
            cut = _sentence_start(text, nxt.start, m.end)
        spans.append((m.end, cut))
        pos = cut
    shared.append(text[pos:])
    return spans, shared


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
