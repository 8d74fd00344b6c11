"""From figure records to sub-figure records (crops on disk, counted outcomes).

Each figure ends in one of three outcomes: ``matched`` (at least one panel paired with a sub-caption
by its letter or position), ``fallback`` (the whole figure with the whole caption, as the original
pipeline did when nothing matched) or ``failed`` (its image cannot be used; the caller keeps it, with
the reason, in the failure list). Records that do not fit :class:`~data.records.FigureRecord` fail
when they are read. Nothing in the input is dropped silently.
"""
from __future__ import annotations

import logging
import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from data.captions import pre_caption
from data.figures import Panel, caption_letters, find_panels, split_caption
from data.figures.author_panels import author_panel_sub, is_author_panel
from data.figures.ocr import OcrError
from data.figures.pairing import pair_panels
from data.files import atomic_write
from data.image_limits import DEFAULT_MAX_PIXELS, BadImageError
from data.images import open_image, to_rgb
from data.records import FigureRecord, SubFigureRecord, subfigure_record
from data.scrape.safe_paths import path_inside, safe_component

log = logging.getLogger(__name__)


@dataclass
class SplitOptions:
    context: bool = True  # prepend the caption's shared context to each sub-caption
    order_fallback: bool = False  # without any letters read, pair letters with panels in reading order
    crop_dir: str = "images"
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images (decompression bombs) fail, named


@dataclass
class FigureResult:
    outcome: str  # "matched", "fallback" or "failed"
    records: list[SubFigureRecord] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    reason: str = ""
    # what the report draws: every panel found ([x0, y0, x1, y1, letter or None]), the caption's letters
    # and the image size
    panels: list[list] = field(default_factory=list)
    letters: list[str] = field(default_factory=list)
    size: list[int] = field(default_factory=list)


def save_crop(image: Image.Image, path: Path) -> None:
    """A crop as JPEG (for .jpg/.jpeg names) or PNG, written atomically."""
    if path.suffix.lower() in (".jpg", ".jpeg"):
        atomic_write(path, lambda tmp: image.convert("RGB").save(tmp, format="JPEG", quality=95))
    else:
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def split_figure(record: FigureRecord, root: Path, out_dir: Path, ocr: Any, opts: SplitOptions) -> FigureResult:
    """Sub-figure records for one figure record; crops are written under ``out_dir/opts.crop_dir``.

    The record's caption is clean text already (``data.records``); it is used as it stands.
    """
    image_rel, caption = record["image"], record["caption"]
    # nothing outside the input folder is read (``../x.png``, absolute paths), a
    # figure without caption text fails (its records would reach the splits with nothing to learn from),
    # and an over-large image fails by its header, like a broken one.
    if not pre_caption(caption, 10**6):
        return FigureResult("failed", reason=f"empty caption {caption!r}: no text for its sub-figures")
    try:
        src = path_inside(root, image_rel)
    except ValueError as e:
        return FigureResult("failed", reason=f"image path outside the input folder: {e}")
    try:
        with open_image(src, opts.max_pixels) as im:
            image = to_rgb(im)
    except BadImageError as e:
        return FigureResult("failed", reason=f"cannot read image: {e}")
    whole = Path(os.path.relpath(src, out_dir)).as_posix()
    if is_author_panel(record):
        return _author_panel(record, caption, whole, image.size, opts)
    letters = caption_letters(caption)
    result = FigureResult("fallback", letters=letters, size=[image.width, image.height])
    panels = _panels(image, ocr, src, result.counts, letters)
    result.panels = [[*p.box, p.label] for p in panels]
    subs = split_caption(caption)
    pairs = pair_panels(subs, panels, result.counts, opts.order_fallback) if len(panels) > 1 else []
    stem, suffix = crop_stem(src.relative_to(root.resolve())), src.suffix.lower() or ".png"
    for label, panel, sub in pairs:
        crop_rel = Path(opts.crop_dir) / f"{stem}_{label.replace(' ', '-')}{suffix}"
        save_crop(image.crop(panel.box), out_dir / crop_rel)
        text = sub.with_context() if opts.context else sub.text
        text = text if pre_caption(text, 10**6) else caption  # a sub-caption of punctuation alone carries nothing
        result.records.append(subfigure_record(record, crop_rel.as_posix(), text, label, list(panel.box)))
    if result.records:
        result.outcome = "matched"
        return result
    result.records.append(subfigure_record(record, whole, caption, None, [0, 0, image.width, image.height]))
    return result


def _author_panel(record: FigureRecord, caption: str, whole: str, size: tuple[int, int],
                  opts: SplitOptions) -> FigureResult:
    """An image file of a figure split by its authors: the whole file with its sub-caption (no panels
    are looked for in it), or with the whole caption when its letter or sub-caption is unknown."""
    box = [0, 0, size[0], size[1]]
    paired = author_panel_sub(record, split_caption(caption))
    if paired is None:
        result = FigureResult("fallback", [subfigure_record(record, whole, caption, None, box)])
        result.counts["author_panels_unpaired"] += 1
        return result
    label, sub = paired
    text = sub.with_context() if opts.context else sub.text
    text = text if pre_caption(text, 10**6) else caption
    result = FigureResult("matched", [subfigure_record(record, whole, text, label, box)])
    result.counts["author_panels"] += 1
    return result


def crop_stem(relative: Path) -> str:
    """The name part crops of one figure share: its file stem (made safe) and a short hash of its path
    relative to the input folder, so that ``a/fig.png`` and ``b/fig.png`` never overwrite each other's
    crops, while a rerun gives every crop the same name again ."""
    digest = hashlib.sha1(relative.as_posix().encode("utf-8")).hexdigest()[:8]
    return f"{safe_component(relative.stem)}-{digest}"


def _panels(image: Image.Image, ocr: Any, src: Path, counts: Counter, letters: list[str]) -> list[Panel]:
    """The figure's panels, with the caption's letters where the OCR finds them; without letters when
    it fails."""
    try:
        panels = find_panels(image, ocr, letters=letters)
    except OcrError as e:
        log.warning("OCR failed on %s (%s); splitting it without letters", src, e)
        counts["ocr_errors"] += 1
        panels = find_panels(image, None, letters=[])
    if not panels:
        counts["no_panels"] += 1
    return panels
