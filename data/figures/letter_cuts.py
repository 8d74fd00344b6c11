"""Panels cut around their letters: once every letter the caption names has been placed (read on a piece,
or found once in a whole-figure reading), the figure is cut, like a guillotine, along the emptiest lines
that separate the lettered pieces, until each part holds one letter.

The gutter analysis cuts only where a clean gutter runs through; real figures often have none (plots
whose axes nearly touch, a title crossing a gutter, a key between rows), and their pieces then join into
the wrong panels. A lettered piece, though, always lies inside its panel, so any line between two groups
of lettered pieces is a possible panel border, and the one crossing the least ink is the likeliest.
Pure geometry on the foreground mask.
"""
from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]
Anchor = tuple[Box, str]  # a lettered piece (or the reach of a letter read alone) and its letter

LETTER_REACH = 3  # letter heights right of and below a letter that belong to its panel
CORNER = 0.34  # a letter stands in this share of its panel's width and height from the top-left
TIE = 0.02  # lines whose ink shares differ by less than this are equally good borders
EVERY_LINE = 1.0  # a tie that weighs every line: the plan leaving the least ink above and left of the
# letters wins, however much ink its lines cross
PLANS = 4000  # sub-problems weighed before only the emptiest line is followed (many letters, noisy ink)
CORE = 0.15  # share of a piece's width and height, on each side, that a cut may cross (a title or key
# caught on the piece's edge belongs to a neighbour as often as to its panel)


def _splits(anchors: list[Anchor], axis: int) -> list[tuple[list[Anchor], list[Anchor], int, int]]:
    """Ways to split ``anchors`` along ``axis`` (0: a vertical line, 1: a horizontal one) without
    crossing any of them: (before, after, lowest, highest line position)."""
    ordered = sorted(anchors, key=lambda a: a[0][axis])
    out, reach = [], -1
    for i in range(len(ordered) - 1):
        reach = max(reach, ordered[i][0][axis + 2])
        start = ordered[i + 1][0][axis]
        if reach <= start:
            out.append((ordered[:i + 1], ordered[i + 1:], reach, start))
    return out


