"""split_caption on caption forms met in real captions (data/figures/caption_markers.py, subcaptions.py):
one short caption per rule, written for the test in the shape the real ones have."""
from __future__ import annotations

import pytest

from data.figures import split_caption


def pairs(caption: str) -> list[tuple[list[str], str]]:
    return [(s.labels, s.text) for s in split_caption(caption)]


def test_position_words_inside_a_lettered_caption_stay_in_its_text():
    assert pairs("(A) RT-PCR before (left) and after (right) fractionation. (B) Intron structure.") == [
        (["A"], "RT-PCR before (left) and after (right) fractionation."), (["B"], "Intron structure.")]


def test_letter_glued_to_a_word_is_not_a_panel():
    assert [s.labels for s in split_caption(
        "(A) Uptake of acetyl-CKENFALK(T)PLKEGNT-amide. (B) The fraction ϵm(K) per mode. (C) Control.")] == [
        ["A"], ["B"], ["C"]]


def test_letters_of_the_other_case_are_citations():
    assert [s.labels for s in split_caption(
        "Vaccination. A. Exposure in categories (a-i) shown by symbols (i). B. Protection in 90% of cases "
        "(a,b,c,e,h), y: one study.")] == [["A"], ["B"]]


def test_label_closing_a_sentence_in_a_prefix_caption():
    assert pairs("(A) AcEGFP cells. (B) Staurosporine treated cells. The proportion of markers was presented "
                 "as mean ± SEM (N = 30), (C). *P < 0.05.") == [
        (["A"], "AcEGFP cells."), (["B"], "Staurosporine treated cells."),
        (["C"], "The proportion of markers was presented as mean ± SEM (N = 30)")]


def test_labels_opening_sentences_in_a_suffix_caption():
    assert pairs("Right foot. Photograph (A) and X-ray image (B) of the specimen. (C)— explanatory drawing. "
                 "(D)— drawing of a lemur foot.") == [
        (["A"], "Photograph"), (["B"], "X-ray image"), (["C"], "explanatory drawing."),
        (["D"], "drawing of a lemur foot.")]


@pytest.mark.parametrize("caption, labels", [
    ("Diversity. A: without target species and B: including all species. Results are percentages.",
     [["A"], ["B"]]),
    ("Fragments. A, external; and B, internal views, UA 96. C, external; and D, internal views, PR 25.",
     [["A"], ["B"], ["C"], ["D"]]),
    ("Three kinds of correlation :a) positive b) negative, and c) none", [["A"], ["B"], ["C"]]),
    ("Histology. (a; ×200) H&E stain. (b; ×400) Ki-67 staining.", [["A"], ["B"]]),
    ("Strategies targeting the pathway A, Antibodies restore activity. B, Blocking ligands helps.",
     [["A"], ["B"]]),
    ("Cardiac MRI. Left: four-chamber cine view, Right: late enhancement.", [["LEFT"], ["RIGHT"]]),
    ("Firing. (A.) young cell response, (B.) aged cell response, and (C.) overlap of the two traces.",
     [["A"], ["B"], ["C"]]),
    ("Projections of a zebrafish dataset with a the projection of the pixels and b the projection of the "
     "particles. There is no difference.", [["A"], ["B"]]),
])
def test_marker_forms(caption, labels):
    assert [s.labels for s in split_caption(caption)] == labels


def test_two_marker_range():
    assert [s.labels for s in split_caption(
        "Solutions. Results in (a)–(d) correspond to D = 1, results in (e)–(h) correspond to D = 2.")] == [
        ["A", "B", "C", "D"], ["E", "F", "G", "H"]]


def test_panel_named_in_a_sentence_opening():
    assert pairs("Fatigue scores. In panel A, the self-reported scores were plotted. In panel C, the physician "
                 "scores were plotted. In panel B and D, marginal means are shown.") == [
        (["A"], "the self-reported scores were plotted."), (["C"], "the physician scores were plotted."),
        (["B", "D"], "marginal means are shown.")]


def test_group_header_before_its_own_markers():
    assert [s.labels for s in split_caption(
        "Profiles. (A–B) Data downloaded from an atlas. (A) Volcano plot of genes. (B) Heatmap of genes.")] == [
        ["A"], ["B"]]


def test_lead_citing_panels_before_the_real_list():
    assert pairs("Expression of RNA (A-C) or protein (D). A Brain. B Liver. C Kidney. D Western blot.") == [
        (["A"], "Brain."), (["B"], "Liver."), (["C"], "Kidney."), (["D"], "Western blot.")]


