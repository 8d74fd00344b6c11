"""Clinical images: DICOM files and series folders (pydicom) and NIfTI volumes (nibabel) as 8-bit RGB slices.

Wherever an image path is accepted (datasets, ``vis.py``, the zero-shot, caption and embedding commands),
it may name a DICOM file (``.dcm``, or any file with the DICOM preamble), a folder holding one DICOM series,
or a ``.nii``/``.nii.gz`` volume, optionally followed by ``#`` and comma-separated choices::

    brain.nii.gz                     the middle axial slice (the default)
    brain.nii.gz#axial:42            axial slice 42, counted from the patient's feet (canonical RAS order)
    brain.nii.gz#coronal:mid         also sagittal:N; ``axial:all`` expands to every slice (commands only)
    head_ct/#axial:mid,window=subdural   a CT series folder with the subdural window
    scan.dcm#window=40/80            an explicit window: centre/width in Hounsfield units
    t1.nii.gz#percentiles=1/99       robust MR scaling between these percentiles (default 0.5/99.5)

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

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from data.images import BadImageError

CT_WINDOWS = {"brain": (40.0, 80.0), "subdural": (75.0, 215.0), "bone": (600.0, 2800.0)}
PLANES = ("axial", "coronal", "sagittal")
RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm"}
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_SLICE = re.compile(r"^(axial|coronal|sagittal):(mid|all|-?\d+)$")


@dataclass(frozen=True)
class Choice:
    """What to take from a clinical file: plane, slice (int, ``mid`` or ``all``) and intensity mapping."""

    plane: str | None = None  # None: the plane of a single-slice file, else axial
    index: int | str = "mid"
    window: tuple[float, float] | None = None  # (centre, width); None: brain window for DICOM CT, else percentiles
    percentiles: tuple[float, float] = (0.5, 99.5)

    def suffix(self, index: int | str | None = None) -> str:
        parts = [f"{self.plane or 'axial'}:{self.index if index is None else index}"]
        if self.window is not None:
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
                             f"window=brain|subdural|bone|CENTRE/WIDTH or percentiles=LOW/HIGH")
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


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _kind(path: Path) -> str | None:
    """``dicom``, ``nifti``, ``series`` (a folder) or None for anything else (a PNG, a missing file)."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if path.is_dir():
        return "series"
    if path.suffix.lower() not in RASTER_SUFFIXES and path.is_file() and _has_dicom_preamble(path):
        return "dicom"
    return None


def is_clinical(ref: str | os.PathLike) -> bool:
    """Whether ``ref`` names a DICOM file or folder, a NIfTI volume, or carries a ``#choice``."""
    try:
        path, _ = split_ref(ref)
    except BadImageError:
        return True  # an existing file with a bad choice: loading it reports the choice
    return _kind(path) is not None


def exists(ref: str | os.PathLike) -> bool:
    """Whether the file or folder that ``ref`` names exists (a bad ``#choice`` counts as missing)."""
    try:
        path, _ = split_ref(ref)
    except BadImageError:
        return False
    return path.is_file() or path.is_dir()


# -- reading volumes ----------------------------------------------------------------------------------


@dataclass
class Volume:
    """Voxel values (X, Y, Z) after rescaling, float32; RAS+ when ``oriented``; spacing in mm per axis."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    oriented: bool
    modality: str | None = None
    invert: bool = False  # MONOCHROME1: high values are dark
    rgb: np.ndarray | None = None  # (H, W, 3) uint8 for colour DICOM (secondary captures): shown as stored
    _ranges: dict = field(default_factory=dict, repr=False)

    def percentile_range(self, percentiles: tuple[float, float]) -> tuple[float, float]:
        """Intensities at these percentiles of the whole volume (computed once per volume)."""
        if percentiles not in self._ranges:
            lo, hi = np.percentile(self.data, percentiles)
            self._ranges[percentiles] = (float(lo), float(hi))
        return self._ranges[percentiles]


def _to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reorder/flip the axes of (X, Y, Z) data so that they run to patient Right, Anterior, Superior."""
    from nibabel.orientations import apply_orientation, io_orientation

    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    ornt = io_orientation(affine)
    out = np.ascontiguousarray(apply_orientation(data, ornt))
    ras_spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt):
        ras_spacing[int(target)] = float(spacing[axis])
    return out, tuple(ras_spacing)


