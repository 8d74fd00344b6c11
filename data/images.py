"""Image loading that turns every mode a figure can come in (grayscale, palette, RGBA, 16-bit) into RGB."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class BadImageError(ValueError):
    """An image that is missing, unreadable or truncated; the message names the file."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16-bit and float images (common in medical figures saved from DICOM) are rescaled by their own
    range rather than clipped, which would turn them white; transparent pixels become white.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").split()[-1])
        return background
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open, fully decode and convert an image to RGB; raise :class:`BadImageError` naming the file.

    DICOM files and series folders and NIfTI volumes (with an optional ``#axial:42,window=brain``
    choice) are read by :mod:`data.clinical`.
    """
    # -- clinical formats (issue 16): data/clinical.py ------------------------------------------------
    from data import clinical

    if clinical.is_clinical(path):
        return clinical.load_clinical(path)
    # -- end clinical formats ---------------------------------------------------------------------------
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"image file {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so that truncated files fail here rather than later
            return to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"image file {path} cannot be decoded: {e}") from e


# -- clinical formats (issue 16) ------------------------------------------------------------------------


def image_exists(path: str | Path) -> bool:
    """Whether ``path`` names an image file, a DICOM series folder or a clinical reference
    (``vol.nii.gz#axial:42``) whose file exists; what dataset readers check before loading."""
    from data import clinical

    return clinical.exists(path) if clinical.is_clinical(path) else Path(path).is_file()
