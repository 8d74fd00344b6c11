"""Gutters: the rows (or columns) of a region that hold no structure, thin separator lines drawn between
touching panels, and gutters that compression noise speckles; and the pieces of a region between them.
Helpers of the recursive cut in :mod:`data.figures.panels`; every function works along axis 0 (rows),
and callers transpose the arrays to work on columns.
"""
from __future__ import annotations

import numpy as np

from data.figures.panel_params import PanelParams

Box = tuple[int, int, int, int]


def flag_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Half-open [start, end) runs of True in a 1-D boolean array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _line_rows(rgb: np.ndarray, fg: np.ndarray, p: PanelParams) -> tuple[np.ndarray, np.ndarray]:
    """(is candidate, colour) of each row: drawn over most of its length, nearly all in one colour.

    Only the row's non-background pixels count, so a line that stops where a caption or page margin
    begins is still seen whole.
    """
    n = rgb.shape[0]
    candidate = np.zeros(n, dtype=bool)
    colours = np.zeros((n, rgb.shape[2]), dtype=np.float32)
    for r in np.flatnonzero(fg.mean(axis=1) >= p.line_span):
        drawn = rgb[r][fg[r]]
        colours[r] = np.median(drawn, axis=0)
        candidate[r] = 1.0 - differs(drawn, colours[r].astype(np.int16), p.bg_tol) >= p.line_uniform
    return candidate, colours


def _colour_runs(candidate: np.ndarray, colours: np.ndarray, tol: int) -> list[tuple[int, int]]:
    """Runs of candidate rows, split where the colour changes (a frame line beside a black border)."""
    runs = []
    for start, end in flag_runs(candidate):
        cut = start
        for r in range(start + 1, end):
            if np.abs(colours[r] - colours[r - 1]).max() > tol:
                runs.append((cut, r))
                cut = r
        runs.append((cut, end))
    return runs


def separator_lines(rgb: np.ndarray, fg: np.ndarray, p: PanelParams) -> np.ndarray:
    """Rows (axis 0 of the given arrays) that are thin lines of one colour between two image-like sides."""
    n = rgb.shape[0]
    is_line = np.zeros(n, dtype=bool)
    if n < 3:
        return is_line
    candidate, colours = _line_rows(rgb, fg, p)
    for start, end in _colour_runs(candidate, colours, p.bg_tol):
        if end - start > p.line_max_px or (start == 0 and end == n):
            continue
        # Grid lines and plot frames sit on background; a separator has image on both sides (on
        # the one side there is, at the edge of a cell that was cut along the line's middle),
        # along the stretch where the line is drawn.
        drawn = fg[start:end].any(axis=0)
        sides = [fg[max(0, start - p.line_max_px):start][:, drawn], fg[end:end + p.line_max_px][:, drawn]]
        if not all(side.mean() > p.line_side_fg for side in sides if side.size):
            continue
        # A line stands out from what borders it; in a dark, noisy image region the rows that happen
        # to be uniform have the colour of their neighbours.
        colour = np.median(colours[start:end], axis=0).astype(np.int16)
        borders = [rgb[max(0, start - 2):start][:, drawn], rgb[end:end + 2][:, drawn]]
        if all(differs(b, colour, p.bg_tol) > p.line_contrast for b in borders if b.size):
            is_line[start:end] = True
    return is_line


def faint_gutters(fg: np.ndarray, p: PanelParams) -> np.ndarray:
    """Rows (axis 0) of a thin background gutter between two images, speckled by compression noise.

    JPEG ringing puts foreground pixels into a gutter a few pixels wide, joined to the images on both
    sides, so the gutter never empties; it is still a gutter where the images border it all along and
    one of its rows is nearly clean there.
    """
    n, depth = fg.shape[0], 2 * p.line_max_px  # deeper than a drawn line: images, not a double rule
    is_gutter = np.zeros(n, dtype=bool)
    for start, end in flag_runs(fg.mean(axis=1) <= p.faint_share):
        if start < depth or end > n - depth or end - start > p.line_max_px:
            continue
        before, after = fg[start - depth:start].mean(axis=0), fg[end:end + depth].mean(axis=0)
        along = (before >= p.faint_side) & (after >= p.faint_side)
        if along.mean() < p.line_span:
            continue
        if fg[start:end][:, along].mean(axis=1).min() <= p.faint_clean:
            is_gutter[start:end] = True
    return is_gutter


def differs(pixels: np.ndarray, colour: np.ndarray, tol: int) -> float:
    """Share of ``pixels`` (..., 3) whose largest channel difference from ``colour`` exceeds ``tol``."""
    return float((np.abs(pixels.astype(np.int16) - colour).max(axis=-1) > tol).mean())


def pieces_of(occupied: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """Runs of occupied positions, with too-short runs merged across their narrower gap."""
    runs = flag_runs(occupied)
    while len(runs) > 1:
        lengths = [e - s for s, e in runs]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_len:
            break
        gap_before = runs[i][0] - runs[i - 1][1] if i > 0 else None
        gap_after = runs[i + 1][0] - runs[i][1] if i + 1 < len(runs) else None
        j = i - 1 if gap_after is None or (gap_before is not None and gap_before <= gap_after) else i + 1
        a, b = sorted((i, j))
        runs[a:b + 1] = [(runs[a][0], runs[b][1])]
    return runs


def cut_axis(region: Box, rgb: np.ndarray, fg: np.ndarray, struct: np.ndarray,
              axis: int, min_len: int, p: PanelParams) -> tuple[list[tuple[int, int]], int]:
    """Pieces of ``region`` along ``axis`` (0: rows, 1: columns) and the widest gutter between them."""
    x0, y0, x1, y1 = region
    sub_rgb, sub_fg, sub_st = (a[y0:y1, x0:x1] for a in (rgb, fg, struct))
    if axis == 1:
        sub_rgb, sub_fg, sub_st = sub_rgb.transpose(1, 0, 2), sub_fg.T, sub_st.T
    occupied = sub_st.any(axis=1) & ~separator_lines(sub_rgb, sub_fg, p) & ~faint_gutters(sub_fg, p)
    pieces = pieces_of(occupied, min_len)
    gaps = [b[0] - a[1] for a, b in zip(pieces, pieces[1:])]
    return pieces, max(gaps, default=0)


def cut_direction(rows: list[tuple[int, int]], row_gap: int, cols: list[tuple[int, int]], col_gap: int) -> int | None:
    """Which pieces a region is cut into: 0 its rows, 1 its columns (the wider gutter wins when both
    cut), None when neither axis has two pieces."""
    if len(rows) > 1 and (len(cols) < 2 or row_gap >= col_gap):
        return 0
    return 1 if len(cols) > 1 else None