def read_nifti(path: Path) -> Volume:
    try:
        import nibabel as nib
    except ImportError:
        raise BadImageError(f"{path}: reading NIfTI needs nibabel (pip install nibabel)") from None
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # nibabel raises ImageFileError, EOFError, OSError, zlib errors... all mean "bad file"
        raise BadImageError(f"NIfTI file {path} cannot be read: {e}") from e
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise BadImageError(f"NIfTI file {path} is a {data.ndim}-D volume of shape {data.shape}; only 3-D volumes "
                            f"are read: take one volume first (e.g. nibabel.four_to_three or fslroi)")
    data = np.nan_to_num(data, nan=float(np.nanmin(data)) if np.isfinite(data).any() else 0.0)
    data, spacing = _to_ras(data, img.affine)
    return Volume(data, spacing, oriented=True)


def _dcmread(path: Path, stop_before_pixels: bool = False):
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise BadImageError(f"{path}: reading DICOM needs pydicom (pip install pydicom)") from None
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        try:  # old ACR-NEMA style files lack the preamble
            return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels, force=True)
        except Exception as e:
            raise BadImageError(f"DICOM file {path} cannot be read: {e}") from e
    except Exception as e:
        raise BadImageError(f"DICOM file {path} cannot be read: {e}") from e


def _pixels(ds, path: Path) -> np.ndarray:
    """Pixel values with slope/intercept applied, float32 (frames, rows, cols) or uint8 RGB (rows, cols, 3)."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = getattr(getattr(ds, "SOPClassUID", None), "name", "unknown SOP class")
        raise BadImageError(f"DICOM file {path} holds no pixel data ({sop}): it is not an image")
    try:
        arr = ds.pixel_array
    except Exception as e:  # missing decoder plugins raise RuntimeError; corrupt data ValueError
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = (" (it is compressed and no decoder is installed: pip install pylibjpeg pylibjpeg-libjpeg "
                "pylibjpeg-openjpeg, or python-gdcm)" if getattr(syntax, "is_compressed", False) else "")
        raise BadImageError(f"DICOM file {path} cannot be decoded, transfer syntax {name}{hint}: {first}") from e
    if int(getattr(ds, "SamplesPerPixel", 1)) == 3:
        arr = arr if arr.ndim == 3 else arr[0]  # colour: the first frame
        if arr.dtype != np.uint8:
            arr = (255.0 * (arr - arr.min()) / max(float(np.ptp(arr)), 1e-6)).astype(np.uint8)
        return arr
    arr = arr.astype(np.float32)
    arr = arr * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    return arr[None] if arr.ndim == 2 else arr


def _geometry(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]] | None:
    """(row direction, column direction, position) in LPS and (row spacing, column spacing), if given."""
    try:
        iop = np.asarray([float(x) for x in ds.ImageOrientationPatient])
        ipp = np.asarray([float(x) for x in ds.ImagePositionPatient])
        spacing = tuple(float(x) for x in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        return None
    return iop[:3], iop[3:], ipp, spacing


def _dicom_volume(slices: list[np.ndarray], datasets: list, path: Path) -> Volume:
    """Stack (rows, cols) slices; orient with the first slice's geometry when every slice has one."""
    first = datasets[0]
    modality = str(getattr(first, "Modality", "") or "") or None
    invert = str(getattr(first, "PhotometricInterpretation", "")) == "MONOCHROME1"
    stack = np.stack(slices, axis=-1)  # (rows, cols, Z)
    data = np.ascontiguousarray(stack.transpose(1, 0, 2))  # (cols, rows, Z): axis 0 runs along a row
    geo = [_geometry(ds) for ds in datasets]
    if any(g is None for g in geo) or len(slices) != len(datasets):
        return Volume(data, (1.0, 1.0, 1.0), oriented=False, modality=modality, invert=invert)
    row_dir, col_dir, _, (row_mm, col_mm) = geo[0]
    normal = np.cross(row_dir, col_dir)
    positions = [float(g[2] @ normal) for g in geo]
    step = float(np.median(np.diff(positions))) if len(positions) > 1 else float(
        getattr(first, "SliceThickness", 1.0) or 1.0)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = row_dir * col_mm, col_dir * row_mm, normal * (step or 1.0)
    affine[:3, 3] = geo[0][2]
    affine[:2] *= -1  # DICOM's patient axes are LPS; RAS flips x and y
    data, spacing = _to_ras(data, affine)
    return Volume(data, spacing, oriented=True, modality=modality, invert=invert)


