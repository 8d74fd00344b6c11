"""Panels cut around their letters (data/figures/letter_cuts.py) and the letter sequence a caption
implies (data/figures/letter_panels.letter_sequence)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

import data.figures as figures
from data.figures import find_panels, letter_cuts
from data.figures.letter_cuts import EVERY_LINE, at_top_left, cut_by_letters, reach
from data.figures.letter_panels import letter_sequence

# A figure whose panel C spans the width under two columns: its letter stands on the left half only,
# and the two halves are separated by the same white gutter as D and E below them.
BLOCKS = {"A": (0, 0, 90, 80), "B": (110, 0, 200, 80), "C": (0, 100, 90, 150), "C2": (110, 100, 200, 150),
          "D": (0, 160, 90, 200), "E": (110, 160, 200, 200)}


def _mask() -> np.ndarray:
    ink = np.zeros((200, 200), dtype=bool)
    for x0, y0, x1, y1 in BLOCKS.values():
        ink[y0:y1, x0:x1] = True
    return ink


def test_letters_a_caption_skips_are_added_and_far_ones_dropped():
    assert letter_sequence(["A", "B", "D"]) == ["A", "B", "C", "D"]
    assert letter_sequence(["A", "C"]) == ["A", "B", "C"]
    assert letter_sequence(["A", "B", "C", "S", "K", "W"]) == ["A", "B", "C"]  # gene names, not panels
    assert letter_sequence(["A", "C", "B", "D"]) == ["A", "C", "B", "D"]  # the caption's order is kept
    assert letter_sequence(["A1", "B1"]) == ["A1", "B1"]
    assert letter_sequence([]) == []


def test_cut_gives_the_full_width_panel_to_its_letter():
    anchors = [(BLOCKS[x], x) for x in ("A", "B", "C", "D", "E")]
    got = dict((letter, box) for box, letter in cut_by_letters(_mask(), anchors))
    assert got == {"A": (0, 0, 90, 80), "B": (110, 0, 200, 80), "C": (0, 100, 200, 150),
                   "D": (0, 160, 90, 200), "E": (110, 160, 200, 200)}


def test_the_border_runs_before_the_next_letter_not_through_a_gap_inside_a_panel():
    """Panel B has an empty gap inside it; the border with D, just before D's letter, is crossed by a
    label. The gap is the emptiest line, but it would give D the right half of B."""
    ink = np.zeros((200, 400), dtype=bool)
    ink[20:180, 0:90] = ink[20:180, 130:250] = True  # panel B, with a gap at x 90-130
    ink[20:180, 262:400] = True  # panel D
    ink[190, 240:270] = True  # a label straddling the border
    got = dict((letter, box) for box, letter in cut_by_letters(ink, [((0, 0, 10, 10), "B"), ((262, 0, 272, 10), "D")]))
    assert got["B"][2] <= 262 and got["D"][0] >= 240


def test_an_unlettered_row_stays_with_the_letter_above_it():
    """Rows A, A's second row, B: the gutter above the second row is wider than the one above B, but
    what stands below a letter is its own, so the border runs just above B's row."""
    ink = np.zeros((300, 200), dtype=bool)
    ink[0:80, :] = True  # row A, lettered
    ink[110:180, :] = True  # A's second row, no letter; a 30 px gutter above it
    ink[190:300, :] = True  # row B, lettered; a 10 px gutter above it
    got = dict((letter, box) for box, letter in cut_by_letters(ink, [((0, 0, 50, 80), "A"), ((0, 190, 50, 300), "B")]))
    assert got == {"A": (0, 0, 200, 180), "B": (0, 190, 200, 300)}


def test_pieces_no_straight_line_separates_give_no_cut():
    overlapping = [((0, 0, 150, 150), "A"), ((50, 50, 200, 200), "B")]
    assert cut_by_letters(_mask(), overlapping) is None


def test_find_panels_cuts_around_the_letters_once_all_are_read(monkeypatch):
    image = Image.new("RGB", (200, 200), "white")
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in BLOCKS.values():
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=(90, 90, 90))
    corner = {box[:2]: letter for letter, box in BLOCKS.items() if len(letter) == 1}

    def read_labels(image, boxes, ocr, wanted=None):
        return [corner.get(tuple(b[:2])) for b in boxes]

    monkeypatch.setattr(figures, "read_labels", read_labels)
    panels = find_panels(image, object(), letters=["A", "B", "C", "D", "E"])
    assert [(p.label, p.box) for p in panels] == [("A", (0, 0, 90, 80)), ("B", (110, 0, 200, 80)),
                                                 ("C", (0, 100, 200, 150)), ("D", (0, 160, 90, 200)),
                                                 ("E", (110, 160, 200, 200))]


class _Words:
    """An OCR back-end whose whole-figure reading finds the given words."""

    def __init__(self, words):
        self.words = words

    def read(self, image):
        return self.words


def _joined_plots() -> Image.Image:
    # two plots joined by a connector, so that no gutter separates them; letters drawn above their plots
    image = Image.new("RGB", (200, 110), "white")
    draw = ImageDraw.Draw(image)
    for x0 in (0, 110):
        draw.rectangle([x0, 20, x0 + 89, 109], fill=(70, 70, 70))
        draw.rectangle([x0, 0, x0 + 9, 11], fill=(0, 0, 0))
    draw.rectangle([90, 60, 109, 62], fill=(70, 70, 70))
    return image