def test_skipped_bare_letters_are_found_between_their_neighbours():
    assert pairs("Transport. a The plot of current density. Comparison of b the current density and c voltage "
                 "under gradients. d Schematic of the system.") == [
        (["A"], "The plot of current density."), (["B"], "the current density"),
        (["C"], "voltage under gradients."), (["D"], "Schematic of the system.")]


def test_lone_letter_inside_a_sentence_is_a_reference():
    caption = "Processing of stool samples. Soft samples were processed like in (A) without the center."
    assert pairs(caption) == [([], caption)]


def test_closing_text_starts_at_the_first_figure_wide_sentence():
    subs = split_caption("(A) Bee numbers in October. (B) Bee mortality over time. The error bars indicate the "
                         "standard deviation. Bee population reached its minimum in October.")
    assert subs[1].text == "Bee mortality over time."
    assert subs[1].context.endswith("Bee population reached its minimum in October.")


def test_sentence_citing_several_panels_is_shared_unless_they_are_its_own():
    subs = split_caption("Spectra. (A) 10 V. (B) 100 V. (C) ESI spectrum at 100 V. The insets in (A) and (C) show "
                         "the water loss.")
    assert subs[2].text == "ESI spectrum at 100 V."
    subs = split_caption("Landscapes. (A and B) The landscape at z = 0. (C and D) The global landscape. It "
                         "exhibits (C) limit cycles and (D) excitable dynamics.")
    assert subs[1].text == "The global landscape. It exhibits (C) limit cycles and (D) excitable dynamics."


def test_per_panel_sentence_stays_with_the_last_panel():
    subs = split_caption("(A) Design of the particle. Reproduced from Ref. 1. (B) Preparation of liposomes. "
                         "Reproduced from Ref. 2.")
    assert subs[1].text == "Preparation of liposomes. Reproduced from Ref. 2."


def test_one_sentence_list_ends_at_its_shared_verb():
    subs = split_caption("Profiles. The probability for (a) denaturation and (b) Z-DNA formation are shown as "
                         "functions of position.")
    assert [(s.labels, s.text) for s in subs] == [(["A"], "denaturation"), (["B"], "Z-DNA formation")]
    assert subs[0].context.endswith("are shown as functions of position.")


def test_lower_case_letter_starts_a_sentence():
    subs = split_caption("Vesicles. a) A vesicle in a bath. b) Two vesicles of different radii. The larger "
                         "vesicle may have a higher tension.")
    assert subs[1].text == "Two vesicles of different radii. The larger vesicle may have a higher tension."


def test_capital_after_a_marker_starts_a_sentence_without_full_stop():
    subs = split_caption("(A) Values in pseudocolor. (B) An inset of panel A. Note that the key was rescaled "
                         "(C) Dependence of tau on Vr.")
    assert subs[1].text == "An inset of panel A. Note that the key was rescaled"


def test_panel_pointed_at_by_its_noun():
    assert pairs("Rectum. The layers can be seen in image (A). Image (B) shows lymphoid tissue (asterisk).") == [
        (["A"], "The layers can be seen"), (["B"], "shows lymphoid tissue (asterisk).")]
    assert [s.labels for s in split_caption("Colon. Layers in image (A). In image (B) we see crypts.")] == [
        ["A"], ["B"]]


def test_letters_cited_in_keys_of_marks():
    assert [s.labels for s in split_caption(
        "Spread of cancer. CT showed linear areas (arrows, b) near the tumour (CA, a, b). The specimen showed "
        "invasion (arrows, c) along the channels (CA, c).")] == [["A", "B"], ["C"]]


def test_lower_case_letters_heading_items_after_commas_and_lower_case_words():
    assert [s.labels for s in split_caption(
        "a Schematic of electrospinning, b the possible mechanism, c zeta potentials of the membranes")] == [
        ["A"], ["B"], ["C"]]
    assert [s.labels for s in split_caption("a pH-dependence of the parameters. b Effect of temperature.")] == [
        ["A"], ["B"]]


def test_bare_letters_opening_sentences_after_cited_labels():
    assert [s.labels for s in split_caption(
        "Calorimetry (a) and gravimetry (b) curves of the composites. c TGA curves of the mats. d TGA curves "
        "of rGO.")] == [["A"], ["B"], ["C"], ["D"]]


