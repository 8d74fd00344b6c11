"""find_panels on compound figures built from real single images (true boxes known) and on real ones."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from data.figures import Panel, find_panels
from data.figures.label_order import in_reading_order, merge_unlabelled, repair_sequence
from data.figures.labels import group_marks, normalise_label, read_labels
from data.figures.ocr import make_ocr
from data.figures.crosshairs import without_crosshairs
from data.figures.gutters import faint_gutters
from data.figures.panels import PanelParams, detect_panel_boxes
from bench.compound_synth import LAYOUTS, build_set


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


def test_transparent_background_is_white():
    # Black drawings on a transparent ground, whose hidden colour is black: a page shows them on white.
    rgba = np.zeros((200, 300, 4), dtype=np.uint8)
    rgba[20:180, 20:130, 3] = 255
    rgba[20:180, 170:280, 3] = 255
    boxes = [p.box for p in find_panels(Image.fromarray(rgba, "RGBA"))]
    assert boxes == [(20, 20, 130, 180), (170, 20, 280, 180)]


def test_colour_bar_shared_by_a_column_of_images():
    # Two images stacked, with one colour bar beside both: the bar is too narrow to be a panel, and it
    # must not hide the gutter between the images.
    rng = np.random.default_rng(0)
    rgb = np.full((420, 320, 3), 255, dtype=np.uint8)
    rgb[10:200, 10:250] = rng.integers(40, 200, (190, 240, 3))
    rgb[220:410, 10:250] = rng.integers(40, 200, (190, 240, 3))
    rgb[30:390, 270:290] = np.linspace(0, 255, 360, dtype=np.uint8)[:, None, None]
    assert detect_panel_boxes(rgb) == [(10, 10, 250, 200), (10, 220, 250, 410)]


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
    assert [normalise_label(t) for t in ("\uff08A)", "\uff08b\uff09", "\uff21.")] == ["A", "B", "A"]  # full-width forms
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


def _gutter_letter_figure(letters: str, size: int = 18) -> Image.Image:
    """Noise panels in a row, each with a small black letter in the white gutter above-left of it.

    18 px: Pillow before 12 draws the default font's "i" and "j" below that size with the dot touching
    the stem, which is then no longer a dot over a stem."""
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


def _noise(rng, w: int, h: int) -> Image.Image:
    return Image.fromarray(rng.integers(40, 220, size=(h, w, 3), dtype=np.uint8))


def test_touching_panels_split_along_a_line_that_stops_at_the_caption():
    """A frame line beside a black border, with a caption under the panels and a page rule beside them."""
    rng = np.random.default_rng(2)
    img = Image.new("RGB", (260, 160), "white")
    img.paste(_noise(rng, 120, 120), (0, 0))
    img.paste(Image.new("RGB", (2, 120), (33, 31, 32)), (120, 0))  # the line the panels share
    img.paste(Image.new("RGB", (12, 120), "black"), (122, 0))  # the right panel's black border
    img.paste(_noise(rng, 110, 120), (134, 0))
    img.paste(Image.new("RGB", (2, 160), (80, 80, 80)), (257, 0))  # a page rule along the whole height
    ImageDraw.Draw(img).text((4, 128), "Figure 1. (A) Barium enema and (B) endoscopic view.", fill="black",
                             font=ImageFont.load_default(size=11))
    boxes = [p.box for p in find_panels(img)]
    assert len(boxes) == 2
    assert boxes[0][2] == 120 and boxes[1][0] == 122


def test_dark_noise_is_no_separator_line():
    """Columns of a dark, noisy image that happen to be uniform are not lines between panels."""
    rng = np.random.default_rng(0)
    img = Image.new("RGB", (240, 200), "white")
    dark = rng.integers(0, 28, size=(180, 90, 1), dtype=np.uint8).repeat(3, axis=2)
    img.paste(Image.fromarray(dark), (10, 10))
    img.paste(_noise(rng, 130, 180), (100, 10))
    assert [p.box for p in find_panels(img)] == [(10, 10, 230, 190)]


def _dark_grid_with_bottom_letters(circled: bool) -> Image.Image:
    """Four dark radiograph-like panels lettered at their bottom-left corners, white or in white disks."""
    rng = np.random.default_rng(4)
    img = Image.new("RGB", (370, 330), "white")
    draw = ImageDraw.Draw(img)
    for k, letter in enumerate("ABCD"):
        x, y = 10 + (k % 2) * 180, 10 + (k // 2) * 160
        shade = np.linspace(10, 70, 170)[None, :, None] + rng.integers(0, 25, size=(150, 170, 1))
        img.paste(Image.fromarray(np.repeat(shade, 3, axis=2).astype(np.uint8)), (x, y))
        if circled:
            draw.ellipse((x + 6, y + 120, x + 30, y + 144), fill="white")
            draw.text((x + 18, y + 132), letter, fill="black", font=ImageFont.load_default(size=16), anchor="mm")
        else:
            draw.text((x + 8, y + 124), letter, fill="white", font=ImageFont.load_default(size=18))
    return img


@pytest.mark.parametrize("circled", [False, True])
def test_letters_at_bottom_left_corners(circled):
    panels = find_panels(_dark_grid_with_bottom_letters(circled), make_ocr("rapidocr"))
    assert [p.label for p in panels] == ["A", "B", "C", "D"]


def test_real_touching_panels_and_bottom_letters(fixtures_dir):
    """The lettered MedICaT figures of bench/gold/real_panels.json: panels touching along frame lines,
    captions and page rules inside the image, letters at the bottom-left corners."""
    from bench.gold_sets import load_real_panels

    ocr = make_ocr("rapidocr")
    right = total = 0
    for fig in load_real_panels(fixtures_dir):
        if fig.single:
            continue
        with Image.open(fig.path) as im:
            panels = find_panels(im.convert("RGB"), ocr)
        assert len(panels) == len(fig.panels), fig.source
        for truth in fig.panels:
            best = max(panels, key=lambda p: iou(truth.box, p.box))
            assert iou(truth.box, best.box) >= 0.5, (fig.source, truth.box)
            right += best.label == truth.label
            total += 1
    assert right >= total - 2, (right, total)


def test_a_rule_drawn_in_two_tones_is_no_panel_and_no_crash():
    rgb = np.full((50, 400, 3), 255, np.uint8)
    rgb[20:22] = 0
    rgb[22:24] = 128
    assert detect_panel_boxes(rgb) == []


def _jpeg(img: Image.Image, quality: int = 50) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_a_thin_gutter_speckled_by_jpeg_noise_still_cuts():
    """Compression ringing joins a 2 px white gutter to the photos beside it; it is a gutter all the same."""
    rng = np.random.default_rng(0)
    img = Image.new("RGB", (310, 120), "white")
    for x in (5, 157):
        shade = np.linspace(20, 200, 150)[None, :, None] + rng.integers(0, 40, size=(110, 150, 1))
        img.paste(Image.fromarray(np.repeat(shade, 3, axis=2).astype(np.uint8)), (x, 5))
    rgb = np.asarray(_jpeg(img))
    assert len(detect_panel_boxes(rgb, PanelParams(faint_share=0.0))) == 1  # the gutter never empties
    boxes = detect_panel_boxes(rgb)
    assert len(boxes) == 2 and 154 <= boxes[0][2] <= 157 and 155 <= boxes[1][0] <= 158


def test_the_gap_inside_a_double_rule_is_no_gutter():
    fg = np.zeros((60, 200), dtype=bool)
    fg[20:24] = fg[26:30] = True  # two 4 px rules, 2 px apart, drawn across a diagram
    assert not faint_gutters(fg, PanelParams()).any()
    fg[6:24] = fg[26:44] = True  # the same gap between two images
    assert faint_gutters(fg, PanelParams())[24:26].all()


def test_a_run_together_y_axis_title_shared_by_two_rows_does_not_join_them():
    """In a small figure the letters of a rotated axis title touch: one thin, half-empty component along
    the left edge, crossing the gutter between the rows it labels."""
    img = Image.new("RGB", (200, 240), "white")
    draw = ImageDraw.Draw(img)
    for top in (10, 130):
        draw.rectangle((30, top, 190, top + 90), fill=(70, 70, 160))
    draw.line((8, 60, 8, 170), fill="black")  # the strokes joining the letters
    for y in range(60, 170, 8):
        draw.rectangle((3, y, 12, y + 2), fill="black")
    boxes = detect_panel_boxes(np.asarray(img))
    assert len(boxes) == 2
    assert [b[1] for b in boxes] == [10, 130] and all(b[3] - b[1] < 120 for b in boxes)


def test_a_slanted_connector_line_between_two_panels_does_not_join_them():
    """A thin line from a corner of the top map to its enlargement below crosses the gutter between them;
    erased as a connector, it no longer joins the two."""
    rng = np.random.default_rng(5)
    img = Image.new("RGB", (400, 500), "white")
    img.paste(Image.fromarray(rng.integers(40, 200, size=(180, 220, 3), dtype=np.uint8)), (20, 20))
    img.paste(Image.fromarray(rng.integers(40, 200, size=(220, 360, 3), dtype=np.uint8)), (20, 260))
    draw = ImageDraw.Draw(img)
    draw.line((200, 180, 380, 262), fill="black", width=2)  # from the map's corner to the enlargement's
    boxes = detect_panel_boxes(np.asarray(img))
    assert len(boxes) == 2
    assert boxes[0][3] < 230 and boxes[1][1] > 230


def _views_on_black(rng: np.random.Generator) -> Image.Image:
    """Three grey-textured scan views in a row on a black figure, 30 px gutters between them."""
    img = Image.new("RGB", (600, 260), "black")
    for k in range(3):
        mask = Image.new("L", (160, 200), 0)
        ImageDraw.Draw(mask).ellipse((0, 0, 159, 199), fill=255)
        img.paste(Image.fromarray(rng.integers(60, 220, size=(200, 160, 3), dtype=np.uint8)), (20 + 200 * k, 30), mask)
    return img


def test_a_viewers_crosshairs_over_the_gutters_do_not_join_the_views():
    """A red cursor line across the whole row and one down a view cross over the black gutters; painted
    over before the cut, they no longer join the three views."""
    img = _views_on_black(np.random.default_rng(11))
    draw = ImageDraw.Draw(img)
    draw.line((0, 120, 599, 120), fill=(255, 0, 0), width=3)
    draw.line((100, 0, 100, 259), fill=(255, 0, 0), width=3)
    boxes = detect_panel_boxes(np.asarray(img))
    assert len(boxes) == 3
    for k, box in enumerate(boxes):
        assert abs(box[0] - (20 + 200 * k)) <= 3 and abs(box[2] - (180 + 200 * k)) <= 3
    painted = without_crosshairs(np.asarray(img))
    assert painted[120, 190].tolist() == [0, 0, 0]  # the line over a gutter became gutter


def test_coloured_lines_that_cross_nothing_are_kept():
    """A red frame around a panel and a red reference line in a plot cross no line of their colour."""
    img = Image.new("RGB", (400, 300), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((10, 10, 390, 150), outline=(255, 0, 0), width=2)
    draw.line((10, 220, 390, 220), fill=(255, 0, 0), width=2)
    rgb = np.asarray(img)
    assert without_crosshairs(rgb) is rgb


def test_fields_of_glyph_sized_marks_are_cut_into_their_panels():
    """Four fields of small coloured marks (orientation glyphs on a grid) on black: no mark is bigger than a
    letter, yet the fields are panels."""
    img = Image.new("RGB", (600, 600), "black")
    draw = ImageDraw.Draw(img)
    for px, py in ((20, 20), (320, 20), (20, 320), (320, 320)):
        for i in range(10):
            for j in range(10):
                x, y = px + 10 + 26 * i, py + 10 + 26 * j
                draw.ellipse((x, y + 6, x + 16, y + 10), fill=(255, 60 + 15 * i, 40))
    boxes = detect_panel_boxes(np.asarray(img))
    assert len(boxes) == 4
    for box, (px, py) in zip(boxes, ((20, 20), (320, 20), (20, 320), (320, 320))):
        assert abs(box[0] - (px + 10)) <= 3 and abs(box[1] - (py + 16)) <= 3


def _framed(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    draw.rectangle(box, outline=(90, 90, 90), width=1)


def test_framed_panels_inside_one_frame_around_them_all_are_cut():
    """One frame drawn around the figure, two pixels outside the frames of its panels: the outer frame
    crosses every gutter until it is set aside."""
    img = Image.new("RGB", (420, 320), "white")
    draw = ImageDraw.Draw(img)
    _framed(draw, (10, 10, 410, 310))
    for box in ((13, 13, 407, 150), (13, 153, 205, 307), (208, 153, 407, 307)):
        _framed(draw, box)
        draw.rectangle((box[0] + 30, box[1] + 30, box[2] - 30, box[3] - 30), fill=(60, 120, 200))
    boxes = detect_panel_boxes(np.asarray(img))
    assert len(boxes) == 3
    assert boxes[0][3] <= 152 and boxes[1][2] <= 207 and boxes[2][0] >= 206


def test_a_framed_plot_keeps_its_frame_and_stays_whole():
    """A plot frame holding two bars is one panel: what it holds is not framed panels."""
    img = Image.new("RGB", (420, 320), "white")
    draw = ImageDraw.Draw(img)
    _framed(draw, (10, 10, 410, 310))
    for x0 in (40, 260):
        draw.rectangle((x0, 60, x0 + 100, 260), fill=(200, 60, 60))
    assert detect_panel_boxes(np.asarray(img)) == [(10, 10, 411, 311)]


def _plate(draw_items) -> Image.Image:
    """A white page with one black plate (400 x 300 at (50, 40)) on which ``draw_items`` draws."""
    img = Image.new("RGB", (500, 380), "white")
    plate = Image.new("RGB", (400, 300), (0, 0, 0))
    draw_items(plate)
    img.paste(plate, (50, 40))
    return img


def test_a_montage_on_one_black_plate_is_cut_into_its_slices():
    """Slices that share one black ground are one block of structure on the white page; on the plate's
    own colour they separate."""
    rng = np.random.default_rng(3)

    def slices(plate: Image.Image) -> None:
        for k in range(6):
            x, y = 10 + (k % 3) * 130, 10 + (k // 3) * 145
            mask = Image.new("L", (120, 135), 0)
            ImageDraw.Draw(mask).ellipse((8, 8, 112, 127), fill=255)
            plate.paste(Image.fromarray(rng.integers(60, 220, size=(135, 120, 3), dtype=np.uint8)), (x, y), mask)

    boxes = detect_panel_boxes(np.asarray(_plate(slices)))
    assert len(boxes) == 6
    for k in range(6):  # each slice's ellipse, on the page
        x, y = 50 + 10 + (k % 3) * 130, 40 + 10 + (k // 3) * 145
        assert any(abs(b[0] - x - 8) <= 2 and abs(b[1] - y - 8) <= 2 for b in boxes)


def test_a_montage_on_a_black_plate_with_a_thin_border_line_is_cut_into_its_slices():
    """A light line drawn along the plate's sides is not its ground: the slices inside still separate."""
    rng = np.random.default_rng(4)

    def slices(plate: Image.Image) -> None:
        for k in range(2):
            mask = Image.new("L", (170, 260), 0)
            ImageDraw.Draw(mask).ellipse((6, 6, 164, 254), fill=255)
            plate.paste(Image.fromarray(rng.integers(60, 220, size=(260, 170, 3), dtype=np.uint8)), (20 + k * 200, 20),
                        mask)
        draw = ImageDraw.Draw(plate)  # the grid's line along two sides of this cell, one pixel off the plate
        draw.line((0, 0, 399, 0), fill=(241, 241, 241))
        draw.line((0, 0, 0, 299), fill=(241, 241, 241))
        draw.point((0, 150), fill=(200, 200, 200))  # an anti-aliased dot on it

    boxes = detect_panel_boxes(np.asarray(_plate(slices)))
    assert len(boxes) == 2
    for k, b in enumerate(boxes):  # each slice's ellipse, on the page
        assert abs(b[0] - (50 + 20 + k * 200 + 6)) <= 2 and abs(b[1] - (40 + 20 + 6)) <= 2


def test_a_dark_scan_with_small_marks_on_it_stays_whole():
    """Two small lesion masks on a black scan are that scan's own marks: each is smaller than a panel of
    the figure, so the scan is not a plate holding a montage."""
    def marks(plate: Image.Image) -> None:
        draw = ImageDraw.Draw(plate)
        draw.ellipse((80, 120, 116, 156), fill=(255, 255, 255))
        draw.ellipse((260, 110, 296, 146), fill=(255, 255, 255))

    assert detect_panel_boxes(np.asarray(_plate(marks))) == [(50, 40, 450, 340)]


def test_a_blot_on_a_dark_plate_stays_whole():
    def lanes(plate: Image.Image) -> None:
        for i in range(6):
            ImageDraw.Draw(plate).rectangle((20 + i * 64, 20, 60 + i * 64, 280), fill=(200, 200, 200))

    assert detect_panel_boxes(np.asarray(_plate(lanes))) == [(50, 40, 450, 340)]
