"""DICOM and NIfTI inputs obey max_image_pixels from their headers, before any voxel is read, as PNG and
JPEG do; a NIfTI without orientation or without a finite value is a bad image named by its file."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from data.check import check_images
from data.image_list import collect
from data.image_limits import BadImageError
from data.images import load_rgb


def header_only_nifti(path, shape, dtype=np.uint8):
    """A .nii whose header promises ``shape`` but whose voxel data is missing: reading a voxel fails,
    so a refusal that names the size proves the header alone was read."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.eye(4), code=1)
    header["vox_offset"] = 352
    with open(path, "wb") as fh:
        header.write_to(fh)
        fh.write(b"\0" * 4 + b"\1" * 16)
    return path


def zero_affine_nifti(path):
    header = nib.Nifti1Header()
    header.set_data_shape((8, 8, 4))
    header.set_data_dtype(np.float32)
    header.set_qform(None, code=0)
    header.set_sform(np.zeros((4, 4)), code=1)
    nib.Nifti1Image(np.ones((8, 8, 4), np.float32), None, header=header).to_filename(str(path))
    return path


def test_a_nifti_too_large_is_refused_from_its_header(tmp_path):
    huge = header_only_nifti(tmp_path / "huge.nii", (20000, 20000, 1))  # 400 megapixels in one slice
    with pytest.raises(BadImageError, match=r"huge.nii is too large: 20000x20000x1 voxels give slices of "
                                            r"400,000,000 pixels, more than max_image_pixels 178,956,970"):
        load_rgb(huge)
    tall = header_only_nifti(tmp_path / "tall.nii", (4000, 4000, 60))  # every slice fits, the volume does not
    with pytest.raises(BadImageError, match=r"960,000,000 voxels, more than 4 x max_image_pixels"):
        load_rgb(tall)
    assert check_images([("list.json[0]", str(huge))]) == [  # the pre-flight check reads the header too
        f"list.json[0]: {huge} is too large: 20000x20000x1 voxels give slices of 400,000,000 pixels, more than "
        f"max_image_pixels 178,956,970 (a decompression bomb, or a scan to downsample or crop first)"]
    with pytest.raises(BadImageError, match="too large"):  # a command expanding every slice
        collect([f"{huge}#axial:all"])


def test_a_lowered_limit_applies_to_dicom_and_nifti(tmp_path):
    dicom = get_testdata_file("MR_small.dcm")  # 64x64
    assert load_rgb(dicom).size == (64, 64)
    with pytest.raises(BadImageError, match=r"MR_small.dcm is too large: 64x64x1 voxels give slices of 4,096"):
        load_rgb(dicom, max_pixels=4000)
    volume = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((30, 30, 3), dtype=np.float32), np.eye(4)), volume)
    assert load_rgb(volume, max_pixels=900).size == (30, 30)
    with pytest.raises(BadImageError, match="too large"):
        load_rgb(volume, max_pixels=899)


def test_a_nifti_without_orientation_or_finite_values_is_a_named_bad_image(tmp_path):
    with pytest.raises(BadImageError, match=r"zero.nii.gz: its affine gives no orientation"):
        load_rgb(zero_affine_nifti(tmp_path / "zero.nii.gz"))
    nan = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 4), np.nan, np.float32), np.eye(4)), nan)
    with pytest.raises(BadImageError, match=r"nan.nii.gz holds no finite value"):
        load_rgb(nan)
    partly = tmp_path / "partly.nii.gz"
    data = np.random.default_rng(1).random((8, 8, 4), dtype=np.float32)
    data[0, 0, :] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), partly)
    assert load_rgb(partly).size == (8, 8)  # a few NaN voxels are shown as the darkest value


def test_predict_caption_names_a_nifti_without_orientation_in_one_line(tmp_path, capsys):
    import torch

    import predict
    from models import build_model, init_tokenizer
    from tiny import minilm_folder, tiny_config

    config = tiny_config(tmp_path, "pretrain", minilm_folder())
    torch.manual_seed(0)
    model = build_model(config, "pretrain", init_tokenizer(minilm_folder()))
    torch.save({"model": model.state_dict(), "config": config, "epoch": 0}, tmp_path / "ckpt.pth")
    zero = zero_affine_nifti(tmp_path / "zero.nii.gz")
    assert predict.main(["caption", "--checkpoint", str(tmp_path / "ckpt.pth"), "--images", str(zero), "--out",
                     str(tmp_path / "out"), "--device", "cpu", "--num_beams", "1", "--max_length", "6"]) == 2
    err = capsys.readouterr().err
    assert "zero.nii.gz: its affine gives no orientation" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "captions.json").exists() or json.loads(
        (tmp_path / "out" / "captions.json").read_text()) == []
