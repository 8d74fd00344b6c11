"""Panel detection in compound figures by image analysis (no OCR here).

The figure is cut recursively (an XY-cut) along gutters: runs of rows or columns that hold no
"structure". Structure is the foreground (pixels that differ from the background colour) with
glyph-sized connected components removed, so that panel letters, tick labels and axis titles never
block a gutter; they are attached to the nearest panel afterwards. Panels that touch with only a
thin line between them are cut along that line when both sides are image-like and the line stands
out from them; the line need only run along the panels, not through a caption or margin beside them.
Panels that touch with no line at all are cut along a seam: a column (or row) where the picture
jumps from one image to another along most of the region, with smooth image on both sides. A thin
gutter that compression noise speckles is still a gutter, and images that share one plate of their
own colour (slices on a black rectangle) are cut on that colour. Slanted connector lines between
panels are erased first (:mod:`data.figures.connectors`); a frame drawn around framed panels is set
aside (:mod:`data.figures.frames`); the gutter tests themselves are in :mod:`data.figures.gutters`.
"""
from __future__ import annotations

import cv2
import numpy as np

from data.figures.connectors import without_connectors
from data.figures.crosshairs import without_crosshairs
from data.figures.frames import inside_frame
from data.figures.gutters import cut_axis, cut_direction, differs, flag_runs
from data.figures.panel_params import PanelParams

Box = tuple[int, int, int, int]

TEXT_LINE_FILL = 0.6  # share of its box that a run-together line of text covers, at most


