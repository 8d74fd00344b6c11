"""Reading panel letters: short OCR tokens near a panel's top-left corner.

Whole-figure OCR misses many single letters, so each panel's corner is also read on its own, upscaled
and framed in white. Back-ends that read small text well from whole figures (``gcv``) are asked about
the whole figure first, so that a figure usually costs one request.
"""
from __future__ import annotations

import re
from typing import Any

from PIL import Image, ImageOps

from .ocr import OcrWord

Box = tuple[int, int, int, int]

_LABEL = re.compile(r"^[(\[]?([A-Za-z])[)\].:]?$")
UPSCALE = 3


def normalise_label(text: str) -> str | None:
    """``"(a)"``, ``"B."``, ``"c)"`` -> ``"A"``, ``"B"``, ``"C"``; anything else -> None."""
    m = _LABEL.match(text.strip().replace(" ", ""))
    return m.group(1).upper() if m else None


def corner_window(box: Box, size: tuple[int, int]) -> Box:
    """The region where a panel's letter is looked for: its top-left corner, reaching into the gutter."""
    w, h = size
    pw, ph = box[2] - box[0], box[3] - box[1]
    out = max(6, int(0.03 * max(w, h)))  # letters often sit just outside the panel
    ww = int(min(max(0.2 * pw, 32), 110))
    wh = int(min(max(0.2 * ph, 32), 110))
    return max(0, box[0] - out), max(0, box[1] - out), min(w, box[0] + ww), min(h, box[1] + wh)


def _centre(b: Box) -> tuple[float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def _pick(words: list[OcrWord], window: Box) -> tuple[str, float] | None:
    """The label-like word whose centre is in ``window``, nearest its top-left; (label, distance)."""
    best: tuple[str, float] | None = None
    for word in words:
        label = normalise_label(word.text)
        cx, cy = _centre(word.box)
        if label is None or not (window[0] <= cx < window[2] and window[1] <= cy < window[3]):
            continue
        dist = ((cx - window[0]) ** 2 + (cy - window[1]) ** 2) ** 0.5
        if best is None or dist < best[1]:
            best = (label, dist)
    return best


def _read_corner(image: Image.Image, window: Box, ocr: Any) -> list[OcrWord]:
    """OCR of an upscaled, white-framed crop; boxes mapped back to figure coordinates."""
    crop = image.crop(window)
    big = crop.resize((crop.width * UPSCALE, crop.height * UPSCALE), Image.BICUBIC)
    pad = 8 * UPSCALE
    framed = ImageOps.expand(big, border=pad, fill="white")
    words = []
    for w in ocr.read(framed):
        x0, y0, x1, y1 = ((v - pad) / UPSCALE for v in w.box)
        box = (int(window[0] + x0), int(window[1] + y0), int(window[0] + x1), int(window[1] + y1))
        words.append(OcrWord(w.text, box, w.score))
    return words


def read_labels(image: Image.Image, boxes: list[Box], ocr: Any) -> list[str | None]:
    """A letter (upper case) or None for each panel box; a letter goes to one panel at most."""
    windows = [corner_window(b, image.size) for b in boxes]
    found: list[tuple[str, float] | None] = [None] * len(boxes)
    whole_first = bool(getattr(ocr, "whole_image_first", False))

    def from_whole() -> None:
        words = ocr.read(image)
        for i, win in enumerate(windows):
            if found[i] is None:
                found[i] = _pick(words, win)

    def from_corners() -> None:
        for i, win in enumerate(windows):
            if found[i] is None and win[2] > win[0] and win[3] > win[1]:
                found[i] = _pick(_read_corner(image, win, ocr), win)

    steps = (from_whole, from_corners) if whole_first else (from_corners, from_whole)
    for step in steps:
        if any(f is None for f in found):
            step()
    return _unique([f[0] if f else None for f in found], [f[1] if f else 0.0 for f in found])


def _unique(labels: list[str | None], dists: list[float]) -> list[str | None]:
    """Where two panels read the same letter, the one whose letter is nearer its corner keeps it."""
    out = list(labels)
    for letter in {x for x in labels if x}:
        idx = [i for i, x in enumerate(labels) if x == letter]
        keep = min(idx, key=lambda i: dists[i])
        for i in idx:
            if i != keep:
                out[i] = None
    return out


def _area(b: Box) -> int:
    return (b[2] - b[0]) * (b[3] - b[1])


def repair_sequence(labels: list[str | None]) -> list[str | None]:
    """Letters in reading order A, B, C, ... when most letters read agree with that order.

    OCR misreads single letters ("C" as "V", "D" as "T") or misses them; when at least two thirds of
    the letters read (and at least two) sit where the plain sequence puts them, the sequence wins.
    """
    read = [(i, x) for i, x in enumerate(labels) if x]
    agree = sum(1 for i, x in read if x == chr(ord("A") + i))
    if len(labels) > 26 or len(read) < 2 or agree < 2 or agree * 3 < len(read) * 2:
        return labels
    return [chr(ord("A") + i) for i in range(len(labels))]


def _overlaps(a: Box, b: Box) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def merge_unlabelled(boxes: list[Box], labels: list[str | None]) -> tuple[list[Box], list[str | None]]:
    """Join an unlabelled piece to the labelled panel just left of or above it.

    Used only when most panels have letters: then a piece without one is most likely a part of a
    panel that the gutter analysis cut apart (a schematic with white space inside).
    """
    if sum(1 for x in labels if x) < max(2, (len(labels) + 1) // 2):
        return boxes, labels
    boxes, labels = list(boxes), list(labels)
    changed = True
    while changed:
        changed = False
        for i, (box, label) in enumerate(zip(boxes, labels)):
            if label is not None:
                continue
            j = _labelled_neighbour(i, boxes, labels)
            if j is None or _area(box) > 0.5 * _area(boxes[j]):
                continue  # only fragments; a full-size piece is more likely a panel with an unread letter
            other = boxes[j]
            merged = (min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]), max(box[3], other[3]))
            if any(_overlaps(merged, boxes[k]) for k in range(len(boxes)) if k not in (i, j)):
                continue
            boxes[j] = merged
            del boxes[i], labels[i]
            changed = True
            break
    return boxes, labels


def _labelled_neighbour(i: int, boxes: list[Box], labels: list[str | None]) -> int | None:
    """The nearest labelled box directly left of (same row) or above (same column) box ``i``."""
    b = boxes[i]
    best, best_gap = None, None
    for j, (o, lab) in enumerate(zip(boxes, labels)):
        if j == i or lab is None:
            continue
        same_row = min(b[3], o[3]) - max(b[1], o[1]) > 0.5 * min(b[3] - b[1], o[3] - o[1])
        same_col = min(b[2], o[2]) - max(b[0], o[0]) > 0.5 * min(b[2] - b[0], o[2] - o[0])
        if same_row and o[2] <= b[0] + 2:
            gap = b[0] - o[2]
        elif same_col and o[3] <= b[1] + 2:
            gap = b[1] - o[3]
        else:
            continue
        if best_gap is None or gap < best_gap:
            best, best_gap = j, gap
    return best
