"""Panel letters read on lone marks anywhere on the figure's background (data/figures/lone_letters.py),
with the real rapidocr recogniser."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import data.figures as figures
from data.figures import find_panels
from data.figures.letter_panels import next_letter
from data.figures.label_order import follows
from data.figures.lone_letters import in_order, lone_letters, lone_marks, one_size, ordered_choice
from data.figures.ocr import make_ocr


class _RecogniserOnly:
    """rapidocr's recogniser, with a detector that finds nothing (as it often misses lone letters)."""

    name = "rapidocr"
    can_recognise = True

    def __init__(self):
        self.real = make_ocr("rapidocr")

    def read(self, image):
        return []

    def recognise(self, image):
        return self.real.recognise(image)


def _joined_plots(letters_at: str = "top-left") -> Image.Image:
    """Two scans joined by a connector, so that no gutter separates them; their letters stand above
    them, over a title, away from the corners of the pieces (or below their bottom right corners)."""
    rng = np.random.default_rng(0)
    image = Image.new("RGB", (420, 290), "white")
    draw = ImageDraw.Draw(image)
    for x0, letter in zip((20, 230), "AB"):
        scan = Image.fromarray(rng.integers(40, 200, (190, 170, 3), dtype=np.uint8))
        image.paste(scan, (x0, 60))
        at = (x0 - 18, 2) if letters_at == "top-left" else (x0 + 150, 256)
        draw.text(at, letter, fill="black", font=ImageFont.load_default(size=24))
        draw.text((x0 + 40, 36), "a long plot title", fill="black", font=ImageFont.load_default(size=13))
    draw.rectangle([190, 150, 229, 153], fill=(70, 70, 70))
    return image


def test_letters_over_titles_are_read_and_cut_the_panels(monkeypatch):
    monkeypatch.setattr(figures, "read_labels", lambda image, boxes, ocr, wanted=None: [None] * len(boxes))
    panels = find_panels(_joined_plots(), _RecogniserOnly(), letters=["A", "B"])
    assert [p.label for p in panels] == ["A", "B"]
    assert panels[0].box[2] <= 215 and panels[1].box[0] >= 200


def test_lone_letters_finds_each_letter_once():
    image = _joined_plots()
    rgb = np.asarray(image)
    ink = (rgb < 240).any(axis=2)
    found = lone_letters(image, ink, np.array([255, 255, 255]), ["A", "B"], _RecogniserOnly())
    assert sorted(found) == ["A", "B"]
    assert found["A"][0] < 20 and found["B"][0] > 200 and found["A"][1] < 30


def test_letters_away_from_the_top_left_are_not_trusted_to_cut(monkeypatch):
    monkeypatch.setattr(figures, "read_labels", lambda image, boxes, ocr, wanted=None: [None] * len(boxes))
    panels = find_panels(_joined_plots("bottom-right"), _RecogniserOnly(), letters=["A", "B"])
    assert len(panels) == 1  # no gutter, and letters below the bottom right do not open panels


def test_compression_specks_do_not_chain_letters_into_one_token():
    image = Image.new("RGB", (200, 120), "white")
    ImageDraw.Draw(image).text((20, 20), "C", fill="black", font=ImageFont.load_default(size=28))
    rgb = np.asarray(image).copy()
    rgb[::3, ::3] = 200  # a grid of one-pixel specks, as around the text of a JPEG
    tokens = lone_marks((rgb < 240).any(axis=2), 40)
    assert any(t[0] >= 18 and t[2] <= 45 and t[3] - t[1] >= 15 for t in tokens)


def test_a_letter_beside_a_block_of_text_stays_a_token_of_its_own():
    """Two lines of text closed by a tall bracket grow into one tall box; joined again, that box would
    swallow the letter left of it, which no mark of the text is near enough to join."""
    rgb = np.full((200, 260, 3), 255, dtype=np.uint8)
    rgb[100:127, 0:20] = 0  # the letter
    for y0 in (100, 116):  # two lines of glyphs, 15 px right of the letter
        for x0 in range(35, 190, 11):
            rgb[y0:y0 + 14, x0:x0 + 8] = 0
    rgb[80:160, 191:197] = 0  # a bracket closing both lines
    tokens = lone_marks((rgb < 240).any(axis=2), 90)
    assert (0, 100, 20, 127) in tokens