def test_letters_read_over_the_whole_figure_cut_panels_no_gutter_separates(monkeypatch):
    from data.figures.ocr import OcrWord

    monkeypatch.setattr(figures, "read_labels", lambda image, boxes, ocr, wanted=None: [None] * len(boxes))
    words = [OcrWord("A", (0, 0, 10, 12)), OcrWord("B", (110, 0, 120, 12))]
    panels = find_panels(_joined_plots(), _Words(words), letters=["A", "B"])
    assert [p.label for p in panels] == ["A", "B"]
    assert panels[0].box[2] <= 101 and panels[1].box[0] >= 99
    # letters that would stand at their panels' bottom-right are not trusted to cut
    far = [OcrWord("A", (75, 95, 85, 107)), OcrWord("B", (185, 95, 195, 107))]
    assert len(find_panels(_joined_plots(), _Words(far), letters=["A", "B"])) == 1


def _wide_bar_chart() -> tuple[np.ndarray, dict[str, tuple]]:
    """A small plot A beside a wide bar chart B whose tick labels run down past C's letter; C and D
    below, D's letter under the middle of B. Every line between the rows crosses B's bars or labels,
    while a line between A and B crosses only C below: the emptiest cut gives D the right half of C."""
    ink = np.zeros((300, 400), dtype=bool)
    ink[20:150, 10] = ink[150, 10:100] = ink[60:150, 40:48] = ink[90:150, 70:78] = True  # plot A
    ink[20:130, 115] = ink[130, 115:390] = True  # B's axes ...
    for x in range(125, 390, 12):
        ink[40:130, x:x + 6] = True  # ... bars ...
    ink[132:175, 120:390] = np.indices((43, 270)).sum(axis=0) % 2 == 0  # ... and tick labels
    ink[190:300, 5:205:3] = True  # panel C
    ink[200:300, 215:400:3] = True  # panel D
    letters = {"A": (0, 0, 12, 15), "B": (110, 0, 122, 15), "C": (0, 168, 12, 183), "D": (210, 182, 222, 197)}
    for x0, y0, x1, y1 in letters.values():
        ink[y0:y1, x0:x1] = True
    return ink, letters


def test_letters_off_their_top_left_corners_weigh_every_line(monkeypatch):
    ink, letters = _wide_bar_chart()
    anchors = [(reach(b), x) for x, b in letters.items()]
    emptiest = dict((x, b) for b, x in cut_by_letters(ink, anchors))
    assert not at_top_left(letters["D"], emptiest["D"])
    got = dict((x, b) for b, x in cut_by_letters(ink, anchors, tie=EVERY_LINE))
    assert all(at_top_left(letters[x], got[x]) for x in letters)
    assert got["D"][0] >= 205 and got["C"][2] <= 210 and got["B"][1] == 0 and got["C"][1] >= 168
    # find_panels falls back to that plan when letters read alone stand off their panels' corners
    image = Image.fromarray(np.where(ink, 0, 255).astype(np.uint8)).convert("RGB")
    monkeypatch.setattr(figures, "read_labels", lambda image, boxes, ocr, wanted=None: [None] * len(boxes))
    monkeypatch.setattr(figures, "lone_letters", lambda image, ink, bg, wanted, ocr: dict(letters))
    panels = {p.label: p.box for p in find_panels(image, object(), letters=list("ABCD"))}
    assert panels == got


@pytest.mark.parametrize("plans", [4000, 1])  # 1: only the emptiest line is followed
def test_a_grid_of_many_letters_is_cut_into_its_cells(monkeypatch, plans):
    monkeypatch.setattr(letter_cuts, "PLANS", plans)
    ink = np.zeros((400, 600), dtype=bool)
    anchors = []
    for row in range(4):
        for col in range(6):
            x0, y0 = col * 100, row * 100
            ink[y0 + 5:y0 + 95, x0 + 5:x0 + 95] = True
            anchors.append(((x0 + 5, y0 + 5, x0 + 95, y0 + 95), chr(ord("A") + row * 6 + col)))
    got = dict((letter, box) for box, letter in cut_by_letters(ink, anchors))
    assert got == {letter: box for box, letter in anchors}


def test_of_two_equally_clean_plans_the_one_reading_in_letter_order_wins():
    """C fills the right of the first two rows, D the whole third row; a clean gutter runs down the whole
    figure between the columns and one across it above D. Cut by the column first, C would take D's right
    half (its leaves read A, B, D, C); cut by the row first they read A, B, C, D."""
    ink = np.zeros((300, 200), dtype=bool)
    for x0, y0, x1, y1 in ((10, 10, 90, 90), (10, 110, 90, 190), (110, 10, 190, 190), (10, 210, 90, 290),
                           (110, 210, 190, 290)):
        ink[y0:y1, x0:x1] = True
    anchors = [((10, 10, 30, 30), "A"), ((10, 110, 30, 130), "B"), ((110, 10, 130, 30), "C"),
               ((10, 210, 30, 230), "D")]
    got = dict((letter, box) for box, letter in cut_by_letters(ink, anchors))
    assert got == {"A": (10, 10, 90, 90), "B": (10, 110, 90, 190), "C": (110, 10, 190, 190),
                   "D": (10, 210, 190, 290)}
