"""What makes an image unusable, shared by every reader of pixels (raster files, DICOM, NIfTI): the error
they raise and the default pixel ceiling."""
from __future__ import annotations
from data.errors import BadInput

# PIL raises DecompressionBombError above 2 * Image.MAX_IMAGE_PIXELS (2 * 89_478_485 by default), whatever
# limit is asked for here; so that is the default and the ceiling of ``max_image_pixels`` (configs/schema.py
# repeats the number, as configs/ imports no data code; a test keeps the two equal). RGB at this size is
# ~0.5 GB per decoded image, in every loader worker.
DEFAULT_MAX_PIXELS = 178_956_970


class BadImageError(BadInput):
    """An image that is missing, unreadable, truncated or too large; the message names the file."""