def test_a_reading_off_the_letters_type_size_gives_way_to_a_later_one():
    node = (320, 675, 370, 714)  # 39 px high: a node of a network read as F
    readings = [("F", node), ("A", (0, 0, 12, 15)), ("C", (0, 190, 11, 206))]
    assert one_size(readings) == {"A": [(0, 0, 12, 15)], "C": [(0, 190, 11, 206)]}
    assert one_size(readings + [("F", (394, 576, 403, 590))])["F"] == [(394, 576, 403, 590)]
    assert one_size(readings[:2]) == {"F": [node], "A": [(0, 0, 12, 15)]}  # two letters tell no size


def test_reading_order_by_rows_and_by_columns():
    a, right, below, below_right = (0, 0, 10, 15), (300, 2, 310, 17), (0, 200, 10, 215), (300, 200, 310, 215)
    assert follows(a, right) and follows(a, below) and follows(right, below) and not follows(below, right)
    assert follows(a, below, by_columns=True) and follows(below, right, by_columns=True)
    assert not follows(right, below, by_columns=True) and not follows(below_right, a)
    assert in_order({"A": a, "B": right, "C": below}, ["A", "B", "C"])  # by rows
    assert in_order({"A": a, "B": below, "C": right}, ["A", "B", "C"])  # by columns
    assert not in_order({"A": a, "B": below_right, "C": right}, ["A", "B", "C"])


def test_a_reading_out_of_reading_order_gives_way_to_one_in_order():
    """Letters A-D of a 2x2 grid; B was first read on a legend letter below D. The choice keeps the
    earlier readings where they are in order and takes B's later reading, which puts it between A and C."""
    a, b, c, d = (0, 0, 10, 15), (300, 0, 310, 15), (0, 200, 10, 215), (300, 200, 310, 215)
    legend_b = (350, 400, 360, 415)
    assert ordered_choice({"A": [a], "B": [legend_b], "C": [c], "D": [d]}, list("ABCD"))["B"] == legend_b
    assert ordered_choice({"A": [a], "B": [legend_b, b], "C": [c], "D": [d]}, list("ABCD")) == \
        {"A": a, "B": b, "C": c, "D": d}
    column_b = (0, 100, 10, 115)  # by columns: A above B, then C right of them
    assert ordered_choice({"A": [a], "B": [column_b, b], "C": [(300, 0, 310, 15)]}, list("ABC"))["B"] == column_b


def test_a_bare_stroke_read_as_a_one_is_the_letter_i():
    """A sans-serif capital I is an upright bar, which the recogniser reads as a one. Where the caption
    names I, such a mark is the I; where it does not, it is nothing."""
    image = Image.new("RGB", (400, 120), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=24)
    draw.text((10, 10), "G", fill="black", font=font)
    draw.text((150, 10), "H", fill="black", font=font)
    draw.rectangle([290, 16, 292, 33], fill="black")  # I: 3 x 18 px
    ink = (np.asarray(image) < 240).any(axis=2)
    assert make_ocr("rapidocr").recognise(image.crop((280, 6, 303, 44)))[0] != "I"
    found = lone_letters(image, ink, np.array([255, 255, 255]), ["G", "H", "I"], _RecogniserOnly())
    assert found["I"] == (290, 16, 293, 34)
    assert "I" not in lone_letters(image, ink, np.array([255, 255, 255]), ["G", "H"], _RecogniserOnly())


