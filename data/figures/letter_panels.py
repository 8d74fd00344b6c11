"""Panels found from the letters a caption names: the pieces cut along gutters grouped so that each group
holds one letter.

A lettered panel is often itself a grid (a row of heat maps, a blot over a bar chart, a plot beside its
legend), so the gutter analysis cuts it into pieces. When the caption says which letters exist, the
letters read on the pieces are kept only if the caption names them, letters still missing are looked for
anywhere in the figure, and every unlettered piece joins the lettered panel that owns its region: the
nearest one it can join without the joined box reaching into another lettered panel. Pure geometry
apart from :func:`find_missing_letters`, which asks the OCR back-end once about the whole figure.
"""
from __future__ import annotations

from typing import Any

from data.figures.label_order import same_row
from data.figures.labels import normalise_label

Box = tuple[int, int, int, int]

BEHIND_PENALTY = 4.0  # a piece above or left of a letter's panel is less likely its continuation
SLIVER = 0.15  # a joined box may cover this share of another lettered panel


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _gap(a: Box, b: Box) -> float:
    """Distance between two boxes along the axis that separates them (0 when they touch or overlap)."""
    return float(max(a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3], 0))


def _cost(piece: Box, panel: Box) -> float:
    """How far ``piece`` is from ``panel``; more when it lies above or left of the panel's top-left corner,
    where the panel's own letter would stand between them."""
    behind = piece[2] <= panel[0] + 2 or piece[3] <= panel[1] + 2
    return _gap(piece, panel) * (BEHIND_PENALTY if behind else 1.0)


MAX_SKIPPED = 2  # letters a caption may leave unnamed between two it names (a marker not recognised)


def letter_sequence(wanted: list[str]) -> list[str]:
    """The panel letters a figure prints, from those its caption names: printed letters run A, B, C, ...
    without holes, so letters the caption skips (A, B, D: a marker not recognised) are added, and letters
    standing far past the run (A, B, C then K, S: gene or structure names) are dropped. ``A1``-style
    labels are kept as named."""
    if not wanted or any(len(x) != 1 or not "A" <= x <= "Z" for x in wanted):
        return wanted
    named = sorted(set(wanted))
    last = named[0]
    for letter in named[1:]:
        if ord(letter) - ord(last) > MAX_SKIPPED + 1:
            break
        last = letter
    kept = [x for x in dict.fromkeys(wanted) if x <= last]
    run = [chr(c) for c in range(ord(named[0]), ord(last) + 1)]
    if kept != sorted(kept):  # the caption's own order is kept (reading order follows it); additions last
        return kept + [x for x in run if x not in kept]
    return run


def keep_caption_letters(labels: list[str | None], wanted: list[str]) -> list[str | None]:
    """Letters the caption names, and letters that carry its sequence on (F, G after a caption naming
    A-E, when E, F, G ... are all read: a caption whose later markers were not recognised); anything else
    read (a sequence name, a misread) is dropped."""
    allowed = set(wanted) | set(continuation(labels, wanted))
    return [x if x in allowed else None for x in labels]


def continuation(labels: list[str | None], wanted: list[str]) -> list[str]:
    """The letters read right after the caption's last letter, in an unbroken run from that letter read
    (E named and read: F, G, H read gives F, G, H; F, H gives F), on pieces after it in reading order.
    With the last letter unread, a letter after it is more likely its misreading (G for F) than the start
    of markers the caption lost; so is one read on a piece before it."""
    if not wanted or next_letter(wanted) is None or max(wanted) not in labels:
        return []
    read, run = set(x for x in labels[labels.index(max(wanted)) + 1:] if x), []
    nxt = next_letter(wanted)
    while nxt in read:
        run.append(nxt)
        nxt = next_letter(run)
    return run


def next_letter(letters: list[str]) -> str | None:
    """The letter after the last of ``letters`` when all are single letters A-Y (A, B, C: D), else None."""
    if not letters or any(len(x) != 1 or not "A" <= x <= "Y" for x in letters):
        return None
    return chr(ord(max(letters)) + 1)


def find_missing_letters(words: list[Any], boxes: list[Box], labels: list[str | None],
                         wanted: list[str]) -> list[str | None]:
    """Caption letters not yet read, placed from the words of a whole-figure OCR pass.

    ``words`` carry ``text`` and ``box``. A word that is one of the missing letters gives it to the
    unlettered piece whose top-left corner is nearest, among the pieces below and right of the word (a
    letter stands at its panel's top-left) and the piece that holds it. A piece below and right must be
    near; a letter printed inside a piece (in a plot's corner, under a micrograph) may stand anywhere in it.
    """
    out = list(labels)
    missing = [x for x in wanted if x not in out]
    for word in words:
        letter = normalise_label(word.text, digits=True)
        if letter not in missing:
            continue
        cx, cy = (word.box[0] + word.box[2]) / 2, (word.box[1] + word.box[3]) / 2
        best, best_d = None, None
        for i, b in enumerate(boxes):
            if out[i] is not None:
                continue
            inside = b[0] <= cx < b[2] and b[1] <= cy < b[3]
            below_right = b[0] >= word.box[0] - 4 and b[1] >= word.box[1] - 4
            if not (inside or below_right):
                continue
            d = ((b[0] - cx) ** 2 + (b[1] - cy) ** 2) ** 0.5
            if best_d is None or d < best_d:
                best, best_d, held = i, d, inside
        limit = 0.25 * max(max(b[2] for b in boxes) - min(b[0] for b in boxes), 1)
        if best is not None and (held or best_d <= limit):  # a letter printed inside a piece names it
            out[best] = letter
            missing.remove(letter)
    return out


