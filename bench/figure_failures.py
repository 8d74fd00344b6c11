"""Why a real figure is not split right: kinds of failure, read from its true and found panels.

A figure can fail in several ways at once; each kind is counted once per figure.

- ``merged``: one found panel holds the centres of two or more true panels (a missing gutter, a shared
  key or colour bar joining panels).
- ``split``: one true panel holds the centres of two or more found panels (a lettered panel that is
  itself a grid, plot facets, a legend standing apart).
- ``misplaced``: a true panel that no found panel matches (IoU 0.5), where neither of the above explains it
  (a border drawn in the wrong gutter, a piece given to the wrong neighbour).
- ``extra``: a found panel that neither holds a true panel's centre nor has its centre in one (a caption
  strip, a logo, noise).
- ``letter_wrong``: a matched panel read with another letter than its own.
- ``letter_missing``: a matched panel with a letter in the gold that was given none.
- ``letter_invented``: a matched panel with no letter in the gold that was given one.
"""
from __future__ import annotations

from data.figures.panels import Box, centre_inside

KINDS = ("merged", "split", "misplaced", "extra", "letter_wrong", "letter_missing", "letter_invented")


def failure_kinds(truth: list[tuple[Box, str | None]], found: list[tuple[Box, str | None]],
                  pairs: list[tuple[int, int]]) -> list[str]:
    """The kinds of failure of one figure (in :data:`KINDS` order; empty when it is all right).

    ``truth`` and ``found``: (box, letter) of the true and the found panels; ``pairs``: the matched
    (true index, found index) pairs."""
    kinds: set[str] = set()
    matched_true = {i for i, _ in pairs}
    for i, (t, _) in enumerate(truth):
        holders = [f for f, _ in found if centre_inside(t, f)]
        merged = any(sum(centre_inside(u, f) for u, _ in truth) >= 2 for f in holders)
        split = sum(centre_inside(f, t) for f, _ in found) >= 2
        if merged:
            kinds.add("merged")
        if split:
            kinds.add("split")
        if i not in matched_true and not (merged or split):
            kinds.add("misplaced")
    if any(not any(centre_inside(t, f) or centre_inside(f, t) for t, _ in truth) for f, _ in found):
        kinds.add("extra")
    for i, j in pairs:
        want, got = truth[i][1], found[j][1]
        if want and got and want != got:
            kinds.add("letter_wrong")
        elif want and not got:
            kinds.add("letter_missing")
        elif got and not want:
            kinds.add("letter_invented")
    return [k for k in KINDS if k in kinds]


def count_kinds(per_figure: list[list[str]]) -> dict[str, int]:
    """Figures showing each kind of failure, over a set."""
    return {k: sum(k in kinds for kinds in per_figure) for k in KINDS}