def test_a_large_letter_in_a_drawing_gives_way_to_the_panel_letter():
    """A large B drawn inside a diagram is the tallest mark and is read first; the panel letters A, B and
    C share a smaller type size, so the large one is dropped and the small B read after it."""
    image = Image.new("RGB", (900, 600), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse([300, 300, 500, 500], outline="black", width=2)
    draw.text((380, 360), "B", fill="black", font=ImageFont.load_default(size=40))
    for at, letter in (((5, 5), "A"), ((455, 5), "B"), ((5, 280), "C")):
        draw.text(at, letter, fill="black", font=ImageFont.load_default(size=18))
    ink = (np.asarray(image) < 240).any(axis=2)
    assert max(lone_marks(ink, 40), key=lambda t: t[3] - t[1])[0] >= 380  # the large B is read first
    found = lone_letters(image, ink, np.array([255, 255, 255]), ["A", "B", "C"], _RecogniserOnly())
    assert sorted(found) == ["A", "B", "C"]
    assert found["B"][1] < 40 and found["B"][3] - found["B"][1] < 20


def test_letters_read_alone_overrule_a_corner_reading_given_to_the_next_piece(monkeypatch):
    """Panel B holds two plots; its corner reading went to the second one (as when its letter stands
    nearer that plot's corner). The letters read alone place B over the first plot, which B then owns."""
    image = Image.new("RGB", (640, 260), "white")
    draw = ImageDraw.Draw(image)
    for x0 in (30, 230, 460):  # B's two plots stand further apart than A and B
        draw.rectangle([x0, 50, x0 + 160, 250], outline="black", width=2)
        draw.line([x0 + 10, 240, x0 + 150, 60], fill="black", width=3)
    for at, letter in (((8, 10), "A"), ((208, 10), "B")):
        draw.text(at, letter, fill="black", font=ImageFont.load_default(size=24))
    corner = {8: "A", 460: "B"}  # the pieces start at their letters
    monkeypatch.setattr(figures, "read_labels",
                        lambda image, boxes, ocr, wanted=None: [corner.get(b[0]) for b in boxes])
    panels = find_panels(image, _RecogniserOnly(), letters=["A", "B"])
    assert [p.label for p in panels] == ["A", "B"]
    assert panels[0].box[2] <= 208 and panels[1].box[0] >= 192 and panels[1].box[2] > 600


def test_letters_after_the_captions_last_are_read_too():
    """The caption names A and B; the figure goes on to C. Once A and B are read, C is looked for."""
    image = Image.new("RGB", (600, 200), "white")
    draw = ImageDraw.Draw(image)
    for x0, letter in zip((10, 210, 410), "ABC"):
        draw.text((x0, 10), letter, fill="black", font=ImageFont.load_default(size=24))
        draw.rectangle([x0 + 20, 50, x0 + 170, 190], outline="black", width=2)
    ink = (np.asarray(image) < 240).any(axis=2)
    found = lone_letters(image, ink, np.array([255, 255, 255]), ["A", "B"], _RecogniserOnly())
    assert sorted(found) == ["A", "B", "C"] and found["C"][0] >= 400
    assert next_letter(["A", "B"]) == "C" and next_letter(["A1", "B1"]) is None and next_letter(["Z"]) is None


def test_letters_all_read_alone_leave_the_corners_unread(monkeypatch):
    """The recogniser on lone marks is cheap; the detector on the pieces' corners is not, and is not
    needed once the lone letters cut the figure."""
    def read_labels(*args, **kwargs):
        raise AssertionError("the corners were read")

    monkeypatch.setattr(figures, "read_labels", read_labels)
    panels = find_panels(_joined_plots(), _RecogniserOnly(), letters=["A", "B"])
    assert [p.label for p in panels] == ["A", "B"]


def test_a_letter_touching_a_pale_frame_line_is_read_on_a_second_look(monkeypatch):
    """A light-grey frame line touching B joins it into one large mark; read again without the palest ink,
    B stands alone."""
    monkeypatch.setattr(figures, "read_labels", lambda image, boxes, ocr, wanted=None: [None] * len(boxes))
    image = _joined_plots()
    ImageDraw.Draw(image).rectangle([226, 0, 227, 289], fill=(215, 215, 215))
    rgb = np.asarray(image)
    pale = (np.abs(rgb.astype(int) - 255) > 15).any(axis=2)
    assert "B" not in lone_letters(image, pale, np.array([255, 255, 255]), ["A", "B"], _RecogniserOnly())
    panels = find_panels(image, _RecogniserOnly(), letters=["A", "B"])
    assert [p.label for p in panels] == ["A", "B"]
    assert panels[0].box[2] <= 215 and panels[1].box[0] >= 200


def test_a_crosshair_through_a_letter_is_no_ink_for_the_lone_letters(monkeypatch):
    """Three views on black with their letters above them; a red cursor line runs down through the B. The
    crosshairs are painted over before the letters are looked for, so the B stands alone and is read."""
    monkeypatch.setattr(figures, "read_labels", lambda image, boxes, ocr, wanted=None: [None] * len(boxes))
    rng = np.random.default_rng(11)
    image = Image.new("RGB", (600, 260), "black")
    draw = ImageDraw.Draw(image)
    for k, letter in enumerate("ABC"):
        mask = Image.new("L", (160, 200), 0)
        ImageDraw.Draw(mask).ellipse((0, 0, 159, 199), fill=255)
        image.paste(Image.fromarray(rng.integers(60, 220, (200, 160, 3), dtype=np.uint8)), (20 + 200 * k, 30), mask)
        draw.text((4 + 200 * k, 2), letter, fill="white", font=ImageFont.load_default(size=22))
    draw.line((0, 120, 599, 120), fill=(255, 0, 0), width=3)
    draw.line((212, 0, 212, 259), fill=(255, 0, 0), width=3)
    panels = find_panels(image, _RecogniserOnly(), letters=["A", "B", "C"])
    assert [p.label for p in panels] == ["A", "B", "C"]
    assert [abs(p.box[0] - (20 + 200 * k)) <= 20 for k, p in enumerate(panels)] == [True] * 3
