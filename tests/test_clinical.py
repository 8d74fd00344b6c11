"""Clinical images (data/clinical.py): real DICOM files shipped with pydicom, nilearn's MNI T1 template,
synthetic volumes with a known left/right, and the errors on bad files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data import clinical
from data.image_limits import BadImageError
from data.images import image_exists, load_rgb

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


# -- the laterality-aware flip on a clinical volume --------------------------------------------------------


class FlipChoice:
    """A generator whose flip draw is fixed (flip or not) and whose other draws (the crop) are the real
    generator's, so that a flipped and an unflipped sample share their crop."""

    def __init__(self, rng: np.random.Generator, flip: bool):
        self.rng, self.flip = rng, flip

    def random(self):
        return 0.0 if self.flip else 0.99

    def __getattr__(self, name):
        return getattr(self.rng, name)


def _with_flip(transform, flip: bool):
    return lambda img, caption, rng: transform(img, caption, FlipChoice(rng, flip))


def _bright_columns(image) -> np.ndarray:
    from transform.pipeline import MEAN, STD

    grey_ = image[0].numpy() * STD[0] + MEAN[0]  # undo the normalisation of the red channel
    return np.nonzero(grey_ > 0.6)[1]


@pytest.mark.parametrize("x_sign", [1.0, -1.0])
def test_training_flip_of_a_volume_moves_the_lesion_and_swaps_the_caption(tmp_path, x_sign):
    import torch

    from data.datasets import PairDataset, load_pairs
    from tiny import minilm_folder, tiny_config
    from transform.pipeline import build_transform

    affine = np.diag([x_sign, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-9.5 * x_sign, -11.5, -4.5]
    _volume(tmp_path, "head.nii.gz", affine)  # the lesion on the patient's left
    (tmp_path / "train.json").write_text(json.dumps([{"image": "head.nii.gz#axial:mid",
                                                      "caption": "Mass in the left frontal lobe."}]))
    pairs, problems = load_pairs([tmp_path / "train.json"], None, 30)
    assert problems == []
    config = tiny_config(tmp_path, "pretrain", minilm_folder(), hflip="swap", randaugment=False, min_scale=1.0)
    transform = build_transform(config, train=True)
    before, after = (PairDataset(pairs, _with_flip(transform, flip))[0] for flip in (False, True))
    half = config["image_size"] / 2
    # radiological convention: the patient's left is on the image's right
    assert "left" in before["caption"] and _bright_columns(before["image"]).min() >= half
    assert _bright_columns(after["image"]).max() < half
    assert torch.equal(after["image"], before["image"].flip(-1))
    assert after["caption"] == before["caption"].replace("left", "right")


# -- clinical input through the vis.py commands ------------------------------------------------------------


@pytest.fixture(scope="module")
def command_inputs(tmp_path_factory):
    """A tiny pre-training checkpoint (ITM head and decoder), a class file, the real MR_small.dcm and a
    3-slice NIfTI volume."""
    import torch

    from models import build_model, init_tokenizer
    from tiny import minilm_folder, tiny_config

    folder = tmp_path_factory.mktemp("clinical_commands")
    config = tiny_config(folder, "pretrain", minilm_folder())
    torch.manual_seed(0)
    model = build_model(config, "pretrain", init_tokenizer(minilm_folder()))
    ckpt = folder / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "config": config, "epoch": 0}, ckpt)
    (folder / "classes.yaml").write_text(json.dumps({"classes": {"mass": "a mass", "normal": "normal brain"}}))
    volume = folder / "head.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 18, 3), dtype=np.float32), np.eye(4)),
             str(volume))
    return {"ckpt": str(ckpt), "classes": str(folder / "classes.yaml"), "dicom": shipped("MR_small.dcm"),
            "volume": str(volume)}


COMMAND_ROWS = {"classify": ("predictions.json", "predicted"), "caption": ("captions.json", "caption")}


@pytest.mark.parametrize("command", list(COMMAND_ROWS))
def test_classify_and_caption_take_dicom_and_every_slice_of_a_volume(command_inputs, tmp_path, capsys, command):
    import predict

    inp = command_inputs
    extra = (["--classes", inp["classes"]] if command == "classify"
             else ["--num_beams", "1", "--max_length", "8", "--min_length", "2"])
    out = tmp_path / command
    assert predict.main([command, "--checkpoint", inp["ckpt"], "--images", inp["dicom"], f"{inp['volume']}#axial:all",
                     "--out", str(out), "--device", "cpu", *extra]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 4
    rows_file, key = COMMAND_ROWS[command]
    rows = json.loads((out / rows_file).read_text())
    assert [r["image"] for r in rows] == [inp["dicom"], *(f"{inp['volume']}#axial:{k}" for k in range(3))]
    assert all(isinstance(r[key], str) and r[key] for r in rows)


def test_maps_take_dicom_and_one_slice_of_a_volume(command_inputs, tmp_path, capsys):
    import vis

    inp = command_inputs
    caption = ["--caption", "axial mri shows a mass in the left frontal lobe"]
    for n, image in enumerate((inp["dicom"], f"{inp['volume']}#axial:1")):
        out = tmp_path / f"maps_{n}.png"
        assert vis.main(["--checkpoint", inp["ckpt"], "--image", image, *caption, "--out", str(out)]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["image"] == image and printed["out"] == str(out) and out.stat().st_size > 0
    # a map is of one image: a whole volume is refused with its slice count
    assert vis.main(["--checkpoint", inp["ckpt"], "--image", f"{inp['volume']}#axial:all", *caption,
                     "--out", str(tmp_path / "all.png")]) == 2
    assert "stands for 3 images" in capsys.readouterr().err