def _best_line(ink: np.ndarray, region: Box, axis: int, lo: int, hi: int) -> tuple[float, int]:
    """The line in [lo, hi] (along ``axis``) crossing the least ink of ``region``: (ink share, position).
    Among equally empty lines the middle one of the emptiest run is taken (the gutter's centre)."""
    x0, y0, x1, y1 = region
    block = ink[y0:y1, x0:x1]
    profile = block.sum(axis=0) if axis == 0 else block.sum(axis=1)
    start = region[axis]
    window = profile[lo - start:hi - start + 1] if hi > lo else profile[lo - start:lo - start + 1]
    least = window.min()
    where = np.flatnonzero(window == least)
    runs = np.split(where, np.flatnonzero(np.diff(where) > 1) + 1)
    run = max(runs, key=len)
    extent = (y1 - y0) if axis == 0 else (x1 - x0)
    return float(least) / max(extent, 1), lo + int(run[len(run) // 2])


def _core(box: Box) -> Box:
    dx, dy = int(CORE * (box[2] - box[0])), int(CORE * (box[3] - box[1]))
    return box[0] + dx, box[1] + dy, box[2] - dx, box[3] - dy


def _tight(ink: np.ndarray, region: Box) -> Box:
    """``region`` shrunk to the ink inside it (unchanged when it holds none)."""
    x0, y0, x1, y1 = region
    block = ink[y0:y1, x0:x1]
    cols, rows = np.flatnonzero(block.any(axis=0)), np.flatnonzero(block.any(axis=1))
    if not len(cols):
        return region
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1


def _stray_ink(ink: np.ndarray, region: Box, piece: Box) -> int:
    """Ink of ``region`` above or left of its lettered ``piece``: content that a letter standing at its
    panel's top-left corner cannot own."""
    x0, y0, x1, y1 = region
    top, left = max(y0, piece[1]), max(x0, piece[0])
    return int(ink[y0:top, x0:x1].sum()) + int(ink[top:y1, x0:left].sum())


def reach(letter: Box) -> Box:
    """A letter's box grown right and down by a few letter heights, as an anchor: its panel lies there,
    so no panel border runs between the letter and what it names."""
    grow = LETTER_REACH * (letter[3] - letter[1])
    return letter[0], letter[1], letter[2] + grow, letter[3] + grow


def at_top_left(letter: Box, panel: Box) -> bool:
    """Does ``letter`` stand near the top-left corner of ``panel``, where a panel letter is printed?"""
    cx, cy = (letter[0] + letter[2]) / 2, (letter[1] + letter[3]) / 2
    return (cx - panel[0] <= CORNER * (panel[2] - panel[0]) + 2
            and cy - panel[1] <= CORNER * (panel[3] - panel[1]) + 2)


def cut_by_letters(ink: np.ndarray, anchors: list[Anchor], tie: float = TIE) -> list[Anchor] | None:
    """One (box, letter) per anchor (a lettered piece, letters unique), cutting the figure (``ink``, the
    HxW foreground mask) recursively along the emptiest lines between lettered pieces; None when some
    group of pieces cannot be split by a straight line (no guillotine layout, or pieces overlapping).

    Where several lines are about as empty (a grid cut by rows or by columns first), the plan that
    leaves the least ink above or left of the letters wins: a panel spanning the width under two columns
    stays whole instead of giving its right half to the letter below it. Next, the plan whose parts, taken
    first part first, read in letter order: a row lettered D under the columns A-B and C is cut off whole
    before the columns are cut, instead of C taking its right half. ``tie`` is how much more ink
    (a share of the line's length) a line may cross than the emptiest and still count as about as empty
    (``EVERY_LINE`` weighs them all)."""
    pieces = {letter: box for box, letter in anchors}
    cores = tuple(sorted((_core(box), letter) for box, letter in anchors))
    plan = _Planner(ink, pieces, tie).best(cores, (0, 0, ink.shape[1], ink.shape[0]))
    if plan is None:
        return None
    return [(_tight(ink, region), letter) for region, letter in plan[4]]


class _Planner:
    """The best guillotine plan of each (anchors, region), remembered: (stray ink, letters out of order,
    line ink, near lines taken, leaves)."""

    def __init__(self, ink: np.ndarray, pieces: dict[str, Box], tie: float):
        self.ink, self.pieces, self.tie, self.memo = ink, pieces, tie, {}

    def best(self, anchors: tuple[Anchor, ...], region: Box) -> tuple[int, int, float, int, list] | None:
        key = (anchors, region)
        if key not in self.memo:
            self.memo[key] = self._plan(anchors, region)
        return self.memo[key]

    def _plan(self, anchors: tuple[Anchor, ...], region: Box) -> tuple[int, int, float, int, list] | None:
        if len(anchors) == 1:
            letter = anchors[0][1]
            return _stray_ink(self.ink, region, self.pieces[letter]), 0, 0.0, 0, [(region, letter)]
        options = []
        for axis in (0, 1):
            for before, after, lo, hi in _splits(list(anchors), axis):
                lo, hi = max(lo, region[axis] + 1), min(hi, region[axis + 2] - 1)
                if lo > hi:
                    continue
                # The emptiest line, and the emptiest one just before the next letters: a letter opens its
                # panel, so the border often runs there even where a gap inside the panel before it is
                # emptier (a second row with no letter of its own, a gap between a plot and its key).
                # Between columns the near line is weighed only when it crosses more ink (else it is part
                # of the same gutter); between rows, wherever it differs, since what stands below a letter
                # is its own. A near line is taken only where its plan leaves less stray ink (see
                # ``_stray_ink``), reads more in letter order or crosses less ink; ties go to the emptiest
                # line.
                best_line = _best_line(self.ink, region, axis, lo, hi)
                near = _best_line(self.ink, region, axis, max(lo, hi - (hi - lo) // 4), hi)
                options.append((*best_line, 0, axis, before, after))
                if near[0] > best_line[0] if axis == 0 else near[1] != best_line[1]:
                    options.append((*near, 1, axis, before, after))
        if not options:
            return None
        least = min(o[0] for o in options)
        if len(self.memo) >= PLANS:
            options = [min(options, key=lambda o: o[0])]
        best = None
        for share, line, nears, axis, before, after in options:
            if share > least + self.tie:
                continue
            first, second = _halves(region, axis, line)
            a, b = self.best(tuple(sorted(before)), first), self.best(tuple(sorted(after)), second)
            if a is None or b is None:
                continue
            # Letters read before a smaller one; letter order is the alphabet's (A1 < A2 < B1), as printed.
            out_of_order = sum(x > y for _, x in a[4] for _, y in b[4])
            plan = (a[0] + b[0], a[1] + b[1] + out_of_order, a[2] + b[2] + share, a[3] + b[3] + nears, a[4] + b[4])
            if best is None or plan[:4] < best[:4]:
                best = plan
        return best


def _halves(region: Box, axis: int, line: int) -> tuple[Box, Box]:
    first, second = list(region), list(region)
    first[axis + 2], second[axis] = line, line
    return tuple(first), tuple(second)
