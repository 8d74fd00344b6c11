"""find_panels on compound figures built from real single images (true boxes known) and on real ones."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from data.compound_synth import LAYOUTS, build_set
from data.figures import Panel, find_panels
from data.ocr import make_ocr
from data.panel_labels import group_marks, in_reading_order, merge_unlabelled, normalise_label, read_labels, repair_sequence
from data.panels import detect_panel_boxes


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


@pytest.fixture(scope="module")
def built(request):
    fixtures = request.getfixturevalue("fixtures_dir")
    return build_set(fixtures / "image_caption", n_per_layout=2, seed=3, tile_w=150)


@pytest.fixture(scope="module")
def fixtures_dir():  # module-scoped twin of conftest's fixture, so built figures are shared
    from conftest import FIXTURES

    if not FIXTURES.is_dir():
        pytest.skip(f"fixtures folder {FIXTURES} is absent")
    return FIXTURES


def test_built_figures_without_ocr(built):
    assert {c.layout for c in built} == set(LAYOUTS)
    for c in built:
        panels = find_panels(c.image)
        assert len(panels) == len(c.boxes), c.layout
        for truth, panel in zip(c.boxes, panels):  # reading order is row by row
            assert iou(truth, panel.box) >= 0.8, (c.layout, truth, panel.box)
            assert panel.label is None


def test_blank_and_single_images():
    assert find_panels(Image.new("RGB", (120, 80), "white")) == []
    img = Image.new("RGB", (200, 150), "white")
    img.paste(Image.new("RGB", (120, 90), (90, 40, 40)), (40, 30))
    assert find_panels(img) == [Panel((40, 30, 160, 120))]


def test_panels_touching_with_a_thin_line():
    img = Image.new("RGB", (212, 110), "white")
    img.paste(Image.new("RGB", (2, 100), "black"), (105, 5))  # the line between the two images
    rng = np.random.default_rng(0)
    for x in (5, 107):
        noise = rng.integers(30, 200, size=(100, 100, 3), dtype=np.uint8)
        img.paste(Image.fromarray(noise), (x, 5))
    assert [p.box for p in find_panels(img)] == [(5, 5, 105, 105), (107, 5, 207, 105)]


def test_real_figure_panels(fixtures_dir):
    name = "s41467-018-06211-3_fig3.jpg"
    expected = json.loads((fixtures_dir / "compound_figures" / "nature_closed_expected.json").read_text())
    truth = []
    for m in expected[name]["master_images"]:
        xs, ys = [g["x"] for g in m["geometry"]], [g["y"] for g in m["geometry"]]
        truth.append((min(xs), min(ys), max(xs), max(ys)))
    with Image.open(fixtures_dir / "compound_figures" / name) as im:
        panels = find_panels(im)
    assert len(panels) == 4
    for t in truth:
        assert max(iou(t, p.box) for p in panels) >= 0.75


def test_letters_are_read_with_rapidocr(built):
    ocr = make_ocr("rapidocr")
    figures = [c for c in built if c.layout in ("grid", "black")][:3]
    right = total = 0
    for c in figures:
        panels = find_panels(c.image, ocr)
        assert len(panels) == len(c.boxes)
        right += sum(p.label == t for p, t in zip(panels, c.labels))
        total += len(c.labels)
    assert right / total >= 0.8, (right, total)


def test_label_tokens_and_merging():
    assert [normalise_label(t) for t in ("(a)", "B.", "c)", "D:", "ab", "1", "(T2)")] == ["A", "B", "C", "D", None, None, None]
    boxes = [(0, 0, 100, 100), (110, 0, 140, 100), (0, 110, 100, 200), (110, 110, 200, 200)]
    merged, labels = merge_unlabelled(boxes, ["A", None, "B", "C"])
    assert merged == [(0, 0, 140, 100), (0, 110, 100, 200), (110, 110, 200, 200)]
    assert labels == ["A", "B", "C"]
    big = [(0, 0, 100, 100), (110, 0, 200, 100)]  # a full-size piece may be panel B with its letter unread
    assert merge_unlabelled(big + boxes[2:], ["A", None, "C", "D"])[1] == ["A", None, "C", "D"]
    assert merge_unlabelled(boxes, ["A", None, None, None]) == (boxes, ["A", None, None, None])


def test_reading_order_repairs_misread_letters():
    assert repair_sequence(["A", None, "V", "D"]) == ["A", "B", "C", "D"]
    assert repair_sequence(["A", "B", "C", "T"]) == ["A", "B", "C", "D"]
    assert repair_sequence(["A", None, None, "C", "D"]) == ["A", None, None, "C", "D"]  # order disagrees
    assert repair_sequence(["A", None, None]) == ["A", None, None]  # one letter is too little evidence


def test_marks_group_into_letter_tokens():
    i_dot, i_stem = (10, 0, 13, 3), (10, 5, 13, 18)
    paren_l, a, paren_r = (30, 4, 33, 20), (35, 8, 44, 18), (46, 4, 49, 20)
    dash = (60, 12, 72, 14)  # a flat dash under a letter is no dot over it
    letter = (62, 0, 70, 10)
    tokens = group_marks([i_dot, i_stem, paren_l, a, paren_r, letter, dash])
    assert sorted(tokens) == [(10, 0, 13, 18), (30, 4, 49, 20), dash, letter]


def test_large_piece_joins_only_when_reading_order_wants_it():
    boxes = [(0, 0, 100, 100), (110, 0, 200, 100), (210, 0, 300, 100), (0, 110, 100, 200)]
    merged, labels = merge_unlabelled(boxes, ["A", None, "B", "C"])  # no letter is left for the piece
    assert merged == [(0, 0, 200, 100), (210, 0, 300, 100), (0, 110, 100, 200)] and labels == ["A", "B", "C"]
    assert merge_unlabelled(boxes, ["A", None, "C", "D"]) == (boxes, ["A", None, "C", "D"])  # B unread
    assert merge_unlabelled(boxes, ["A", None, "B", "D"]) == (boxes, ["A", None, "B", "D"])  # order broken
    assert in_reading_order(["A", None, "C"]) and not in_reading_order(["A", "C"]) and not in_reading_order(["A"])


def _gutter_letter_figure(letters: str, size: int = 14) -> Image.Image:
    """Noise panels in a row, each with a small black letter in the white gutter above-left of it."""
    rng = np.random.default_rng(1)
    img = Image.new("RGB", (len(letters) * 204 + 24, 170), "white")
    draw = ImageDraw.Draw(img)
    for k, letter in enumerate(letters):
        x = 24 + k * 204
        img.paste(Image.fromarray(rng.integers(40, 220, size=(150, 180, 3), dtype=np.uint8)), (x, 15))
        draw.text((x - 16, 0), letter, fill="black", font=ImageFont.load_default(size=size))
    return img


def test_lone_letters_in_gutters_are_read_from_tight_crops():
    """Thin lower-case letters that the text detector passes over ("i", "j") are read from their marks."""
    ocr = make_ocr("rapidocr")
    for letters in ("ghi", "jkh"):
        img = _gutter_letter_figure(letters)
        boxes = detect_panel_boxes(np.asarray(img))
        assert len(boxes) == 3
        assert read_labels(img, boxes, ocr) == list(letters.upper())
