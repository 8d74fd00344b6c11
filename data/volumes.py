"""Reading DICOM files and series folders (pydicom) and NIfTI volumes (nibabel) into one :class:`Volume`:
voxel values after RescaleSlope/RescaleIntercept, reordered to RAS+ where the file has geometry.

Size limits are read from the headers before any voxel is (:func:`check_size`): every slice the volume
can give must have at most ``max_pixels`` pixels (the ``max_image_pixels`` key, as for PNG and JPEG), and
the whole volume at most ``VOLUME_FACTOR`` times as many voxels (read as float32: about 2.9 GB at the
default, a 512x512 CT of 2,700 slices), so that a small compressed file cannot expand into gigabytes.
A volume whose affine gives no orientation (all zero, or singular), or that holds no finite value, is a
:class:`BadImageError` naming the file, like any unreadable image.

The slices, windows and display convention built on top are in :mod:`data.clinical`.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.image_limits import DEFAULT_MAX_PIXELS, BadImageError
from models.optional import require

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm"}
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
VOLUME_FACTOR = 4  # whole-volume voxels allowed per max_image_pixels


def has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def kind_of(path: Path) -> str | None:
    """``dicom``, ``nifti``, ``series`` (a folder) or None for anything else (a PNG, a missing file)."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if path.is_dir():
        return "series"
    if path.suffix.lower() not in RASTER_SUFFIXES and path.is_file() and has_dicom_preamble(path):
        return "dicom"
    return None



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


def _to_ras(data: np.ndarray, affine: np.ndarray, path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reorder/flip the axes of (X, Y, Z) data so that they run to patient Right, Anterior, Superior."""
    from nibabel.orientations import apply_orientation, io_orientation

    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    ornt = io_orientation(affine)
    if not np.isfinite(affine).all() or np.isnan(ornt).any() or not spacing.all():
        raise BadImageError(f"{path}: its affine gives no orientation (a zero or singular matrix: "
                            f"{np.round(affine[:3, :3], 3).tolist()}), so left and right cannot be told apart; "
                            f"fix the header's sform/qform (e.g. with nibabel or fslorient)")
    out = np.ascontiguousarray(apply_orientation(data, ornt))
    ras_spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt):
        ras_spacing[int(target)] = float(spacing[axis])
    return out, tuple(ras_spacing)


def read_nifti(path: Path) -> Volume:
    require("clinical", f"reading NIfTI {path}", ("nibabel",))
    import nibabel as nib

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
    finite = np.isfinite(data)
    if not finite.any():
        raise BadImageError(f"NIfTI file {path} holds no finite value (every voxel is NaN or infinite)")
    data = np.where(finite, data, np.float32(data[finite].min()))  # NaN/inf voxels show as the darkest
    data, spacing = _to_ras(data, img.affine, path)
    return Volume(data, spacing, oriented=True)


def _dcmread(path: Path, stop_before_pixels: bool = False):
    require("clinical", f"reading DICOM {path}", ("pydicom",))
    import pydicom
    from pydicom.errors import InvalidDicomError

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
    data, spacing = _to_ras(data, affine, path)
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
                                                                   or has_dicom_preamble(p)))
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


def _too_large(path: Path, shape: tuple[int, ...], max_pixels: int) -> str:
    """Why a volume of ``shape`` (X, Y, Z) is refused, or ""."""
    x, y, z = (list(shape) + [1, 1, 1])[:3]
    slice_pixels = max(x * y, x * z, y * z)
    voxels = x * y * z
    if slice_pixels > max_pixels:
        return (f"{path} is too large: {x}x{y}x{z} voxels give slices of {slice_pixels:,} pixels, more than "
                f"max_image_pixels {max_pixels:,}")
    if voxels > VOLUME_FACTOR * max_pixels:
        return (f"{path} is too large: {x}x{y}x{z} = {voxels:,} voxels, more than {VOLUME_FACTOR} x "
                f"max_image_pixels = {VOLUME_FACTOR * max_pixels:,}")
    return ""


def _header_shape(path: Path, kind: str) -> tuple[int, ...]:
    """The voxel grid of a volume from its header alone (no pixel data read)."""
    if kind == "nifti":
        try:
            import nibabel as nib

            shape = nib.load(str(path)).shape
        except ImportError:
            raise BadImageError(f"{path}: reading NIfTI needs nibabel (pip install nibabel)") from None
        except Exception as e:  # nibabel's errors for a header it cannot read
            raise BadImageError(f"NIfTI file {path} cannot be read: {e}") from e
        return tuple(int(n) for n in shape[:3]) + ((int(np.prod(shape[3:])),) if len(shape) > 3 else ())
    files = [path] if kind == "dicom" else sorted(p for p in path.iterdir() if p.is_file() and (
        p.name.lower().endswith(DICOM_SUFFIXES) or has_dicom_preamble(p)))
    rows = cols = frames = 0
    for f in files:
        ds = _dcmread(f, stop_before_pixels=True)
        rows, cols = max(rows, int(getattr(ds, "Rows", 0) or 0)), max(cols, int(getattr(ds, "Columns", 0) or 0))
        frames += int(getattr(ds, "NumberOfFrames", 1) or 1)
    return cols, rows, frames


def check_size(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse, from its header, a volume too large to read (see the module docstring)."""
    p = Path(path)
    kind = kind_of(p)
    if kind is None:
        return
    shape = _header_shape(p, kind)
    if len(shape) > 3:  # a 4-D volume: read_nifti names it; its first three axes are what is read
        shape = shape[:3]
    reason = _too_large(p, shape, max_pixels)
    if reason:
        raise BadImageError(reason + " (a decompression bomb, or a scan to downsample or crop first)")


@functools.lru_cache(maxsize=2)
def _read_cached(path: str, mtime: float) -> Volume:
    p = Path(path)
    kind = kind_of(p)
    if kind == "nifti":
        return read_nifti(p)
    if kind == "series":
        return read_series(p)
    return read_dicom(p)


def read_volume(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Volume:
    """The volume of a DICOM file or series folder or NIfTI file (the last two read are kept in memory,
    so that slices of one volume do not re-read it); its size is checked against ``max_pixels`` from
    the header first (:func:`check_size`)."""
    p = Path(path)
    if not p.exists():
        raise BadImageError(f"image file {p} does not exist")
    check_size(p, max_pixels)
    return _read_cached(str(p), p.stat().st_mtime)
