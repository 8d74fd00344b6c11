"""Clinical images (data/clinical.py): real DICOM files shipped with pydicom, nilearn's MNI T1 template,
synthetic volumes with a known left/right, and the errors on bad files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data import clinical
from data.images import BadImageError, image_exists, load_rgb

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")


def shipped(name: str) -> str:
    """A file pydicom ships in its wheel (asking for one it does not ship would try a download)."""
    from pydicom.data import get_testdata_files

    found = get_testdata_files(name)
    if not found:
        pytest.skip(f"pydicom does not ship {name}")
    return found[0]


def grey(img) -> np.ndarray:
    arr = np.asarray(img)
    assert arr.ndim == 3 and arr.shape[2] == 3 and (arr[..., 0] == arr[..., 2]).all()
    return arr[..., 0].astype(int)


def percentile_scaled(values: np.ndarray, lo=0.5, hi=99.5) -> np.ndarray:
    a, b = np.percentile(values, [lo, hi])
    return (np.clip((values - a) / (b - a), 0, 1) * 255).round().astype(int)


# -- DICOM -----------------------------------------------------------------------------------------------


def test_mr_small_is_scaled_by_robust_percentiles():
    path = shipped("MR_small.dcm")
    ds = pydicom.dcmread(path)
    out = grey(load_rgb(path))
    assert out.shape == (64, 64)  # axial, rows toward posterior, columns toward patient left: shown as stored
    np.testing.assert_array_equal(out, percentile_scaled(ds.pixel_array.astype(np.float32)))


def test_ct_small_applies_rescale_and_the_brain_window():
    path = shipped("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) == -1024
    expected = (np.clip((hu - 0) / 80, 0, 1) * 255).round().astype(int)  # centre 40, width 80
    np.testing.assert_array_equal(grey(load_rgb(path)), expected)
    np.testing.assert_array_equal(grey(load_rgb(path + "#window=40/80")), expected)
    bone = grey(load_rgb(path + "#window=bone"))
    np.testing.assert_array_equal(bone, (np.clip((hu + 800) / 2800, 0, 1) * 255).round().astype(int))
    assert not np.array_equal(grey(load_rgb(path + "#window=subdural")), expected)
    np.testing.assert_array_equal(grey(load_rgb(path + "#percentiles=1/99")), percentile_scaled(hu, 1, 99))
    np.testing.assert_array_equal(grey(load_rgb(path + "#window=percentile")), percentile_scaled(hu))


def _modified(tmp_path: Path, name: str, **attrs) -> str:
    ds = pydicom.dcmread(shipped("MR_small.dcm"))
    for key, value in attrs.items():
        setattr(ds, key, value)
    out = tmp_path / name
    ds.save_as(out)
    return str(out)


def test_orientation_puts_the_patients_left_on_the_image_right(tmp_path):
    stored = grey(load_rgb(shipped("MR_small.dcm")))
    # rows run toward the patient's right: the stored picture is a mirror image of the radiological view
    mirrored = _modified(tmp_path, "mirror.dcm", ImageOrientationPatient=[-1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(grey(load_rgb(mirrored)), stored[:, ::-1])
    # columns run toward anterior: upside down
    flipped = _modified(tmp_path, "flip.dcm", ImageOrientationPatient=[1, 0, 0, 0, -1, 0])
    np.testing.assert_array_equal(grey(load_rgb(flipped)), stored[::-1, :])


def test_monochrome1_is_inverted_and_files_without_geometry_are_shown_as_stored(tmp_path):
    stored = grey(load_rgb(shipped("MR_small.dcm")))
    inverted = _modified(tmp_path, "m1.dcm", PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_array_equal(grey(load_rgb(inverted)), 255 - stored)
    ds = pydicom.dcmread(shipped("MR_small.dcm"))
    del ds.ImageOrientationPatient
    ds.save_as(tmp_path / "nogeo.dcm")
    np.testing.assert_array_equal(grey(load_rgb(tmp_path / "nogeo.dcm")), stored)


def _series(folder: Path, order=(2, 0, 1)) -> None:
    """Three CT slices 5 mm apart, written in a shuffled order; slice k holds HU values offset by 100 k."""
    folder.mkdir(parents=True)
    for n, k in enumerate(order):
        ds = pydicom.dcmread(shipped("CT_small.dcm"))
        arr = ds.pixel_array.astype(np.int16)
        arr[:] = 1024 + 10 + 20 * k  # HU 10, 30, 50: inside the brain window
        ds.PixelData = arr.tobytes()
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * k]
        ds.InstanceNumber = n + 1
        ds.save_as(folder / f"slice_{n}.dcm")


def test_series_folder_is_ordered_along_the_slice_normal(tmp_path):
    _series(tmp_path / "series")
    values = [int(grey(load_rgb(f"{tmp_path / 'series'}#axial:{k}")).mean()) for k in range(3)]
    hu = np.array([10, 30, 50])
    assert values == list((np.clip(hu / 80, 0, 1) * 255).round().astype(int))  # feet first
    refs = clinical.expand(f"{tmp_path / 'series'}#axial:all")
    assert refs == [f"{tmp_path / 'series'}#axial:{k}" for k in range(3)]
    coronal = load_rgb(f"{tmp_path / 'series'}#coronal:mid")  # 3 slices of 5 mm over 0.66 mm pixels
    assert coronal.width == 128 and coronal.height == round(3 * 5.0 / 0.661468)
    assert image_exists(tmp_path / "series") and image_exists(f"{tmp_path / 'series'}#axial:1")


def test_two_series_in_one_folder_are_refused(tmp_path):
    _series(tmp_path / "s")
    other = pydicom.dcmread(shipped("MR_small.dcm"))
    other.save_as(tmp_path / "s" / "other.dcm")
    with pytest.raises(BadImageError, match="holds 2 DICOM series"):
        load_rgb(tmp_path / "s")


def test_dicom_without_pixel_data_is_named():
    path = shipped("rtplan.dcm")
    with pytest.raises(BadImageError, match=r"rtplan\.dcm holds no pixel data \(RT Plan Storage\)"):
        load_rgb(path)


def test_compressed_transfer_syntax_without_decoder_is_named():
    path = shipped("MR_small_jpeg_ls_lossless.dcm")
    try:
        pydicom.dcmread(path).pixel_array
        pytest.skip("a JPEG-LS decoder is installed")
    except RuntimeError:
        pass
    with pytest.raises(BadImageError, match=r"MR_small_jpeg_ls_lossless\.dcm cannot be decoded, transfer "
                                            r"syntax JPEG-LS Lossless.*no decoder is installed"):
        load_rgb(path)


def test_a_dicom_file_without_suffix_is_recognised(tmp_path):
    target = tmp_path / "IM0001"
    target.write_bytes(Path(shipped("MR_small.dcm")).read_bytes())
    assert clinical.is_clinical(target) and load_rgb(target).size == (64, 64)


# -- NIfTI -----------------------------------------------------------------------------------------------


def _volume(tmp_path: Path, name: str, affine: np.ndarray, zooms_y: float = 1.0) -> str:
    """A 20 x 24 x 10 volume with a bright cube on the patient's left (world x < 0) and anterior (y > 0)."""
    data = np.zeros((20, 24, 10), np.float32)
    aff = np.asarray(affine, dtype=float)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in data.shape], indexing="ij"), -1)
    world = ijk @ aff[:3, :3].T + aff[:3, 3]
    data[(world[..., 0] < -4) & (world[..., 1] > 4)] = 100.0
    data += 1.0
    out = tmp_path / name
    nib.save(nib.Nifti1Image(data, aff), str(out))
    return str(out)


