"""From figure/caption records to sub-figure/sub-caption records (crops on disk, counted outcomes).

Each figure ends in one of three outcomes: ``matched`` (at least one panel paired with a sub-caption
by its letter or position), ``fallback`` (the whole figure with the whole caption, as the original
pipeline did when nothing matched) or ``failed`` (the record or its image cannot be used; it is kept,
with the reason, in the failure list). Nothing in the input is dropped silently.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .captions import strip_html
from .figures import Panel, SubCaption, find_panels, split_caption
from .ocr import OcrError

log = logging.getLogger(__name__)

POSITION_WORDS = {"TOP", "BOTTOM", "LEFT", "RIGHT", "MIDDLE"}


@dataclass
class SplitOptions:
    context: bool = True  # prepend the caption's shared context to each sub-caption
    order_fallback: bool = False  # without any letters read, pair letters with panels in reading order
    crop_dir: str = "images"


@dataclass
class FigureResult:
    outcome: str  # "matched", "fallback" or "failed"
    records: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    reason: str = ""


def _groups(boxes: list[tuple[int, int, int, int]], lo: int, hi: int) -> list[list[int]]:
    """Indices grouped into rows (lo, hi = 1, 3) or columns (0, 2) by overlapping extents."""
    order = sorted(range(len(boxes)), key=lambda i: boxes[i][lo])
    groups: list[list[int]] = []
    end = None
    for i in order:
        b = boxes[i]
        if end is not None and b[lo] < end - 0.3 * (b[hi] - b[lo]):
            groups[-1].append(i)
            end = max(end, b[hi])
        else:
            groups.append([i])
            end = b[hi]
    return groups


def panels_at(position: str, panels: list[Panel]) -> list[Panel]:
    """Panels named by position words such as ``TOP``, ``LEFT`` or ``TOP LEFT``; [] if ambiguous."""
    boxes = [p.box for p in panels]
    rows, cols = _groups(boxes, 1, 3), _groups(boxes, 0, 2)
    chosen = set(range(len(panels)))
    for word in position.split():
        axis = rows if word in ("TOP", "BOTTOM") or (word == "MIDDLE" and len(rows) == 3) else cols
        if len(axis) < 2 or (word == "MIDDLE" and len(axis) != 3):
            return []
        index = {"TOP": 0, "LEFT": 0, "BOTTOM": -1, "RIGHT": -1, "MIDDLE": 1}.get(word)
        if index is None:
            return []
        chosen &= set(axis[index])
    return [panels[i] for i in sorted(chosen)]


def _atomic_save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            image.convert("RGB").save(tmp, format="JPEG", quality=95)
        else:
            image.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pairs(subs: list[SubCaption], panels: list[Panel], counts: Counter,
           order_fallback: bool) -> list[tuple[str, Panel, SubCaption]]:
    """(label, panel, sub-caption) for every caption label that names a panel; misses are counted."""
    by_letter = {p.label: p for p in panels if p.label}
    letters = [lab for s in subs for lab in s.labels if lab not in POSITION_WORDS and " " not in lab]
    if order_fallback and not by_letter and len(panels) > 1 and len(letters) == len(panels):
        by_letter = dict(zip(letters, panels))
        counts["paired_by_order"] += 1
    pairs = []
    for sub in subs:
        for lab in sub.labels:
            if lab in by_letter:
                pairs.append((lab, by_letter[lab], sub))
            elif set(lab.split()) <= POSITION_WORDS and panels_at(lab, panels):
                pairs.extend((lab, p, sub) for p in panels_at(lab, panels))
            else:
                counts["labels_without_panel"] += 1
    used = {id(p) for _, p, _ in pairs}
    counts["panels_without_label"] += sum(1 for p in panels if id(p) not in used)
    return pairs


def split_figure(record: dict, root: Path, out_dir: Path, ocr: Any, opts: SplitOptions) -> FigureResult:
    """Sub-figure records for one figure record; crops are written under ``out_dir/opts.crop_dir``."""
    image_rel, caption = record.get("image"), record.get("caption")
    if not isinstance(image_rel, str) or not isinstance(caption, str):
        return FigureResult("failed", reason="record has no 'image' or 'caption' string")
    src = root / image_rel
    try:
        with Image.open(src) as im:
            image = im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        return FigureResult("failed", reason=f"cannot read image {src}: {e}")
    result = FigureResult("fallback")
    try:
        panels = find_panels(image, ocr)
    except OcrError as e:
        log.warning("OCR failed on %s (%s); splitting it without letters", src, e)
        result.counts["ocr_errors"] += 1
        panels = find_panels(image, None)
    if not panels:
        result.counts["no_panels"] += 1
    subs = split_caption(caption)
    pairs = _pairs(subs, panels, result.counts, opts.order_fallback) if len(panels) > 1 else []
    stem, suffix = Path(image_rel).stem, Path(image_rel).suffix.lower() or ".png"
    for label, panel, sub in pairs:
        crop_rel = Path(opts.crop_dir) / f"{stem}_{label.replace(' ', '-')}{suffix}"
        _atomic_save(image.crop(panel.box), out_dir / crop_rel)
        text = sub.with_context() if opts.context else sub.text
        result.records.append({**record, "image": crop_rel.as_posix(), "caption": text or strip_html(caption),
                               "parent_image": image_rel, "panel_label": label, "box": list(panel.box)})
    if result.records:
        result.outcome = "matched"
        return result
    whole = os.path.relpath(src, out_dir)
    result.records.append({**record, "image": Path(whole).as_posix(), "caption": strip_html(caption),
                           "parent_image": image_rel, "panel_label": None,
                           "box": [0, 0, image.width, image.height]})
    return result
