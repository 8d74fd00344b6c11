"""The datasets as they are published, found without options: ROCOv2 as unpacked from Zenodo's
<split>_images.zip (into <split>/ or <split>_images/<split>/), PMC-OA's images.zip unpacked into images/,
MedICaT's subcaptions_public.jsonl (boxes under 'subfigures', no 'answer'), and open_clip's
tab-separated .csv files. Headers and keys are those of the published files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from data import adapters
from data.adapters.common import AdapterError
from data.adapters.__main__ import main as adapters_main
from data.adapters.medicat import write_subfigures
from data.datasets import load_pairs


def jpg(path: Path, seed: int = 0, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (seed * 50 % 256, 90, 160)).save(path, format="JPEG")
    return path


@pytest.mark.parametrize("unpacked", ["train", "train_images/train"])
def test_rocov2_images_are_found_where_the_zenodo_archive_unpacks(tmp_path, unpacked):
    (tmp_path / "train_captions.csv").write_text(
        "ID,Caption\nROCOv2_2023_train_000001,Head CT demonstrating left parotiditis.\n"
        "ROCOv2_2023_train_000002,\"Chest X-ray, PA view.\"\n", encoding="utf-8")
    (tmp_path / "train_concepts.csv").write_text("ID,CUIs\nROCOv2_2023_train_000001,C0040405;C0030581\n")
    (tmp_path / "train_images").mkdir()  # the archive's own folder exists in both cases
    for i in (1, 2):
        jpg(tmp_path / unpacked / f"ROCOv2_2023_train_00000{i}.jpg", i)
    pairs, problems = load_pairs([f"rocov2:{tmp_path / 'train_captions.csv'}"], None, 100)
    assert not problems and [p.image.parent for p in pairs] == [tmp_path / unpacked] * 2
    rows = [r for _, r in adapters.read_pairs(f"rocov2:{tmp_path / 'train_captions.csv'}")]
    assert rows[0]["cuis"] == ["C0040405", "C0030581"] and "cuis" not in rows[1]


@pytest.mark.parametrize("unpacked", ["images/caption_T060_filtered_top4_sep_v0_subfigures",
                                      "caption_T060_filtered_top4_sep_v0_subfigures", "images"])
def test_pmc_oa_images_are_found_where_images_zip_unpacks(tmp_path, unpacked):
    lines = [{"image": "PMC212319_Fig3_4.jpg", "caption": "A. Real time image of the translocation of ARF1-GFP.",
              "pmcid": "PMC212319", "url_name": "1471-2121-4-13-3.jpg"},
             {"image": "PMC4447427_fig1_2.jpg", "caption": "MRI of the brain.", "alignment_type": "exact",
              "alignment_score": 0.93}]
    (tmp_path / "pmc_oa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / "images").mkdir()
    for i, line in enumerate(lines):
        jpg(tmp_path / unpacked / line["image"], i)
    pairs, problems = load_pairs([str(tmp_path / "pmc_oa.jsonl")], None, 100)
    assert not problems and [p.image.parent for p in pairs] == [tmp_path / unpacked] * 2
    rows = [r for _, r in adapters.read_pairs(str(tmp_path / "pmc_oa.jsonl"))]
    assert rows[1]["alignment_type"] == "exact" and rows[0]["url_name"] == "1471-2121-4-13-3.jpg"


def medicat_line(name: str, boxes_key: str = "subfigures", **extra) -> dict:
    text = "(A) Brain CT shows a bleed. (B) Diffusion MRI shows restriction."
    tokens, at = [], 0
    for word in "(A) Brain CT shows a bleed . (B) Diffusion MRI shows restriction .".split():
        at = text.index(word, at)
        tokens.append({"text": word, "start": at, "end": at + len(word), "id": len(tokens)})
        at += len(word)
    pdf_hash, fig_uri = name.split("_", 1)
    return {"pdf_hash": pdf_hash, "fig_key": "Figure1", "fig_uri": fig_uri, "width": 100, "height": 80, "text": text,
            "tokens": tokens, boxes_key: [{"label": "a", "points": [[0, 0], [40, 0], [40, 50], [0, 50]]},
                                          {"label": "b", "points": [[45, 0], [90, 0], [90, 50], [45, 50]]}],
            "subcaptions": {"a": [0, 1, 2, 3, 4, 5, 6], "b": [7, 8, 9, 10, 11, 12]}, **extra}


def test_medicat_public_subcaptions_without_answer_give_crops(tmp_path):
    name = "5f2d2f2ffbd20c7ff3ac30d514da54ee5bd825b4_1-Figure1-1.png"
    (tmp_path / "figures").mkdir()
    Image.new("RGB", (100, 80), (20, 40, 60)).save(tmp_path / "figures" / name)
    (tmp_path / "subcaptions_public.jsonl").write_text(json.dumps(medicat_line(name)) + "\n")
    records = write_subfigures(tmp_path / "subcaptions_public.jsonl", tmp_path / "out")
    assert [(r["panel_label"], r["box"], r["caption"]) for r in records] == [
        ("A", [0, 0, 40, 50], "(A) Brain CT shows a bleed."), ("B", [45, 0, 90, 50], "(B) Diffusion MRI shows restriction.")]
    # the annotation tool's own export (answer + spans) still works, its rejected lines are left out
    tool = [medicat_line(name, "spans", answer="accept"), medicat_line(name, "spans", answer="reject")]
    (tmp_path / "export.jsonl").write_text("".join(json.dumps(x) + "\n" for x in tool))
    assert len(write_subfigures(tmp_path / "export.jsonl", tmp_path / "out2")) == 2


def test_medicat_lines_that_give_no_subfigure_are_refused_with_the_reasons(tmp_path, capsys):
    line = medicat_line("abc_1-Figure1-1.png", boxes_key="boxes")  # neither published key set
    (tmp_path / "other.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(AdapterError, match=r"none of its 1 line\(s\) gives a sub-figure \(1 no sub-figure boxes"):
        write_subfigures(tmp_path / "other.jsonl", tmp_path / "out")
    assert adapters_main(["medicat-subfigures", str(tmp_path / "other.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "none of its 1 line(s)" in capsys.readouterr().err


def test_open_clip_csv_files_are_tab_separated_whatever_their_name(tmp_path):
    jpg(tmp_path / "img" / "a.jpg"), jpg(tmp_path / "img" / "b.jpg", 1)
    (tmp_path / "train.csv").write_text("filepath\ttitle\nimg/a.jpg\tAxial FLAIR, left lesion.\n"
                                        "img/b.jpg\tCoronal T1.\n")
    pairs, problems = load_pairs([str(tmp_path / "train.csv")], None, 100)
    assert not problems and [p.caption for p in pairs] == ["axial flair, left lesion", "coronal t1"]
    (tmp_path / "comma.csv").write_text("filepath,title\nimg/a.jpg,\"Axial FLAIR, left lesion.\"\n")
    pairs, _ = load_pairs([str(tmp_path / "comma.csv")], None, 100)
    assert [p.caption for p in pairs] == ["axial flair, left lesion"]
    with pytest.raises(Exception, match=r"no column 'filepath'.*separator read was ','"):
        load_pairs([f"csv:{tmp_path / 'train.csv'}?sep=comma"], None, 100)