@pytest.mark.parametrize("x_sign", [1.0, -1.0])
def test_nifti_in_any_storage_order_is_shown_radiologically(tmp_path, x_sign):
    affine = np.diag([x_sign, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-9.5 * x_sign, -11.5, -4.5]  # centred on the origin
    img = grey(load_rgb(_volume(tmp_path, "v.nii.gz", affine)))
    assert img.shape == (24, 20)  # rows: y (anterior first), columns: x
    rows, cols = np.nonzero(img > 128)
    assert cols.min() >= 10 and rows.max() < 12  # patient left on the image right, anterior at the top


def test_anisotropic_voxels_become_square_pixels(tmp_path):
    affine = np.diag([1.0, 2.0, 1.0, 1.0])
    img = load_rgb(_volume(tmp_path, "aniso.nii", affine))
    assert img.size == (20, 48)


def test_mni_template_slices_in_three_planes():
    nilearn = pytest.importorskip("nilearn")
    path = Path(nilearn.__file__).parent / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if not path.is_file():
        pytest.skip("this nilearn does not ship the MNI template")
    axial = load_rgb(path)
    assert axial.size == (197, 233)
    assert load_rgb(f"{path}#coronal:mid").size == (197, 189)
    assert load_rgb(f"{path}#sagittal:mid").size == (233, 189)
    arr = grey(axial)
    assert arr.max() == 255 and (arr[0] == 0).all()  # scaled brain, empty border
    # left and right hemispheres of the template are near mirror images of each other
    assert np.abs(arr - arr[:, ::-1]).mean() < 0.15 * arr.mean()
    assert len(clinical.expand(f"{path}#axial:all")) == 189
    top = grey(load_rgb(f"{path}#axial:150"))
    assert top.mean() < arr.mean()  # near the vertex the brain is smaller: slices count from the feet


def test_4d_nifti_is_refused_with_its_name(tmp_path):
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), str(path))
    with pytest.raises(BadImageError, match=r"fmri\.nii\.gz is a 4-D volume of shape \(4, 4, 4, 3\)"):
        load_rgb(path)


