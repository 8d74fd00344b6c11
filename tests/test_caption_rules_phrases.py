"""split_caption on forms met in Europe PMC open-access captions (data/figures/caption_markers.py,
subcaptions.py): letters inside parenthesised notes, labels introduced by joiners and prepositions, lead
citations, position phrases, closing keys and verbs shared by labelled phrases. One short caption per rule,
written for the test in the shape the real ones have."""
from __future__ import annotations

from data.figures import split_caption


def pairs(caption: str) -> list[tuple[list[str], str]]:
    return [(s.labels, s.text) for s in split_caption(caption)]


def labels(caption: str) -> list[list[str]]:
    return [s.labels for s in split_caption(caption)]


def test_letter_closing_an_open_parenthesis_is_a_citation():
    assert labels("Outcome by group. (A) Priming by response. (B and C) Event-free survival (P = 0.03 by "
                  "log-rank test; B) and overall survival (P = 0.2 by log-rank test; C) of all cases. "
                  "(D) Mutations found.") == [["A"], ["B", "C"], ["D"]]


def test_joiner_before_a_label_makes_it_open_its_text():
    assert pairs("Marginal densities in (a) resting conditions, (b) fast pacing and (c) with both rates "
                 "combined.") == [(["A"], "resting conditions"), (["B"], "fast pacing"),
                                  (["C"], "both rates combined.")]


def test_preposition_before_a_capitalised_label_is_a_frame_for_it():
    subs = pairs("Structure of the fragment. A and B) Top and side views. Binding compared by C) Lectin one; "
                 "D) Lectin two.")
    assert subs[0] == (["A", "B"], "Top and side views.")
    assert [s[0] for s in subs] == [["A", "B"], ["C"], ["D"]]


def test_bars_key_is_shared():
    subs = split_caption("Skin lesions. (A) Skin of a patient. (B) Gut of a patient. Bars = 40 µm.")
    assert subs[-1].text == "Gut of a patient."
    assert "Bars = 40 µm." in subs[-1].context


def test_sentence_citing_a_group_of_two_panels_is_shared():
    assert split_caption("Lesions. (A) Skin. (B) Gut. (C) Liver of a patient. Stains as in (A and C) of the "
                         "first series.")[-1].text == "Liver of a patient."


def test_space_before_a_decimal_point_is_kept():
    assert split_caption("Rates. (A) Rates by year. (B) Trend of rates (p = .002 for year).")[-1].text == (
        "Trend of rates (p = .002 for year).")


def test_lead_citations_restated_by_coarser_groups():
    assert labels("Double labelling. Staining for MBP (a, d) and OLIG2 (e, h) in a control case. a-d: MBP "
                  "marks myelin (a) next to the protein (b). e-h: OLIG2 marks nuclei.") == [
        ["A", "B", "C", "D"], ["E", "F", "G", "H"]]


def test_position_word_and_comma_after_a_title_without_full_stop():
    assert pairs("Inhibition of transport by exclusion Left, glucose uptake is coupled to phosphorylation. "
                 "Right, the transport cycle of the pump.") == [
        (["LEFT"], "glucose uptake is coupled to phosphorylation."), (["RIGHT"], "the transport cycle of the pump.")]


def test_position_phrases_opening_clauses():
    assert labels("Synergy of two drugs. At the left is shown the normal pathway; in the middle drawing one "
                  "inhibitor acts alone; on the right, both inhibitors act together.") == [
        ["LEFT"], ["MIDDLE"], ["RIGHT"]]


def test_one_position_phrase_alone_is_not_a_split():
    assert labels("Cells were imaged twice. On the right, a zoom of the boxed area is shown.") == [[]]


def test_abbreviation_key_with_capitalised_expansions_is_shared():
    assert split_caption("Forest plot. (A) Stage. (B) Grade. FIGO, International Federation of Gynecology; "
                         "LN, Lymph node.")[-1].text == "Grade."


def test_abbreviation_key_with_equals_signs_is_shared():
    assert split_caption("Maps. (A) Mean of C1. (B) Kurtosis of C1. GM = gray matter, WM = white matter.")[-1].text \
        == "Kurtosis of C1."


def test_representative_experiments_note_is_shared():
    assert split_caption("Blots. (A) Lysates of HeLa cells. (B) Lysates of U2OS cells. The results shown are "
                         "representative of at least 3 independent experiments.")[-1].text == "Lysates of U2OS cells."


def test_verb_shared_by_the_labelled_phrases_of_the_last_sentence():
    subs = split_caption("Plasma species. (a) PCA of the serum. (b) PCA of the plasma. The species in (c) the "
                         "positive mode and (d) the negative mode were compared by a rank test.")
    assert [(s.labels, s.text) for s in subs[2:]] == [(["C"], "the positive mode"), (["D"], "the negative mode")]
    assert "were compared by a rank test" in subs[-1].context


def test_colour_version_notes_are_shared():
    for note in ("(Online version in colour.)", "[Colour figure can be viewed at the journal site]"):
        assert split_caption(f"Fits. (a) One fit. (b) Two fits. {note}")[-1].text == "Two fits."


def test_letters_after_colons_and_semicolons_in_a_run_are_panels():
    caption = ("Male holotype of S. marahuaca: A. head and pronotum in dorsal view; B. head in ventral view. "
               "Records along the river, A \u2212 fishing gear; B \u2212 boats; C \u2212 habitations.")
    assert [s.labels for s in split_caption(caption)][:2] == [["A"], ["B"]]
    dashes = "Records along the river (Par\u00e1), A \u2212 fishing gear; B \u2212 boats; C \u2212 habitations."
    assert [(s.labels, s.text) for s in split_caption(dashes)] == [
        (["A"], "fishing gear"), (["B"], "boats"), (["C"], "habitations.")]
    assert [s.labels for s in split_caption("Growth in broth: E. coli was grown overnight.")] == [[]]


def test_letters_cited_after_their_phrases_carry_the_prefix_run_on():
    assert pairs("Targets. (A) Heat map. (B) Motifs. (C) Distribution of sites. (D) Integration with the gene "
                 "set. Pathways found for high (E) and low (F) targets.")[4:] == [
        (["E"], "Pathways found for high"), (["F"], "targets.")]


def test_a_cited_letter_out_of_the_run_abbreviates_a_word():
    assert labels("Duodenum. (A) The mucosal layers. (B) The nerve plexus lies between the circular layer (C) "
                  "and the longitudinal layer (L). HE stain.") == [["A"], ["B"]]


def test_letter_after_a_sentence_without_its_full_stop_fills_the_run():
    assert labels("Insolubility. A. Schematic. B. Total protein. C. Volcano plot, Q < 0.01 D. Barplot of terms "
                  "(see the list) E. Interaction network. F. Overlap.") == [["A"], ["B"], ["C"], ["D"], ["E"], ["F"]]


def test_panel_letters_after_the_figure_number():
    assert pairs("Co-culture medium. 1A. Cells were stimulated for 24 hours. 1B. Treated cells invaded more. "
                 "1C. Quantification of E-cadherin.") == [
        (["A"], "Cells were stimulated for 24 hours."), (["B"], "Treated cells invaded more."),
        (["C"], "Quantification of E-cadherin.")]


def test_abbreviated_genus_in_a_closing_key_is_no_label():
    assert labels("Infections. (A) Single infections. (B) Mixed infections. Abbreviations: MP, M. pneumoniae; "
                  "LP, L. pneumophila; CP, C. pneumoniae.") == [["A"], ["B"]]
