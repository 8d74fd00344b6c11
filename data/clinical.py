"""Clinical images: DICOM files and series folders (pydicom) and NIfTI volumes (nibabel) as 8-bit RGB slices.

Wherever an image path is accepted (datasets, ``vis.py``, the zero-shot, caption and embedding commands),
it may name a DICOM file (``.dcm``, or any file with the DICOM preamble), a folder holding one DICOM series,
or a ``.nii``/``.nii.gz`` volume, optionally followed by ``#`` and comma-separated choices::

    brain.nii.gz                     the middle axial slice (the default)
    brain.nii.gz#axial:42            axial slice 42, counted from the patient's feet (RAS order; -1: the top)
    brain.nii.gz#coronal:mid         also sagittal:N; ``axial:all`` expands to every slice (commands only)
    head_ct/#axial:mid,window=subdural   a CT series folder with the subdural window
    scan.dcm#window=40/80            an explicit window: centre/width in Hounsfield units
    t1.nii.gz#percentiles=1/99       robust scaling between these percentiles (default 0.5/99.5)
    ct.dcm#window=percentile         robust scaling for a CT too

Intensities: DICOM values go through RescaleSlope/RescaleIntercept first. CT (DICOM modality CT, or any
volume given a ``window``) is windowed: brain 40/80 (the default for CT), subdural 75/215, bone 600/2800,
or explicit; everything else is scaled by robust percentiles of the whole volume. MONOCHROME1 is inverted.

Orientation: volumes with geometry (NIfTI affine; DICOM ImageOrientation/ImagePosition) are reordered to
RAS+ and shown in the radiological convention: axial and coronal slices with the patient's right on the
image's left (patient's left on the image's right), anterior (axial) or superior (coronal) at the top;
sagittal slices with anterior on the left. That is the convention of the demo set and of the
laterality-aware flip (``hflip: swap``), so *left* and *right* in captions stay true. Non-square voxels
are resampled to square pixels. Files without geometry are shown as stored.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from data.image_limits import DEFAULT_MAX_PIXELS, BadImageError
from data.volumes import Volume, kind_of, read_volume

CT_WINDOWS = {"brain": (40.0, 80.0), "subdural": (75.0, 215.0), "bone": (600.0, 2800.0)}
PLANES = ("axial", "coronal", "sagittal")
_SLICE = re.compile(r"^(axial|coronal|sagittal):(mid|all|-?\d+)$")


@dataclass(frozen=True)
class Choice:
    """What to take from a clinical file: plane, slice (int, ``mid`` or ``all``) and intensity mapping."""

    plane: str | None = None  # None: the plane of a single-slice file, else axial
    index: int | str = "mid"
    # (centre, width), or "percentile"; None: the brain window for DICOM CT, percentiles for everything else
    window: tuple[float, float] | str | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)

    def suffix(self) -> str:
        """The choice written back as ``plane:index[,window=...][,percentiles=...]``."""
        parts = [f"{self.plane or 'axial'}:{self.index}"]
        if isinstance(self.window, str):
            parts.append(f"window={self.window}")
        elif self.window is not None:
            parts.append(f"window={self.window[0]:g}/{self.window[1]:g}")
        if self.percentiles != (0.5, 99.5):
            parts.append(f"percentiles={self.percentiles[0]:g}/{self.percentiles[1]:g}")
        return ",".join(parts)


def _pair(text: str, what: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"{what} must be two numbers A/B, not {text!r}") from None
    return a, b


def parse_choice(text: str) -> Choice:
    """``axial:42,window=bone`` -> :class:`Choice`; raises ValueError naming the bad part."""
    fields: dict = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _SLICE.match(part)
        if m:
            index = m.group(2)
            fields.update(plane=m.group(1), index=int(index) if index.lstrip("-").isdigit() else index)
        elif part.startswith("window="):
            value = part[len("window="):]
            if value == "percentile":
                fields["window"] = value
                continue
            fields["window"] = CT_WINDOWS[value] if value in CT_WINDOWS else _pair(value, "window")
            if fields["window"][1] <= 0:
                raise ValueError(f"window width must be positive in {part!r}")
        elif part.startswith("percentiles="):
            lo, hi = _pair(part[len("percentiles="):], "percentiles")
            if not 0 <= lo < hi <= 100:
                raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, not {part!r}")
            fields["percentiles"] = (lo, hi)
        else:
            raise ValueError(f"unknown choice {part!r}: use PLANE:INDEX (axial|coronal|sagittal : N|mid|all), "
                             f"window=brain|subdural|bone|CENTRE/WIDTH|percentile or percentiles=LOW/HIGH")
    if "percentiles" in fields and "window" not in fields:
        fields["window"] = "percentile"  # asking for percentiles means percentile scaling, CT too
    return Choice(**fields)


def split_ref(ref: str | os.PathLike) -> tuple[Path, Choice]:
    """``"vol.nii.gz#axial:42"`` -> (path, choice).

    A file whose name contains ``#`` is taken whole; a bad choice after an existing file raises
    :class:`BadImageError` naming it.
    """
    text = os.fspath(ref)
    if "#" not in text or Path(text).exists():
        return Path(text), Choice()
    head, tail = text.rsplit("#", 1)
    try:
        return Path(head), parse_choice(tail)
    except ValueError as e:
        if not Path(head).exists():
            return Path(text), Choice()  # neither exists: let the caller report a missing file
        raise BadImageError(f"image {text}: {e}") from None


def is_clinical(ref: str | os.PathLike) -> bool:
    """Whether ``ref`` names a DICOM file or folder, a NIfTI volume, or carries a ``#choice``."""
    try:
        path, _ = split_ref(ref)
    except BadImageError:
        return True  # an existing file with a bad choice: loading it reports the choice
    return kind_of(path) is not None


