"""JATS parsing against the real articles in fixtures/pmc_xml (expected values read from the files)."""
from __future__ import annotations

import pytest

from data.figures import caption_letters
from data.scrape.jats import parse_jats

# (fig id, label, graphic href, caption start, caption end) for every <fig> of every fixture article.
FIGURES = {
    "PMC2386533.xml": [
        ("Fig1", "Fig. 1.", "261_2007_9276_Fig1_HTML", "VCE image of a 14-year-old male patient with known CD.",
         "severe inflammation of the small bowel with a stenosis."),
        ("Fig2", "Fig. 2.", "261_2007_9276_Fig2_HTML", "A 14-year female patient with known CD and intermittent",
         "(arrowheads) with some infiltration of the perivisceral fat."),
        ("Fig3", "Fig. 3.", "261_2007_9276_Fig3_HTML",
         "A 25-year-old female patient with known CD of the terminal ileum. A US image shows a large abs",
         "B US image shows a fistula (arrowheads) that originated from the abscess."),
        ("Fig4", "Fig. 4.", "261_2007_9276_Fig4_HTML",
         "A 60-year old female patient who underwent CT enterography for suspected bowel obstruction. Just 1 ",
         "(arrowheads) with only a pinpoint bowel lumen remaining."),
        ("Fig5", "Fig. 5.", "261_2007_9276_Fig5_HTML",
         "A 25-year-old female patient with known CD of the terminal ileum (same patient as pictured in Fig. ",
         "C Coronal image shows the fistula (arrowhead)."),
        ("Fig6", "Fig. 6.", "261_2007_9276_Fig6_HTML", "A A 38-year-old female with complaints of vomiting",
         "distention of jejunal bowel loops after oral administration of contrast medium."),
        ("Fig7", "Fig. 7.", "261_2007_9276_Fig7_HTML", "A 18-year-old female patient with known CD. MRI-enterography",
         "thickened bowel wall of the neoterminal ileum (arrowheads)."),
        ("Fig8", "Fig. 8.", "261_2007_9276_Fig8_HTML", "A 12-year-old male patient with known CD who underwent MR",
         " m of small bowel (terminal jejunum, proximal ileum) was shown to be affected."),
        ("Fig9", "Fig. 9.", "261_2007_9276_Fig9_HTML",
         "A 25-year-old female patient with known CD of the terminal ileum (same patient as pictured in Figs. ",
         "also depicted on US and CT. B Coronal T1-weighted image showing a fistula"),
    ],
    "PMC2900587.xml": [
        ("Fig1", "Fig. 1", "261_2009_9539_Fig1_HTML",
         "Sixty-nine-year-old male with an isodense pancreatic head mass. A Coronal CT image demonstrates",
         "revealed a 3 × 2 cm mass in the head of the pancreas that was biopsied and found to be an adenocarcinoma."),
        ("Fig2", "Fig. 2", "261_2009_9539_Fig2_HTML", "Eighty-two-year-old female with resectable pancreatic",
         "was well at the time of this article was written, 11 months after surgery."),
        ("Fig3", "Fig. 3", "261_2009_9539_Fig3_HTML", "Fifty-four-year-old female with locally advanced",
         "regardless of the degree of contact between the vessel and tumor."),
        ("Fig4", "Fig. 4", "261_2009_9539_Fig4_HTML",
         "Forty-three-year-old male with locally advanced pancreatic adenocarcinoma. (A\u2013E",
         "unresectable disease due to invasion of a replaced right hepatic artery."),
        ("Fig5", "Fig. 5", "261_2009_9539_Fig5_HTML",
         "Seventy-year-old male with metastatic pancreatic adenocarcinoma. A Axial CT image demonstrates",
         "with imaging features similar to the primary tumor in the pancreas."),
        ("Fig6", "Fig. 6", "261_2009_9539_Fig6_HTML",
         "Fifty-three-year-old male with unresectable pancreatic adenocarcinoma. A Axial CT image",
         "omentum (arrow) that is unequivocal for peritoneal carcinomatosis."),
    ],
    "PMC5828200.nxml": [
        ("F1", "Figure 1", "oncotarget-09-10681-g001",
         "CSP had better protective effect against oligomeric A\u03b2 (oA\u03b2) than un-nanosized curcuminoid in vitro "
         "SH-SY5Y cells were pre-treated", "The survival rate of SH-SY5Y cells treated with vesicle control was set as 1."),
        ("F2", "Figure 2", "oncotarget-09-10681-g002",
         "Body weight of SD rats in the oral toxicity study of CSP Male (black) and female (red) SD rats",
         "N = 8 mice/group in 90-day test. Results were analyzed by one-way ANOVA."),
        ("F3", "Figure 3", "oncotarget-09-10681-g003",
         "Body weight and water intake of WT and APP mice during CSP treatment APP and wildtype littermate",
         "N = 12-17 mice/group. Results were analyzed by one-way ANOVA."),
        ("F4", "Figure 4", "oncotarget-09-10681-g004",
         "CSP ameliorated the spatial learning and memory of APP mice in the Morris water maze (A",
         "by one-way ANOVA.*, p < 0.05; ***, p < 0.001."),
        ("F5", "Figure 5", "oncotarget-09-10681-g005",
         "Effect of CSP on anxiety-related behavior and locomotor activities of APP mice (A-B)",
         "p < 0.05; **, p < 0.01; ***, p < 0.001."),
        ("F6", "Figure 6", "oncotarget-09-10681-g006",
         "CSP reversed the calbindin-D28K level in the hippocampus of APP mice (A)",
         "***, p < 0.001. Scale bar = 200 \u03bcm."),
        ("F7", "Figure 7", "oncotarget-09-10681-g007",
         "CSP decreased the amyloid deposition in the hippocampus of APP mice (A) Represen",
         "**, p < 0.01; ***, p < 0.001 versus APP mice."),
        ("F8", "Figure 8", "oncotarget-09-10681-g008",
         "CSP inhibited astrocyte activation in the hippocampus of APP mice (A) Representa",
         "p < 0.01; ***, p < 0.001. Scale bar = 200 \u03bcm."),
        ("F9", "Figure 9", "oncotarget-09-10681-g009", "CSP increased phagocytosis of BV2 microglia (A-B) Representative",
         "t test. *, p < 0.05; **, p < 0.01."),
        ("F10", "Figure 10", "oncotarget-09-10681-g010",
         "CSP reduced the M1 but did not change the M2 type of microglia under oA\u03b2 stress BV",
         "by one-way ANOVA. **, p < 0.01; ***, p < 0.001."),
        ("F11", "Figure 11", "oncotarget-09-10681-g011", "CSP did not inhibit A\u03b2 aggregation in vitro Representative",
         "size distribution of aggregated A\u03b2 was immediately examined by western blot."),
    ],
    "ehp-116-1694.nxml": [
        ("f1-ehp-116-1694", "Figure 1", "ehp-116-1694f1",
         "Exposure to PBDE-47 depressed circulating concentrations of total T4 in males and females (A), but had no "
         "effect on total T3 in males (B). *p < 0.05 compared with control.", "compared with control."),
        ("f2-ehp-116-1694", "Figure 2", "ehp-116-1694f2",
         "Dietary exposure to PBDE-47 altered relative transcripts levels for TSH\u03b2 (A) and GPH\u03b1 (B) in the "
         "pituitary gland. Transcript levels are expressed relative to template RNA levels. *p < 0.05 compared "
         "with control.", "with control."),
        ("f3-ehp-116-1694", "Figure 3", "ehp-116-1694f3",
         "Dietary PBDE-47 exposure elevated mRNA levels for TR\u03b1 in females (A), and reduced",
         "Transcript levels are normalized to 18S. *p < 0.05 compared to control."),
    ],
}

