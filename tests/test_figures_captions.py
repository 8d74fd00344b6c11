"""split_caption on the labelled captions of tests/data and on the syntaxes one by one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.figures import SubCaption, split_caption
from data.subcaptions import expand_labels

GOLD = json.loads((Path(__file__).parent / "data" / "subcaptions_gold.json").read_text())


def test_gold_set_is_large_and_varied():
    assert len(GOLD) >= 40
    assert {"paren-upper", "paren-lower", "bare-comma", "bare-colon", "bare-period", "paren-list",
            "paren-and", "range-hyphen", "range-endash", "suffix", "lead", "single", "not-labels",
            "positional"} <= {g["syntax"] for g in GOLD}


@pytest.mark.parametrize("row", GOLD, ids=[f"{i}-{g['syntax']}" for i, g in enumerate(GOLD)])
def test_gold_caption(row):
    subs = split_caption(row["caption"])
    assert [(s.labels, s.text) for s in subs] == [(labels, text) for labels, text in row["subs"]]
    assert subs[0].context == row.get("context", "")


def test_ranges_and_lists_expand():
    assert expand_labels("A-C") == ["A", "B", "C"]
    assert expand_labels("c\u2013e") == ["C", "D", "E"]
    assert expand_labels("A and B") == ["A", "B"]
    assert expand_labels("A-C, E") == ["A", "B", "C", "E"]
    assert expand_labels("C-A") is None  # backwards
    assert expand_labels("A-a") is None  # mixed case


def test_context_can_be_prepended():
    subs = split_caption("Brain MRI of a child. (A) Axial T2. (B) Coronal FLAIR.")
    assert subs[1] == SubCaption(["B"], "Coronal FLAIR.")
    assert subs[1].with_context() == "Brain MRI of a child. Coronal FLAIR."
    assert split_caption("Axial CT.")[0].with_context() == "Axial CT."


def test_html_is_removed_before_splitting():
    subs = split_caption("<b>(A)</b> Axial&nbsp;CT. <b>(B)</b> MRI.")
    assert [(s.labels, s.text) for s in subs] == [(["A"], "Axial CT."), (["B"], "MRI.")]
