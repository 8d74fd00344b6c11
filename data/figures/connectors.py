"""Connector lines between panels: long, thin, slanted strokes (from a region of one panel to its
enlargement in another, or from a label to what it names) that join panels into one block of structure
and so hide the gutter between them. Axis-aligned lines are left alone: frames, axes and separator rules
are handled by the gutter analysis in :mod:`data.figures.panels`.
"""
from __future__ import annotations

import cv2
import numpy as np

MIN_LENGTH = 0.15  # a connector spans at least this share of the figure's longer side
SLANT = (15.0, 75.0)  # degrees from the horizontal: neither a horizontal nor a vertical rule
THICK_PX = 5  # strokes surviving an opening this wide are image, not lines


def without_connectors(struct: np.ndarray) -> np.ndarray:
    """``struct`` (HxW bool, the figure's structure) with its connector lines erased."""
    h, w = struct.shape
    mask = struct.astype(np.uint8)
    kernel = np.ones((THICK_PX, THICK_PX), np.uint8)
    thick = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    thin = mask & (1 - cv2.dilate(thick, np.ones((3, 3), np.uint8)))
    segments = cv2.HoughLinesP(thin * 255, 1, np.pi / 180, threshold=40,
                               minLineLength=int(MIN_LENGTH * max(h, w)), maxLineGap=8)
    if segments is None:
        return struct
    erased = mask.copy()
    for x1, y1, x2, y2 in segments.reshape(-1, 4).tolist():
        angle = np.degrees(np.arctan2(abs(y2 - y1), abs(x2 - x1)))
        if SLANT[0] <= angle <= SLANT[1]:
            cv2.line(erased, (x1, y1), (x2, y2), 0, thickness=THICK_PX)
    return erased.astype(bool)
