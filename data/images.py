"""Image loading that turns every mode a figure can come in (grayscale, palette, RGBA, 16-bit) into RGB.

Every raster image is opened through :func:`open_image`, which reads the header only and refuses an image
with more pixels than ``max_pixels`` (the ``max_image_pixels`` config key) before anything is decoded: a
decompression bomb (a small PNG that expands to gigabytes) is a bad record like a truncated file, never a
crash. PIL's own global ``Image.MAX_IMAGE_PIXELS`` is left alone (a library must not change it for the
whole process); PIL still refuses, on its own, images above twice that value, which is why
:data:`DEFAULT_MAX_PIXELS` is that limit and also the largest one that can be configured.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from data.image_limits import DEFAULT_MAX_PIXELS, BadImageError

def _too_large(path: Path, size: tuple[int, int] | None, max_pixels: int, detail: str = "") -> BadImageError:
    if size is not None:
        count = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"
    else:  # PIL refused it before telling its size; its message holds the count
        count = detail
    return BadImageError(f"image file {path} is too large: {count}, more than max_image_pixels {max_pixels:,} "
                         f"(a decompression bomb or an oversized scan; downscale it, or raise max_image_pixels up "
                         f"to {DEFAULT_MAX_PIXELS:,})")


@contextmanager
def open_image(path: str | Path | BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS,
               name: str | Path | None = None) -> Iterator[Image.Image]:
    """``Image.open`` (the header only, nothing decoded) with the pixel count checked against
    ``max_pixels``; every failure, inside the ``with`` block too, becomes :class:`BadImageError` naming
    the file. ``path`` may be an open binary file (bytes already read), with ``name`` for messages."""
    source = path
    if hasattr(path, "read"):
        path = Path(name or "<bytes>")
    else:
        path = source = Path(path)
        if not path.is_file():
            raise BadImageError(f"image file {path} does not exist")
    try:
        with Image.open(source) as img:
            if img.width * img.height > max_pixels:
                raise _too_large(path, img.size, max_pixels)
            yield img
    except BadImageError:
        raise
    except Image.DecompressionBombError as e:  # above PIL's own ceiling: refused inside Image.open
        raise _too_large(path, None, max_pixels, str(e).split(" exceeds")[0]) from e
    except UnidentifiedImageError as e:
        raise BadImageError(f"image file {path} cannot be decoded: not in an image format PIL reads") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImageError(f"image file {path} cannot be decoded: {e}") from e


def check_header(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Cheap pre-flight check of one image file: it exists, PIL knows its format, its size is within
    ``max_pixels`` and ``verify()`` finds its structure intact (for PNG every chunk and checksum, which
    catches truncation; for JPEG only the markers). Pixels are not decoded, so a few damaged JPEGs can
    still fail later, where the training dataset replaces them. DICOM and NIfTI references are checked
    to exist and their size read from their headers (reading a volume is not cheap). Raises
    :class:`BadImageError`."""
    from data import clinical
    from data.volumes import check_size

    if clinical.is_clinical(path):
        if not clinical.exists(path):
            raise BadImageError(f"image file {path} does not exist")
        check_size(clinical.split_ref(path)[0], max_pixels)
        return
    with open_image(path, max_pixels) as img:
        img.verify()


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


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, fully decode and convert an image to RGB; raise :class:`BadImageError` naming the file.

    An image with more than ``max_pixels`` pixels is refused from its header, before it is decoded
    (:func:`open_image`). DICOM files and series folders and NIfTI volumes (with an optional
    ``#axial:42,window=brain`` choice) are read by :mod:`data.clinical`.
    """
    # clinical formats: data/clinical.py
    from data import clinical

    if clinical.is_clinical(path):
        return clinical.load_clinical(path, max_pixels)
    # -- end clinical formats ---------------------------------------------------------------------------
    with open_image(path, max_pixels) as img:
        img.load()  # decode now, so that truncated files fail here rather than later
        return to_rgb(img)


# clinical formats


def image_exists(path: str | Path) -> bool:
    """Whether ``path`` names an image file, a DICOM series folder or a clinical reference
    (``vol.nii.gz#axial:42``) whose file exists; what dataset readers check before loading."""
    from data import clinical

    return clinical.exists(path) if clinical.is_clinical(path) else Path(path).is_file()


def parse_pixel_limit(text: str) -> int:
    """``--max-image-pixels`` of the command-line tools: an integer in [1, DEFAULT_MAX_PIXELS] (argparse type)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}") from None
    if not 1 <= value <= DEFAULT_MAX_PIXELS:
        raise argparse.ArgumentTypeError(f"must be in [1, {DEFAULT_MAX_PIXELS}] (PIL refuses larger images on its "
                                         f"own), got {value}")
    return value
