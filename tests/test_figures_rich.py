"""The rich compound-figure generator's truth, and the rules it measures: seams between touching images,
labels at any corner, letter-and-digit grid labels."""
from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from data.figures import find_panels
from data.figures.label_order import expected_labels, grid_labels, overlaps, repair_sequence
from data.figures.labels import normalise_label
from data.figures.ocr import make_ocr
from bench.compound_marks import STYLES, label_text
from bench.compound_rich import build_rich, build_rich_set, place
from bench.compound_synth import load_tiles


def _inside(box, size) -> bool:
    return 0 <= box[0] < box[2] <= size[0] and 0 <= box[1] < box[3] <= size[1]


@pytest.fixture(scope="module")
def tiles(request):
    return load_tiles(request.getfixturevalue("fixtures_dir") / "image_caption")


@pytest.fixture(scope="module")
def fixtures_dir():  # module-scoped twin of conftest's fixture
    from conftest import FIXTURES

    if not FIXTURES.is_dir():
        pytest.skip(f"fixtures folder {FIXTURES} is absent")
    return FIXTURES


def test_a_figure_of_a_seed_does_not_depend_on_the_set_size(fixtures_dir):
    few = build_rich_set(fixtures_dir / "image_caption", 3, seed=4)
    more = build_rich_set(fixtures_dir / "image_caption", 5, seed=4)
    for a, b in zip(few, more):
        assert a.boxes == b.boxes and a.labels == b.labels
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    other = build_rich_set(fixtures_dir / "image_caption", 3, seed=5)
    assert [c.boxes for c in other] != [c.boxes for c in few]


def test_truth_is_consistent(tiles):
    """Boxes inside the figure and apart, one printed label per panel whose text names its truth, the
    label drawn at its panel, distractors kept off the labels."""
    looks = set()
    for i in range(60):
        c = build_rich(tiles, random.Random(f"truth:{i}"))
        looks.add((c.look["style"], c.look["placement"]))
        n = len(c.boxes)
        assert n >= 2 and len(c.labels) == len(c.label_texts) == len(c.label_boxes) == n
        assert all(_inside(b, c.image.size) for b in c.boxes + c.label_boxes), c.layout
        assert not any(overlaps(a, b) for k, a in enumerate(c.boxes) for b in c.boxes[k + 1:])
        assert len(set(c.labels)) == n
        for text, truth in zip(c.label_texts, c.labels):
            assert normalise_label(text, digits=True) == truth, (text, truth)
        for box, lbox in zip(c.boxes, c.label_boxes):  # printed on or just above its own panel
            grown = (box[0], box[1] - (lbox[3] - lbox[1]) - 4, box[2], box[3])
            assert overlaps(grown, lbox), (c.layout, box, lbox)
        for _, dbox in c.distractors:
            assert not any(overlaps(dbox, lbox) for lbox in c.label_boxes)
    assert len({s for s, _ in looks}) >= 6 and len({p for _, p in looks}) == 5


def test_label_styles_print_and_read_back():
    for style in STYLES:
        printed, truth = label_text(style, 2, row=1, col=2)
        assert normalise_label(printed, digits=True) == truth
    assert label_text("A1", 5, row=1, col=2) == ("B3", "B3")
    assert normalise_label("(b2)") is None  # digits only where asked for
    assert normalise_label("(b2)", digits=True) == "B2"


def test_reading_order_of_layouts():
    grid = {"kind": "grid", "rows": 2, "cols": 3, "gutter": 5, "margin": 4, "aspect": 1.0, "width": 400}
    boxes, cells = place(grid)
    assert cells == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert grid_labels(boxes) == ["A1", "A2", "A3", "B1", "B2", "B3"]
    tall = {"kind": "tall-right", "stack": 2, "small_w": 150, "tall_scale": 1.2, "gutter": 6, "margin": 3,
            "aspect": 1.0}
    boxes, _ = place(tall)
    assert boxes[0][0] < boxes[2][0] and boxes[0][1] < boxes[1][1]  # the column first, then the tall panel


