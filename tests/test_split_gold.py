"""The real-data gold sets of bench/gold/ resolve against the fixtures: every caption anchor is found,
every box lies inside its image, and a broken record is reported by name."""
from __future__ import annotations

import json

import pytest

from data.figures.gold import (CAPTIONS_FILE, PANELS_FILE, GoldError, caption_sources, load_real_captions,
                             load_real_panels, resolve_caption)


def test_every_caption_anchor_resolves(fixtures_dir):
    gold = load_real_captions(fixtures_dir)
    records = json.loads(CAPTIONS_FILE.read_text("utf-8"))["captions"]
    assert len(gold) == len(records) == len({r["source"] for r in records})
    sources = caption_sources(fixtures_dir)
    # Every caption of the three real sources is labelled.
    assert {g.source for g in gold} == set(sources)
    for g in gold:
        assert g.subs, g.source
        for labels, text in g.subs:
            assert text and text in g.caption, (g.source, labels)
        if any(labels == [] for labels, _ in g.subs):
            assert len(g.subs) == 1, g.source
        flat = [x for labels, _ in g.subs for x in labels]
        assert len(flat) == len(set(flat)), f"{g.source}: a letter in two sub-captions"


def test_unlabelled_caption_text_is_whole_caption(fixtures_dir):
    for g in load_real_captions(fixtures_dir):
        if g.subs[0][0] == []:
            assert g.caption.endswith(g.subs[0][1]), g.source


def test_missing_anchor_names_the_record(fixtures_dir):
    sources = caption_sources(fixtures_dir)
    src = "pmc_xml/PMC2900587.xml#Fig5"
    bad = {"source": src, "subs": [{"labels": ["A"], "marker": "A", "start": "no such words here"}]}
    with pytest.raises(GoldError, match="PMC2900587.xml#Fig5.*no such words here"):
        resolve_caption(bad, sources[src])
    wrong_marker = {"source": src,
                    "subs": [{"labels": ["A"], "marker": "(A)", "start": "Axial CT image demonstrates a"}]}
    with pytest.raises(GoldError, match="marker"):
        resolve_caption(wrong_marker, sources[src])


def test_every_panel_box_inside_its_image(fixtures_dir):
    from PIL import Image

    figures = load_real_panels(fixtures_dir)
    assert len(figures) == len(json.loads(PANELS_FILE.read_text("utf-8"))["figures"])
    for fig in figures:
        with Image.open(fig.path) as im:
            w, h = im.size
        assert (w, h) == fig.size, fig.source
        letters = [p.label for p in fig.panels if p.label]
        assert len(letters) == len(set(letters)), fig.source
        assert fig.single or len(letters) == len(fig.panels), fig.source
        for p in fig.panels:
            x0, y0, x1, y1 = p.box
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (fig.source, p.box)
        for i, a in enumerate(fig.panels):  # panels do not overlap
            for b in fig.panels[i + 1:]:
                ix = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])
                iy = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
                assert ix <= 0 or iy <= 0, (fig.source, a.box, b.box)


def test_panel_size_mismatch_is_refused(fixtures_dir, tmp_path):
    data = json.loads(PANELS_FILE.read_text("utf-8"))
    data["figures"] = data["figures"][:1]
    data["figures"][0]["size"] = [10, 10]
    data["figures"][0]["panels"] = [{"box": [0, 0, 5, 5], "label": "A"}]
    path = tmp_path / "panels.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GoldError, match="gold says 10x10"):
        load_real_panels(fixtures_dir, path)
