"""The real-data gold sets of bench/gold/ resolve against the fixtures: every caption anchor is found,
every box lies inside its image, and a broken record is reported by name. The unseen caption set
(bench/gold/unseen_subcaptions.json) is checked for its format always, and against its source files when
$MEDVL_UNSEEN_CAPTIONS (or ../shared/unseen_captions) holds them; its reading path is tested on a small
JATS file written here."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.gold_sets import (CAPTIONS_FILE, PANELS_FILE, UNSEEN_CAPTIONS_FILE, GoldError, caption_sources,
                             load_real_captions, load_real_panels, load_unseen_captions, parse_github_source,
                             resolve_caption, unseen_sources_dir)


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


# --- the unseen caption set -------------------------------------------------------------------------

POSITIONS = {"LEFT", "RIGHT", "TOP", "BOTTOM", "MIDDLE"}
RECORD_KEYS = {"source", "licence", "lead", "tail", "subs", "ambiguous"}
SUB_KEYS = {"labels", "start", "marker", "end"}
MAX_ANCHOR_WORDS = 10  # anchors quote a few words; the file holds no caption text


def _unseen_records() -> list[dict]:
    return json.loads(UNSEEN_CAPTIONS_FILE.read_text("utf-8"))["captions"]


def test_unseen_gold_format():
    data = json.loads(UNSEEN_CAPTIONS_FILE.read_text("utf-8"))
    assert data["conventions"] and all(isinstance(c, str) for c in data["conventions"])
    records = data["captions"]
    assert len(records) >= 30 and len({r["source"] for r in records}) == len(records)
    # None of its articles is one the real-caption gold (the fixtures) was made on.
    real = json.loads(CAPTIONS_FILE.read_text("utf-8"))["captions"]
    real_files = {Path(r["source"].split("#")[0]).name for r in real}
    real_ids = {m for name in real_files for m in re.findall(r"PMC\d+", name)}
    labelled = 0
    for r in records:
        src = r["source"]
        assert set(r) <= RECORD_KEYS and r["subs"], src
        gh = parse_github_source(src)
        name = Path(gh.path).name
        assert name not in real_files and not set(re.findall(r"PMC\d+", name)) & real_ids, src
        assert isinstance(r.get("licence", ""), str)
        for key in ("lead", "tail", "ambiguous"):
            assert key not in r or (isinstance(r[key], str) and r[key].strip()), (src, key)
        flat = []
        for sub in r["subs"]:
            assert set(sub) <= SUB_KEYS and isinstance(sub["start"], str) and sub["start"].strip(), src
            labels = sub["labels"]
            assert isinstance(labels, list), src
            for x in labels:
                assert x in POSITIONS or (len(x) == 1 and x.isalpha() and x.isupper()), (src, x)
            flat += labels
        assert len(flat) == len(set(flat)), f"{src}: a letter in two sub-captions"
        if any(sub["labels"] == [] for sub in r["subs"]):
            assert len(r["subs"]) == 1, src
        else:
            labelled += 1
        anchors = [r.get("lead"), r.get("tail")] + [s.get(k) for s in r["subs"] for k in ("start", "end")]
        for a in filter(None, anchors):
            assert len(a.split()) <= MAX_ANCHOR_WORDS, (src, a)
    assert labelled >= len(records) // 2


@pytest.fixture
def unseen_sources() -> Path:
    path = unseen_sources_dir()
    if not path.is_dir():
        pytest.skip(f"unseen caption sources {path} are absent (python -m bench.unseen_captions --fetch-from DIR)")
    return path


def test_every_unseen_anchor_resolves(unseen_sources):
    gold = load_unseen_captions(unseen_sources)
    assert [g.source for g in gold] == [r["source"] for r in _unseen_records()]
    for g in gold:
        for labels, text in g.subs:
            assert text and text in g.caption, (g.source, labels)
        if g.subs[0][0] == []:
            assert g.caption.endswith(g.subs[0][1]), g.source


COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY_JATS = """<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>
<article-id pub-id-type="pmc">PMC0042</article-id></article-meta></front><body>
<fig id="F1"><label>Figure 1</label><caption><p>Liver metastases.
<bold>(A)</bold> Axial CT image shows a   hypodense lesion. <bold>(B)</bold> MR image of the same lesion.
Scale bars: 1 cm.</p></caption></fig>
<fig id="F2"><caption><p>Chest radiograph of a healthy volunteer.</p></caption></fig>
</body></article>
"""


def _tiny_gold(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "gold.json"
    path.write_text(json.dumps({"conventions": ["test"], "captions": records}), encoding="utf-8")
    return path


def _tiny_sources(tmp_path: Path) -> Path:
    sources = tmp_path / "sources"
    (sources / "someone+jats-files" / "data").mkdir(parents=True)
    (sources / "someone+jats-files" / "data" / "PMC0042.xml").write_text(TINY_JATS, encoding="utf-8")
    return sources


def _src(fig: str, path: str = "data/PMC0042.xml") -> str:
    return f"github:someone/jats-files@{COMMIT}:{path}#{fig}"


TINY_RECORDS = [
    {"source": _src("F1"), "lead": "Liver metastases.", "tail": "Scale bars: 1 cm.",
     "subs": [{"labels": ["A"], "marker": "(A)", "start": "Axial CT image shows a hypodense"},
              {"labels": ["B"], "marker": "(B)", "start": "MR image of the same lesion."}]},
    {"source": _src("F2"), "subs": [{"labels": [], "start": "Chest radiograph of a"}]},
]


def test_unseen_reading_path_rebuilds_texts_from_a_local_file(tmp_path):
    gold = load_unseen_captions(_tiny_sources(tmp_path), _tiny_gold(tmp_path, TINY_RECORDS))
    assert [g.source for g in gold] == [_src("F1"), _src("F2")]
    assert gold[0].subs == [(["A"], "Axial CT image shows a hypodense lesion."),
                            (["B"], "MR image of the same lesion.")]
    assert gold[0].lead == "Liver metastases." and gold[0].tail == "Scale bars: 1 cm."
    assert gold[1].subs == [([], "Chest radiograph of a healthy volunteer.")]


@pytest.mark.parametrize("record, message", [
    ({"source": _src("F9"), "subs": [{"labels": [], "start": "Chest"}]}, r"#F9: no figure 'F9'"),
    ({"source": _src("F1", "data/PMC0043.xml"), "subs": [{"labels": [], "start": "Liver"}]},
     r"PMC0043.xml#F1: source file .* not found"),
    ({"source": _src("F1"), "subs": [{"labels": ["A"], "marker": "(A)", "start": "no such words"}]},
     r"PMC0042.xml#F1 sub 0 \['A'\]: anchor 'no such words' not found"),
    ({"source": "github:someone/jats-files:data/PMC0042.xml#F1", "subs": []}, r"not of the form"),
    ({"source": f"github:someone/jats-files@{COMMIT}:../PMC0042.xml#F1", "subs": []}, r"relative"),
])
def test_unseen_reading_path_names_the_broken_record(tmp_path, record, message):
    with pytest.raises(GoldError, match=message):
        load_unseen_captions(_tiny_sources(tmp_path), _tiny_gold(tmp_path, [record]))


def test_unseen_source_listed_twice_is_refused(tmp_path):
    with pytest.raises(GoldError, match="listed twice"):
        load_unseen_captions(_tiny_sources(tmp_path), _tiny_gold(tmp_path, TINY_RECORDS + TINY_RECORDS[:1]))


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_sources_are_copied_from_a_snapshot_at_the_named_commit(tmp_path):
    import sys

    root = Path(__file__).resolve().parents[1]

    def unseen(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bench.unseen_captions", *args], cwd=root,
                              capture_output=True, text=True)

    repo = tmp_path / "snapshots" / "someone+jats-files"
    (repo / "data").mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "data" / "PMC0042.xml").write_text(TINY_JATS, encoding="utf-8")
    subprocess.run(git + ["add", "data"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "tiny"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (repo / "data" / "PMC0042.xml").write_text("<changed later/>", encoding="utf-8")
    subprocess.run(git + ["commit", "-q", "-am", "later"], check=True)
    records = json.loads(json.dumps(TINY_RECORDS).replace(COMMIT, commit))
    gold_path = _tiny_gold(tmp_path, records)
    sources = tmp_path / "sources"
    run = unseen("--gold", str(gold_path), "--sources", str(sources), "--fetch-from", str(tmp_path / "snapshots"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert (sources / "someone+jats-files" / "data" / "PMC0042.xml").read_text("utf-8") == TINY_JATS
    out = json.loads(run.stdout)
    assert out["captions"] == 2 and out["sub_captions"] == 3 and out["labelled_captions"] == 1
    assert 0 <= out["token_f1"] <= 1 and isinstance(out["failures"], list)
    inside = unseen("--gold", str(gold_path), "--sources", str(root / "tmp_sources"),
                    "--fetch-from", str(tmp_path / "snapshots"))
    assert inside.returncode != 0 and "inside the repository" in inside.stdout + inside.stderr
