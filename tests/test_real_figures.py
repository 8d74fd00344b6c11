"""The real compound-figure gold (bench/gold/real_figures.json): its form and split rule always, its images
and captions when $MEDVL_REAL_FIGURES (or ../shared/real_figures) holds them, the fetch step on a small
repository made here, and the panels-from-caption-letters rules on boxes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import data.figures as figures
from data.figures import caption_letters, find_panels
from bench.figure_gold import (FIGURES_FILE, GoldError, held_out, load_sources, read_figures,
                                      sources_dir)
from data.figures.letter_panels import fill_by_order, find_missing_letters, group_by_letters, keep_caption_letters
from data.figures.ocr import OcrWord

ROOT = Path(__file__).resolve().parents[1]


def test_gold_form_and_split():
    figs = read_figures()
    assert len(figs) >= 120
    parts = {f.part for f in figs}
    assert parts == {"tuning", "held_out"}
    by_article: dict[str, set] = {}
    for f in figs:
        by_article.setdefault(f.article, set()).add(f.part)
        assert f.part == ("held_out" if held_out(f.article) else "tuning")
        assert len({p.box for p in f.panels}) == len(f.panels)
    assert all(len(p) == 1 for p in by_article.values())  # no article in both parts
    assert len(read_figures(part="held_out")) + len(read_figures(part="tuning")) == len(figs)
    draws = sorted({f.draw for f in figs})
    assert draws == list(range(1, len(draws) + 1))
    assert sum(len(read_figures(draw=d)) for d in draws) == len(figs)
    assert {f.draw for f in read_figures(part="held_out", draw=draws[-1])} == {draws[-1]}


def test_gold_refuses_a_figure_without_its_draw(tmp_path):
    record = json.loads(FIGURES_FILE.read_text("utf-8"))["figures"][0]
    del record["draw"]
    path = tmp_path / "gold.json"
    path.write_text(json.dumps({"figures": [record]}), encoding="utf-8")
    with pytest.raises(GoldError, match=f"{record['id']}: draw"):
        read_figures(path)


def test_gold_refuses_a_figure_in_the_wrong_part(tmp_path):
    data = json.loads(FIGURES_FILE.read_text("utf-8"))
    record = data["figures"][0]
    record["part"] = "held_out" if record["part"] == "tuning" else "tuning"
    path = tmp_path / "gold.json"
    path.write_text(json.dumps({"figures": [record]}), encoding="utf-8")
    with pytest.raises(GoldError, match=record["id"]):
        read_figures(path)


@pytest.fixture
def real_sources() -> Path:
    folder = sources_dir()
    if not (folder / "captions.json").is_file():
        pytest.skip(f"{folder} holds no real figures (python -m bench.real_figures --fetch-from DIR)")
    return folder


def test_every_gold_figure_has_its_image_and_caption(real_sources):
    items = load_sources(read_figures(), real_sources)
    for fig, path, caption in items:
        with Image.open(path) as im:
            assert im.size == fig.size, fig.id
        assert caption.strip()


def test_caption_letters():
    assert caption_letters("Overview. (A) MRI. (B, C) CT scans. Top: arrows.") == ["A", "B", "C"]
    assert caption_letters("A single chest radiograph of a patient.") == []
    assert caption_letters("a Flow chart. b Bar plot. Left: controls.") == ["A", "B"]


def test_pieces_join_the_lettered_panel_that_owns_their_region():
    # A is a heat map (0-100) with its legend cut off (100-140); B sits right of it; C below both,
    # cut into a plot and its label column
    boxes = [(0, 0, 100, 90), (104, 0, 140, 90), (160, 0, 300, 90), (0, 110, 60, 200), (64, 110, 300, 200)]
    labels = ["A", None, "B", "C", None]
    out_boxes, out_labels = group_by_letters(boxes, labels)
    assert out_labels == ["A", "B", "C"]
    assert out_boxes == [(0, 0, 140, 90), (160, 0, 300, 90), (0, 110, 300, 200)]


def test_a_piece_that_would_reach_into_another_panel_stays_alone():
    # the loose piece spans under both A and B: joined to either it would cover the other
    boxes = [(0, 0, 100, 90), (120, 0, 220, 90), (0, 110, 220, 200)]
    out_boxes, out_labels = group_by_letters(boxes, ["A", "B", None])
    assert out_labels == ["A", "B", None] and out_boxes == boxes


def test_a_join_that_spreads_over_another_piece_comes_last():
    # C's plot (0-110 wide) was cut into two overlapping rows; the wide piece right of it (D's panel, its
    # letter unread) overlaps C's column by a few pixels. Joined to either row, it would cover the other.
    boxes = [(0, 0, 100, 100), (120, 0, 300, 100), (100, 105, 300, 300), (0, 110, 110, 200), (0, 195, 110, 300)]
    out_boxes, out_labels = group_by_letters(boxes, ["A", "B", None, None, None], count=4)
    assert out_boxes == [(0, 0, 100, 100), (120, 0, 300, 100), (0, 110, 110, 300), (100, 105, 300, 300)]
    assert out_labels == ["A", "B", None, None]


def test_letters_the_caption_does_not_name_are_dropped():
    assert keep_caption_letters(["A", "T", "B", None], ["A", "B"]) == ["A", None, "B", None]
    # letters after the caption's last carry its sequence on only from that letter read (a caption whose
    # later markers were lost); with it unread, the one after it is taken as its misreading and dropped
    assert keep_caption_letters(["A", "B", "C", "D"], ["A", "B"]) == ["A", "B", "C", "D"]
    assert keep_caption_letters(["A", "B", "C", "E"], ["A", "B"]) == ["A", "B", "C", None]
    assert keep_caption_letters(["A", "B", None, "G"], ["A", "B", "C", "D", "E", "F"]) == ["A", "B", None, None]
    # ... and only on pieces after it in reading order: a D before C is a misreading, not C's successor
    assert keep_caption_letters(["A", "D", "E", "C"], ["A", "B", "C"]) == ["A", None, None, "C"]


def test_missing_letter_found_by_a_whole_figure_reading():
    boxes = [(0, 0, 100, 100), (120, 0, 220, 100)]
    words = [OcrWord("B", (110, 2, 118, 12)), OcrWord("Tubulin", (10, 50, 60, 60))]
    assert find_missing_letters(words, boxes, ["A", None], ["A", "B"]) == ["A", "B"]
    assert find_missing_letters(words, boxes, ["A", None], ["A", "C"]) == ["A", None]


def test_a_letter_printed_inside_a_piece_names_it_wherever_it_stands():
    plots = [(0, 0, 300, 230), (320, 0, 620, 230)]
    low_left = [OcrWord("B", (370, 160, 385, 180))]  # inside the plot area, near its bottom-left
    assert find_missing_letters(low_left, plots, ["A", None], ["A", "B"]) == ["A", "B"]
    outside_far = [OcrWord("B", (250, 240, 265, 260))]  # under the first plot: no piece below it is near
    assert find_missing_letters(outside_far, plots + [(0, 400, 300, 600)], ["A", None, None],
                                ["A", "B"]) == ["A", None, None]


def test_reading_order_fills_a_gap_of_the_right_size_only():
    boxes = [(0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10), (60, 0, 70, 10)]
    assert fill_by_order(boxes, ["A", None, "C", "D"], ["A", "B", "C", "D"]) == ["A", "B", "C", "D"]
    assert fill_by_order(boxes, ["A", None, None, "D"], ["A", "B", "D"]) == ["A", None, None, "D"]
    assert fill_by_order(boxes, ["C", None, "A", None], ["A", "B", "C", "D"]) == ["C", None, "A", None]


def _two_panel_figure() -> Image.Image:
    im = Image.new("RGB", (400, 200), "white")
    d = ImageDraw.Draw(im)
    d.rectangle((10, 20, 190, 190), fill=(60, 60, 60))
    d.rectangle((210, 20, 390, 190), fill=(90, 40, 40))
    return im


class _NoOcrAllowed:
    name = "forbidden"
    can_recognise = True

    def read(self, image):
        raise AssertionError("a caption that names no letters must not be read by OCR")

    def recognise(self, image):
        raise AssertionError("a caption that names no letters must not be read by OCR")


def test_a_caption_without_letters_gets_no_ocr_letters():
    panels = find_panels(_two_panel_figure(), _NoOcrAllowed(), letters=[])
    assert len(panels) == 2 and all(p.label is None for p in panels)


def test_caption_letters_steer_the_letters_read(monkeypatch):
    # the corners read "T" (a sequence name) and "B"; the caption names A and B: T is dropped and
    # the whole-figure reading places A
    monkeypatch.setattr(figures, "read_labels", lambda image, boxes, ocr, wanted=None: ["T", "B"])

    class WholeFigure:
        def read(self, image):
            return [OcrWord("A", (12, 2, 20, 14))]

    panels = find_panels(_two_panel_figure(), WholeFigure(), letters=["A", "B"])
    assert [p.label for p in panels] == ["A", "B"]


def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def test_fetch_copies_image_and_caption_at_the_named_commit_and_scores(tmp_path):
    import hashlib

    repo = tmp_path / "snapshots" / "someone+pmc-figures"
    (repo / "figures").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    _two_panel_figure().save(repo / "figures" / "PMC1__f1.png")
    (repo / "figures" / "PMC1__f1.yml").write_text(
        "---\npmcid: PMC1\nfigure_title: Two panels\ncaption: (A) Left image. (B) Right image.\n~\n---\n",
        encoding="utf-8")
    _git(repo, "add", "figures")
    _git(repo, "commit", "-q", "-m", "one figure")
    commit = _git(repo, "rev-parse", "HEAD")
    (repo / "figures" / "PMC1__f1.yml").write_text("---\ncaption: changed later\n---\n", encoding="utf-8")
    _git(repo, "commit", "-q", "-am", "later")
    article = next(f"PMC{k}" for k in range(1, 1000) if not held_out(f"PMC{k}"))
    digest = hashlib.sha256((repo / "figures" / "PMC1__f1.png").read_bytes()).hexdigest()
    gold = {"figures": [{"id": "PMC1__f1", "article": article, "part": "tuning", "draw": 1,
                         "image": f"github:someone/pmc-figures@{commit}:figures/PMC1__f1.png", "sha256": digest,
                         "size": [400, 200], "caption": f"github:someone/pmc-figures@{commit}:figures/PMC1__f1.yml",
                         "panels": [{"box": [10, 20, 190, 190], "label": "A"},
                                    {"box": [210, 20, 390, 190], "label": "B"}]}]}
    gold_path = tmp_path / "gold.json"
    gold_path.write_text(json.dumps(gold), encoding="utf-8")
    sources = tmp_path / "sources"
    run = subprocess.run([sys.executable, "-m", "bench.real_figures", "--gold", str(gold_path), "--sources",
                          str(sources), "--fetch-from", str(tmp_path / "snapshots"), "--ocr", "none"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    captions = json.loads((sources / "captions.json").read_text("utf-8"))
    assert captions == {"PMC1__f1": "Two panels. (A) Left image. (B) Right image."}
    out = json.loads(run.stdout)
    assert out["figures"] == 1 and out["true_panels"] == 2 and out["f1"] == 1.0
    # no OCR, so the panels are right and their letters missing; one labelling round, so no by_draw
    assert {k: v for k, v in out["failure_kinds"].items() if v} == {"letter_missing": 1}
    assert "by_draw" not in out
    second = dict(gold["figures"][0], id="PMC1__f1_again", draw=2,
                  article=next(f"PMC{k}" for k in range(1, 1000) if not held_out(f"PMC{k}") and f"PMC{k}" != article))
    gold_path.write_text(json.dumps({"figures": gold["figures"] + [second]}), encoding="utf-8")
    twice = subprocess.run([sys.executable, "-m", "bench.real_figures", "--gold", str(gold_path), "--sources",
                            str(sources), "--fetch-from", str(tmp_path / "snapshots"), "--ocr", "none"],
                           cwd=ROOT, capture_output=True, text=True)
    assert twice.returncode == 0, twice.stderr[-2000:]
    by_draw = json.loads(twice.stdout)["by_draw"]
    assert sorted(by_draw) == ["1", "2"] and [by_draw[d]["figures"] for d in ("1", "2")] == [1, 1]
    held = subprocess.run([sys.executable, "-m", "bench.real_figures", "--gold", str(gold_path), "--sources",
                           str(sources), "--held-out", "--failures"], cwd=ROOT, capture_output=True, text=True)
    assert held.returncode != 0 and "totals only" in held.stderr
    (sources / "someone+pmc-figures" / "figures" / "PMC1__f1.png").write_bytes(b"not the image")
    broken = subprocess.run([sys.executable, "-m", "bench.real_figures", "--gold", str(gold_path), "--sources",
                             str(sources), "--ocr", "none"], cwd=ROOT, capture_output=True, text=True)
    assert broken.returncode == 2 and "PMC1__f1" in broken.stderr and "sha256" in broken.stderr


def test_reading_order_corrects_letters_only_when_it_is_clearly_the_order():
    from data.figures.label_order import mostly_in_order

    row = [(k * 20, 0, k * 20 + 10, 10) for k in range(5)]
    assert mostly_in_order(["A", "B", "P", "D", "E"], row)  # one misread among five in order
    assert not mostly_in_order(["A", "B", "D", "C", "E"], row)  # lettered down columns: keep what was read
    assert not mostly_in_order(["A", None, None, None, "E"], row)  # too few letters read


def test_captions_found_between_their_first_and_last_words():
    from bench.real_figures import caption_by_anchors

    extractor_json = json.dumps([{"name": "3", "caption": "Figure 3: Left: the AU-ROC.\nRight: false alarms."}])
    assert caption_by_anchors(extractor_json.encode(), "paper.json", ("Left: the", "false alarms."), "f") == \
        "Left: the AU-ROC. Right: false alarms."
    lines = "['Figure 8. The costs of conflict.', 'Note: the left and right', 'panes show the trajectories.']"
    assert caption_by_anchors(lines.encode(), "8_1.txt", ("The costs", "the trajectories."), "f") == \
        "The costs of conflict. Note: the left and right panes show the trajectories."
    markdown = b"![](fig.jpeg)\n\nFigure 2: Sample results. Left: input.  Right:\nprediction.\n\nNext paragraph."
    assert caption_by_anchors(markdown, "paper.md", ("Sample results.", "prediction."), "f") == \
        "Sample results. Left: input. Right: prediction."
    with pytest.raises(GoldError, match="fig-9"):
        caption_by_anchors(markdown, "paper.md", ("Not there", "prediction."), "fig-9")


MARKUP_CAPTIONS = [
    (b"**Figure 4: Screening.** **a.** *Dual barcodes.* FDR \\< 0.05, C~t~ value (*, p < 0.05; **, p < 0.01).",
     "paper.Rmd", ("Screening.", "0.01)."),
     "Screening. a. Dual barcodes. FDR < 0.05, Ct value (*, p < 0.05; **, p < 0.01)."),
    (b"Views of a _Danio rerio_ vessel with __a__ the pixels and __b__ the particles, in snake_case_files.",
     "thesis.md", ("Views", "files."),
     "Views of a Danio rerio vessel with a the pixels and b the particles, in snake_case_files."),
    (rb"\caption{Overview. \textbf{(A)} The \textit{Summary} sheet, 25\textsuperscript{th} \% of $\Delta t$.}",
     "paper.tex", ("Overview.", "t$."), "Overview. (A) The Summary sheet, 25th % of Δt."),
    (rb"\caption{{\bf Prevalence.} {\it A} left, {\em B} right.}",
     "thesis.tex", ("{\\bf Prevalence", "right."), "Prevalence. A left, B right."),
    # A title's font command cut by the first words, a paper's own macro, a reference, \log and dashes.
    (rb"\caption{\textbf{Recall maps.} A. Maps (see Fig. \ref{fig:s2}B and \extdata), \log_2 ratio. C.--D. P1--P9.}",
     "paper.tex", ("maps.}", "P9."), "maps. A. Maps (see Fig. B and ), log_2 ratio. C.\u2013D. P1\u2013P9."),
    (b"<P>Figure 4. <I>A</I>, <I>B</I>, Scatter<BR>plots <!-- $MVD$ -->of AUC<SUB>0</SUB> (&#181;g/ml).</P>",
     "html/4168i04.htm", ("Figure 4.", "ml).</P>"), "Figure 4. A, B, Scatter plots of AUC0 (\u00b5g/ml)."),
]


@pytest.mark.parametrize("data, path, anchors, plain", MARKUP_CAPTIONS)
def test_captions_in_markup_are_read_as_plain_text(data, path, anchors, plain):
    from bench.real_figures import caption_by_anchors

    assert caption_by_anchors(data, path, anchors, "f") == plain


def test_gold_caption_anchors_are_two_texts(tmp_path):
    record = json.loads(FIGURES_FILE.read_text("utf-8"))["figures"][0]
    record["caption_anchors"] = ["only the first words"]
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps({"figures": [record]}), encoding="utf-8")
    with pytest.raises(GoldError, match="caption_anchors"):
        read_figures(gold)


def test_fetch_reads_captions_from_jats_by_figure_id_and_between_anchors(tmp_path):
    import hashlib

    from bench.real_figures import materialise

    repo = tmp_path / "snapshots" / "someone+papers"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    _two_panel_figure().save(repo / "f1.png")
    (repo / "article.xml").write_text(
        "<article><body><fig id='F1'><label>Figure 1</label><caption><title>Two scans.</title>"
        "<p>(A) Axial. (B) Coronal.</p></caption><graphic xlink:href='f1' "
        "xmlns:xlink='http://www.w3.org/1999/xlink'/></fig></body></article>", encoding="utf-8")
    (repo / "paper.json").write_text(json.dumps([{"name": "1", "caption": "Figure 1: Left: input. Right:\nmap."}]),
                                     encoding="utf-8")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "paper")
    commit = _git(repo, "rev-parse", "HEAD")
    digest = hashlib.sha256((repo / "f1.png").read_bytes()).hexdigest()
    base = {"part": "tuning", "draw": 1, "image": f"github:someone/papers@{commit}:f1.png", "sha256": digest,
            "size": [400, 200],
            "panels": [{"box": [10, 20, 190, 190], "label": "A"}, {"box": [210, 20, 390, 190], "label": "B"}]}
    article = next(f"doi:10.1/{k}" for k in range(1000) if not held_out(f"doi:10.1/{k}"))
    gold = {"figures": [
        {**base, "id": "jats", "article": article, "caption": f"github:someone/papers@{commit}:article.xml#F1"},
        {**base, "id": "anchors", "article": article, "caption": f"github:someone/papers@{commit}:paper.json#1",
         "caption_anchors": ["Left: input.", "map."]},
        {**base, "id": "stored", "article": article, "caption": f"github:someone/papers@{commit}:paper.json#1",
         "caption_text": "Left: input. Right: map."}]}
    gold_path = tmp_path / "gold.json"
    gold_path.write_text(json.dumps(gold), encoding="utf-8")
    materialise(tmp_path / "snapshots", tmp_path / "sources", read_figures(gold_path))
    captions = json.loads((tmp_path / "sources" / "captions.json").read_text("utf-8"))
    assert captions == {"jats": "Two scans. (A) Axial. (B) Coronal.", "anchors": "Left: input. Right: map.",
                        "stored": "Left: input. Right: map."}


def test_caption_between_anchors_is_the_shortest_such_text():
    from bench.real_figures import caption_by_anchors

    md = (b"![**Fig 3 - Unsharp mask**](figures/f3.png)\n**Fig 3 - Unsharp mask**\n"
          b"(A) Objects found. (B) Their distances.\n\nNext paragraph.")
    caption = caption_by_anchors(md, "paper.md", ("Fig 3 - Unsharp", "Their distances."), "f3")
    assert caption == "Fig 3 - Unsharp mask (A) Objects found. (B) Their distances."
