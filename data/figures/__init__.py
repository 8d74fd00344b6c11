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

from data.figures.label_order import merge_unlabelled, repair_sequence
from data.figures.labels import read_labels
from data.figures.panels import PanelParams, detect_panel_boxes
from data.figures.subcaptions import SubCaption, split_caption

__all__ = ["Panel", "SubCaption", "find_panels", "split_caption"]


@dataclass(frozen=True)
class Panel:
    """A panel of a compound figure: pixel box (x0, y0, x1, y1) and its letter (upper case) if read."""

    box: tuple[int, int, int, int]
    label: str | None = None


def find_panels(image: Image.Image, ocr: Any = None, params: PanelParams | None = None) -> list[Panel]:
    """Panels of ``image`` in reading order; with an OCR back-end, each with the letter near its corner.

    A figure in which no panels are cut out gives one panel covering its content; a blank image gives
    an empty list. With letters on most panels, unlabelled pieces join the labelled panel to their left
    or above if they are small (a panel with white space inside is otherwise cut in two), and when
    most letters read agree with reading order A, B, C, ..., that order fills in and corrects the rest.
    """
    rgb = np.asarray(image.convert("RGB"))
    boxes = detect_panel_boxes(rgb, params)
    if ocr is None or not boxes:
        return [Panel(b) for b in boxes]
    labels = read_labels(image, boxes, ocr) if len(boxes) > 1 else [None]
    boxes, labels = merge_unlabelled(boxes, labels)
    labels = repair_sequence(labels, boxes)
    return [Panel(b, lab) for b, lab in zip(boxes, labels)]