def read_dicom(path: Path) -> Volume:
    """One DICOM file: a slice, or a multi-frame stack (frames shown as stored, without per-frame geometry)."""
    ds = _dcmread(path)
    arr = _pixels(ds, path)
    if arr.dtype == np.uint8:  # colour
        return Volume(np.zeros((1, 1, 1), np.float32), (1.0, 1.0, 1.0), oriented=False, rgb=arr)
    return _dicom_volume(list(arr), [ds], path)


def read_series(folder: Path) -> Volume:
    """Every DICOM file of one series in ``folder`` (not recursive), ordered along the slice normal."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and (p.name.lower().endswith(DICOM_SUFFIXES)
                                                                   or _has_dicom_preamble(p)))
    if not files:
        raise BadImageError(f"folder {folder} holds no DICOM file")
    headers = [(p, _dcmread(p, stop_before_pixels=True)) for p in files]
    series = sorted({str(getattr(h, "SeriesInstanceUID", "")) for _, h in headers})
    if len(series) > 1:
        raise BadImageError(f"folder {folder} holds {len(series)} DICOM series; point at a folder with one "
                            f"(or at one file)")
    headers = [(p, h) for p, h in headers if any(k in h for k in ("PixelData", "FloatPixelData"))] or headers

    def order(item):
        g = _geometry(item[1])
        if g is not None:
            return (0, float(g[2] @ np.cross(g[0], g[1])))
        return (1, float(getattr(item[1], "InstanceNumber", 0) or 0))

    headers.sort(key=order)
    datasets = [_dcmread(p) for p, _ in headers]
    slices = [_pixels(ds, p) for (p, _), ds in zip(headers, datasets)]
    if any(s.ndim != 3 or s.shape[0] != 1 or s.dtype == np.uint8 for s in slices):
        raise BadImageError(f"folder {folder}: a series folder must hold single-frame grey-level slices")
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise BadImageError(f"folder {folder}: slices of different sizes {sorted(shapes)}")
    return _dicom_volume([s[0] for s in slices], datasets, folder)


@functools.lru_cache(maxsize=2)
def _read_cached(path: str, mtime: float) -> Volume:
    p = Path(path)
    kind = _kind(p)
    if kind == "nifti":
        return read_nifti(p)
    if kind == "series":
        return read_series(p)
    return read_dicom(p)


def read_volume(path: str | os.PathLike) -> Volume:
    """The volume of a DICOM file or series folder or NIfTI file (the last two read are kept in memory,
    so that slices of one volume do not re-read it)."""
    p = Path(path)
    if not p.exists():
        raise BadImageError(f"image file {p} does not exist")
    return _read_cached(str(p), p.stat().st_mtime)


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
    if window is not None:
        lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
    else:
        lo, hi = vol.percentile_range(choice.percentiles)
    out = np.clip((slice2d - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 255.0
    return 255.0 - out if vol.invert else out


def load_clinical(ref: str | os.PathLike) -> Image.Image:
    """An 8-bit RGB slice of a DICOM file/series or NIfTI volume; ``ref`` may carry ``#choices``."""
    path, choice = split_ref(ref)
    vol = read_volume(path)
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


def expand(ref: str | os.PathLike) -> list[str]:
    """``vol.nii.gz#axial:all`` -> one reference per slice; any other reference -> [itself]."""
    path, choice = split_ref(ref)
    if choice.index != "all":
        return [os.fspath(ref)]
    vol = read_volume(path)
    plane = plane_of(vol, choice)
    return [f"{path}#{Choice(plane, i, choice.window, choice.percentiles).suffix()}"
            for i in range(num_slices(vol, plane))]