def background_colour(rgb: np.ndarray, tol: int = 15) -> np.ndarray:
    """The gutter colour: that of full-width or full-height uniform rows/columns, else the frame's.

    Figures without a margin have image pixels on their frame, so gutters that cross the whole
    figure are the better witness; the frame's median is the fallback (white for most journals).
    """
    votes = []
    for lines in (rgb, rgb.transpose(1, 0, 2)):
        spread = lines.max(axis=1).astype(np.int16) - lines.min(axis=1).astype(np.int16)
        uniform = spread.max(axis=1) <= tol
        votes.extend(np.median(lines[uniform], axis=1))
    if votes:
        colours, counts = np.unique((np.array(votes) // 16).astype(np.int16), axis=0, return_counts=True)
        top = colours[np.argmax(counts)]
        chosen = [v for v in votes if np.array_equal((v // 16).astype(np.int16), top)]
        return np.median(np.array(chosen), axis=0)
    frame = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    return np.median(frame, axis=0)


def foreground_mask(rgb: np.ndarray, bg: np.ndarray, tol: int) -> np.ndarray:
    """Pixels whose largest channel difference from the background exceeds ``tol``."""
    diff = np.abs(rgb.astype(np.int16) - bg.astype(np.int16)).max(axis=2)
    return diff > tol


def split_structure(fg: np.ndarray, glyph_px: int, word_px: int,
                    stroke_px: float) -> tuple[np.ndarray, list[Box]]:
    """Split the foreground into structure and text: glyph boxes (small or thin-stroked, word-sized).

    Thin strokes tell words (rotated tick labels, axis titles) from images and bars of the same size.
    """
    mask = fg.astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    thickness = np.zeros(n, dtype=np.float32)
    np.maximum.at(thickness, labels.ravel(), dist.ravel())
    keep = np.zeros(n, dtype=bool)
    glyphs: list[Box] = []
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        size = max(w, h)
        if (size <= glyph_px or (size <= word_px and thickness[i] <= stroke_px)
                or (x <= glyph_px and _text_line(w, h, area, glyph_px))):
            glyphs.append((int(x), int(y), int(x + w), int(y + h)))
        else:
            keep[i] = True
    return keep[labels], glyphs


def _text_line(w: int, h: int, area: int, glyph_px: int) -> bool:
    """A rotated line of text whose letters ran together (a small figure's y-axis title shared by its
    rows): one glyph wide, many times as tall, and half empty, unlike a bar or a colour scale."""
    return w <= 1.5 * glyph_px and h >= 4 * w and area <= TEXT_LINE_FILL * w * h


def _beside_strip(core: Box, rgb: np.ndarray, fg: np.ndarray, struct: np.ndarray,
                  min_len: tuple[int, int], p: PanelParams) -> list[Box]:
    """The pieces of ``core`` once a narrow strip along one of its sides is set aside, [] if none.

    A colour bar or key shared by a column (row) of images is too narrow to be a panel, so it joins
    them; drawn along the whole column it then hides the gutters between them. The strip belongs to no
    panel, as a shared key. ``min_len`` is the least panel size along rows and columns.
    """
    sub = struct[core[1]:core[3], core[0]:core[2]]
    for axis in (1, 0):  # a strip beside a column of images, then one under a row of them
        runs = flag_runs(sub.any(axis=1 - axis))
        if len(runs) < 2:
            continue
        for strip, keep in ((runs[-1], (runs[0][0], runs[-2][1])), (runs[0], (runs[1][0], runs[-1][1]))):
            if strip[1] - strip[0] >= min_len[axis] or keep[1] - keep[0] < min_len[axis]:
                continue
            band = sub[:, strip[0]:strip[1]] if axis == 1 else sub[strip[0]:strip[1]]
            if band.any(axis=axis).mean() < p.strip_span:
                continue
            if axis == 1:
                rest = (core[0] + keep[0], core[1], core[0] + keep[1], core[3])
                pieces, _ = cut_axis(rest, rgb, fg, struct, 0, min_len[0], p)
                boxes = [(rest[0], rest[1] + a, rest[2], rest[1] + b) for a, b in pieces]
            else:
                rest = (core[0], core[1] + keep[0], core[2], core[1] + keep[1])
                pieces, _ = cut_axis(rest, rgb, fg, struct, 1, min_len[1], p)
                boxes = [(rest[0] + a, rest[1], rest[0] + b, rest[3]) for a, b in pieces]
            if len(boxes) > 1:
                return boxes
    return []


def _seams(rgb: np.ndarray, struct: np.ndarray, p: PanelParams) -> tuple[list[int], float]:
    """Positions along axis 1 where two touching images meet (a jump between columns x-1 and x), and
    the share of rows that jump at the strongest of them."""
    a = rgb.astype(np.int16)
    n = a.shape[1]
    side = max(40, int(p.seam_side * n))
    if n < 2 * side + 2:
        return [], 0.0
    diff = np.abs(a[:, 1:] - a[:, :-1]).max(axis=2)
    mean, share = diff.mean(axis=0), (diff > p.seam_jump).mean(axis=0)
    spread = a.max(axis=2).std(axis=0)
    both = (struct[:, 1:] & struct[:, :-1]).mean(axis=0)
    found, best = [], 0.0
    for x in np.flatnonzero(share >= p.seam_rows):
        if x < side - 1 or x >= n - side or (found and x + 1 - found[-1] < side):
            continue
        near = np.concatenate([mean[max(0, x - 4):x], mean[x + 1:x + 5]])
        if near.max(initial=0.0) > p.seam_isolation * mean[x]:
            continue
        if mean[x] < p.seam_ratio * (np.median(mean[max(0, x - 12):x + 13]) + 2):
            continue
        if min(spread[x], spread[x + 1]) < p.seam_texture or both[x] < p.seam_structure:
            continue
        found.append(int(x) + 1)
        best = max(best, float(share[x]))
    return found, best


def _seam_cut(region: Box, rgb: np.ndarray, struct: np.ndarray, p: PanelParams) -> list[Box]:
    """``region`` cut along the seams of the axis with the stronger one; [] if it has none."""
    x0, y0, x1, y1 = region
    sub_rgb, sub_st = rgb[y0:y1, x0:x1], struct[y0:y1, x0:x1]
    cols, col_share = _seams(sub_rgb, sub_st, p)
    rows, row_share = _seams(sub_rgb.transpose(1, 0, 2), sub_st.T, p)
    if rows and row_share >= col_share:
        cuts = [y0] + [y0 + r for r in rows] + [y1]
        return [(x0, a, x1, b) for a, b in zip(cuts, cuts[1:])]
    if cols:
        cuts = [x0] + [x0 + c for c in cols] + [x1]
        return [(a, y0, b, y1) for a, b in zip(cuts, cuts[1:])]
    return []


def _cells(spans: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """Cells that share out [lo, hi) between pieces, splitting each gutter at its middle."""
    cuts = [lo] + [(a[1] + b[0]) // 2 for a, b in zip(spans, spans[1:])] + [hi]
    return list(zip(cuts[:-1], cuts[1:]))


def xy_cut(rgb: np.ndarray, fg: np.ndarray, struct: np.ndarray,
           p: PanelParams) -> list[tuple[Box, Box]]:
    """(cell, core) of each leaf of a recursive cut along the widest gutters, in reading order.

    The cells partition the figure; the core is the structure's bounding box inside the cell.
    """
    h, w = struct.shape
    min_rows = max(p.min_panel_px, int(p.min_panel_frac * h))
    min_cols = max(p.min_panel_px, int(p.min_panel_frac * w))
    leaves: list[tuple[Box, Box]] = []
    stack: list[Box] = [(0, 0, w, h)]
    while stack:
        region = stack.pop()
        x0, y0, x1, y1 = region
        ys, xs = np.nonzero(struct[y0:y1, x0:x1])
        if not len(ys):
            continue
        # Cut inside the structure's bounding box: margins would hide thin separator lines.
        tight = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
        tx0, ty0 = tight[:2]
        rows, row_gap = cut_axis(tight, rgb, fg, struct, 0, min_rows, p)
        cols, col_gap = cut_axis(tight, rgb, fg, struct, 1, min_cols, p)
        if not rows or not cols:
            continue  # nothing but separator lines (a rule drawn in two tones): no panel here
        direction = cut_direction(rows, row_gap, cols, col_gap)
        if direction == 0:
            children = [(x0, ty0 + s, x1, ty0 + e) for s, e in _cells(rows, y0 - ty0, y1 - ty0)]
        elif direction == 1:
            children = [(tx0 + s, y0, tx0 + e, y1) for s, e in _cells(cols, x0 - tx0, x1 - tx0)]
        else:
            core = (tx0 + cols[0][0], ty0 + rows[0][0], tx0 + cols[-1][1], ty0 + rows[-1][1])
            pieces = (_seam_cut(core, rgb, struct, p) or _beside_strip(core, rgb, fg, struct, (min_rows, min_cols), p)
                      or inside_frame(tight, rgb, fg, struct, (min_rows, min_cols), p))
            if not pieces:
                leaves.append((region, core))
                continue
            # Touching images: the pieces share out the cell, split where the seams are.
            children = [_reach_out(b, core, region) for b in pieces]
        stack.extend(reversed(children))  # depth first, so leaves come out in reading order
    return leaves


def _gap(a: Box, b: Box) -> int:
    """Chebyshev distance between two boxes (0 when they overlap or touch)."""
    dx = max(a[0] - b[2], b[0] - a[2], 0)
    dy = max(a[1] - b[3], b[1] - a[3], 0)
    return max(dx, dy)


def centre_inside(g: Box, cell: Box) -> bool:
    """Does the centre of box ``g`` lie in ``cell`` (half-open)?"""
    cx, cy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
    return cell[0] <= cx < cell[2] and cell[1] <= cy < cell[3]


def attach_glyphs(core: Box, cell: Box, glyphs: list[Box], reach: int) -> Box:
    """Grow a panel core by the text in its cell that lies within ``reach`` of it (chains allowed)."""
    box = core
    todo = [g for g in glyphs if centre_inside(g, cell)]
    grown = True
    while grown and todo:  # tick labels first, then the axis titles beside them
        grown, rest = False, []
        for g in todo:
            if _gap(box, g) <= reach:
                box = (min(box[0], g[0]), min(box[1], g[1]), max(box[2], g[2]), max(box[3], g[3]))
                grown = True
            else:
                rest.append(g)
        todo = rest
    return box


def detect_panel_boxes(rgb: np.ndarray, p: PanelParams | None = None) -> list[Box]:
    """Panel boxes (x0, y0, x1, y1) of an RGB uint8 array, in reading order; viewer crosshairs are painted
    over first (:func:`data.figures.crosshairs.without_crosshairs`)."""
    return boxes_without_crosshairs(without_crosshairs(rgb), p)


def boxes_without_crosshairs(rgb: np.ndarray, p: PanelParams | None = None) -> list[Box]:
    """:func:`detect_panel_boxes` of an array whose crosshairs are already painted over."""
    p = p or PanelParams()
    h, w = rgb.shape[:2]
    bg = background_colour(rgb, p.bg_tol)
    fg = foreground_mask(rgb, bg, p.bg_tol)
    glyph_px = max(6, int(p.glyph_frac * max(h, w)))
    stroke = max(2.5, p.stroke_frac * max(h, w))
    struct, glyphs = split_structure(fg, glyph_px, int(p.word_frac * max(h, w)), stroke)
    struct = without_connectors(struct)
    if not struct.any() and fg.any():
        # A figure drawn only in glyph-sized marks (fields of orientation glyphs, dot plots): the marks,
        # closed over the gaps between them, are its structure.
        k = max(3, glyph_px // 2)
        struct = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((k, k), np.uint8)).astype(bool)
    if not struct.any():
        return []
    min_w = max(p.min_panel_px, int(p.min_panel_frac * w))
    min_h = max(p.min_panel_px, int(p.min_panel_frac * h))
    reach = int(p.attach_frac * max(h, w))
    boxes = []
    for leaf in xy_cut(rgb, fg, struct, p):
        for cell, core, text in _on_plate(rgb, leaf, glyphs, bg, (min_w, min_h), p):
            if core[2] - core[0] >= min_w // 2 and core[3] - core[1] >= min_h // 2:
                boxes.append(attach_glyphs(core, cell, text, reach))
    return boxes


def _on_plate(rgb: np.ndarray, leaf: tuple[Box, Box], glyphs: list[Box], bg: np.ndarray,
              min_size: tuple[int, int], p: PanelParams) -> list[tuple[Box, Box, list[Box]]]:
    """(cell, core, glyphs) of the images on a leaf that is a plate of its own colour (a montage of
    slices on one black rectangle on a white page), cut as a figure on that ground; else the leaf.

    On the page's background the whole plate is one block of structure; on the plate's colour, the
    images on it separate. Pieces of very different sizes or long strips (a blot's lanes) are one image's
    own parts, not a montage, and so are pieces smaller than a panel of the figure (``min_size``: least
    width and height), such as the outlines drawn on a black scan."""
    cell, core = leaf
    for inset in range(p.line_max_px + 1):  # a thin line drawn around the plate is not its ground
        x0, y0, x1, y1 = core[0] + inset, core[1] + inset, core[2] - inset, core[3] - inset
        sub = rgb[y0:y1, x0:x1]
        if min(sub.shape[:2]) < 2 * p.min_panel_px:
            return [(cell, core, glyphs)]
        frame = np.concatenate([sub[0], sub[-1], sub[:, 0], sub[:, -1]])
        colour = np.median(frame, axis=0)
        ground = colour.astype(np.int16)
        if (np.abs(colour - bg).max() > p.bg_tol and 1.0 - differs(frame, ground, p.bg_tol) >= p.plate_frame
                and 1.0 - differs(sub, ground, p.bg_tol) >= p.plate_share):
            break
    else:
        return [(cell, core, glyphs)]
    h, w = sub.shape[:2]
    fg = foreground_mask(sub, colour, p.bg_tol)
    struct, text = split_structure(fg, max(6, int(p.glyph_frac * max(h, w))), int(p.word_frac * max(h, w)),
                                   max(2.5, p.stroke_frac * max(h, w)))
    leaves = xy_cut(sub, fg, struct, p)
    sides = [sorted((c[2] - c[0], c[3] - c[1])) for _, c in leaves]
    areas = [a * b for a, b in sides]
    if (len(leaves) < 2 or max(areas) > p.plate_spread * min(areas)
            or any(b > p.plate_aspect * max(a, 1) for a, b in sides)
            or any(c[2] - c[0] < min_size[0] or c[3] - c[1] < min_size[1] for _, c in leaves)):
        return [(cell, core, glyphs)]
    text = [_offset(g, x0, y0) for g in text]
    return [(_reach_out(_offset(sub_cell, x0, y0), (x0, y0, x1, y1), cell), _offset(sub_core, x0, y0), text)
            for sub_cell, sub_core in leaves]


def _offset(box: Box, dx: int, dy: int) -> Box:
    return box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy


def _reach_out(box: Box, inner: Box, outer: Box) -> Box:
    """``box`` (a piece of ``inner``) with each side that lies on ``inner``'s border moved out to ``outer``'s:
    pieces cut from a region's core share out the region's whole cell."""
    return (outer[0] if box[0] == inner[0] else box[0], outer[1] if box[1] == inner[1] else box[1],
            outer[2] if box[2] == inner[2] else box[2], outer[3] if box[3] == inner[3] else box[3])