def test_grid_labels_are_repaired_by_rows_and_columns():
    boxes = [(x, y, x + 90, y + 90) for y in (0, 100) for x in (0, 100, 200)]
    read = ["A1", "A2", None, "B1", "B7", "B3"]  # one missed, one misread
    assert expected_labels(read, boxes) == ["A1", "A2", "A3", "B1", "B2", "B3"]
    assert repair_sequence(read, boxes) == ["A1", "A2", "A3", "B1", "B2", "B3"]
    assert repair_sequence(["A", "B", None, "D"]) == ["A", "B", "C", "D"]


def _smooth(rng: np.random.Generator, w: int, h: int, level: int) -> np.ndarray:
    """A smooth grey picture with some structure: blurred noise around ``level``."""
    small = rng.integers(level - 60, level + 60, size=(h // 8 + 1, w // 8 + 1)).astype(np.uint8)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))
    return np.repeat(big[:, :, None], 3, axis=2)


def test_touching_images_are_cut_at_their_seam_and_one_image_is_not():
    rng = np.random.default_rng(3)
    two = np.concatenate([_smooth(rng, 150, 140, 90), _smooth(rng, 130, 140, 170)], axis=1)
    img = Image.new("RGB", (300, 160), "white")
    img.paste(Image.fromarray(two), (10, 10))
    assert [p.box for p in find_panels(img)] == [(10, 10, 160, 150), (160, 10, 290, 150)]
    one = Image.new("RGB", (300, 160), "white")
    one.paste(Image.fromarray(_smooth(rng, 280, 140, 120)), (10, 10))
    assert [p.box for p in find_panels(one)] == [(10, 10, 290, 150)]


def test_letters_at_top_right_corners_win_over_side_markers(tiles):
    """Labels at the top-right corners, with R and L printed at every panel's sides: the corner that
    names the panels in reading order wins."""
    font = ImageFont.load_default(size=22)
    img = Image.new("RGB", (3 * 170 + 20, 190), "white")
    draw = ImageDraw.Draw(img)
    for k in range(3):
        x = 10 + k * 170
        img.paste(tiles[[0, 2, 3][k]].resize((160, 170)), (x, 10))
        draw.text((x + 134, 14), "abc"[k], fill="white", font=font, stroke_width=1, stroke_fill="black")
        draw.text((x + 4, 85), "R", fill="white", font=font, stroke_width=1, stroke_fill="black")
        draw.text((x + 140, 85), "L", fill="white", font=font, stroke_width=1, stroke_fill="black")
    panels = find_panels(img, make_ocr("rapidocr"))
    assert [p.label for p in panels] == ["A", "B", "C"]


class _CountingOcr:
    """rapidocr with a count of whole-image (detector) readings and of single-crop recognitions."""

    can_recognise = True
    whole_image_first = False

    def __init__(self) -> None:
        self.inner = make_ocr("rapidocr")
        self.reads = self.recognitions = 0

    def read(self, image):
        self.reads += 1
        return self.inner.read(image)

    def recognise(self, image):
        self.recognitions += 1
        return self.inner.recognise(image)


def _grid_with_letters_at(tiles, corner: str) -> Image.Image:
    """Six panels on white, lettered "(a)" ... "(f)" in black at ``corner`` of each, on the gutter side."""
    font = ImageFont.load_default(size=20)
    img = Image.new("RGB", (3 * 170 + 20, 2 * 170 + 20), "white")
    draw = ImageDraw.Draw(img)
    for k in range(6):
        x, y = 10 + (k % 3) * 170, 10 + (k // 3) * 170
        img.paste(tiles[[0, 2, 3, 4, 0, 2][k]].resize((150, 150)), (x, y))
        tx = x + 4 if corner.endswith("left") else x + 118
        ty = y + 4 if corner.startswith("top") else y + 124
        draw.rectangle((tx - 2, ty - 2, tx + 30, ty + 24), fill="white")
        draw.text((tx, ty), f"({'abcdef'[k]})", fill="black", font=font)
    return img


@pytest.mark.parametrize("corner", ["top-left", "bottom-right"])
def test_letters_that_marks_read_need_no_detector(tiles, corner):
    """Clear letters in white boxes are read from their marks at whichever corner they are: the text
    detector (the costly part) is not run on the figure or its corner windows."""
    ocr = _CountingOcr()
    panels = find_panels(_grid_with_letters_at(tiles, corner), ocr)
    assert [p.label for p in panels] == list("ABCDEF")
    assert ocr.reads == 0 and ocr.recognitions > 0
