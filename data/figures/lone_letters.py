"""Panel letters standing alone anywhere on the figure's background, read one by one.

A text detector passes over most lone letters, and the corner windows of the pieces see only the letters
that stand at a piece's corner: a letter over a title, beside a piece that holds two panels, or left of a
diagram whose pieces joined with a neighbour is never looked at, and a corner reading can give a letter
to the piece beside it. So when the caption names letters, the small isolated marks on the background are
cut out and read by the recogniser alone, tallest first (a figure's panel letters are usually its
largest single glyphs), until each letter is read or the tries run out.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image

from data.figures.label_order import follows
from data.figures.labels import MARK_MIN_PX, MARK_MIN_SCORE, group_marks, mark_crop, mark_max_px, normalise_label
from data.figures.letter_panels import next_letter

Box = tuple[int, int, int, int]

TRIES_PER_LETTER = 8  # marks read per wanted letter, tallest first ...
MAX_TRIES = 80  # ... and at most this many
SIZE_RATIO = 1.5  # a figure's panel letters share one type size: a reading this much taller or shorter
# than the others' median is a misread mark (a node, a digit of a tick label) and is read past
MAX_WIDTH = 2.0  # a lone letter ("B", "(b)") is at most this many times as wide as it is high
STROKE_WIDTH = 0.35  # a capital I of a sans-serif face is a bare upright stroke, at most this wide for its
# height; read without a word around it, the recogniser takes it for a one, a small l or a bar
STROKE_READINGS = {"1", "l", "|", "\u4e28"}  # ... (U+4E28 is the CJK stroke the recogniser also returns)
DARK_INK_TOL = 60  # a second look at the marks ignores paler ink: a plot's light-grey frame or grid line
# (within about 55 of a white ground) that touches a letter joins it into one mark that no longer stands alone
SPECK_PX = 3  # marks no larger than this are compression specks; over a whole figure they chain words,
# lines and letters into one token. Marks are joined in one pass for the same reason: the boxes of whole
# lines of text, joined again, swallow the letters beside them.


def lone_marks(ink: np.ndarray, max_px: int) -> list[Box]:
    """Letter-sized tokens of the marks of ``ink`` (the HxW foreground mask), tallest first."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    marks = [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, _ in stats[1:]
             if SPECK_PX < max(w, h) <= max_px]
    tokens = [t for t in group_marks(marks, once=True)
              if MARK_MIN_PX <= t[3] - t[1] <= max_px and t[2] - t[0] <= MAX_WIDTH * (t[3] - t[1])]
    return sorted(tokens, key=lambda t: (-(t[3] - t[1]), t[1], t[0]))


def lone_letters(image: Image.Image, ink: np.ndarray, bg: np.ndarray, wanted: list[str],
                 ocr: Any) -> dict[str, Box]:
    """The box of each ``wanted`` letter read on a lone mark of ``ink`` (the figure's foreground mask
    against its background colour ``bg``): its readings of the letters' type size chosen so that the
    letters follow each other in reading order (:func:`ordered_choice`). While they do not, more marks are
    read, within the tries. Once all are read and in order, the letters right after the last one too, in
    an unbroken run, each within ``TRIES_PER_LETTER`` more marks (a caption can stop short of the
    figure's last panels). Needs a back-end that recognises crops; else nothing."""
    if not wanted or not getattr(ocr, "can_recognise", False):
        return {}
    found: dict[str, Box] = {}
    readings: list[tuple[str, Box]] = []
    wanted, budget = list(wanted), min(MAX_TRIES, TRIES_PER_LETTER * len(wanted))
    for token in lone_marks(ink, mark_max_px(image.size)):
        if budget == 0:
            break
        budget -= 1
        text, score = ocr.recognise(mark_crop(image, token, bg))
        label = normalise_label(text, digits=True)
        if label not in wanted and "I" in wanted and _stroke(token, text):
            label = "I"
        if label in wanted and score >= MARK_MIN_SCORE:
            readings.append((label, token))
            found = ordered_choice(one_size(readings), wanted)
        if len(found) == len(set(wanted)) and in_order(found, wanted):
            after = next_letter(wanted)
            if after is None:
                break
            wanted, budget = wanted + [after], TRIES_PER_LETTER
    return found


def _stroke(token: Box, text: str) -> bool:
    """Whether the mark ``token``, read as ``text``, is a bare upright stroke (a capital I)."""
    return text.strip(" .()") in STROKE_READINGS and token[2] - token[0] <= STROKE_WIDTH * (token[3] - token[1])


def one_size(readings: list[tuple[str, Box]]) -> dict[str, list[Box]]:
    """Each letter's readings (letter, box) in ``readings``, in their order; from three letters on, only
    those within ``SIZE_RATIO`` of the median height of the letters' first readings."""
    first: dict[str, Box] = {}
    for label, box in readings:
        first.setdefault(label, box)
    mid = float(np.median([b[3] - b[1] for b in first.values()])) if len(first) >= 3 else None
    sized: dict[str, list[Box]] = {}
    for label, box in readings:
        if mid is None or mid / SIZE_RATIO <= box[3] - box[1] <= mid * SIZE_RATIO:
            sized.setdefault(label, []).append(box)
    return sized


def in_order(found: dict[str, Box], wanted: list[str]) -> bool:
    """Whether the letters of ``found`` follow each other in ``wanted``'s order, by rows or by columns."""
    boxes = [found[x] for x in wanted if x in found]
    return any(all(follows(a, b, cols) for a, b in zip(boxes, boxes[1:])) for cols in (False, True))


def ordered_choice(readings: dict[str, list[Box]], wanted: list[str]) -> dict[str, Box]:
    """One reading per letter (``readings``: letter -> its boxes, earliest first) such that the most
    letters follow the one before them in reading order (by rows or by columns), earlier readings first
    among equals. Panel letters run in reading order, and a misread mark (a bar read as I, a letter of a
    plot's legend) seldom stands where the sequence wants its letter. A best path over the letters."""
    letters = [x for x in wanted if readings.get(x)]
    if not letters:
        return {}
    best: tuple[tuple[int, int], list[Box]] | None = None
    for cols in (False, True):
        paths = [((0, -i), [box]) for i, box in enumerate(readings[letters[0]])]
        for x in letters[1:]:
            paths = [max((((ordered + follows(path[-1], box, cols), early - i), path + [box])
                          for (ordered, early), path in paths), key=lambda p: p[0])
                     for i, box in enumerate(readings[x])]
        top = max(paths, key=lambda p: p[0])
        if best is None or top[0] > best[0]:
            best = top
    return dict(zip(letters, best[1]))
