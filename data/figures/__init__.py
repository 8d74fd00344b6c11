"""Compound figures: panels found in the image, sub-captions found in the caption, and what is built
from them (the ``split_figures.py`` back end).

``find_panels`` and ``split_caption`` are the entry points other code uses. The image analysis lives
in ``panels``, the panel letters in ``labels`` (read by the OCR back-ends of ``ocr``) and the caption
grammar in ``subcaptions``; ``pairing`` matches panels with sub-captions, ``split`` turns a figure
record into sub-figure records and crops, and ``splits`` groups them into retrieval splits by article.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from data.figures.crosshairs import without_crosshairs
from data.figures.label_order import merge_unlabelled, mostly_in_order, repair_sequence
from data.figures.labels import normalise_label, read_labels
from data.figures.letter_cuts import EVERY_LINE, TIE, at_top_left, cut_by_letters, reach
from data.figures.letter_panels import (continuation, fill_by_order, find_missing_letters, group_by_letters,
                                       keep_caption_letters, letter_sequence, letter_words, reading_key)
from data.figures.lone_letters import DARK_INK_TOL, lone_letters
from data.figures.ocr import OcrWord
from data.figures.panels import PanelParams, background_colour, boxes_without_crosshairs, foreground_mask
from data.figures.subcaptions import SubCaption, split_caption
from data.images import to_rgb

__all__ = ["Panel", "SubCaption", "caption_letters", "find_panels", "split_caption"]


@dataclass(frozen=True)
class Panel:
    """A panel of a compound figure: pixel box (x0, y0, x1, y1) and its letter (upper case) if read."""

    box: tuple[int, int, int, int]
    label: str | None = None


def caption_letters(caption: str) -> list[str]:
    """The panel letters a caption names, in caption order, once each ("A", "B", ... or "A1"-style);
    position words ("TOP", "LEFT") are not letters."""
    out: list[str] = []
    for sub in split_caption(caption):
        for label in sub.labels:
            if label not in out and label[:1].isalpha() and (len(label) == 1 or label[1:].isdigit()):
                out.append(label)
    return out


def find_panels(image: Image.Image, ocr: Any = None, params: PanelParams | None = None,
                letters: list[str] | None = None) -> list[Panel]:
    """Panels of ``image`` in reading order; with an OCR back-end, each with the letter near its corner.

    A figure in which no panels are cut out gives one panel covering its content; a blank image gives
    an empty list. With letters on most panels, unlabelled pieces join the labelled panel to their left
    or above if they are small (a panel with white space inside is otherwise cut in two), and when
    most letters read agree with reading order A, B, C, ..., that order fills in and corrects the rest.

    ``letters`` are the panel letters the figure's caption names (:func:`caption_letters`), when the
    caption is known: then no letter is read when it names none, only the letters it names are kept,
    and the pieces are grouped around them (:mod:`data.figures.letter_panels`). ``None`` reads the
    letters from the image alone.
    """
    image = to_rgb(image)  # transparent pixels are white, as a page shows them, not black
    rgb = np.asarray(image)
    painted = without_crosshairs(rgb)  # cursor lines are no ink: not for the cut, the letters or the OCR
    if painted is not rgb:
        rgb, image = painted, Image.fromarray(painted)
    boxes = boxes_without_crosshairs(rgb, params)
    if letters is not None:
        return _caption_panels(image, rgb, boxes, ocr, letters, (params or PanelParams()).bg_tol)
    if ocr is None or not boxes:
        return [Panel(b) for b in boxes]
    labels = read_labels(image, boxes, ocr) if len(boxes) > 1 else [None]
    boxes, labels = merge_unlabelled(boxes, labels)
    labels = repair_sequence(labels, boxes)
    return [Panel(b, lab) for b, lab in zip(boxes, labels)]


def _caption_panels(image: Image.Image, rgb: np.ndarray, boxes: list, ocr: Any, letters: list[str],
                    bg_tol: int) -> list[Panel]:
    """Panels when the caption's letters are known: none read when it names none.

    First the lone marks on the background are read (:mod:`data.figures.lone_letters`, the recogniser
    alone, cheap), once more without the palest ink where that misses a letter; when they give every
    letter, the figure is cut around them and nothing more is read.
    They place each letter exactly, where a piece's corner reading can give it to the piece beside it.
    Else the letters read at the pieces' corners that the caption names, the pieces grouped around them,
    and gaps filled in reading order; letters still missing are looked for once in a whole-figure
    reading (the costliest OCR call) and the pieces grouped again. Once every letter is placed once, the
    figure is cut around the letters instead (:mod:`data.figures.letter_cuts`), where it can be."""
    if not letters or ocr is None or not boxes:
        return [Panel(b) for b in boxes]
    letters = letter_sequence(letters)
    bg = background_colour(rgb, bg_tol)
    ink = foreground_mask(rgb, bg, bg_tol)  # what the lone letters are read on and the cuts weigh
    lone = lone_letters(image, ink, bg, letters, ocr)
    if len(letters) >= 2 and not set(letters) <= set(lone):  # a letter touching a faint frame or grid line
        darker = lone_letters(image, foreground_mask(rgb, bg, DARK_INK_TOL), bg, letters, ocr)
        lone = darker if set(letters) <= set(darker) else lone
    if len(letters) >= 2 and set(letters) <= set(lone):
        cut = _cut(ink, {x: reach(b) for x, b in lone.items()}, lone)
        if cut is not None:
            return cut
    labels = read_labels(image, boxes, ocr, letters)
    letters = letters + continuation(labels, letters)
    labels = keep_caption_letters(labels, letters)
    panels, found = group_by_letters(boxes, labels, len(letters))
    found = fill_by_order(panels, found, letters)
    anchors, words = {x: b for b, x in zip(boxes, labels) if x}, {}
    if any(x not in found for x in letters):  # look once more, over the whole figure
        seen = ocr.read(image)
        named = {normalise_label(w.text, digits=True) for w in seen}
        seen = seen + [OcrWord(x, b) for x, b in lone.items() if x not in labels and x not in named]
        labels = find_missing_letters(seen, boxes, labels, letters)
        panels, found = group_by_letters(boxes, labels, len(letters))
        found = fill_by_order(panels, found, letters)
        words = letter_words(seen, letters)
        anchors = {x: b for b, x in zip(boxes, labels) if x} | {x: reach(b) for x, b in words.items()}
    if len(letters) >= 2 and sorted(anchors) == sorted(letters):  # every letter placed once
        cut = _cut(ink, anchors, words)
        if cut is not None:
            return cut
    if len(panels) == len(letters) and mostly_in_order(found, panels):  # reading order corrects misreads
        found = keep_caption_letters(repair_sequence(found, panels), letters)
    return [Panel(b, lab) for b, lab in zip(panels, found)]


def _cut(ink: np.ndarray, anchors: dict[str, tuple], words: dict[str, tuple]) -> list[Panel] | None:
    """Panels cut around ``anchors`` (letter -> box) on the foreground mask ``ink``, in reading order; None
    where no cut separates them or a letter placed from a word alone (``words``: letter -> the word's box)
    does not stand at its panel's top-left corner, where such letters are trusted only.

    The emptiest lines are tried first. Where they give no plan or leave such a letter off its corner (a
    wide plot whose tick labels run down past the next row's letter makes a line between columns emptier
    than any line between the rows), every line is weighed, and the plan that leaves the least ink above
    and left of the letters is taken."""
    for tie in (TIE, EVERY_LINE):
        cut = cut_by_letters(ink, [(b, x) for x, b in anchors.items()], tie)
        if cut is not None and all(at_top_left(words[x], b) for b, x in cut if x in words):
            break
    else:
        return None
    return [Panel(b, x) for b, x in sorted(cut, key=lambda c: reading_key(c[0], [d[0] for d in cut]))]
