"""Kinds of failure of a split figure (bench/figure_failures.py), on boxes whose answer is known."""
from __future__ import annotations

from bench.figure_failures import KINDS, count_kinds, failure_kinds
from bench.split_quality import match
from data.figures import Panel

LEFT, RIGHT = (0, 0, 100, 100), (110, 0, 210, 100)


def _kinds(truth, found):
    return failure_kinds(truth, found, match([t for t, _ in truth], [Panel(b, x) for b, x in found]))


def test_a_right_figure_has_no_failure():
    assert _kinds([(LEFT, "A"), (RIGHT, "B")], [(LEFT, "A"), (RIGHT, "B")]) == []


def test_two_panels_found_as_one_are_merged():
    assert _kinds([(LEFT, "A"), (RIGHT, "B")], [((0, 0, 210, 100), "A")]) == ["merged"]


def test_a_panel_found_as_its_two_halves_is_split():
    halves = [((0, 0, 100, 45), "A"), ((0, 55, 100, 100), None), (RIGHT, "B")]
    assert _kinds([(LEFT, "A"), (RIGHT, "B")], halves) == ["split"]


def test_a_box_found_too_small_misplaces_its_panel():
    assert _kinds([(LEFT, "A"), (RIGHT, "B")], [((0, 0, 100, 40), "A"), (RIGHT, "B")]) == ["misplaced"]


def test_a_strip_outside_every_panel_is_extra():
    assert _kinds([(LEFT, None)], [(LEFT, None), ((0, 120, 100, 140), None)]) == ["extra"]


def test_letters_wrong_missing_and_invented_are_told_apart():
    truth = [(LEFT, "A"), (RIGHT, "B"), ((0, 110, 100, 210), None)]
    found = [(LEFT, "B"), (RIGHT, None), ((0, 110, 100, 210), "C")]
    assert _kinds(truth, found) == ["letter_wrong", "letter_missing", "letter_invented"]


def test_kinds_are_counted_once_per_figure():
    counts = count_kinds([["merged", "letter_wrong"], ["merged"], []])
    assert set(counts) == set(KINDS)
    assert counts["merged"] == 2 and counts["letter_wrong"] == 1 and counts["split"] == 0
