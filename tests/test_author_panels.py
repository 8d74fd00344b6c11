"""Figures their authors split into one image file per panel: every file is kept by both PMC sources, with
its panel letter where the file names or labels tell it, and split_figures pairs each file with its
sub-caption without cutting it again.

ENTROPY copies the figure structure of a real article, PMC11592912 (N. Williams, Entropy 26:970, 2024,
CC BY 4.0): eight figures, two in <body> and six in <floats-group>, four of them with several <graphic>
elements (g004a-d, g005a-c, g006a-c, g007a-d: 18 image files in all) and captions "(a) ... (f) ...".
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.figures.ocr import OcrError
from data.figures.split import SplitOptions, split_figure
from data.records import read_records, FigureRecord
from data.scrape.config import ScrapeConfig
from data.scrape.eutils import article_candidates
from data.scrape.jats import parse_jats
from data.scrape.job import run_scrape
from data.scrape.panel_images import label_letter, letters_from_names
from data.scrape.ratelimit import RateLimiter
from tests.cloud_server import FakeCloud
from tests.pubmed_server import FakeNLM, make_image

FAST = {"timeout": 5.0, "retries": 2, "backoff": 0.01, "backoff_max": 0.05}
STEM = "entropy-26-00970"
PANELS = {1: "", 2: "", 3: "", 4: "abcd", 5: "abc", 6: "abc", 7: "abcd", 8: ""}  # graphic suffixes per figure
SUBS = ("YOAO in period", "YOAO in cohort", "cohort in period", "period in YOAO", "cohort in YOAO",
        "period in cohort")


def fig(n: int) -> str:
    if PANELS[n]:
        caption = " ".join(f"(<bold>{c}</bold>) Inflow among CMS HIV+ cases, {s}." for c, s in zip("abcdef", SUBS))
    else:
        caption = f"Tile plot number {n} of CMS HIV+ cases by years old at observation (YOAO)."
    graphics = "".join(f'<graphic position="float" orientation="portrait" xlink:href="{STEM}-g00{n}{c}.jpg"/>'
                       for c in PANELS[n] or [""])
    return (f'<fig position="float" id="{STEM}-f00{n}" orientation="portrait"><label>Figure {n}</label>'
            f"<caption><p>{caption}</p></caption>{graphics}</fig>")


ENTROPY = (
    '<article xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:ali="http://www.niso.org/schemas/ali/1.0/">'
    '<front><journal-meta><journal-title-group><journal-title>Entropy</journal-title></journal-title-group>'
    '</journal-meta><article-meta><article-id pub-id-type="pmc">11592912</article-id>'
    '<article-id pub-id-type="doi">10.3390/e26110970</article-id><permissions><license><ali:license_ref>'
    "https://creativecommons.org/licenses/by/4.0/</ali:license_ref></license></permissions></article-meta></front>"
    f"<body><sec><title>Results</title><p>Text.</p>{fig(2)}{fig(3)}</sec></body>"
    f"<floats-group>{''.join(fig(n) for n in (1, 4, 5, 6, 7, 8))}</floats-group></article>").encode()


def test_every_graphic_of_a_fig_is_an_image_with_its_letter():
    [article] = parse_jats(ENTROPY, "PMC11592912.xml")
    images = {f.fig_id[-4:]: f.images for f in article.figures}
    assert sum(len(v) for v in images.values()) == 18
    f4 = images["f004"]
    assert [(i.href, i.letter, i.index, i.count) for i in f4] == [
        (f"{STEM}-g004{c}.jpg", c.upper(), k, 4) for k, c in enumerate("abcd")]
    assert [(i.letter, i.count) for i in images["f001"]] == [(None, 1)]
    candidates = article_candidates(article, "https://pmc.example")
    assert len(candidates) == 18 and len({c.key for c in candidates}) == 18
    c = [c for c in candidates if c.figure_id.endswith("f005")]
    assert [x.key for x in c] == [f"PMC11592912/{STEM}-f005" + s for s in ("", "/2", "/3")]
    assert c[2].image_url == f"https://pmc.example/articles/PMC11592912/bin/{STEM}-g005c.jpg"
    record = c[2].as_record()
    assert (record["panel_letter"], record["panel_index"], record["panel_count"]) == ("C", 2, 3)
    assert "panel_count" not in candidates[0].as_record()  # a one-file figure keeps the record it always had


def test_letters_from_file_names_and_panel_labels():
    assert letters_from_names(["fig1_A.tif", "fig1_B.tif"]) == ["A", "B"]
    assert letters_from_names(["g1a.jpg", "g1c.jpg"]) == [None, None]  # not a, b, ...
    assert letters_from_names(["g1.jpg", "g2.jpg"]) == [None, None]
    assert letters_from_names(["g1a.jpg", "g1bb.jpg"]) == [None, None]
    assert [label_letter(x) for x in ("(a)", "B", "Figure 3c", "Figure 3", "Scheme 1")] == ["A", "B", "C", None, None]


def test_fig_group_panels_and_alternative_renditions():
    xml = (b'<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>'
           b'<article-id pub-id-type="pmc">7</article-id></article-meta></front><body>'
           b'<fig-group id="G"><label>Figure 1</label><caption><p>(A) Axial CT. (B) Coronal CT.</p></caption>'
           b'<fig id="G1"><label>(a)</label><graphic xlink:href="x1"/></fig>'
           b'<fig id="G2"><label>(b)</label><graphic xlink:href="x2"/></fig></fig-group>'
           b'<fig id="F2"><caption><p>One image in two renditions.</p></caption><alternatives>'
           b'<graphic xlink:href="y.tif"/><graphic xlink:href="y.jpg"/></alternatives></fig></body></article>')
    [article] = parse_jats(xml, "group.xml")
    g1, g2, f2 = article.figures
    assert (g1.caption, [(i.href, i.letter, i.index, i.count) for i in g1.images]) == (
        "(A) Axial CT. (B) Coronal CT.", [("x1", "A", 0, 2)])
    assert [(i.href, i.letter, i.index, i.count) for i in g2.images] == [("x2", "B", 1, 2)]
    assert [(i.href, i.count) for i in f2.images] == [("y.tif", 1)]


def scrape_config(fake, out: Path, **kw) -> ScrapeConfig:
    settings = {"query": "HIV", "out": out, "num": 100, "source": "pmc", "eutils_url": fake.url + "/entrez/eutils",
                "pmc_url": fake.url, "email": "maintainer@example.org", "batch_size": 3, **FAST, "progress": False,
                "min_size": 32,
                **kw}
    return ScrapeConfig(**settings)


def hrefs() -> list[str]:
    return [f"{STEM}-g00{n}{c}.jpg" for n in PANELS for c in PANELS[n] or [""]]


def check_kept(out: Path) -> list[dict]:
    records = json.loads((out / "captions.json").read_text("utf-8"))
    assert len(records) == 18 and len({r["image"] for r in records}) == 18
    assert all((out / r["image"]).is_file() for r in records)
    f7 = [r for r in records if r["figure_id"].endswith("f007")]
    assert [(r["panel_letter"], r["panel_index"], r["panel_count"]) for r in f7] == [
        (c.upper(), k, 4) for k, c in enumerate("abcd")]
    assert [Path(r["image"]).stem for r in f7] == [f"PMC11592912_{STEM}-f007" + s for s in ("", "_2", "_3", "_4")]
    return records


def test_eutils_source_keeps_every_file_and_resumes(tmp_path):
    with FakeNLM() as fake:
        fake.add_article(ENTROPY, {h[:-4]: make_image(i, (180, 150), "JPEG") for i, h in enumerate(hrefs())})
        summary = run_scrape(scrape_config(fake, tmp_path / "out"), limiter=RateLimiter(1000))
        again = run_scrape(scrape_config(fake, tmp_path / "out"), limiter=RateLimiter(1000))
    assert (summary.kept_new, again.kept_new, again.kept_total) == (18, 0, 18)
    check_kept(tmp_path / "out")


def test_cloud_source_keeps_every_file(tmp_path):
    with FakeCloud() as fake:
        pmcid = fake.add_cloud_article(ENTROPY, seed=10, unlisted=tuple(hrefs()))
        meta = json.loads(fake.files[f"/metadata/{pmcid}.1.json"])
        for i, href in enumerate(hrefs()):  # the bucket names media files as the graphic hrefs name them
            fake.files[f"/{pmcid}.1/{href}"] = make_image(50 + i, (180, 150), "JPEG")
            meta["media_urls"].append(f"s3://pmc-oa-opendata/{pmcid}.1/{href}")
        fake.files[f"/metadata/{pmcid}.1.json"] = json.dumps(meta).encode()
        ids = tmp_path / "ids.txt"
        ids.write_text(pmcid + "\n")
        run_scrape(scrape_config(fake, tmp_path / "out", source="pmc-cloud", cloud_url=fake.url, query="",
                                 pmcid_file=str(ids)), limiter=RateLimiter(1000))
    assert {r["source"] for r in check_kept(tmp_path / "out")} == {"pmc-cloud"}


class NoOcr:
    """An OCR back-end that must not be used: author-split files are not searched for panels."""

    def __call__(self, *args, **kwargs):
        raise OcrError("the OCR was called")

    read = detect = __call__


def panel_records(tmp_path: Path, caption: str, letters: list[str | None]) -> list[FigureRecord]:
    (tmp_path / "images").mkdir(exist_ok=True)
    out = []
    for k, letter in enumerate(letters):
        (tmp_path / "images" / f"p{k}.jpg").write_bytes(make_image(k, (160, 120), "JPEG"))
        out.append({"image": f"images/p{k}.jpg", "caption": caption, "pmcid": "PMC11592912", "figure_id": "F4",
                    "panel_letter": letter, "panel_index": k, "panel_count": len(letters)})
    return out


def split_all(tmp_path: Path, records: list[FigureRecord]):
    return [split_figure(r, tmp_path, tmp_path / "split", NoOcr(), SplitOptions()) for r in records]


def test_split_pairs_each_file_with_its_sub_caption(tmp_path):
    [article] = parse_jats(ENTROPY, "PMC11592912.xml")
    caption = next(f.caption for f in article.figures if f.fig_id.endswith("f004"))
    results = split_all(tmp_path, panel_records(tmp_path, caption, ["A", "B", "C", "D"]))
    assert [r.outcome for r in results] == ["matched"] * 4
    pairs = [(r.records[0]["panel_label"], r.records[0]["caption"], r.records[0]["image"]) for r in results]
    assert pairs == [(c, f"Inflow among CMS HIV+ cases, {s}.", f"../images/p{k}.jpg")
                     for k, (c, s) in enumerate(zip("ABCD", SUBS))]
    assert results[0].records[0]["box"] == [0, 0, 160, 120] and results[0].counts["author_panels"] == 1
    assert "panel_count" not in results[0].records[0]  # the file facts stay with the figure record


@pytest.mark.parametrize("letters, caption, want", [
    ([None, None], "Brain MRI. (A) Axial FLAIR. (B) Coronal T1.", [("A", "Axial FLAIR."), ("B", "Coronal T1.")]),
    ([None, None, None], "Brain MRI. (A) Axial FLAIR. (B) Coronal T1.", [None, None, None]),
    (["A", "B"], "Brain MRI with no panel letters.", [None, None]),
])
def test_letters_by_order_only_when_the_counts_agree(tmp_path, letters, caption, want):
    results = split_all(tmp_path, panel_records(tmp_path, caption, letters))
    got = [(r.records[0]["panel_label"], r.records[0]["caption"]) if r.outcome == "matched" else None for r in results]
    assert got == [(w[0], f"Brain MRI. {w[1]}") if w else None for w in want]
    assert all(r.records[0]["caption"] == caption for r in results if r.outcome == "fallback")


def test_split_figures_run_on_a_scraped_folder(tmp_path):
    from split_figures import main

    with FakeNLM() as fake:
        fake.add_article(ENTROPY, {h[:-4]: make_image(i, (180, 150), "JPEG") for i, h in enumerate(hrefs())})
        run_scrape(scrape_config(fake, tmp_path / "out"), limiter=RateLimiter(1000))
    assert main(["--in", str(tmp_path / "out" / "captions.json"), "--out", str(tmp_path / "split"),
                 "--ocr", "none", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "split" / "summary.json").read_text())
    subs = read_records(tmp_path / "split" / "subfigures.json", dict)
    assert summary["author_panels"] == 14  # figures 4-7: 4 + 3 + 3 + 4 files, each with its letter's text
    f6 = [s for s in subs if s["figure_id"].endswith("f006")]
    assert [(s["panel_label"], s["caption"].split(", ")[-1]) for s in f6] == [
        ("A", "YOAO in period."), ("B", "YOAO in cohort."), ("C", "cohort in period.")]
