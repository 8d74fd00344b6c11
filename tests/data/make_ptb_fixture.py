"""Record pycocoevalcap's real tokenization and scores on medical-style captions, for
tests/test_caption_metrics.py (which matches them exactly, without Java).

    python tests/data/make_ptb_fixture.py            # writes tests/data/ptb_fixture.json

Needs ``pip install pycocoevalcap`` (it ships Stanford CoreNLP 3.4.1's jar) and Java 8 or later. The
captions below were written for this fixture (figure-caption style, with the punctuation medical captions
use: decimals with units, hyphenated measures, ratios, brackets, abbreviations, unicode symbols, quotes,
URLs); none is taken from an article. ``GROUPS``: one per image, three references then one prediction
(a paraphrase, so that every n-gram order scores). ``EXTRA``: harder single captions, tokenized as a
third batch.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "ptb_fixture.json"

GROUPS = [
    ["A 3.5-cm mass (arrow) in the left frontal lobe.",
     "Axial T2-weighted MRI shows a 3.5-cm hyperintense mass (arrow) in the left frontal lobe.",
     "Left frontal mass, 3.5 cm, hyperintense on T2 (arrow).",
     "Axial T2-weighted MRI: a 3.5-cm mass (arrow) in the left frontal lobe."],
    ["Fig. 2: PET/CT with SUVmax=4.2 in the right lung.",
     "18F-FDG PET/CT shows focal uptake (SUVmax = 4.2) in the right upper lobe.",
     "Fig. 2. Right upper lobe nodule; SUVmax=4.2.",
     "PET/CT shows uptake in the right lung, SUVmax=4.2 (Fig. 2)."],
    ["Coronal FLAIR image, e.g., at the level of the hippocampi.",
     "Coronal FLAIR, i.e., fluid-attenuated inversion recovery, shows bilateral hippocampal hyperintensity.",
     "Hippocampal signal change on coronal FLAIR (e.g., sclerosis).",
     "Coronal FLAIR image shows hippocampal hyperintensity, e.g., sclerosis."],
    ["Lesion at the 3 o'clock position of the left breast.",
     "Ultrasound: hypoechoic lesion at 3 o'clock, 2 cm from the nipple.",
     "Left breast, 3 o'clock: irregular hypoechoic mass.",
     "Hypoechoic mass at the 3 o'clock position in the left breast."],
    ["Tumour-to-background ratio 1:2 on delayed images.",
     "Ratio of 1:2 between lesion and background at 2 h.",
     "Delayed imaging (2 h) shows a 1:2 ratio.",
     "Delayed images show a tumour-to-background ratio of 1:2."],
    ["[A] Axial CT shows a hyperdense haemorrhage; [B] follow-up at 3 days.",
     "Axial non-contrast CT (A) and 3-day follow-up (B) of a left basal ganglia haemorrhage.",
     "A, B: CT of an intracerebral haemorrhage {left basal ganglia}.",
     "Axial CT [A] shows a left basal ganglia haemorrhage; follow-up [B] after 3 days."],
    ["DWI (b = 1000 s/mm²) shows restricted diffusion; ADC = 0.6 × 10⁻³ mm²/s.",
     "Restricted diffusion on DWI with low ADC (0.6×10^-3 mm^2/s).",
     "Acute infarct: DWI bright, ADC dark — 0.6 × 10-3 mm2/s.",
     "DWI shows restricted diffusion with ADC = 0.6 × 10⁻³ mm²/s."],
    ["A 45-year-old man's MRI: ring-enhancing lesion (arrowheads).",
     "Contrast-enhanced T1WI of a 45-year-old man shows a ring-enhancing lesion (arrowheads).",
     "Ring enhancement (arrowheads) in a 45-year-old male patient's brain.",
     "Contrast-enhanced T1-weighted image of a 45-year-old man: ring-enhancing lesion (arrowheads)."],
    ["H&E stain, ×400: atypical cells with mitoses.",
     "Histology (H & E, original magnification x400) shows atypical mitoses.",
     "H&E ×400 — pleomorphic nuclei and mitotic figures.",
     "H&E staining (×400) shows atypical cells and mitoses."],
    ["Sagittal T1 at C5–C6 shows disc herniation (white arrow).",
     "C5-C6 disc herniation compressing the cord on sagittal T1-weighted MRI.",
     "Sagittal T1WI: C5/C6 herniation, cord compression (arrow).",
     "Sagittal T1-weighted MRI shows a C5–C6 disc herniation (arrow)."],
    ["Patients' survival curves (p<0.05, log-rank).",
     "Kaplan–Meier curves of patients' overall survival; p < .05.",
     "Survival differs between groups (log-rank p=0.03).",
     "Kaplan-Meier survival curves of the patients (p<0.05)."],
    ["Crohn's disease: MR enterography shows wall thickening (5 mm).",
     "MR enterography in Crohn’s disease — terminal ileum wall 5mm thick.",
     "Terminal ileitis (Crohn's) on MRE; wall thickness 5 mm.",
     "MR enterography shows 5-mm wall thickening in Crohn's disease."],
    ["Alzheimer’s disease: FDG-PET shows temporoparietal hypometabolism.",
     "FDG PET in Alzheimer's disease - bilateral temporo-parietal hypometabolism.",
     "Hypometabolism (temporoparietal, bilateral) in AD on 18F-FDG PET.",
     "FDG-PET shows bilateral temporoparietal hypometabolism in Alzheimer's disease."],
    ["Don't miss the small nodule (circle) — it can't be seen on CXR.",
     "The nodule (circle) isn't visible on the chest X-ray but is on CT.",
     "Small nodule (circled) that we cannot see on radiography.",
     "A small nodule (circle) that can't be seen on the chest X-ray."],
    ["Figs. 3–5: serial MRI at 1, 3 and 6 months.",
     "Serial MRI (Figs. 3-5) at months 1, 3, and 6 shows regression.",
     "Follow-up MRI at 1/3/6 months (Figs. 3 to 5).",
     "Serial MRI at 1, 3 and 6 months (Figs. 3–5) shows regression."],
    ["Lesion measured 12 × 8 × 6 mm (AP × TR × CC).",
     "12x8x6 mm lesion, measured AP by TR by CC.",
     "Size: 12 × 8 × 6 mm.",
     "The lesion measures 12 × 8 × 6 mm (AP × TR × CC)."],
    ["Dr. Smith's case: T1-weighted image, Gd-DTPA, 0.1 mmol/kg.",
     "After Gd-DTPA (0.1 mmol/kg) the T1-weighted image shows enhancement.",
     "Gd-enhanced T1WI (0.1 mmol per kg).",
     "T1-weighted image after Gd-DTPA 0.1 mmol/kg shows enhancement."],
    ["Temperature >38 °C and CRP ≥ 100 mg/L at admission.",
     "At admission: fever (38.5°C), CRP 120 mg/L.",
     "Fever > 38 °C; CRP ≥100 mg/L.",
     "Fever above 38 °C and CRP ≥ 100 mg/L at admission."],
    ["Heat map of attention: red = high, blue = low.",
     "Attention heat map (red=high; blue=low).",
     "Red indicates high and blue low attention weights.",
     "Attention heat map where red = high and blue = low."],
    ["Volume rendering (3D-VR) of the circle of Willis; aneurysm ca. 4 mm.",
     "3D volume-rendered CTA: 4-mm aneurysm of the circle of Willis.",
     "CT angiography, VR reconstruction — aneurysm approx. 4 mm.",
     "3D volume rendering of the circle of Willis shows an aneurysm of ca. 4 mm."],
    ["Scale bar = 50 µm; inset shows ×20 magnification.",
     "Scale bar, 50 μm. Inset: 20× magnification.",
     "Bar: 50 um (inset ×20).",
     "Scale bar = 50 µm; the inset is at ×20 magnification."],
    ["The \"target sign\" (arrow) in intussusception.",
     "Ultrasound showing the “target” sign (arrow) of intussusception.",
     "Target sign on US — intussusception (arrow).",
     "Ultrasound shows the \"target sign\" (arrow) of intussusception."],
    ["Chest X-ray (PA view): right-sided pneumothorax... no mediastinal shift.",
     "PA chest radiograph shows right pneumothorax without mediastinal shift.",
     "Right pneumothorax on the PA film; mediastinum central.",
     "PA chest X-ray shows a right pneumothorax without mediastinal shift."],
    ["L4/5 disc extrusion (asterisk) compressing the left L5 root.",
     "Axial T2 at L4-L5: left paracentral extrusion (*) impinging on L5.",
     "Disc extrusion, L4–5, left (*).",
     "L4/5 disc extrusion (*) compressing the left L5 nerve root."],
    ["Receiver operating characteristic (ROC) curve, AUC = 0.87 [95% CI: 0.81–0.93].",
     "ROC curve with AUC 0.87 (95% CI 0.81-0.93).",
     "AUC=0.87; 95 % CI, 0.81 to 0.93.",
     "ROC curve: AUC = 0.87 (95% CI 0.81–0.93)."],
    ["MRA of the neck: 70% stenosis of the right ICA (arrow).",
     "Right internal carotid artery stenosis (~70 %) on MR angiography.",
     "MR angiography shows a >70% right ICA stenosis.",
     "MR angiography of the neck shows 70% stenosis of the right ICA (arrow)."],
    ["Post-op day 1 (POD1): no residual tumour, i.e., gross total resection.",
     "Postoperative MRI on day 1 shows gross total resection.",
     "No residual enhancing tumour post-op (GTR).",
     "Post-operative MRI on day 1 shows no residual tumour, i.e., gross total resection."],
    ["Echocardiography: LVEF 35%; E/A ratio 0.8; TAPSE 14 mm.",
     "TTE shows reduced LVEF (35 %) and E/A 0.8.",
     "LV ejection fraction = 35%, TAPSE=14mm.",
     "Echocardiography shows LVEF 35% and an E/A ratio of 0.8."],
    ["Fundus photo OD/OS: papilledema, grade II–III (Frisén).",
     "Bilateral optic disc swelling (Frisén grade 2-3).",
     "Papilloedema in both eyes — Frisen grade II/III.",
     "Fundus photographs of both eyes show papilledema, Frisén grade II–III."],
    ["Timeline: symptom onset → CT (2 h) → thrombectomy (4 h).",
     "From onset to CT: 2 hours; to thrombectomy: 4 hours.",
     "Onset->CT 2h; CT->thrombectomy 2h.",
     "Timeline from symptom onset to CT (2 h) and thrombectomy (4 h)."],
    ["Comparison vs. baseline: lesion grew by 25%—see Table 1.",
     "Compared with baseline, the lesion grew 25 % (Table 1).",
     "Growth of 25% versus baseline (Tab. 1).",
     "Compared with baseline the lesion grew by 25% (see Table 1)."],
    ["Susceptibility-weighted imaging (SWI): microbleeds, n=12, in the cerebellum & pons.",
     "SWI shows 12 microbleeds in the cerebellum and pons.",
     "Multiple (n = 12) microbleeds on SWI, infratentorial.",
     "SWI shows 12 microbleeds (n=12) in the cerebellum & pons."],
]

EXTRA = [
    "See www.example.org/atlas or http://example.com/case?id=12 for more.",
    "Contact: radiology@example.org; cf. Smith et al. 2019.",
    "Images courtesy of St. Mary's Hospital, Inc., Calif.",
    "The U.S. FDA-approved agent. The study...",
    "Patient I. The image shows etc. The end",
    "Measured on 12/03/2019 and 3/4 of the lesion enhanced; 1 1/2 cm, ½ cm.",
    "Costs: $1,200 (≈ €1,100) or £900; 5¢.",
    "Signal: +3.5 dB vs. -2 dB; range -4 to +4.",
    "T₂* relaxation; γ-knife; β-amyloid; α7 nAChR; Aβ42/40.",
    "‘Single’ and “double” quotes, plus `backticks' and ''doubled''.",
    "Ellipsis … and . . . spaced dots; dashes -- and --- and ---- and -----.",
    "Weird!!! Really?! Is it?? Yes!",
    "Bullets • and · middle dots ‧ and ° degrees and ‰ per mille.",
    "Gonna, gotta, wanna, cannot, 'tis, 'twas — assimilations.",
    "Tags: @radiologist #neuroimaging C++ C# F# code.",
    "Emoji 🧠 brain and 😀 face are dropped.",
    "Tabs\tand  double  spaces and non\u00a0breaking space.",
    "Soft hy\u00adphen in a word, and zero\u200bwidth space.",
    "Smileys :) :-( ;) and (^_^) in a caption?",
    "File names: scan_01.nii.gz, report.pdf and figure.png.",
    "Phone (555) 123-4567 or +44 20 7946 0958.",
    "Version 2.0.1 of the software; 1.2.3.4 addresses.",
    "Mr. Jones and Mrs. Lee vs. Prof. Chen (Dept. of Radiology).",
    "Jan. 5, 2020; Feb. 2021; Sept. 3.",
    "No. 5 and nos. 6–8; pp. 12–15; art. 3; op. cit.",
    "AT&T and S&P 500 and R&D.",
    "E.g. the MRI, i.e. the scan; et al. found.",
    "O'Brien's and d'Alembert's and l'hôpital.",
    "The '90s and '80s scans; rock 'n' roll.",
    "y'all and Y'know what.",
    "Nat'l guidelines, li'l lesion, ev'ry case, c'mon.",
    "x-ray, X-ray, X-Ray and x ray.",
    "Ki-67 index 30%; IDH1-R132H; MGMT-methylated.",
    "<b>Bold</b> text and <i>italic</i> and 5 < 6 > 4.",
    "Brackets {curly} [square] (round) <angle>.",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe.",
    "Greek: μ, Ω, Δ; Cyrillic: МРТ головного мозга.",
    "Chinese 磁共振成像 and Japanese 脳 MRI.",
    "Arrows ← ↑ → ↓ ⇒ and math ± ∓ × ÷ ≈ ≠ ≤ ≥ ∞ √.",
    "Superscripts x² y³ z⁴ and subscripts H₂O CO₂.",
    "Ranges 10–20, 10-20, 10 - 20 and 10—20.",
    "Percentages 5%, 5 %, 5 percent, 0.5%.",
    "Time 10:30, ratio 3:1, 1:1,000 dilution.",
    "IV, i.v., p.o., b.i.d., q.d. dosing.",
    "A.  B.  C. labels; (a) (b) (c) panels; a) b) c).",
    "Left (L) and right (R) — L>R asymmetry.",
    "ca. 5 cm; Fig. 1A; fig 2b; Figure 3(c).",
    "The cannot-miss diagnosis; can not; can't.",
    "Prices $ 5 and US$ 10 and A$20.",
    "Score = 7/10; 7 / 10; 7/10ths.",
    "Underscores __init__ and _italic_ and snake_case_name.",
    "Asterisks * and ** and *** footnote†‡§¶.",
    "Copyright © 2020, ® and ™ marks.",
    "End with abbreviation etc.",
]


def record() -> dict:
    """Tokenize and score with pycocoevalcap itself, as its COCOEvalCap does (gts and res tokenized as two
    runs, keys in order), and return everything the test compares."""
    from importlib.metadata import version

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    keys = [f"img{i:02d}" for i in range(len(GROUPS))]
    gts = {k: [{"caption": c} for c in g[:3]] for k, g in zip(keys, GROUPS)}
    res = {k: [{"caption": g[3]}] for k, g in zip(keys, GROUPS)}
    gts_tok, res_tok = PTBTokenizer().tokenize(gts), PTBTokenizer().tokenize(res)
    extra_tok = PTBTokenizer().tokenize({"extra": [{"caption": c} for c in EXTRA]})["extra"]
    bleu, _ = Bleu(4).compute_score(gts_tok, res_tok, verbose=0)
    rouge, rouge_each = Rouge().compute_score(gts_tok, res_tok)
    cider, cider_each = Cider().compute_score(gts_tok, res_tok)
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return {
        "made_with": {"pycocoevalcap": version("pycocoevalcap"), "java": java, "python": platform.python_version()},
        "keys": keys,
        "references": {k: g[:3] for k, g in zip(keys, GROUPS)},
        "predictions": {k: g[3] for k, g in zip(keys, GROUPS)},
        "tokenized_references": gts_tok,
        "tokenized_predictions": {k: v[0] for k, v in res_tok.items()},
        "extra": EXTRA,
        "tokenized_extra": extra_tok,
        "scores": {**{f"bleu_{i + 1}": float(b) for i, b in enumerate(bleu)}, "rouge_l": float(rouge),
                   "cider_d": float(cider)},
        "rouge_l_each": [float(x) for x in rouge_each],
        "cider_d_each": [float(x) for x in cider_each],
    }


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0]) if argv else OUT
    data = record()
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out}: {sum(len(v) for v in data['references'].values()) + len(data['predictions'])} "
          f"scored captions, {len(data['extra'])} extra; scores {data['scores']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
