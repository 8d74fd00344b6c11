"""Viewer crosshairs: the cursor lines that a neuroimaging viewer draws across its views, a horizontal and a
vertical line of one bright colour that cross each other inside a view and run on over the gutters between
views. They join the views into one block of structure and run through letters, so before the figure is
cut or its letters read (``find_panels``) they are painted over with the pixels beside them: over a gutter
the line becomes gutter, over an image it becomes image.

Only pairs that cross are taken: a frame's sides meet at its corners, and a coloured rule or a plot's
reference line crosses nothing of its own colour, so they are kept.
"""
from __future__ import annotations

import cv2
import numpy as np

from data.figures.gutters import differs, flag_runs

CHROMA = 100  # a line's colour: its largest minus its smallest channel is at least this (red, green, ...)
COLOUR_TOL = 60  # pixels within this (largest channel difference) of the line's colour are drawn by it
MIN_SPAN = 0.4  # a crosshair runs over at least this share of the figure's side
THIN_PX = 6  # ... and is at most this thick
GAP_PX = 3  # breaks in its run this short are bridged (a label or a marker drawn over it)
BEYOND = 0.1  # each line runs on past the crossing by this share of its length on both sides
FRINGE = 1  # pixels either side that anti-aliasing or compression tints with the line's colour

Line = tuple[int, int, int, int]  # first and last+1 row of the band, first and last+1 column of the run


def without_crosshairs(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` (HxWx3 uint8) with its crossing pairs of coloured lines painted over; the same array when
    there are none."""
    rows = _lines(rgb)
    if not rows:
        return rgb
    cols = _lines(rgb.transpose(1, 0, 2))
    crossing = [(r, c) for r in rows for c in cols if _cross(r, c)
                and np.abs(_colour(rgb, r) - _colour(rgb.transpose(1, 0, 2), c)).max() <= COLOUR_TOL]
    if not crossing:
        return rgb
    out = rgb.copy()
    for r in dict.fromkeys(r for r, _ in crossing):
        _paint(out, r)
    for c in dict.fromkeys(c for _, c in crossing):
        _paint(out.transpose(1, 0, 2), c)
    return out


def _lines(rgb: np.ndarray) -> list[Line]:
    """Thin horizontal bands of rows, each drawn in one saturated colour over a long run of columns."""
    h, w = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb)
    saturated = _channel_max(rgb) - _channel_min(rgb) >= CHROMA  # uint8 arithmetic: max >= min
    span = max(50, int(MIN_SPAN * w))
    if h <= 2 * (THIN_PX + 1) or not (saturated.sum(axis=1) >= span).any():
        return []
    # A cheap first look: saturated pixels unlike the pixels THIN_PX + 1 rows above and below them.
    k = THIN_PX + 1
    mid = rgb[k:-k]
    thin = (saturated[k:-k] & (_channel_max(cv2.absdiff(mid, rgb[:-2 * k])) > COLOUR_TOL)
            & (_channel_max(cv2.absdiff(mid, rgb[2 * k:])) > COLOUR_TOL))
    img = rgb.astype(np.int16)
    found: list[tuple[int, int, int]] = []
    for y in np.flatnonzero(thin.sum(axis=1) >= span // 2) + k:
        colour = np.median(img[y][saturated[y]], axis=0)
        drawn = np.abs(img[y] - colour).max(axis=1) <= COLOUR_TOL
        for a, b in _runs(drawn, span):
            beside = [1.0 - differs(img[z, a:b], colour, COLOUR_TOL) for z in (y - k, y + k) if 0 <= z < h]
            if all(share < 0.5 for share in beside):  # thin: the rows beyond it are not its colour
                found.append((int(y), a, b))
    lines: list[Line] = []
    for y, a, b in found:
        joined = next((i for i, ln in enumerate(lines)
                       if ln[1] == y and min(b, ln[3]) - max(a, ln[2]) >= span), None)  # the row above's line
        if joined is None:
            lines.append((y, y + 1, a, b))
        else:
            ln = lines[joined]
            lines[joined] = (ln[0], y + 1, max(a, ln[2]), min(b, ln[3]))
    return [line for line in lines if line[1] - line[0] <= THIN_PX]


def _channel_max(rgb: np.ndarray) -> np.ndarray:
    r, g, b = cv2.split(rgb)
    return cv2.max(cv2.max(r, g), b)


def _channel_min(rgb: np.ndarray) -> np.ndarray:
    r, g, b = cv2.split(rgb)
    return cv2.min(cv2.min(r, g), b)


def _runs(drawn: np.ndarray, span: int) -> list[tuple[int, int]]:
    """Half-open runs of True at least ``span`` long, gaps of up to GAP_PX bridged."""
    runs: list[tuple[int, int]] = []
    for a, b in flag_runs(drawn):
        if runs and a - runs[-1][1] <= GAP_PX:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return [(a, b) for a, b in runs if b - a >= span]


def _cross(row: Line, col: Line) -> bool:
    """Whether a horizontal and a vertical line cross, each running on past the other on both sides."""
    y = (row[0] + row[1]) / 2
    x = (col[0] + col[1]) / 2
    return _inside(x, row[2], row[3]) and _inside(y, col[2], col[3])


def _inside(at: float, a: int, b: int) -> bool:
    margin = BEYOND * (b - a)
    return a + margin <= at <= b - margin


def _colour(rgb: np.ndarray, line: Line) -> np.ndarray:
    return np.median(rgb[line[0]:line[1], line[2]:line[3]].reshape(-1, 3).astype(np.int16), axis=0)


def _paint(rgb: np.ndarray, line: Line) -> None:
    """Paint a horizontal line's band (and its fringe) over with the rows beyond it, blended across."""
    h = rgb.shape[0]
    top, bottom = max(0, line[0] - FRINGE), min(h, line[1] + FRINGE)
    above, below = rgb[max(0, top - 1), line[2]:line[3]], rgb[min(h - 1, bottom), line[2]:line[3]]
    n = bottom - top
    for i in range(n):
        t = (i + 1) / (n + 1)
        rgb[top + i, line[2]:line[3]] = ((1 - t) * above + t * below).astype(np.uint8)
