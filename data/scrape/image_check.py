"""Checking downloaded figure images before they are kept."""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

# PIL format name -> file extension. Anything else (PDF, EPS...) is not a training image.
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}


class ImageRejected(Exception):
    """The bytes are not a usable image; ``reason`` is a short counter name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class ImageInfo:
    """What is known about an accepted image."""

    extension: str
    width: int
    height: int


def inspect_image(data: bytes, min_size: int, max_pixels: int) -> ImageInfo:
    """Decode ``data`` fully and check its format and size.

    Raises ImageRejected with reason ``corrupt_image``, ``unsupported_format``, ``too_many_pixels``
    (decompression bombs) or ``too_small`` (icons and thumbnails: shorter side below ``min_size``).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageRejected("too_many_pixels", f"{width}x{height}")
                fmt = img.format or ""
                if fmt not in EXTENSIONS:
                    raise ImageRejected("unsupported_format", fmt or "unknown")
                # load() decodes every pixel: a truncated or garbled file fails here, not in training.
                img.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageRejected("too_many_pixels", str(err)) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageRejected("corrupt_image", str(err)) from err
    if min(width, height) < min_size:
        raise ImageRejected("too_small", f"{width}x{height} < {min_size}")
    return ImageInfo(EXTENSIONS[fmt], width, height)
