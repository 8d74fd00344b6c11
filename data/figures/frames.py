"""A frame drawn around all of a figure's panels, each framed in turn: the outer frame crosses every gutter
between them, so the cut in :mod:`data.figures.panels` sets it aside and cuts inside it.
"""
from __future__ import annotations

import numpy as np

from data.figures.gutters import cut_axis, cut_direction
from data.figures.panel_params import PanelParams

Box = tuple[int, int, int, int]

FRINGE = 1  # pixels either side of a drawn line that compression or anti-aliasing blurs it into


def frame_lines(struct: np.ndarray, box: Box, p: PanelParams) -> list[tuple[int, int, int]] | None:
    """The thin lines along the four sides of ``box`` that frame it, as (axis, start, end) runs of rows
    (axis 0) or columns (axis 1) drawn over nearly all of the box; None unless all four sides have one."""
    x0, y0, x1, y1 = box
    sub = struct[y0:y1, x0:x1]
    lines = []
    for axis, cover in ((0, sub.mean(axis=1)), (1, sub.mean(axis=0))):
        n = len(cover)
        for order in (np.arange(n), np.arange(n)[::-1]):  # from either edge inwards
            edge = order[:p.line_max_px]
            drawn = edge[cover[edge] >= p.frame_cover]  # stray specks may stand outside the line
            if not len(drawn):
                return None
            first = int(np.flatnonzero(order == drawn[0])[0])
            run = 0
            while first + run < n and cover[order[first + run]] >= p.frame_cover:
                run += 1
            if run >= p.line_max_px:
                return None
            a, b = sorted((int(order[first]), int(order[first + run - 1])))
            lines.append((axis, (y0, x0)[axis] + a, (y0, x0)[axis] + b + 1))
    return lines


def inside_frame(core: Box, rgb: np.ndarray, fg: np.ndarray, struct: np.ndarray,
                 min_len: tuple[int, int], p: PanelParams) -> list[Box]:
    """The panels inside one frame drawn around them all, [] if none: a frame that holds two or more
    framed panels is erased (from ``struct``, in place) and the pieces inside it returned. A frame around
    one plot or image is left alone: what its frame holds is not framed panels."""
    lines = frame_lines(struct, core, p)
    if lines is None:
        return []
    x0, y0, x1, y1 = core
    inner = struct[y0:y1, x0:x1].copy()  # the region's own coordinates from here on
    for axis, a, b in lines:  # with the line's blurred fringe
        if axis == 0:
            inner[max(0, a - y0 - FRINGE):b - y0 + FRINGE] = False
        else:
            inner[:, max(0, a - x0 - FRINGE):b - x0 + FRINGE] = False
    ys, xs = np.nonzero(inner)
    if not len(ys):
        return []
    tight = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    sub_rgb, sub_fg = rgb[y0:y1, x0:x1], fg[y0:y1, x0:x1]
    rows, row_gap = cut_axis(tight, sub_rgb, sub_fg, inner, 0, min_len[0], p)
    cols, col_gap = cut_axis(tight, sub_rgb, sub_fg, inner, 1, min_len[1], p)
    direction = cut_direction(rows, row_gap, cols, col_gap)
    if direction is None:
        return []
    if direction == 0:
        pieces = [(tight[0], tight[1] + s, tight[2], tight[1] + e) for s, e in rows]
    else:
        pieces = [(tight[0] + s, tight[1], tight[0] + e, tight[3]) for s, e in cols]
    if any(frame_lines(inner, piece, p) is None for piece in pieces):
        return []
    struct[y0:y1, x0:x1] = inner
    return [(a + x0, b + y0, c + x0, d + y0) for a, b, c, d in pieces]
