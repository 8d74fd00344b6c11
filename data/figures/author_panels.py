"""Images of figures that their authors split into one file per panel (``data.records.AuthorPanel``): each
file is paired with its sub-caption directly, without looking for panels in it again.

The file's letter comes from the record (file names or panel labels, ``data.scrape.panel_images``); when
the record has none, from the order of the files, but only when the caption names exactly as many panel
letters as the figure has files.
"""
from __future__ import annotations

from data.figures.subcaptions import SubCaption
from data.records import FigureRecord

POSITION_WORDS = {"TOP", "BOTTOM", "LEFT", "RIGHT", "MIDDLE"}


def is_author_panel(record: FigureRecord) -> bool:
    """Is the record one image file of a figure split into several?"""
    return int(record.get("panel_count") or 1) > 1


def panel_letter(record: FigureRecord, subs: list[SubCaption]) -> str | None:
    """The file's panel letter: the record's own, else its place in the caption's letters when the
    caption names one letter per file; None when neither tells it."""
    letter = record.get("panel_letter")
    if letter:
        return letter
    letters = [x for s in subs for x in s.labels if x not in POSITION_WORDS and " " not in x]
    if len(letters) == len(set(letters)) == record.get("panel_count"):
        return letters[int(record.get("panel_index") or 0)]
    return None


def author_panel_sub(record: FigureRecord, subs: list[SubCaption]) -> tuple[str, SubCaption] | None:
    """(letter, sub-caption) for the file, or None when its letter or a sub-caption for it is unknown."""
    letter = panel_letter(record, subs)
    sub = next((s for s in subs if letter in s.labels), None) if letter else None
    return (letter, sub) if sub else None
