"""Captions, images of every mode, transforms, datasets with bad records, data.check."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from data import check
from data.captions import laterality_negative, pre_caption, strip_html, swap_left_right
from data.datasets import DatasetError, PairDataset, RetrievalEvalDataset, load_pairs, report_problems
from data.image_limits import BadImageError
from data.images import load_rgb
from data.loader import Collator, ResumableSampler
from transform.pipeline import EvalTransform, TrainTransform, crop_box
from transform.randaugment import OPS, RandAugment


def test_pre_caption_matches_blip_rules():
    assert pre_caption("A  Brain MRI (T2): shows #lesion; big!!", 30) == "a brain mri t2 shows lesion big"
    assert pre_caption("keeps, commas' and ? - / marks", 30) == "keeps, commas' and ? - / marks"
    assert pre_caption(" ".join(f"w{i}" for i in range(50)), 30).split() == [f"w{i}" for i in range(30)]


def test_html_is_removed_before_cleaning():
    assert strip_html("<b>Brain</b> MRI&nbsp;of the <i>left</i>&#160;lobe") == "Brain MRI of the left lobe"
    assert pre_caption("Open-i <b>brain</b> tumour &amp; oedema") == "open-i brain tumour & oedema"
    assert strip_html("p &lt; 0.05<br>n = 3") == "p < 0.05 n = 3"


def test_laterality_swap():
    assert swap_left_right("Left frontal lesion, RIGHT-sided shift; leftward") == \
        "Right frontal lesion, LEFT-sided shift; rightward"
    assert swap_left_right("bright lefty") == "bright lefty"  # words that merely contain left/right stay


def test_laterality_negative_only_for_one_sided_captions():
    assert laterality_negative("Mass in the Left frontal lobe, left-sided oedema") == \
        "Mass in the Right frontal lobe, right-sided oedema"
    assert laterality_negative("left frontal mass with shift to the right") is None  # both sides: ambiguous
    assert laterality_negative("lesions in the left and right thalami") is None
    assert laterality_negative("no focal abnormality; bright signal") is None


class _WordTokenizer:
    """Enough of a tokenizer for the collator: one id per word, padded with 0."""

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        ids = [[1 + sum(map(ord, w)) % 97 for w in t.split()][:max_length] for t in texts]
        ids = [row + [0] * (max_length - len(row)) for row in ids]
        ids = torch.tensor(ids, dtype=torch.long).view(len(texts), max_length)
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}


def test_collator_adds_laterality_negatives_with_their_rows():
    samples = [{"image": torch.zeros(3, 2, 2), "caption": c, "image_id": i, "bad": 0}
               for i, c in enumerate(["cyst in the left lobe", "normal scan", "mass right and left", "right mass"])]
    tok = _WordTokenizer()

    def tokenize(captions):
        return tok(captions, "max_length", True, 8, "pt")

    plain = Collator(tokenize)(samples)
    assert "swap_index" not in plain
    batch = Collator(tokenize, laterality_negatives=True)(samples)
    assert batch["swap_index"].tolist() == [0, 3]
    assert torch.equal(batch["swap_input_ids"], tok(["cyst in the right lobe", "left mass"], "max_length", True, 8,
                                                    "pt")["input_ids"])
    assert batch["swap_attention_mask"].shape == (2, 8)
    none = Collator(tokenize, laterality_negatives=True)(samples[1:2])
    assert none["swap_index"].shape == (0,) and none["swap_input_ids"].shape == (0, 8)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "I;16", "I", "F", "1", "CMYK"])
def test_every_mode_loads_as_rgb(tmp_path, mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(1000, 4000, (20, 30), dtype=np.uint16))
    elif mode in ("I", "F"):
        img = Image.fromarray(rng.integers(-50, 5000, (20, 30)).astype(np.int32 if mode == "I" else np.float32))
    else:
        img = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).convert(mode)
    ext = "tiff" if mode in ("I;16", "I", "F", "CMYK") else "png"
    path = tmp_path / f"x.{ext}"
    img.save(path)
    rgb = load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (30, 20)
    arr = np.asarray(rgb)
    if mode in ("I;16", "I", "F"):  # rescaled by its own range, not clipped to white
        assert arr.min() == 0 and arr.max() == 255


def test_bad_images_raise_with_the_file_name(tmp_path):
    with pytest.raises(BadImageError, match="does not exist"):
        load_rgb(tmp_path / "none.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(BadImageError, match="text.png cannot be decoded"):
        load_rgb(tmp_path / "text.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match="cut.jpg"):
        load_rgb(tmp_path / "cut.jpg")


def test_crop_box_stays_inside_and_covers_the_scale():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = crop_box(120, 80, (0.5, 1.0), rng)
        assert 0 <= top and top + h <= 80 and 0 <= left and left + w <= 120
        assert h * w >= 0.5 * 120 * 80 * 0.9  # rounding


def test_train_transform_is_deterministic_and_swaps_captions_on_flip():
    img = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3)))
    tf = TrainTransform(32, 0.5, "swap", randaugment=True)
    a = tf(img, "left lesion", np.random.default_rng(5))
    b = tf(img, "left lesion", np.random.default_rng(5))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[0].shape == (3, 32, 32)
    captions = {tf(img, "left lesion", np.random.default_rng(s))[1] for s in range(20)}
    assert captions == {"left lesion", "right lesion"}
    off = TrainTransform(32, 1.0, "off", randaugment=False)
    blind = TrainTransform(32, 1.0, "blind", randaugment=False)
    assert {off(img, "left", np.random.default_rng(s))[1] for s in range(20)} == {"left"}
    assert {blind(img, "left", np.random.default_rng(s))[1] for s in range(20)} == {"left"}


def test_flip_really_mirrors_the_image_when_the_caption_swaps():
    arr = np.zeros((32, 32, 3), np.uint8)
    arr[:, 24:] = 255  # bright on the image's right
    img = Image.fromarray(arr)
    tf = TrainTransform(32, 1.0, "swap", randaugment=False)
    for s in range(10):
        x, caption = tf(img, "left", np.random.default_rng(s))
        bright_right = x[0, :, 24:].mean() > x[0, :, :8].mean()
        assert bright_right == (caption == "left")


def test_randaugment_ops_keep_shape_and_dtype():
    img = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    for name, (op, magnitude, _) in OPS.items():
        out = op(img, magnitude(5))
        assert out.shape == img.shape and out.dtype == np.uint8, name
    assert np.array_equal(OPS["Brightness"][0](img, OPS["Brightness"][1](5)), img)  # factor 1.0 at M=5
    ra = RandAugment()
    assert np.array_equal(ra(img, np.random.default_rng(1)), ra(img, np.random.default_rng(1)))


def test_eval_transform_resizes_to_a_square():
    x = EvalTransform(48)(Image.new("RGB", (100, 30), (128, 128, 128)))
    assert x.shape == (3, 48, 48)


def _write_set(tmp_path, records):
    (tmp_path / "ok.png").write_bytes(b"")
    Image.new("L", (40, 40), 80).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_text("garbage")
    path = tmp_path / "set.json"
    path.write_text(json.dumps(records))
    return path


def test_load_pairs_reports_each_bad_record(tmp_path):
    path = _write_set(tmp_path, [
        {"image": "ok.png", "caption": "Axial <b>MRI</b>", "pmcid": "PMC1"},
        {"image": "missing.png", "caption": "x"},
        {"image": "ok.png", "caption": "  ..  "},
        {"caption": "no image"},
        "not a record",
        {"image": "ok.png", "caption": ["first", "second"]},
    ])
    pairs, problems = load_pairs([path], None, 30)
    assert [p.caption for p in pairs] == ["axial mri", "first", "second"]
    assert len({p.image_id for p in pairs}) == 1  # the same image, one id
    assert len(problems) == 4
    assert any("set.json[1]" in p and "missing.png" in p for p in problems)
    assert any("set.json[2]" in p and "empty" in p for p in problems)
    with pytest.raises(DatasetError, match="4 of 7 records are bad"):
        report_problems(problems, 7, 0.1, "train_file")
    report_problems(problems, 7, 0.9, "train_file")


def test_malformed_files_name_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json is not valid JSON"):
        load_pairs([tmp_path / "bad.json"], None, 30)
    (tmp_path / "obj.json").write_text('{"image": "x"}')
    with pytest.raises(DatasetError, match="must hold a JSON list"):
        load_pairs([tmp_path / "obj.json"], None, 30)


def test_unreadable_image_is_replaced_and_counted(tmp_path):
    path = _write_set(tmp_path, [{"image": "ok.png", "caption": "good"}, {"image": "broken.png", "caption": "bad"}])
    pairs, problems = load_pairs([path], None, 30)
    assert not problems  # the file exists; it fails only when decoded
    ds = PairDataset(pairs, TrainTransform(16, 0.5, "swap", False), seed=0)
    sample = ds[1]
    assert sample["bad"] >= 1 and sample["caption"] == "good"
    assert ds[0]["bad"] == 0


def test_image_root_and_absolute_paths(tmp_path):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    path = tmp_path / "set.json"
    path.write_text(json.dumps([{"image": "a.png", "caption": "x"},
                                {"image": str(tmp_path / "imgs" / "a.png"), "caption": "y"}]))
    pairs, problems = load_pairs([path], str(tmp_path / "imgs"), 30)
    assert not problems and len(pairs) == 2


def test_retrieval_eval_dataset_layout_and_errors(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    good = tmp_path / "test.json"
    good.write_text(json.dumps([{"image": "a.png", "caption": ["one", "two"]}, {"image": "b.png", "caption": "three"}]))
    ds = RetrievalEvalDataset(good, EvalTransform(16), None, 30)
    assert ds.text == ["one", "two", "three"] and ds.img2txt == [[0, 1], [2]] and ds.txt2img == [0, 0, 1]
    assert ds[1][0].shape == (3, 16, 16)
    for records, message in [([{"image": "a.png", "caption": 5}], "'caption' must be a string or a non-empty list"),
                             ([{"image": "a.png", "caption": []}], "non-empty list"),
                             ([{"image": "zz.png", "caption": "x"}], "zz.png does not exist"),
                             ([], "holds no image")]:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(records))
        with pytest.raises(DatasetError, match=message):
            RetrievalEvalDataset(bad, EvalTransform(16), None, 30)


def test_resumable_sampler_skips_exactly_what_was_seen():
    data = list(range(23))
    full = ResumableSampler(data, num_replicas=2, rank=1, seed=3)
    full.set_epoch(4)
    order = list(full)
    part = ResumableSampler(data, num_replicas=2, rank=1, seed=3)
    part.set_epoch(4)
    part.set_start(5)
    assert list(part) == order[5:] and len(part) == len(order) - 5
    part.set_epoch(5)
    assert len(part) == len(order)  # a new epoch starts from its beginning


def test_data_check_lists_bad_records(tmp_path, capsys):
    path = _write_set(tmp_path, [{"image": "ok.png", "caption": "good"}, {"image": "broken.png", "caption": "bad"},
                                 {"image": "gone.png", "caption": "x"}])
    assert check.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "set.json[1]" in out and "broken.png" in out and "set.json[2]" in out and "set.json[0]" not in out
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps([{"image": "ok.png", "caption": "good"}]))
    assert check.main([str(clean)]) == 0