# (PMCID, PMID, DOI, journal, year, licence, title start)
ARTICLES = {
    "PMC2386533.xml": ("PMC2386533", "17619923", "10.1007/s00261-007-9276-3", "Abdominal Imaging", "2007",
                       "unknown", "Detection of inflammatory bowel disease"),
    "PMC2900587.xml": ("PMC2900587", "19468791", "10.1007/s00261-009-9539-2", "Abdominal Imaging", "2009",
                       "unknown", "Surgical resectability of pancreatic adenocarcinoma: CTA"),
    "PMC5828200.nxml": ("PMC5828200", "29535835", "10.18632/oncotarget.24369", "Oncotarget", "2018", "CC BY",
                        "Curcuminoid submicron particle ameliorates cognitive deficits"),
    "ehp-116-1694.nxml": ("PMC2599765", "19079722", "10.1289/ehp.11570", "Environmental Health Perspectives", "2008",
                          "public domain", "Dietary Exposure to 2,2\u2032,4,4\u2032-Tetrabromodiphenyl Ether"),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_of_the_fixture_articles(fixtures_dir, name):
    [article] = parse_jats((fixtures_dir / "pmc_xml" / name).read_bytes(), name)
    got = [(f.fig_id, f.label, f.graphic) for f in article.figures]
    assert got == [row[:3] for row in FIGURES[name]]
    for fig, (_, _, _, start, end) in zip(article.figures, FIGURES[name]):
        assert fig.caption.startswith(start), fig.fig_id
        assert fig.caption.endswith(end), fig.fig_id
        # Flattened: no markup, no entities, no doubled or exotic spaces.
        assert "<" not in fig.caption.replace(" < ", "") and "&#" not in fig.caption
        assert "  " not in fig.caption and "\u00a0" not in fig.caption and "\u200a" not in fig.caption


@pytest.mark.parametrize("name", sorted(ARTICLES))
def test_article_metadata(fixtures_dir, name):
    [article] = parse_jats((fixtures_dir / "pmc_xml" / name).read_bytes(), name)
    pmcid, pmid, doi, journal, year, licence, title = ARTICLES[name]
    assert (article.pmcid, article.pmid, article.doi, article.journal, article.year, article.license) == (
        pmcid, pmid, doi, journal, year, licence)
    assert article.title.startswith(title)


def test_efetch_envelope_with_ali_license(fixtures_dir):
    [article] = parse_jats((fixtures_dir / "eutils" / "efetch_pmc.xml").read_bytes(), "efetch_pmc.xml")
    assert (article.pmcid, article.pmid, article.year, article.journal) == ("PMC8435807", "34527728", "2021",
                                                                            "ERJ Open Research")
    assert (article.license, article.license_url) == ("CC BY-NC", "https://creativecommons.org/licenses/by-nc/4.0/")
    assert article.figures == []


GROUPED = b"""<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>
<article-id pub-id-type="pmcid">PMC0042</article-id></article-meta></front><body>
<fig-group id="G1"><label>Figure 3</label><caption><p>Group caption with <italic>inline</italic> text.</p></caption>
 <fig id="G1a"><label>Figure 3a</label><caption><title>Panel a.</title><p>First <sup>2</sup> panel.</p></caption>
  <graphic xlink:href="g3a"/></fig>
 <fig id="G1b"><graphic xlink:href="g3b.tif"/>
  <permissions><license xlink:href="https://creativecommons.org/publicdomain/zero/1.0/"/></permissions></fig>
</fig-group>
<fig><label>Scheme 1</label><caption><p>No image here.</p></caption></fig>
</body><sub-article><front-stub/><body><fig id="R1"><graphic xlink:href="review"/></fig></body></sub-article>
</article>"""


def test_fig_group_panels_inherit_group_label_and_caption():
    [article] = parse_jats(GROUPED, "grouped.xml")
    assert article.pmcid == "PMC42"
    a, b, scheme = article.figures  # the sub-article's figure is not this article's
    assert (a.fig_id, a.label, a.caption, a.graphic) == ("G1a", "Figure 3a", "Panel a. First 2 panel.", "g3a")
    assert (b.fig_id, b.label, b.caption, b.graphic) == ("G1b", "Figure 3", "Group caption with inline text.", "g3b.tif")
    assert b.license == "CC0" and a.license is None
    assert (scheme.fig_id, scheme.graphic, scheme.caption) == ("fig3", "", "No image here.")


def test_malformed_xml_names_its_origin():
    with pytest.raises(ValueError, match=r"batch-7\.xml: malformed XML"):
        parse_jats(b"<pmc-articleset><article><front>", "batch-7.xml")


def test_article_without_pmcid_is_an_error():
    with pytest.raises(ValueError, match="no-id.xml: article without a usable PMCID"):
        parse_jats(b"<article><front><article-meta/></front></article>", "no-id.xml")


def test_a_legend_kept_in_the_figure_abstract_follows_the_caption():
    # The layout of a zoology journal's JATS: a one-line <caption>, the panel legend in an <abstract>.
    xml = b"""<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>
<article-id pub-id-type="pmc">PMC7</article-id></article-meta></front><body>
<fig id="F6"><label>Figure 6</label><caption><p><italic>Aus bus</italic> <bold>sp. nov.</bold>, male</p></caption>
<abstract abstract-type="note"><p>A: Habitus, dorsal view; B: Palp, ventral view.</p></abstract>
<graphic xlink:href="f6"/></fig></body></article>"""
    [article] = parse_jats(xml, "legend.xml")
    [fig] = article.figures
    assert fig.caption == "Aus bus sp. nov., male A: Habitus, dorsal view; B: Palp, ventral view."
    assert caption_letters(fig.caption) == ["A", "B"]
