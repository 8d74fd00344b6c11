"""Pairing the panels of a figure with its sub-captions: by letter, by position word, or by order."""
from __future__ import annotations

from collections import Counter

from data.figures import Panel, SubCaption

POSITION_WORDS = {"TOP", "BOTTOM", "LEFT", "RIGHT", "MIDDLE"}


def _groups(boxes: list[tuple[int, int, int, int]], lo: int, hi: int) -> list[list[int]]:
    """Indices grouped into rows (lo, hi = 1, 3) or columns (0, 2) by overlapping extents."""
    order = sorted(range(len(boxes)), key=lambda i: boxes[i][lo])
    groups: list[list[int]] = []
    end = None
    for i in order:
        b = boxes[i]
        if end is not None and b[lo] < end - 0.3 * (b[hi] - b[lo]):
            groups[-1].append(i)
            end = max(end, b[hi])
        else:
            groups.append([i])
            end = b[hi]
    return groups


def panels_at(position: str, panels: list[Panel]) -> list[Panel]:
    """Panels named by position words such as ``TOP``, ``LEFT`` or ``TOP LEFT``; [] if ambiguous."""
    boxes = [p.box for p in panels]
    rows, cols = _groups(boxes, 1, 3), _groups(boxes, 0, 2)
    chosen = set(range(len(panels)))
    for word in position.split():
        axis = rows if word in ("TOP", "BOTTOM") or (word == "MIDDLE" and len(rows) == 3) else cols
        if len(axis) < 2 or (word == "MIDDLE" and len(axis) != 3):
            return []
        index = {"TOP": 0, "LEFT": 0, "BOTTOM": -1, "RIGHT": -1, "MIDDLE": 1}.get(word)
        if index is None:
            return []
        chosen &= set(axis[index])
    return [panels[i] for i in sorted(chosen)]


def pair_panels(subs: list[SubCaption], panels: list[Panel], counts: Counter,
                order_fallback: bool) -> list[tuple[str, Panel, SubCaption]]:
    """(label, panel, sub-caption) for every caption label that names a panel; misses are counted.

    With ``order_fallback`` and no letter read on any panel, caption letters pair with panels in
    reading order when there are exactly as many of each.
    """
    by_letter = {p.label: p for p in panels if p.label}
    letters = [lab for s in subs for lab in s.labels if lab not in POSITION_WORDS and " " not in lab]
    if order_fallback and not by_letter and len(panels) > 1 and len(letters) == len(panels):
        by_letter = dict(zip(letters, panels))
        counts["paired_by_order"] += 1
    pairs = []
    for sub in subs:
        for lab in sub.labels:
            if lab in by_letter:
                pairs.append((lab, by_letter[lab], sub))
            elif set(lab.split()) <= POSITION_WORDS and panels_at(lab, panels):
                pairs.extend((lab, p, sub) for p in panels_at(lab, panels))
            else:
                counts["labels_without_panel"] += 1
    used = {id(p) for _, p, _ in pairs}
    counts["panels_without_label"] += sum(1 for p in panels if id(p) not in used)
    return pairs