def exists(ref: str | os.PathLike) -> bool:
    """Whether the file or folder that ``ref`` names exists (a bad ``#choice`` counts as missing)."""
    try:
        path, _ = split_ref(ref)
    except BadImageError:
        return False
    return path.is_file() or path.is_dir()



# -- slices -------------------------------------------------------------------------------------------


_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def plane_of(vol: Volume, choice: Choice) -> str:
    """The chosen plane; by default the plane of a single oriented slice (a sagittal DICOM stays sagittal)."""
    if choice.plane is not None:
        return choice.plane
    flat = [axis for axis, n in enumerate(vol.data.shape) if n == 1]
    if vol.oriented and len(flat) == 1:
        return {0: "sagittal", 1: "coronal", 2: "axial"}[flat[0]]
    return "axial"


def num_slices(vol: Volume, plane: str) -> int:
    return 1 if vol.rgb is not None else vol.data.shape[_AXIS[plane]]


def _display(vol: Volume, plane: str, index: int) -> tuple[np.ndarray, float]:
    """(2-D array (rows, cols), row spacing / column spacing) in the radiological display convention."""
    d, (sx, sy, sz) = vol.data, vol.spacing
    if not vol.oriented:  # as stored: rows down, columns across
        if plane != "axial":
            raise BadImageError("this file has no orientation (ImageOrientationPatient), so only its stored "
                                "slices (axial:N) can be shown")
        return d[:, :, index].T, 1.0
    if plane == "axial":  # rows: anterior -> posterior; columns: patient right -> left
        return d[::-1, ::-1, index].T, sy / sx
    if plane == "coronal":  # rows: superior -> inferior; columns: patient right -> left
        return d[::-1, index, ::-1].T, sz / sx
    return d[index, ::-1, ::-1].T, sz / sy  # sagittal: rows superior -> inferior, columns anterior -> posterior


def _intensity(vol: Volume, slice2d: np.ndarray, choice: Choice) -> np.ndarray:
    window = choice.window
    if window is None and (vol.modality or "").upper() == "CT":
        window = CT_WINDOWS["brain"]
    if isinstance(window, tuple):
        lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
    else:
        lo, hi = vol.percentile_range(choice.percentiles)
    out = np.clip((slice2d - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 255.0
    return 255.0 - out if vol.invert else out


def load_clinical(ref: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An 8-bit RGB slice of a DICOM file/series or NIfTI volume; ``ref`` may carry ``#choices``. A volume
    larger than ``max_pixels`` allows is refused from its header (:func:`data.volumes.check_size`)."""
    path, choice = split_ref(ref)
    vol = read_volume(path, max_pixels)
    if vol.rgb is not None:
        return Image.fromarray(vol.rgb, mode="RGB")
    plane = plane_of(vol, choice)
    n = num_slices(vol, plane)
    if choice.index == "all":
        raise BadImageError(f"image {ref}: '{plane}:all' stands for {n} images; here one slice is needed "
                            f"(e.g. {plane}:mid); the commands of vis.py expand it")
    index = n // 2 if choice.index == "mid" else int(choice.index)
    if not -n <= index < n:
        raise BadImageError(f"image {ref}: {plane} slice {index} out of range (0 to {n - 1})")
    try:
        slice2d, aspect = _display(vol, plane, index % n)
    except BadImageError as e:
        raise BadImageError(f"image {ref}: {e}") from None
    img = Image.fromarray(_intensity(vol, slice2d, choice).round().astype(np.uint8), mode="L")
    if abs(aspect - 1.0) > 0.01:  # square pixels, so anatomy keeps its shape
        img = img.resize((img.width, max(1, round(img.height * aspect))), Image.BILINEAR)
    return img.convert("RGB")


def expand(ref: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[str]:
    """``vol.nii.gz#axial:all`` -> one reference per slice; any other reference -> [itself]."""
    path, choice = split_ref(ref)
    if choice.index != "all":
        return [os.fspath(ref)]
    vol = read_volume(path, max_pixels)
    plane = plane_of(vol, choice)
    return [f"{path}#{Choice(plane, i, choice.window, choice.percentiles).suffix()}"
            for i in range(num_slices(vol, plane))]