def letter_words(words: list[Any], wanted: list[str]) -> dict[str, Box]:
    """The box of each wanted letter that a whole-figure reading (``words`` with ``text`` and ``box``)
    finds exactly once: tighter than the piece it was given to, which may hold several panels."""
    seen: dict[str, list[Box]] = {}
    for word in words:
        letter = normalise_label(word.text, digits=True)
        if letter in wanted:
            seen.setdefault(letter, []).append(tuple(word.box))
    return {letter: found[0] for letter, found in seen.items() if len(found) == 1}


def group_by_letters(boxes: list[Box], labels: list[str | None],
                     count: int | None = None) -> tuple[list[Box], list[str | None]]:
    """Pieces joined, cheapest join first, into ``count`` panels (the number of letters the caption
    names; default: the number of letters read), no panel holding two letters and no joined box reaching
    into a lettered panel it does not join; a join whose box spreads over an unlettered piece comes after
    every join that does not. Unlettered pieces may join each other, so that a panel whose letter was not
    read stays a panel of its own while its pieces come together. Returned in reading order."""
    groups = [(b, x) for b, x in zip(boxes, labels)]
    if not any(labels):
        return list(boxes), list(labels)
    target = max(count if count is not None else sum(1 for x in labels if x), 1)
    while len(groups) > target:
        best = None
        for i, (a, la) in enumerate(groups):
            for j, (b, lb) in enumerate(groups):
                if j <= i or (la and lb):
                    continue
                joined = _union(a, b)
                covered = [x for k, (other, x) in enumerate(groups) if k not in (i, j) and reaches_into(joined, other)]
                if any(covered):
                    continue  # it would reach into another lettered panel
                cost = (bool(covered), _cost(a, b) if lb else _cost(b, a) if la else _gap(a, b))
                if best is None or cost < best[0]:
                    best = (cost, i, j, joined, la or lb)
        if best is None:
            break
        _, i, j, joined, label = best
        rest = [g for k, g in enumerate(groups) if k not in (i, j)]
        groups = [g for g in rest if g[1] or not _inside(g[0], joined)] + [(joined, label)]
    every = [b for b, _ in groups]
    groups.sort(key=lambda g: reading_key(g[0], every))
    return [b for b, _ in groups], [x for _, x in groups]


def reaches_into(box: Box, panel: Box) -> bool:
    """Whether ``box`` covers more than a sliver of ``panel`` (panels of real figures are not always
    rectangles that tile the figure: a legend or an axis title may stand beside a neighbour's corner)."""
    ix = min(box[2], panel[2]) - max(box[0], panel[0])
    iy = min(box[3], panel[3]) - max(box[1], panel[1])
    area = (panel[2] - panel[0]) * (panel[3] - panel[1])
    return ix > 0 and iy > 0 and ix * iy > SLIVER * max(area, 1)


def _inside(a: Box, b: Box) -> bool:
    return a[0] >= b[0] and a[1] >= b[1] and a[2] <= b[2] and a[3] <= b[3]


def reading_key(box: Box, boxes: list[Box]) -> tuple[int, int]:
    """Reading order: the top of the first box in the same row as ``box``, then left to right."""
    row_top = min(b[1] for b in boxes if same_row(b, box) or b == box)
    return row_top, box[0]


def fill_by_order(boxes: list[Box], labels: list[str | None], wanted: list[str]) -> list[str | None]:
    """Caption letters still missing given to unlettered panels where reading order leaves exactly one
    gap for them: between the read letters before and after, as many panels as missing letters. At
    least two letters must have been read (with none read, ``--order-fallback`` decides)."""
    out = list(labels)
    order = [wanted.index(x) for x in out if x in wanted]
    if len(order) < 2 or order != sorted(order):
        return out  # too few letters read, or read out of caption order: reading order says nothing here
    i = 0
    while i < len(out):
        if out[i] is not None:
            i += 1
            continue
        j = i
        while j < len(out) and out[j] is None:
            j += 1
        before = wanted.index(out[i - 1]) if i > 0 else -1
        after = wanted.index(out[j]) if j < len(out) else len(wanted)
        gap = wanted[before + 1:after]
        if len(gap) == j - i and all(x not in out for x in gap):
            out[i:j] = gap
        i = j
    return out
