"""The real caption development set (bench/gold/caption_dev.json): its size and sources, the licence rule for
stored caption texts, every anchor resolving, the seeded article split, and the anchor-only records read
from a sources folder (a JATS file written here; the real folder when $MEDVL_CAPTION_DEV or
../shared/caption_dev holds it)."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from bench.caption_gold import (CAPTION_DEV_FILE, STORED_LICENCES, caption_style, is_held_out,
                                      load_caption_dev, sources_dir)
from bench.gold_sets import GoldError, parse_github_source

ROOT = Path(__file__).resolve().parents[1]
HELD_BACK = ("yfpeng/figure-separator", "apple2373/figure-separator", "mrirecon/", "JekelyLab/Jokura_et_al_NOS",
             "MaterialEyes/exsclaim", "razorx89/roco-dataset", "neurosynth/ACE", "microsoft/LLaVA-Med",
             "allenai/medicat", "mao1207/BioMed-VITAL", "elifesciences/elife-tools", "stencila/encoda",
             "scieloorg/packtools", "substance/texture")


def records() -> list[dict]:
    return json.loads(CAPTION_DEV_FILE.read_text("utf-8"))["captions"]


def test_size_sources_and_licences():
    recs = records()
    assert len(recs) >= 300 and len({r["article"] for r in recs}) >= 100
    assert len({r["source"] for r in recs}) == len(recs)
    for r in recs:
        gh = parse_github_source(r["source"])
        assert not any(f"{gh.owner}/{gh.repo}".startswith(h) for h in HELD_BACK), r["source"]
        # Text is stored only where the licence allows it; the rest is read from the sources folder.
        assert ("caption" in r) == (r["licence"] in STORED_LICENCES), r["source"]
    assert sum(1 for r in recs if r["subs"][0]["labels"]) >= 150


def test_stored_captions_resolve_without_sources(tmp_path):
    items = load_caption_dev(tmp_path)  # an empty sources folder: only records with their text
    stored = [r for r in records() if "caption" in r]
    assert len(items) == len(stored) >= 300
    for item in items:
        labels = [x for group, _ in item.gold.subs for x in group]
        assert len(labels) == len(set(labels)), f"{item.gold.source}: a label in two sub-captions"
        for _, text in item.gold.subs:
            assert text and text in item.gold.caption, item.gold.source
    with pytest.raises(GoldError, match="not found"):
        load_caption_dev(tmp_path, require_sources=True)


def test_split_is_by_article_and_about_a_third():
    parts = defaultdict(set)
    for r in records():
        parts[is_held_out(r["article"])].add(r["article"])
    assert not parts[True] & parts[False]
    share = len(parts[True]) / (len(parts[True]) + len(parts[False]))
    assert 0.25 < share < 0.42
    assert is_held_out("PMC10777901") == is_held_out("PMC10777901")


def test_text_under_a_non_free_licence_is_refused(tmp_path):
    rec = next(r for r in records() if "caption" in r and r["subs"][0]["labels"])
    bad = dict(rec, licence="CC BY-NC")
    path = tmp_path / "gold.json"
    path.write_text(json.dumps({"conventions": [], "captions": [bad]}), "utf-8")
    with pytest.raises(GoldError, match="licence 'CC BY-NC'"):
        load_caption_dev(tmp_path, path)


def test_anchor_only_record_read_from_sources_folder(tmp_path):
    """An OAI-PMH wrapped JATS article (as PMC's OAI service sends it), read through the sources folder."""
    src = "github:someone/papers@" + "0" * 40 + ":xml/PMC1.xml#F1"
    jats = ('<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><GetRecord><record><metadata>'
            '<article><front><article-meta><article-id pub-id-type="pmc">1</article-id></article-meta></front>'
            '<body><fig id="F1"><label>Figure 1</label><caption><p>Brain MRI. (A) Axial FLAIR. (B) Coronal T1.'
            '</p></caption></fig></body></article></metadata></record></GetRecord></OAI-PMH>')
    target = parse_github_source(src).local_path(tmp_path)
    target.parent.mkdir(parents=True)
    target.write_text(jats, "utf-8")
    record = {"source": src, "article": "PMC1", "licence": "CC BY-NC", "lead": "Brain MRI.",
              "subs": [{"labels": ["A"], "marker": "(A)", "start": "Axial FLAIR."},
                       {"labels": ["B"], "marker": "(B)", "start": "Coronal T1."}]}
    path = tmp_path / "gold.json"
    path.write_text(json.dumps({"conventions": [], "captions": [record]}), "utf-8")
    (item,) = load_caption_dev(tmp_path, path, require_sources=True)
    assert item.gold.subs == [(["A"], "Axial FLAIR."), (["B"], "Coronal T1.")]
    assert item.style == "paren" and caption_style({"subs": [{"labels": []}]}) == "none"


def test_every_record_resolves_against_its_source_file():
    sources = sources_dir()
    if not sources.is_dir():
        pytest.skip(f"no sources folder {sources} (python -m bench.caption_dev --fetch-from DIR)")
    items = load_caption_dev(sources, require_sources=True)
    assert len(items) == len(records())
    from bench.gold_sets import jats_captions
    for r in records():
        if "caption" in r:  # the stored text is the caption of the source file
            gh = parse_github_source(r["source"])
            assert jats_captions(gh.local_path(sources))[gh.fig_id] == r["caption"], r["source"]


def test_bench_refuses_held_out_failures():
    done = subprocess.run([sys.executable, "-m", "bench.caption_dev", "--held-out", "--failures"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "held-out" in done.stderr