def test_bad_choices_and_slices_are_named(tmp_path):
    path = _volume(tmp_path, "v.nii.gz", np.eye(4))
    with pytest.raises(BadImageError, match="unknown choice 'axial:x'"):
        load_rgb(path + "#axial:x")
    with pytest.raises(BadImageError, match="axial slice 10 out of range"):
        load_rgb(path + "#axial:10")
    with pytest.raises(BadImageError, match="stands for 10 images"):
        load_rgb(path + "#axial:all")
    with pytest.raises(BadImageError, match="does not exist"):
        load_rgb(tmp_path / "missing.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(BadImageError, match=r"broken\.nii\.gz cannot be read"):
        load_rgb(tmp_path / "broken.nii.gz")


def test_datasets_accept_clinical_references(tmp_path):
    from data.datasets import load_pairs

    vol = _volume(tmp_path, "v.nii.gz", np.eye(4))
    records = [{"image": "v.nii.gz#axial:3", "caption": "a lesion"}, {"image": shipped("MR_small.dcm"),
                                                                      "caption": "an mr slice"},
               {"image": "v.nii.gz#axial:3,window=bone", "caption": "windowed"}]
    (tmp_path / "list.json").write_text(json.dumps(records))
    pairs, problems = load_pairs([tmp_path / "list.json"], None, 30)
    assert problems == [] and len(pairs) == 3
    assert load_rgb(pairs[0].image).size == (20, 24) and Path(vol).is_file()


def test_image_lists_expand_volumes_and_find_series(tmp_path):
    from data.image_list import collect

    _series(tmp_path / "root" / "ct")
    _volume(tmp_path / "root", "v.nii.gz", np.eye(4))
    items = collect([str(tmp_path / "root")])
    assert [Path(i.image).name for i in items] == ["ct", "v.nii.gz"]
    items = collect([str(tmp_path / "root")], choice="axial:all")
    assert len(items) == 3 + 10 and items[0].image.endswith("ct#axial:0")
