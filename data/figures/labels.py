"""Reading panel letters: short OCR tokens near one corner of every panel (top-left first, then
bottom-left, top-right and bottom-right, until one corner names the panels in reading order).

Text detectors pass over many lone letters, so with a back-end that can recognise a crop on its own
(``rapidocr``) the small isolated marks near each corner are cut out tightly and read first: marks on
the figure's background and marks on the image's own dominant colour there (white letters on a dark
radiograph, letters in white disks). Then each corner still without a letter is read whole,
upscaled and framed in white, and last the whole figure. Back-ends that read small text well from
whole figures (``gcv``) are asked about the whole figure first, so that a figure usually costs one
request.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

from data.figures.label_order import count_read, one_scheme, order_score, overlaps, settles
from data.figures.ocr import OcrWord
from data.figures.panels import PanelParams, background_colour, foreground_mask

Box = tuple[int, int, int, int]

_LABEL = re.compile(r"^[(\[]?([A-Za-z])[)\].:]?$")
_LABEL_DIGIT = re.compile(r"^[(\[]?([A-Za-z])([1-9])[)\].:]?$")  # "A1", "(b2)": a grid's row and column
UPSCALE = 3
MARK_MIN_PX = 6  # marks shorter than this are dots, commas or noise, not letters
MARK_TRIES = 4  # marks read per corner, nearest first
MARK_MIN_SCORE = 0.4  # lone letters read with lower confidence than words; reading order checks them
MARK_HEIGHT_PX = 32  # marks are upscaled to about this height (the recogniser's input is 48 px high)


def normalise_label(text: str, digits: bool = False) -> str | None:
    """``"(a)"``, ``"B."``, ``"c)"`` -> ``"A"``, ``"B"``, ``"C"``; with ``digits`` also ``"a1"``,
    ``"(B2)"`` -> ``"A1"``, ``"B2"``; anything else -> None. Full-width forms (``"（A）"``, which the
    recogniser returns for CJK-trained glyphs) count as their ASCII letters."""
    token = unicodedata.normalize("NFKC", text).strip().replace(" ", "")
    m = _LABEL.match(token)
    if m:
        return m.group(1).upper()
    m = _LABEL_DIGIT.match(token) if digits else None
    return m.group(1).upper() + m.group(2) if m else None


def corner_window(box: Box, size: tuple[int, int], corner: str = "top-left") -> Box:
    """The region where a panel's letter is looked for: a corner, reaching into the gutter beside it."""
    w, h = size
    pw, ph = box[2] - box[0], box[3] - box[1]
    out = max(6, int(0.03 * max(w, h)))  # letters often sit just outside the panel
    ww = int(min(max(0.2 * pw, 32), 110))
    wh = int(min(max(0.2 * ph, 32), 110))
    x0, x1 = (box[0] - out, box[0] + ww) if corner.endswith("left") else (box[2] - ww, box[2] + out)
    y0, y1 = (box[1] - out, box[1] + wh) if corner.startswith("top") else (box[3] - wh, box[3] + out)
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def _anchor(window: Box, corner: str) -> tuple[int, int]:
    """The window's outer corner on the panel's ``corner`` side; letters nearest it are preferred."""
    return (window[0] if corner.endswith("left") else window[2],
            window[1] if corner.startswith("top") else window[3])


