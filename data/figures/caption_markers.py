"""Panel markers in a figure caption: the places where a caption names its panels, and which of the candidate
markers are panel labels. ``data.figures.subcaptions`` cuts the caption at the markers kept here.

Candidates:

- parenthesised letter lists ``(A)``, ``(a, b)``, ``(A and B)``, ``(A-C)``, a range of two markers
  ``(a)–(d)``, a letter with a note ``(a; ×200)`` and a letter with its sub-panel ``(A.a)``;
- bare letters: at the start of a sentence (``A, ...``, ``A: ...``, ``A. ...``, Nature's ``a Linear ...``),
  after a comma, semicolon or "and" when a delimiter follows (``..., B: ...``, ``; and D, slice``), in a
  run after colons, semicolons or commas with a full stop or a dash (``: A. head ...; B. wing``), before
  a closing parenthesis (``a) ...``, ``;c)``, ``and d)``), a first ``A`` after a title without a full stop
  when a ``B`` of the same form follows (a lower-case ``a`` before a capitalised word when ``, b`` and
  ``, c`` follow), and "In panel A, ..." at the start of a sentence;
- position words (``Left: ...``, ``Top row: ...``, ``(left)``, ``Left, ...`` after a title without a full
  stop, ``At the left ...; on the right, ...`` opening clauses).

Kept: letter markers that start at A and bring new letters (a group may come out of alphabetical order:
``Axial (A, C) and coronal (B, D)``), all of the case of the first one. Dropped: words that only look like
markers (the article in ``A 45-year-old man. A Axial CT``, a letter defining an abbreviation ``riluzole
(R)``, symbol keys ``n, nucleus``, a letter glued to a word ``K(T)P``), position words in a caption with
panel letters (they then say where inside a panel), and a group marker that only heads the individual
markers of its letters (``(A–D) Data from ... (A) Volcano plot ...``). Letters skipped in a run of bare
markers (``a The plot ... Comparison of b the current and c voltage ... d Schematic``) are looked for as
lone letters between their neighbours.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

DASH = r"[-\u2010-\u2015\u2212]"
_PRIME = r"(?:['\u2032\u2019]{1,3})?"  # A', A'': a part of panel A, named with it
_ITEM = rf"[A-Za-z]{_PRIME}(?:\.?\s*{DASH}\s*[A-Za-z]{_PRIME})?"  # "C–D", "C.–D.", "A–I''"
LIST = rf"{_ITEM}(?:\s*(?:,|and|&)\s*{_ITEM})*"
PAREN = re.compile(rf"\(\s*({LIST})\s*\.?\s*\)")  # "(A)", "(a, b)", "(A.)"
# "(a; ×200)", "(A.a)", "(A upper panel)"
_PAREN_NOTE = re.compile(r"\(\s*(?:([A-Za-z])\s*;\s*[^();]{1,40}|([A-Z])\.[a-z]|([A-Za-z])[\s,]+(?:upper|lower|left|right"
                         r"|top|bottom|middle)(?:\s+(?:panel|image|row|column))?)\s*\)")
# (a)–(d), (B)–(C')
_PAREN_RANGE = re.compile(rf"\(\s*([A-Za-z]){_PRIME}\s*\)\s*{DASH}\s*\(\s*([A-Za-z]){_PRIME}\s*\)")
_POS_WORD = r"(?:left|right|top|bottom|upper|lower|middle|center|centre)"
_POSITION = rf"{_POS_WORD}(?:\s+{_POS_WORD})?(?:\s+(?:row|column|panel|panels|image|images))?"
POS_PAREN = re.compile(rf"\(\s*({_POSITION}(?:\s*(?:,|and)\s*{_POSITION})*)\s*\)", re.I)
_BOUNDARY = r"(?:^|(?<=[.;!?]\s)|(?<=[.;!?][)\u201d\u2019]\s))"
# The patterns below match the text before a marker too (a sentence end, a comma...) rather than looking
# back for it: a literal first character lets the regular expression engine skip ahead, several times
# faster. The marker is group "m" where given, else group 1.
_OPEN = r"(?:^|[.;!?][)\u201d\u2019]?\s)"
_BARE = re.compile(rf"{_OPEN}({LIST})(?=(?:[,:.)]\s)|(?:\s+[A-Z0-9]))")
# "1A. Cells were ... 1B. ...": the figure's number before each panel letter, opening a sentence.
_NUMBERED = re.compile(rf"{_OPEN}(\d{{1,2}})([A-Z])(?=[.:]\s)")
_BARE_JOINED = re.compile(rf"(?:[,;]\s|\band\s)({LIST})(?=[:,]\s+[A-Za-z]{{2}})")
# "...: A. head in dorsal view; B. head ...", "..., A − fishing gear; B − boats": a letter after a colon,
# semicolon or comma, then a full stop before a lower-case word, or a dash; it counts only beside the
# letter before or after it in the same form ("E. coli" and "A. thaliana" stand alone).
_BARE_RUN = re.compile(rf"[:;,]\s([A-Za-z])(?:\.\s+(?=[a-z])|\s*{DASH}\s+)")
_CITING = re.compile(r"\b(?:in|of|and|or|see|to|from|with|panels?)\s+$")
_CLOSING = re.compile(rf"(?:^|[\s:;,])({_ITEM})\)(?=\.?\s)")  # "A) ...", "... mobilization A). Breeding"
# "... in six databases A KEGG, B Reactome, C Wikipathways ...": capitals inside a sentence, each before a
# word, the letters after the first after a comma or "and"; they count only as a run A, B, C, ... of at
# least RUN_MIN letters in text order ("Lane A ... Lane B ..." names lanes, not panels).
_INLINE_CAPITAL = re.compile(r"(?:(?P<list>,\s|\band\s)|[a-z]\s)([A-Z])(?=\s+[A-Za-z0-9])")
RUN_MIN = 3
# "... agents A. in a task where ... B. in a three-armed task": also before a lower-case word after a full stop.
_LOOSE_A = re.compile(r"[a-z0-9]\s([Aa])(?=[,.:]\s+[A-Z]|\.\s+[a-z])")
# "Pathway and network analysis a Top ten pathways ..., b host ..., c ...": a title printed without its full
# stop, then a lower-case "a" before a capitalised word; it counts only when "b" and "c" follow after commas.
_LOOSE_A_TITLE = re.compile(r"[a-z0-9]\s(a)(?=\s+[A-Z][a-z])")
_LOOSE_LOWER = re.compile(rf"{_OPEN}([a-z])(?=\s+[a-z])")  # "a pH-dependence of ... b Effect of ..."
_LOOSE_AFTER_COMMA = re.compile(r"(?<=,\s)([b-z])(?=\s+\w)")  # "a Schematic of ..., b the mechanism, c ..."
# "... with a the projection of the pixels and b the projection of the particles": no word is followed by
# a determiner, so a lone lower-case letter before one names a panel.
_BEFORE_DETERMINER = re.compile(r"(?<=\s)([a-z])(?=\s+(?:the|an)\s)")
# A panel named with its noun: "... can be seen in image (A).", "In panel (c) ...", "Image (B) shows ...".
_NOUN_AFTER_IN = re.compile(r"\b[Ii]n\s+(?:images?|panels?|insets?)\s+$")
_NOUN_OPENING = re.compile(rf"{_BOUNDARY}(?:Images?|Panels?|Insets?)\s+$")
# A letter cited in a key of marks: "(arrows, b)", "(CA, a, b)".
_KEY = re.compile(rf"\(\s*[A-Za-z][\w-]+(?:\s+[\w-]+)?\s*,\s*({LIST})\s*\)")
_PANEL_PHRASE = re.compile(rf"{_OPEN}(?P<m>(?:In\s+)?[Pp]anels?\s+({LIST})\s*,\s*)(?=[a-z])")
# "Panel A: B6 mice, Panel B: A/J mice.", "Panel A: Bleeding time ... and Panel B: ...": the noun and a colon
# make a marker wherever a clause starts.
_PANEL_COLON = re.compile(rf"(?:{_OPEN}|,\s|\band\s)(?P<m>[Pp]anels?\s+({LIST})\s*:\s*)")
_POS_BARE = re.compile(rf"(?:{_OPEN}|[,;]\s)({_POSITION}(?:\s*(?:,|and)\s*{_POSITION})*)\s*(?=:)", re.I)
# "Left, Glucose ... Right, the cycle": a capitalised position word and a comma opening a sentence, or
# after a title printed without its full stop ("... by inducer exclusion Left, Glucose ...").
# "At the left is depicted ...; in the middle drawing ...; on the right, ...": a position phrase opening a
# sentence or clause (it counts only with another position marker and no panel letters, see panel_markers).
_POS_PHRASE = re.compile(rf"{_OPEN}(?P<m>(?:[Oo]n|[Aa]t|[Ii]n)\s+the\s+({_POSITION})(?:\s+(?:side|drawing|part))?\s*,?)(?=\s)")
_POS_COMMA = re.compile(r"(?:^|\s)((?:Left|Right|Top|Bottom|Upper|Lower|Middle)(?:\s+(?:row|column|panels?|images?))?)(?=,\s)")
_LETTER, _AND = re.compile(r"[A-Za-z]"), re.compile(r"\band\b")
_LIST_SEP, _RANGE_SEP = re.compile(r"\s*(?:,|and|&)\s*"), re.compile(rf"\s*{DASH}\s*")
_POS_NORMAL = {"upper": "TOP", "lower": "BOTTOM", "centre": "MIDDLE", "center": "MIDDLE"}
_SHAPE = {"(": "paren", ")": "closing"}


@dataclass
class Marker:
    """A candidate panel marker: ``text[start:end]`` names ``labels`` (upper-case letters or position words).

    ``kind`` is "paren", "bare" or "position"; ``paren`` says whether it is in parentheses (it may then
    close the text before it); ``loose`` marks a bare "A" that counts only when a "B" of its form follows.
    """

    start: int
    end: int
    labels: list[str]
    kind: str
    paren: bool = False
    loose: bool = False
    lower: bool = False  # the letters are printed in lower case


def expand_labels(spec: str) -> list[str] | None:
    """``"A-C, E"`` -> ``["A", "B", "C", "E"]``; None if the letters mix case or a range runs backwards."""
    labels = _expand(spec)
    return list(labels) if labels is not None else None


@functools.lru_cache(maxsize=4096)
def _expand(spec: str) -> tuple[str, ...] | None:
    letters = _LETTER.findall(_AND.sub(" ", spec))
    if len({c.isupper() for c in letters}) > 1:
        return None
    out: list[str] = []
    for item in _LIST_SEP.split(spec.strip()):
        ends = [end.rstrip(".'\u2032\u2019") for end in _RANGE_SEP.split(item.strip())]  # "C.-D", "A-I''"
        if len(ends) == 1 and len(ends[0]) == 1:
            out.append(ends[0].upper())
        elif len(ends) == 2 and len(ends[0]) == len(ends[1]) == 1:
            a, b = ord(ends[0].upper()), ord(ends[1].upper())
            if not 0 < b - a <= 12:
                return None
            out.extend(chr(c) for c in range(a, b + 1))
        else:
            return None
    return tuple(dict.fromkeys(out))  # "(B and B')": one panel


def position_labels(spec: str) -> list[str]:
    """``"Upper left and right panel"`` -> ``["TOP LEFT", "RIGHT"]``."""
    labels = []
    for part in re.split(r"\s*(?:,|and)\s*", spec.strip()):
        words = [w.lower() for w in part.split() if w.lower() not in {"row", "column", "panel", "panels", "image", "images"}]
        labels.append(" ".join(_POS_NORMAL.get(w, w.upper()) for w in words))
    return labels


def find_markers(text: str) -> list[Marker]:
    """Every candidate marker of ``text``, in text order (see the module docstring)."""
    markers: list[Marker] = []

    def add(start: int, end: int, spec: str, kind: str, paren: bool = False, loose: bool = False) -> None:
        labels = expand_labels(spec)
        if labels and not any(m.start <= start < m.end for m in markers):
            markers.append(Marker(start, end, labels, kind, paren, loose, spec[0].islower()))

    for m in _PAREN_RANGE.finditer(text):
        add(m.start(), m.end(), f"{m.group(1)}-{m.group(2)}", "paren", True)
    for pattern in (PAREN, _PAREN_NOTE, _KEY):
        for m in pattern.finditer(text):
            spec = next(g for g in m.groups() if g)
            # A letter glued to a word ("K(T)P", "ϵm(K) describe") counts only in a run ("markers(A) FIGO ...
            # .(B) LN ..."), like a loose bare letter.
            glued = m.start() > 0 and text[m.start() - 1].isalnum()
            noun = _noun(text, m.start(), m.end()) if pattern is PAREN and not glued else None
            add(noun if noun is not None else m.start(), m.end(), spec, "paren", True, glued)
    for m in POS_PAREN.finditer(text):
        markers.append(Marker(m.start(), m.end(), position_labels(m.group(1)), "position", True))
    for pattern, loose in ((_PANEL_PHRASE, False), (_PANEL_COLON, False), (_BARE, False), (_BARE_JOINED, False),
                           (_CLOSING, False), (_BEFORE_DETERMINER, False), (_LOOSE_A, True), (_LOOSE_A_TITLE, True),
                           (_LOOSE_LOWER, True), (_LOOSE_AFTER_COMMA, True)):
        for m in pattern.finditer(text):
            start = m.start("m") if "m" in pattern.groupindex else m.start(1)
            closes = pattern is _CLOSING or text[m.end(1):m.end(1) + 1] == ")"
            if closes and (text.count("(", 0, start) > text.count(")", 0, start)
                           or text.rfind("(", 0, start) > text.rfind(")", 0, start)):
                continue  # "(arrows, b)", "(P = 0.03 by log-rank test; B)": the parenthesis closes an earlier one
            if (pattern is _CLOSING and text[m.end():m.end() + 1] == "."
                    and _CITING.search(text, max(0, start - 12), start)):
                continue  # "A sample gel is shown in F). E) ...": a citation closing its sentence
            end = m.end()
            while end < len(text) and text[end] in ",:.)":
                end += 1
            add(start, end, m.group(1) if "m" not in pattern.groupindex else m.group(2), "bare", False, loose)
    numbered = list(_NUMBERED.finditer(text))
    if len(numbered) > 1 and len({m.group(1) for m in numbered}) == 1:  # one figure number for all
        for m in numbered:
            add(m.start(1), m.end() + 1, m.group(2), "bare")
    run = list(_BARE_RUN.finditer(text))
    formed = {m.group(1) for m in run}
    for m in run:
        if {chr(ord(m.group(1)) - 1), chr(ord(m.group(1)) + 1)} & formed:
            add(m.start(1), m.end(), m.group(1), "bare")
    for m in _inline_run(text):
        add(m.start(2), m.end(2), m.group(2), "bare")
    for m in _POS_BARE.finditer(text):
        markers.append(Marker(m.start(1), m.end() + 1, position_labels(m.group(1)), "position"))
    for m in _POS_PHRASE.finditer(text):
        markers.append(Marker(m.start("m"), m.end(), position_labels(m.group(2)), "position"))
    for m in _POS_COMMA.finditer(text):
        if not any(k.start <= m.start(1) < k.end for k in markers):
            markers.append(Marker(m.start(1), m.end() + 1, position_labels(m.group(1)), "position"))
    return sorted(markers, key=lambda k: k.start)


def _inline_run(text: str) -> list[re.Match]:
    """The capitals inside sentences that run A, B, C, ... in text order, when at least RUN_MIN do."""
    run: list[re.Match] = []
    for m in _INLINE_CAPITAL.finditer(text):
        if ord(m.group(2)) == ord("A") + len(run) and (not run or m.group("list")):
            run.append(m)
    return run if len(run) >= RUN_MIN else []


def candidates(text: str) -> list[Marker]:
    """The candidates of ``text`` left after dropping words that only look like markers and group headers."""
    return _drop_group_headers(_plausible_bare(find_markers(text), text), text)


def _noun(text: str, start: int, end: int) -> int | None:
    """Where the marker at ``text[start:end]`` begins when a noun points at it: "in image (A)" anywhere,
    "Image (B)" opening a sentence when a word other than a joiner follows ("Image (B) shows")."""
    after = re.match(r"\s*([A-Za-z]+)", text[end:])
    for pattern in (_NOUN_AFTER_IN, _NOUN_OPENING):
        hit = pattern.search(text, max(0, start - 24), start)
        if hit and (pattern is _NOUN_AFTER_IN or (after and after.group(1).lower() not in ("and", "or", "with"))):
            return hit.start()
    return None


def panel_markers(text: str, cands: list[Marker]) -> list[Marker]:
    """The markers among ``cands`` (from :func:`candidates`) that name the panels, in text order."""
    markers = _label_sequence(_drop_restated(cands, text), text)
    letters = [m for m in markers if m.kind != "position"]
    if len({x for m in letters for x in m.labels}) >= 2:
        markers = letters
    elif not letters and len(markers) == 1:
        markers = []  # one position word alone ("Center: ...") names a region, not one of several panels
    return _fill_gaps(markers, text)


def _drop_restated(cands: list[Marker], text: str) -> list[Marker]:
    """Drop letter candidates of the lead that later markers opening sentences name again ("RNA (A-C) or
    protein (D). A Brain. B Liver ...", "sp. nov. (A-J) and C. princeps (K). ... (A-F) ...; (G) ..."): a
    group, or a letter inside a sentence, whose every letter a later sentence-opening candidate names."""
    out = []
    for i, c in enumerate(cands):
        if c.kind != "position" and (len(c.labels) > 1 or not _opens_sentence(text, c.start)):
            # A citation inside a sentence may be restated by a coarser group too ("MBP (a, d), OLIG2
            # (e, h) ... a-d: Most of ..."); a group opening a sentence only by finer markers.
            inside = c.paren and not _opens_sentence(text, c.start)
            later = {x for d in cands[i + 1:] if d.kind != "position" and d.lower == c.lower
                     and _opens_sentence(text, d.start)
                     and (inside or len(d.labels) < len(c.labels) + (len(c.labels) == 1))
                     for x in d.labels}
            if set(c.labels) <= later:
                continue
        out.append(c)
    return out


def _shape(m: Marker, text: str) -> str:
    """How a marker is delimited: ``A.``, ``A,``, ``A:``, ``A)``, plain ``A``, or ``(`` in parentheses."""
    if m.paren:
        return "("
    token = text[m.start:m.end].rstrip()
    return token[-1] if token[-1] in ".,:)" else " "


def _plausible_bare(markers: list[Marker], text: str) -> list[Marker]:
    """Drop bare capitals that are probably words ("A CT scan ..."): keep them only in an A, B, ... run.

    Of two bare candidates in a row with the same letter the first is the article ("A 45-year-old
    man. A Axial CT ..."): the panel marker is the last one before the next letter. A loose "A" counts
    only when a bare "B" of its case and delimiter follows, any other loose letter only when the letter
    before it is a bare candidate of its case before it ("a ..., b ..., c ...").
    """
    bare = [m for m in markers if m.kind == "bare"]
    letters = {lab for m in bare if not m.loose for lab in m.labels}
    repeated = {id(a) for a, b in zip(bare, bare[1:]) if a.labels == b.labels == ["A"] and not a.lower and not b.lower}
    keep, accepted = [], set()
    for m in markers:
        if m.kind == "paren" and m.loose:
            if not _loose_ok(m, [c for c in markers if c.kind == "paren"], text, accepted):
                continue
            accepted.add(id(m))
        if m.kind == "bare":
            token = text[m.start:m.end]
            delimited = bool(re.search(r"[,:.)]\s*$", token)) or token[0].islower()
            later_b = any("B" in c.labels for c in markers if c.start > m.start)
            if id(m) in repeated or (not delimited and not ({"A", "B"} <= letters) and not later_b):
                continue
            if _abbreviation_entry(m, text):
                continue
            if m.loose:
                if not _loose_ok(m, bare, text, accepted):
                    continue
                accepted.add(id(m))
        keep.append(m)
    return keep


# One entry of a key: an optional heading ("Orientation arrows:"), a term, a comma or colon, its word.
_KEY_ENTRY = re.compile(r"\s*(?:[A-Z][a-z]+(?:\s[a-z]+)?:\s+)?([\w/+-]+)[,:]\s+(\w)")


def _abbreviation_entry(m: Marker, text: str) -> bool:
    """Is a bare letter an entry of a key ("BD, binding domain; N, N-terminal portion; C, C-terminal
    portion", "Orientation arrows: D: dorsal; V: ventral"): a letter before a comma or colon and a word
    that starts with it, beside an entry of the key, in a key that holds a longer term or two such letters?
    "C, posterior; D, dorsal" are panels: a panel letter does not stand for its word."""
    if len(m.labels) != 1 or text[m.start + 1:m.start + 2] not in (",", ":"):
        return False
    cut = text.rfind(". ", 0, m.start)
    first = cut + 2 if cut >= 0 else 0  # the key is one sentence
    last = text.find(". ", m.start)
    entries, offset, own = [], first, None
    for part in text[first:last if last >= 0 else len(text)].split(";"):
        hit = _KEY_ENTRY.match(part)
        entries.append(hit)
        if offset <= m.start < offset + len(part):
            own = len(entries) - 1
        offset += len(part) + 1
    hit = entries[own] if own is not None else None
    if not hit or hit.group(1) != text[m.start] or hit.group(2).upper() != m.labels[0]:
        return False

    def stands_for_word(e: re.Match | None) -> bool:
        return bool(e) and (len(e.group(1)) > 1 or e.group(1).upper() == e.group(2).upper())

    beside = [entries[k] for k in (own - 1, own + 1) if 0 <= k < len(entries)]
    letters = sum(1 for e in entries if e and len(e.group(1)) == 1 and e.group(1).upper() == e.group(2).upper())
    longer = any(e and len(e.group(1)) > 1 for e in entries)
    return any(stands_for_word(e) for e in beside) and (letters >= 2 or longer)


def _loose_ok(m: Marker, bare: list[Marker], text: str, accepted: set[int]) -> bool:
    """Does a loose candidate count: an "A" followed by a firm "B" of its form, any other letter preceded
    by a firm or counted candidate of the letter before it, of its case?"""
    if m.labels == ["A"]:
        later = [b for b in bare if b.start > m.start and b.lower == m.lower]
        title = _LOOSE_A_TITLE.match(text, m.start - 2) if m.start >= 2 else None
        if m.lower and title and title.start(1) == m.start:
            return {"B", "C"} <= {b.labels[0] for b in later if text[b.start - 2:b.start] == ", "}
        return any(b.labels[0] == "B" and _shape(b, text) == _shape(m, text) for b in later if not b.loose)
    before = chr(ord(m.labels[0]) - 1)
    return any(b.labels[-1] == before and b.lower == m.lower and (not b.loose or id(b) in accepted)
               for b in bare if b.start < m.start)


def _symbol_key_form(m: Marker, text: str) -> bool:
    """``n, nucleus``: a bare letter, a comma and a lower-case word, as in keys to symbols in an image."""
    after = text[m.end:].lstrip()
    return m.kind == "bare" and bool(re.fullmatch(r"[A-Za-z],", text[m.start:m.end].strip())) and after[:1].islower()


def _genus_form(m: Marker, text: str) -> bool:
    """``M. pneumoniae``: a bare capital, a full stop and a lower-case word, as a genus is abbreviated."""
    return m.kind == "bare" and not m.lower and bool(re.match(r"[A-Z]\.\s+[a-z]{3}", text[m.start:]))


def _defines_abbreviation(m: Marker, text: str) -> bool:
    """``riluzole (R)``: one parenthesised letter right after a word starting with that letter."""
    if not m.paren or m.kind != "paren" or len(m.labels) != 1:
        return False
    word = re.search(r"([A-Za-z][\w-]*)\W*$", text[max(0, m.start - 60):m.start])
    return bool(word) and len(word.group(1)) > 1 and word.group(1)[0].upper() == m.labels[0]


def _label_sequence(markers: list[Marker], text: str) -> list[Marker]:
    """Keep the letter markers that make up the panel letters, and every position marker.

    Letters start at A and keep the case of the first letter marker; a marker whose letters were all
    unseen is kept even out of alphabetical order (``(A, C) ... (B, D)``), one repeating a letter is a back
    reference. A marker that skips ahead of the next letter is not kept when it looks like an abbreviation
    (``riluzole (R)``, a genus ``M. pneumoniae``) or a symbol key; a symbol-key form is kept only where the
    caption's letters already use bare markers.
    """
    out: list[Marker] = []
    seen: set[str] = set()
    last_kind, lower = "", None
    for m in markers:
        if m.kind == "position":
            out.append(m)
            continue
        if lower is not None and m.lower != lower:
            continue
        if (not seen and m.labels[0] != "A") or seen & set(m.labels):
            continue
        successor = m.labels[0] == (chr(ord(max(seen)) + 1) if seen else "A")
        if not successor and (_defines_abbreviation(m, text) or _genus_form(m, text)):
            continue
        if _symbol_key_form(m, text) and not (successor and last_kind in ("", "bare")):
            continue
        out.append(m)
        seen |= set(m.labels)
        last_kind, lower = m.kind, m.lower
    return out


def _opens_sentence(text: str, pos: int) -> bool:
    """Is ``pos`` at the caption's start or after a sentence or clause end (``. ; : ! ?``)?"""
    i = pos - 1
    while i >= 0 and text[i].isspace():
        i -= 1
    return i < 0 or text[i] in ".;:!?"


def _drop_group_headers(markers: list[Marker], text: str) -> list[Marker]:
    """Drop a group marker whose next candidate is an individual marker of its first letter, of the same
    kind and case, opening a sentence (``(A–D) Data from ... (A) Volcano plot``): the group is a note
    about its panels, not a sub-caption. Letters cited inside a group's own text (``(D, E) ... protein (D)
    and ...``) do not open a sentence and leave the group alone."""
    out: list[Marker] = []
    for m, nxt in zip(markers, markers[1:] + [None]):
        if (nxt is not None and len(m.labels) > 1 and m.kind == nxt.kind != "position" and m.lower == nxt.lower
                and nxt.labels == m.labels[:1] and _opens_sentence(text, nxt.start)):
            continue
        out.append(m)
    return out


def _fill_gaps(markers: list[Marker], text: str) -> list[Marker]:
    """In a run of bare letters, find the skipped ones (``a ... b ... d``: c; ``C. ... Q < 0.01 D. ... E.``,
    a sentence without its full stop) as lone letters between the neighbours, in order; a gap is filled
    only when every missing letter is found."""
    out = list(markers)
    for a, b in zip(markers, markers[1:]):
        if a.kind != "bare" or b.kind != "bare" or a.lower != b.lower:
            continue
        first, last = ord(max(a.labels)) + 1, ord(min(b.labels))
        if not 0 < last - first <= 4:
            continue
        pos, found = a.end, []
        for code in range(first, last):
            letter = chr(code).lower() if a.lower else chr(code)
            # "c,Histogram": a space left out after the letter's comma
            hit = re.compile(rf"(?<=\s){letter}(?:[.:,)]?(?=\s+\w)|[.:,)](?=[A-Z][a-z]))").search(text, pos, b.start)
            if not hit:
                break
            found.append(Marker(hit.start(), hit.end() + text[hit.end()].isspace(), [chr(code)], "bare",
                                lower=a.lower))
            pos = hit.end()
        if len(found) == last - first:
            out.extend(found)
    return sorted(out, key=lambda k: k.start)
