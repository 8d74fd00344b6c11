"""Figures their authors already split: one image file per panel.

A JATS ``<fig>`` may hold several ``<graphic>`` elements (``entropy-26-00970-g004a.jpg`` ...
``g004d.jpg``), and a ``<fig-group>`` several ``<fig>`` that share the group's caption. Each such image
is kept as its own figure record, with its place among the figure's images and, where the file names or
the panel labels tell it, its panel letter; ``data.figures.author_panels`` pairs it with its sub-caption
instead of cutting it again.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

_IMAGE_EXTENSION = re.compile(r"\.(?:jpe?g|png|gif|tiff?|eps|bmp|webp)$", re.I)
# "a", "(a)", "a)", "A.", "Figure 3a", "Fig. 2 (B)": the letter a panel's own <label> gives it.
_LABEL_LETTER = re.compile(r"(?:(?:fig(?:ure)?\.?\s*)?\d+\s*)?\(?([A-Za-z])[).]?", re.I)


@dataclass(frozen=True)
class FigureImage:
    """One image file of a figure: its graphic href and, for a figure split into one file per panel, the
    panel's upper-case letter when known, its index among the panel files (from 0) and their number."""

    href: str
    letter: str | None = None
    index: int = 0
    count: int = 1


def letters_from_names(hrefs: list[str]) -> list[str | None]:
    """The panel letters that the file names of one figure's images spell, or Nones.

    The names, without extension, must share a stem and differ only in one letter each, and those
    letters must run a, b, c, ... in order (``g004a``, ``g004b``; ``Fig1_A``, ``Fig1_B``).
    """
    stems = [_IMAGE_EXTENSION.sub("", h.strip()) for h in hrefs]
    nothing: list[str | None] = [None] * len(hrefs)
    if len(stems) < 2 or len({len(s) for s in stems}) != 1:
        return nothing
    prefix = os.path.commonprefix(stems)
    tails = [s[len(prefix):] for s in stems]
    if not all(len(t) == 1 and t.isalpha() for t in tails):
        return nothing
    letters = [t.upper() for t in tails]
    if letters != [chr(ord("A") + i) for i in range(len(letters))]:
        return nothing
    return letters


def label_letter(label: str) -> str | None:
    """The panel letter of a panel's own label (``(a)``, ``B``, ``Figure 3c``), or None."""
    match = _LABEL_LETTER.fullmatch(label.strip())
    return match.group(1).upper() if match else None


def panel_images(hrefs: list[str], labels: list[str] | None = None) -> list[FigureImage]:
    """The images of one figure split into ``len(hrefs)`` panel files; each panel's letter comes from its
    own label (``labels``, where given) when every label names one, else from the file names."""
    letters = [label_letter(x) for x in labels] if labels else []
    if not letters or None in letters or len(set(letters)) != len(letters):
        letters = letters_from_names(hrefs)
    return [FigureImage(h, letter, i, len(hrefs)) for i, (h, letter) in enumerate(zip(hrefs, letters))]