def _centre(b: Box) -> tuple[float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def _dist(b: Box, anchor: tuple[int, int]) -> float:
    cx, cy = _centre(b)
    return ((cx - anchor[0]) ** 2 + (cy - anchor[1]) ** 2) ** 0.5


def _pick(words: list[OcrWord], window: Box, anchor: tuple[int, int]) -> tuple[str, float] | None:
    """The label-like word whose centre is in ``window``, nearest ``anchor``; (label, distance)."""
    best: tuple[str, float] | None = None
    for word in words:
        label = normalise_label(word.text, digits=True)
        cx, cy = _centre(word.box)
        if label is None or not (window[0] <= cx < window[2] and window[1] <= cy < window[3]):
            continue
        dist = _dist(word.box, anchor)
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


def _joins(a: Box, b: Box) -> bool:
    """Two marks of one token: side by side with a narrow gap ("(a)"), or a dot over a stem ("i", "j")."""
    ha, hb = a[3] - a[1], b[3] - b[1]
    x_gap = max(a[0], b[0]) - min(a[2], b[2])
    y_gap = max(a[1], b[1]) - min(a[3], b[3])
    if -y_gap > 0.5 * min(ha, hb) and x_gap <= 0.3 * max(ha, hb):
        return True
    dot, stem = (a, b) if ha < hb else (b, a)
    dot_w, dot_h, stem_h = dot[2] - dot[0], dot[3] - dot[1], stem[3] - stem[1]
    is_dot = dot_h <= 0.4 * stem_h and dot_w <= 2 * dot_h  # a short dash beside a letter is no dot
    return is_dot and dot[3] <= stem[1] and x_gap < 0 and y_gap <= 0.4 * stem_h


def group_marks(marks: list[Box], once: bool = False) -> list[Box]:
    """Marks (connected components) joined into tokens, each the box around its marks.

    Marks that join are near each other, so in each pass a mark is compared only with those whose left
    edge lies within reach of its right edge (in order of x); passes repeat on the grown tokens until none
    join, or end after the first with ``once``. A textured corner holds thousands of marks, which comparing
    every pair after every merge cannot get through.
    """
    tokens = list(marks)
    while len(tokens) > 1:
        reach = 0.3 * max(t[3] - t[1] for t in tokens)  # _joins' widest side-by-side gap
        order = sorted(range(len(tokens)), key=lambda k: tokens[k][0])
        root = list(range(len(tokens)))

        def find(k: int) -> int:
            while root[k] != k:
                root[k] = root[root[k]]
                k = root[k]
            return k

        for pos, i in enumerate(order):
            for j in order[pos + 1:]:
                if tokens[j][0] - tokens[i][2] > reach:
                    break
                if _joins(tokens[i], tokens[j]):
                    root[find(j)] = find(i)
        groups: dict[int, list[int]] = {}
        for k in range(len(tokens)):
            groups.setdefault(find(k), []).append(k)
        if len(groups) == len(tokens):
            break
        tokens = [(min(tokens[k][0] for k in ks), min(tokens[k][1] for k in ks),
                   max(tokens[k][2] for k in ks), max(tokens[k][3] for k in ks))
                  for ks in sorted(groups.values(), key=min)]
        if once:
            break
    return tokens


def mark_max_px(size: tuple[int, int]) -> int:
    """The tallest mark of a figure of ``size`` (w, h) that may be a letter; taller ones are drawings."""
    return max(MARK_MIN_PX, int(PanelParams().glyph_frac * max(size)))


def dominant_colour(pixels: np.ndarray, share: float = 0.4) -> np.ndarray | None:
    """The colour that at least ``share`` of ``pixels`` (N, 3) have, within 16 levels; None if none."""
    if not len(pixels):
        return None
    _, inverse, counts = np.unique(pixels // 16, axis=0, return_inverse=True, return_counts=True)
    top = int(np.argmax(counts))
    if counts[top] < share * len(pixels):
        return None
    return np.median(pixels[inverse.ravel() == top], axis=0)


def mark_tokens(rgb: np.ndarray, ground: np.ndarray, window: Box, max_px: int, tol: int) -> list[Box]:
    """Letter-sized tokens of small marks on ``ground`` that reach into ``window``, in figure coordinates.

    Marks are the connected pixels that differ from the ground colour. They are found in the window
    grown by ``max_px``, so that any mark small enough to count that reaches into the window lies
    whole inside; those cut by the grown region's edge (other than the figure's own edge) belong to
    something larger and are left out.
    """
    h, w = rgb.shape[:2]
    region = (max(0, window[0] - max_px), max(0, window[1] - max_px),
              min(w, window[2] + max_px), min(h, window[3] + max_px))
    fg = foreground_mask(rgb[region[1]:region[3], region[0]:region[2]], ground, tol).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    rh, rw = fg.shape
    marks = []
    for x, y, mw, mh, _area in stats[1:]:
        cut = ((x == 0 and region[0] > 0) or (y == 0 and region[1] > 0)
               or (x + mw == rw and region[2] < w) or (y + mh == rh and region[3] < h))
        if not cut and max(mw, mh) <= max_px:
            marks.append((region[0] + int(x), region[1] + int(y), region[0] + int(x + mw), region[1] + int(y + mh)))
    tokens = []
    for t in group_marks(marks):
        th, tw = t[3] - t[1], t[2] - t[0]
        if MARK_MIN_PX <= th <= max_px and tw <= 3 * th and overlaps(t, window):
            tokens.append(t)
    return tokens


BOX_SHARE = 0.08  # a white patch this share of a corner window may be a label's box


def _grounds(rgb: np.ndarray, bg: np.ndarray, window: Box, tol: int) -> list[np.ndarray]:
    """Colours that letters near ``window`` may be printed on: the figure's background, the dominant
    colour of the image in the window, if it has one (white letters on a dark corner), and white where
    a patch of it fills a share of the window (a dark letter in a white box that touches the image,
    which joins the box to the image on any other ground)."""
    pixels = rgb[window[1]:window[3], window[0]:window[2]].reshape(-1, 3).astype(np.int16)
    local = dominant_colour(pixels[np.abs(pixels - bg.astype(np.int16)).max(axis=1) > tol])
    grounds = [bg] if local is None else [bg, local]
    white = np.full(3, 255, dtype=np.int16)
    share = (np.abs(pixels - white).max(axis=1) <= tol).mean() if len(pixels) else 0.0
    if share >= BOX_SHARE and all(np.abs(g.astype(np.int16) - white).max() > tol for g in grounds):
        grounds.append(white.astype(np.uint8))
    return grounds


def mark_crop(image: Image.Image, token: Box, ground: np.ndarray) -> Image.Image:
    """A token cut out tightly, upscaled, framed in its ground colour, dark on light.

    A circled letter's token is the disk: on a dark ground it comes out as a dark disk holding a
    light letter, which the recogniser reads as well as a plain letter.
    """
    crop = image.crop(token).convert("RGB")
    up = max(1, min(4, round(MARK_HEIGHT_PX / max(1, crop.height))))
    big = crop.resize((crop.width * up, crop.height * up), Image.BICUBIC)
    framed = ImageOps.expand(big, border=max(2, big.height // 6), fill=tuple(int(v) for v in ground))
    if float(np.mean(ground)) < 128:  # light letters on a dark ground: the recogniser wants dark on light
        framed = ImageOps.invert(framed)
    return framed


def _read_marks(image: Image.Image, rgb: np.ndarray, bg: np.ndarray, window: Box, anchor: tuple[int, int],
                ocr: Any, max_px: int, tol: int) -> tuple[str, float] | None:
    """The first mark nearest ``anchor`` that reads as a panel letter; (label, distance)."""
    tokens: dict[Box, np.ndarray] = {}
    for ground in _grounds(rgb, bg, window, tol):
        for t in mark_tokens(rgb, ground, window, max_px, tol):
            tokens.setdefault(t, ground)
    for token in sorted(tokens, key=lambda t: (_dist(t, anchor), t))[:MARK_TRIES]:
        text, score = ocr.recognise(mark_crop(image, token, tokens[token]))
        label = normalise_label(text, digits=True)
        if label is not None and score >= MARK_MIN_SCORE:
            return label, _dist(token, anchor)
    return None


def _windows(image: Image.Image, boxes: list[Box], corner: str) -> list[tuple[Box, tuple[int, int]]]:
    """(window, anchor) of each panel at ``corner``."""
    windows = [corner_window(b, image.size, corner) for b in boxes]
    return [(w, _anchor(w, corner)) for w in windows]


Found = list[tuple[str, float] | None]  # per panel: (label, distance from its corner) or None


def _read_marks_at(image: Image.Image, boxes: list[Box], ocr: Any, corner: str,
                   marks: tuple[np.ndarray, np.ndarray]) -> Found:
    """The mark pass at ``corner``: lone marks read by the recogniser alone. ``marks`` is (the figure as
    an array, its background colour)."""
    p = PanelParams()
    rgb, bg = marks
    max_px = mark_max_px(image.size)
    return [_read_marks(image, rgb, bg, win, anchor, ocr, max_px, p.bg_tol) if win[2] > win[0] and win[3] > win[1]
            else None for win, anchor in _windows(image, boxes, corner)]


def _read_detected_at(image: Image.Image, boxes: list[Box], ocr: Any, corner: str, start: Found | None) -> Found:
    """``start`` (the mark pass, or nothing) completed with the detector: on the corner windows and on the
    whole figure (in the order the back-end prefers), for the panels still unread."""
    windows = _windows(image, boxes, corner)
    found: Found = list(start) if start else [None] * len(boxes)

    def from_whole() -> None:
        words = ocr.read(image)
        for i, (win, anchor) in enumerate(windows):
            if found[i] is None:
                found[i] = _pick(words, win, anchor)

    def from_corners() -> None:
        for i, (win, anchor) in enumerate(windows):
            if found[i] is None and win[2] > win[0] and win[3] > win[1]:
                found[i] = _pick(_read_corner(image, win, ocr), win, anchor)

    whole_first = bool(getattr(ocr, "whole_image_first", False))
    for step in (from_whole, from_corners) if whole_first else (from_corners, from_whole):
        if any(f is None for f in found):
            step()
    return found


CORNERS = ("top-left", "bottom-left", "top-right", "bottom-right")


def read_labels(image: Image.Image, boxes: list[Box], ocr: Any,
                wanted: list[str] | None = None) -> list[str | None]:
    """A label (upper case: a letter, or a letter and a digit) or None for each panel box; a label
    goes to one panel at most.

    One figure uses one corner for all its panels: the first corner whose reading settles the figure
    (at least half of the panels read, and two thirds of those in reading order), else the corner that
    names most panels in reading order. Letters at the other corners (R/L side markers, sequence names)
    lose that way.

    With a back-end that recognises crops, every corner is first read from its lone marks (cheap); the
    detector then completes the corners' readings, starting with the corner whose marks did best, so
    that on most figures one corner is read by the detector, for the few panels the marks left unread.
    A settled reading that leaves panels unread is compared with the other corners whose marks settled
    the figure too (short panels can show one letter to two corners' windows).

    ``wanted`` are the letters the caption names: a corner whose reading names them all ends the search
    (pieces of a lettered panel carry no letter, so a figure cut into more pieces than letters would
    otherwise never settle), and of corners that agree as well with reading order, the one naming more of
    them wins.
    """
    first: dict[str, Found] = {}
    if getattr(ocr, "can_recognise", False):
        first = _mark_readings(image, boxes, ocr, wanted)
    rank = {c: (settles(f, boxes), *order_score(f, boxes), _named(f, wanted)) for c, f in first.items()}
    order = sorted(CORNERS, key=lambda c: rank.get(c, (False, 0, 0, 0)), reverse=True)  # stable: ties by CORNERS
    best: Found = []
    best_score = None
    for k, corner in enumerate(order):
        marks = first.get(corner)
        names_all = wanted and marks and _named(marks, wanted) == len(set(wanted))
        found = marks if names_all else _read_detected_at(image, boxes, ocr, corner, marks)
        score = (*order_score(found, boxes), _named(found, wanted))
        if best_score is None or score > best_score:
            best, best_score = found, score
        if wanted and _named(found, wanted) == len(set(wanted)):
            break
        others_settle = any(rank.get(c, (False,))[0] for c in order[k + 1:])
        if settles(found, boxes) and (count_read(found) == len(boxes) or not others_settle):
            break
    return _final(best, boxes)


def _named(found: Found, wanted: list[str] | None) -> int:
    """How many of the caption's letters a corner's reading names (0 without a caption)."""
    return len({f[0] for f in found if f} & set(wanted)) if wanted else 0


def _mark_readings(image: Image.Image, boxes: list[Box], ocr: Any,
                   wanted: list[str] | None = None) -> dict[str, Found]:
    """The mark pass of each corner, in the order of CORNERS, until one names every panel and settles, or
    names every letter of the caption."""
    rgb = np.asarray(image.convert("RGB"))
    marks = rgb, background_colour(rgb, PanelParams().bg_tol)
    readings: dict[str, Found] = {}
    for corner in CORNERS:
        readings[corner] = found = _read_marks_at(image, boxes, ocr, corner, marks)
        every_panel = count_read(found) == len(boxes) and settles(found, boxes)
        if every_panel or (wanted and _named(found, wanted) == len(set(wanted))):
            break  # no other corner can do better
    return readings


def _final(found: Found, boxes: list[Box]) -> list[str | None]:
    """The labels of one corner's reading, of the figure's scheme only, each on one panel at most."""
    labels = one_scheme([f[0] if f else None for f in found], boxes)
    return _unique(labels, [f[1] if f else 0.0 for f in found])


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