def test_position_word_after_a_closing_quote():
    assert [s.labels for s in split_caption(
        "Pancreas. Upper row: a character meaning \u201cgland.\u201d Lower row: a character meaning \u201cremote\u201d.")] == [
        ["TOP"], ["BOTTOM"]]


def test_glued_letters_count_in_a_run_only():
    assert [s.labels for s in split_caption(
        "Forest plot for clinicopathological markers(A) FIGO stage.(B) LN metastasis. (C) Age.")] == [
        ["A"], ["B"], ["C"]]


def test_letter_with_its_position_in_parentheses():
    assert [s.labels for s in split_caption(
        "Expression. (A upper panel) The target site. (A lower panel) The duplex. (B) Reporter assay.")] == [
        ["A"], ["B"]]


def test_finer_list_of_sentence_opening_markers_wins_over_the_title():
    assert [s.labels for s in split_caption(
        "Conus cashi sp. nov. (A-J) and Conus princeps (K). Specimens from Gurabo. (A-F) PRI 66144, SL 22.5 mm; "
        "(G) PRI 67166, SL 23.8 mm; (H) PRI 66162; (I) NMB H18381; (J) PRI 66116; (K) UF 169052.")] == [
        ["A", "B", "C", "D", "E", "F"], ["G"], ["H"], ["I"], ["J"], ["K"]]


def test_one_position_word_alone_is_not_a_panel():
    caption = "Metabolic reprogramming. Center: tumour cells use glycolysis. Immune cells adapt in the periphery."
    assert pairs(caption) == [([], caption)]


def test_letters_listed_in_a_scale_key_are_not_markers():
    assert [s.labels for s in split_caption(
        "Neuropathology. A. Survival plots. B and C. Brain sections at 72 h. Bars = 2 mm in B, F, H, J; 200 µm "
        "in C.")] == [["A"], ["B", "C"]]


def test_closing_sentence_citing_panels_without_parentheses_is_shared():
    subs = split_caption("Vertebrae. A, anterior; B, dorsal; C, ventral; and D, lateral views. Note scanning "
                         "artifacts in B and C.")
    assert subs[3].text == "lateral views." and subs[0].context.endswith("Note scanning artifacts in B and C.")


def test_capitals_listed_inside_a_sentence_name_panels_when_they_run_a_b_c():
    assert pairs("Pathways enriched in four databases A GO terms, B KEGG maps, C Reactome, and D BioCarta") == [
        (["A"], "GO terms"), (["B"], "KEGG maps"), (["C"], "Reactome"), (["D"], "BioCarta")]
    lanes = "Gel of the purified enzyme. Lane A Size markers. Lane B Crude extract. Lane C Purified enzyme."
    assert pairs(lanes) == [([], lanes)]  # lanes of one gel, each named after a capitalised noun


def test_lower_case_run_after_a_title_without_its_full_stop():
    """A figure collection joins the bold title and the legend without a full stop: the "a" before a
    capitalised word opens panel a when "b" and "c" follow after commas, and is the article otherwise."""
    assert pairs("Pathway and network analysis a Top ten pathways in upregulated genes, b host interaction "
                 "on upregulated genes, c mutation frequency of upregulated genes") == [
        (["A"], "Top ten pathways in upregulated genes"), (["B"], "host interaction on upregulated genes"),
        (["C"], "mutation frequency of upregulated genes")]
    # The title rule names the "a" it matched, not a lower-case "a" two characters before it.
    assert pairs("a a Top view of the cortex, b side view of the cortex, c detail of the cortex")[0] == (
        ["A"], "Top view of the cortex")
    caption = "Lysates were analysed in a Western blot, b and c stand for the two clones."
    assert pairs(caption) == [([], caption)]
    caption = ("Gel filtration on a Superdex 200 column. A) Elution of the wild-type fragment. B) CD spectra, "
               "b and c. C) Binding of invertase.")
    assert [labels for labels, _ in pairs(caption)] == [["A"], ["B"], ["C"]]


def test_a_letter_of_a_bare_run_without_the_space_after_its_comma():
    caption = ("Encoding across modalities. a, Glass brain view. b, Violin plots of r. c,Histogram of accuracy. "
               "d, e, rings of r by network. f, Specificity index.")
    assert pairs(caption) == [(["A"], "Glass brain view."), (["B"], "Violin plots of r."),
                              (["C"], "Histogram of accuracy."), (["D", "E"], "rings of r by network."),
                              (["F"], "Specificity index.")]
