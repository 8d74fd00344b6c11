"""split_caption on the labelled captions of tests/data and on the syntaxes one by one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.figures import SubCaption, split_caption
from data.figures.subcaptions import expand_labels

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


def _pairs(caption: str) -> list[tuple[list[str], str]]:
    return [(s.labels, s.text) for s in split_caption(caption)]


def test_article_a_in_the_lead_is_not_panel_a():
    # Several bare "A" candidates: only the one right before "B" heads a panel.
    subs = split_caption("A 47-year-old woman with fever. A CT scan was obtained on admission. "
                         "A Axial image shows a liver abscess (arrow). B Coronal image shows the drain.")
    assert [(s.labels, s.text) for s in subs] == [
        (["A"], "Axial image shows a liver abscess (arrow)."), (["B"], "Coronal image shows the drain.")]
    assert subs[0].context == "A 47-year-old woman with fever. A CT scan was obtained on admission."


def test_lone_letter_defining_an_abbreviation_is_not_a_panel():
    caption = "Viability of neurons exposed to glutamate with or without riluzole (R) for 12 hours."
    assert _pairs(caption) == [([], caption)]
    assert _pairs("(A) Neurons given riluzole (R) for 12 hours. (B) Untreated neurons.") == [
        (["A"], "Neurons given riluzole (R) for 12 hours."), (["B"], "Untreated neurons.")]


def test_labels_heading_numbers_inside_one_sentence():
    subs = split_caption("Liver sections of rats fed a high-fat diet for (A) 4 weeks and (B) 12 weeks. "
                         "Sections were stained with Sirius red.")
    assert [(s.labels, s.text) for s in subs] == [(["A"], "4 weeks"), (["B"], "12 weeks.")]
    assert subs[0].context == ("Liver sections of rats fed a high-fat diet for "
                               "Sections were stained with Sirius red.")
    assert _pairs("Serum glucose of mice on the diet (A) for 7 days and (B) 30 days.") == [
        (["A"], "for 7 days"), (["B"], "30 days.")]


def test_symbol_key_is_not_a_panel():
    assert _pairs("(A, B) Electron micrographs of a hepatocyte. m, mitochondrion; n, nucleus. "
                  "(C) Higher magnification of the boxed area.") == [
        (["A", "B"], "Electron micrographs of a hepatocyte. m, mitochondrion; n, nucleus."),
        (["C"], "Higher magnification of the boxed area.")]
    # The same "letter, word" form is a marker when the caption's markers all use it.
    assert _pairs("a, axial T2 image. b, coronal T1 image.") == [
        (["A"], "axial T2 image."), (["B"], "coronal T1 image.")]


def test_label_groups_out_of_alphabetical_order():
    subs = split_caption("Axial (A, C) and coronal CT (B, D) of the chest before and after treatment.")
    assert [(s.labels, s.text) for s in subs] == [(["A", "C"], "Axial"), (["B", "D"], "coronal CT")]
    assert subs[0].context == "of the chest before and after treatment."
    subs = split_caption("Photographs of (a,b)\u2014the left eye and (d,e) the right eye. "
                         "Fluorescein angiograms of (c)\u2014the left eye and (f)\u2014the right eye.")
    assert [(s.labels, s.text) for s in subs] == [
        (["A", "B"], "the left eye"), (["D", "E"], "the right eye."), (["C"], "the left eye"),
        (["F"], "the right eye.")]


def test_figure_wide_closing_sentences_are_shared():
    subs = split_caption("Feeding study. (A) Weight gain of the animals. (B) Food intake per cage. "
                         "n = 8 rats per group. Data are mean \u00b1 SEM; *P < 0.05 versus control. "
                         "Scale bar, 50 \u00b5m.")
    assert [(s.labels, s.text) for s in subs] == [(["A"], "Weight gain of the animals."),
                                                  (["B"], "Food intake per cage.")]
    assert subs[1].context == ("Feeding study. n = 8 rats per group. Data are mean \u00b1 SEM; "
                               "*P < 0.05 versus control. Scale bar, 50 \u00b5m.")
    # A lone scale bar after the last panel belongs to that panel; a single panel keeps everything.
    assert _pairs("(A) Axial image. (B) Sagittal image of the same lesion. Scale bar, 1 cm.")[1] == (
        ["B"], "Sagittal image of the same lesion. Scale bar, 1 cm.")
    assert _pairs("(A-C) Serial sections. Results were analyzed by t test.") == [
        (["A", "B", "C"], "Serial sections. Results were analyzed by t test.")]


def test_linking_words_at_the_edges_are_dropped():
    assert _pairs("Uptake was higher in the cortex (A), but lower in the striatum (B).") == [
        (["A"], "Uptake was higher in the cortex"), (["B"], "lower in the striatum")]
    assert _pairs("(a) Spectrum of the film compared with (b) the reference spectrum.") == [
        (["A"], "Spectrum of the film"), (["B"], "the reference spectrum.")]


def test_panel_noun_and_colon_markers_anywhere_in_a_clause():
    caption = ("Arterial occlusion time. Panels A and B are occlusion curves. Panel A: B6 mice, Panel B: A/J mice. "
               "Panel C: Occlusion time, mean ± SEM.")
    assert [(s.labels, s.text) for s in split_caption(caption)] == [
        (["A"], "B6 mice"), (["B"], "A/J mice."), (["C"], "Occlusion time, mean ± SEM.")]
    joined = "PAI-1. Panel A: Plasma antigen and Panel B: Plasma activity were tested in mice."
    assert [s.labels for s in split_caption(joined)] == [["A"], ["B"]]


def test_single_letter_abbreviations_in_a_key_are_not_panels():
    key = ("Summary of the screen. (A) Full-length bait. (B) Fusion proteins. BD, binding domain; AD, activation "
           "domain; N, N-terminal portion (amino acids 1 to 400); C, C-terminal portion (amino acids 391 to 542).")
    assert [s.labels for s in split_caption(key)] == [["A"], ["B"]]
    views = "Vertebrae. A, anterior; B, anterodorsal; C, posterior; D, dorsal; and E, ventral views."
    assert [s.labels for s in split_caption(views)] == [["A"], ["B"], ["C"], ["D"], ["E"]]
    arrows = ("Cells migrate. (A) Crest cells at 19 hpf. (B) Cavity cells. (C) Neurons. LOE: left olfactory "
              "epithelium. Orientation arrows: A: anterior; P: posterior; D: dorsal; V: ventral. Scale bars: 15 µm.")
    assert [s.labels for s in split_caption(arrows)] == [["A"], ["B"], ["C"]]


def test_primed_letters_name_their_panel():
    caption = ("Genes in Hcrt neurons. (A–I'') Double staining in larvae. (J–M'') Double ISH in adult brain. "
               "(N) Counts. (B and B') or (C and C') show the same cells.")
    assert [s.labels for s in split_caption(caption)][:3] == [list("ABCDEFGHI"), list("JKLM"), ["N"]]
    ranged = "Lineage. (A) Photoconversion. (B)–(C') Representative z-planes. (D) Contralateral cells."
    assert [s.labels for s in split_caption(ranged)] == [["A"], ["B", "C"], ["D"]]


def test_a_range_of_letters_with_full_stops():
    caption = "Maps. A. Dataset 1. B. Dataset 2. C.–D. Accuracy by location."
    assert [(s.labels, s.text) for s in split_caption(caption)] == [
        (["A"], "Dataset 1."), (["B"], "Dataset 2."), (["C", "D"], "Accuracy by location.")]


def test_closing_letters_before_a_full_stop():
    caption = ("Phenotypic rescue by transposon mobilization A). Breeding scheme to remobilize a transposon. "
               "B) Germline remobilization rates.")
    assert [(s.labels, s.text) for s in split_caption(caption)] == [
        (["A"], "Breeding scheme to remobilize a transposon."), (["B"], "Germline remobilization rates.")]
    cited = ("Ca2+ stabilises the domains. A) Spectra. B) Binding. C) Denaturation. D) Proteolysis with Ca2+. "
             "A sample gel is shown in F). E) Proteolysis with and without Ca2+ at room temperature (300 K).")
    assert [s.labels for s in split_caption(cited)] == [["A"], ["B"], ["C"], ["D"], ["E"]]


def test_a_genotype_after_a_marker_opens_its_text():
    caption = ("Evi1 staining. (a) Jbo/+ myeloid cells ×600. (b) Jbo/+ mucoperiosteum ×600. "
               "(c) +/+ similar pattern of staining ×600 and (d) +/+ inflamed mucoperiosteum ×600.")
    assert [s.labels for s in split_caption(caption)] == [["A"], ["B"], ["C"], ["D"]]


def test_a_loose_a_before_a_lower_case_word_counts_with_a_b_of_its_form():
    caption = ("The performances of the four agents A. in a task where the rewards are 0.75 and 0.25. "
               "B. in a three-armed bandit task.")
    assert [(s.labels, s.text) for s in split_caption(caption)] == [
        (["A"], "in a task where the rewards are 0.75 and 0.25."), (["B"], "in a three-armed bandit task.")]
    assert [s.labels for s in split_caption("Rats fed vitamin A. in all groups weight rose.")] == [[]]
