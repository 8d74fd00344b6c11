"""The field's dataset layouts (ROCO, ROCOv2, PMC-OA, MedICaT, CSV/TSV), each written here in its
public layout, read into pair records, and used by the datasets, the converters and a training run."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import pretrain
from data import adapters
from data.adapters.__main__ import main as adapters_main
from data.datasets import DatasetError, RetrievalEvalDataset, load_pairs
from tests.test_adapter_layouts import medicat_line
from tiny import demo_set, tiny_config
from utils import save_config


def png(path: Path, seed: int = 0, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (seed * 40 % 256, 90, 160)).save(path)
    return path


def test_roco_folders_with_fetch_names_and_id_names(tmp_path):
    rad = tmp_path / "data" / "train" / "radiology"
    non = tmp_path / "data" / "train" / "non-radiology"
    rad.mkdir(parents=True), non.mkdir(parents=True)
    (rad / "captions.txt").write_text("ROCO_00020\t Axial CT of the pelvis.\nROCO_00027\t Postoperative radiograph.\n"
                                      "ROCO_00059\t Missing image.\n", encoding="utf-8")
    (rad / "dlinks.txt").write_text(
        "ROCO_00020\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/69/93/PMC3498864.tar.gz -P /path/to/Dir\tjovr-04-256f2.jpg\n"
        "ROCO_00027\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/7d/5a/PMC4299014.tar.gz -P /path/to/Dir\tgr2.jpg\n")
    png(rad / "images" / "PMC3498864_jovr-04-256f2.jpg"), png(rad / "images" / "PMC4299014_gr2.jpg", 1)
    (non / "captions_fp_train_revised.txt").write_text("ROCO_81834\t A bar chart.\n", encoding="utf-8")
    png(non / "images" / "ROCO_81834.jpg", 2)
    pairs, problems = load_pairs([f"roco:{tmp_path / 'data' / 'train'}"], None, 100)
    assert [(p.caption, p.image.name) for p in pairs] == [("a bar chart", "ROCO_81834.jpg"),
                                                          ("axial ct of the pelvis", "PMC3498864_jovr-04-256f2.jpg"),
                                                          ("postoperative radiograph", "PMC4299014_gr2.jpg")]
    assert len(problems) == 1 and "captions.txt:3" in problems[0] and "does not exist" in problems[0]
    (_, first), = adapters.read_pairs(f"roco:{rad}")[:1]
    assert (first["image_id"], first["pmcid"], first["category"]) == ("ROCO_00020", "PMC3498864", "radiology")
    (rad / "captions.txt").write_text("no tab here\n")
    with pytest.raises(DatasetError, match=r"captions.txt:1: expected 'ROCO_ID<TAB>caption'"):
        load_pairs([f"roco:{rad}"], None, 100)


def test_rocov2_captions_csv_with_concepts(tmp_path):
    with open(tmp_path / "valid_captions.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["ID", "Caption"], ["ROCOv2_2023_valid_000001", "Head CT, axial, showing a bleed."],
                                  ["ROCOv2_2023_valid_000002", "Chest X-ray."]])
    (tmp_path / "valid_concepts.csv").write_text("ID,CUIs\nROCOv2_2023_valid_000001,C0040405;C0817096\n")
    for i in (1, 2):
        png(tmp_path / "valid" / f"ROCOv2_2023_valid_00000{i}.jpg", i)
    rows = [r for _, r in adapters.read_pairs(f"rocov2:{tmp_path / 'valid_captions.csv'}")]
    assert [r["image_id"] for r in rows] == ["ROCOv2_2023_valid_000001", "ROCOv2_2023_valid_000002"]
    assert rows[0]["cuis"] == ["C0040405", "C0817096"] and Path(rows[1]["image"]).is_file()
    evaluation = RetrievalEvalDataset(f"rocov2:{tmp_path / 'valid_captions.csv'}", lambda im: im, None, 50)
    assert len(evaluation) == 2 and evaluation.text[0] == "head ct, axial, showing a bleed"


def test_pmc_oa_jsonl_and_a_bad_line(tmp_path):
    lines = [{"image": "PMC212319_Fig3_4.jpg", "caption": "A. Real time image of ARF1-GFP.", "pmcid": "PMC212319",
              "url_name": "1471-2121-4-13-3.jpg"},
             {"caption": "no image key", "pmcid": "PMC1"},
             {"image": "PMC5_Fig1_1.jpg", "caption": "Axial MRI.", "pmcid": "PMC5"}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    png(tmp_path / "caption_T060_filtered_top4_sep_v0_subfigures" / "PMC212319_Fig3_4.jpg")
    png(tmp_path / "caption_T060_filtered_top4_sep_v0_subfigures" / "PMC5_Fig1_1.jpg", 1)
    for spec in (str(tmp_path / "train.jsonl"), f"pmc-oa:{tmp_path / 'train.jsonl'}"):  # no prefix needed
        pairs, problems = load_pairs([spec], None, 100)
        assert [p.caption for p in pairs] == ["a real time image of arf1-gfp", "axial mri"]
        assert len(problems) == 1 and "train.jsonl:2" in problems[0] and "'image' is missing" in problems[0]
    with pytest.raises(DatasetError, match="unknown option"):
        load_pairs([f"pmc-oa:{tmp_path / 'train.jsonl'}?image_dir=x"], None, 100)


def test_medicat_figures_and_subfigure_annotations(tmp_path, fixtures_dir):
    sample = fixtures_dir / "image_caption" / "sample.jsonl"
    rows = [r for _, r in adapters.read_pairs(f"medicat:{sample}?images={fixtures_dir / 'image_caption'}")]
    assert len(rows) == 10 and all(Path(r["image"]).is_file() for r in rows)
    first = json.loads(sample.read_text().splitlines()[0])
    assert rows[0]["caption"] == first["s2orc_caption"] and rows[0]["image_id"] == f"{first['pdf_hash']}_{first['fig_uri']}"

    name = "5f2d2f2ffbd20c7ff3ac30d514da54ee5bd825b4_1-Figure1-1.png"
    (tmp_path / "figures").mkdir()
    shutil.copy(fixtures_dir / "image_caption" / name, tmp_path / "figures" / name)
    annotation = medicat_line(name, "spans", answer="accept")  # the annotation tool's export
    rejected = {**annotation, "answer": "reject"}
    (tmp_path / "subfig.jsonl").write_text(json.dumps(annotation) + "\n" + json.dumps(rejected) + "\n")
    out = tmp_path / "sub"
    assert adapters_main(["medicat-subfigures", str(tmp_path / "subfig.jsonl"), "--out", str(out)]) == 0
    records = json.loads((out / "subfigures.json").read_text())
    assert [(r["panel_label"], r["box"], r["caption"]) for r in records] == [
        ("A", [0, 0, 40, 50], "(A) Brain CT shows a bleed."), ("B", [45, 0, 90, 50], "(B) Diffusion MRI shows restriction.")]
    with Image.open(out / records[1]["image"]) as im:
        assert im.size == (45, 50)


def test_csv_and_tsv_with_open_clip_column_options(tmp_path):
    png(tmp_path / "img" / "a.png"), png(tmp_path / "img" / "b.png", 1)
    (tmp_path / "pairs.tsv").write_text("filepath\ttitle\tsource\nimg/a.png\tAxial FLAIR.\tx\nimg/b.png\tCoronal T1.\ty\n")
    (tmp_path / "pairs.csv").write_text("path,text\nimg/a.png,\"Axial, FLAIR.\"\n")
    pairs, problems = load_pairs([str(tmp_path / "pairs.tsv")], None, 100)
    assert [p.caption for p in pairs] == ["axial flair", "coronal t1"] and not problems
    spec = f"csv:{tmp_path / 'pairs.csv'}?img_key=path&caption_key=text"
    (where, row), = adapters.read_pairs(spec)
    assert row["caption"] == "Axial, FLAIR." and where.endswith("pairs.csv:2") and Path(row["image"]).is_file()
    with pytest.raises(DatasetError, match=r"no column 'filepath' \(columns: \['path', 'text'\]\); set img_key="):
        load_pairs([str(tmp_path / "pairs.csv")], None, 100)
    out = tmp_path / "converted" / "pairs.json"
    assert adapters_main([spec, "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == [{"image": "../img/a.png", "caption": "Axial, FLAIR."}]


def test_pretraining_reads_a_layout_from_its_config(tmp_path):
    demo = demo_set(tmp_path / "d")
    records = json.loads((demo / "pretrain.json").read_text())
    with open(tmp_path / "pairs.tsv", "w", encoding="utf-8") as fh:
        fh.write("filepath\ttitle\n" + "".join(f"{demo / r['image']}\t{r['caption']}\n" for r in records))
    cfg = tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"), train_file=[f"csv:{tmp_path / 'pairs.tsv'}"])
    save_config(cfg, tmp_path / "c.yaml")
    assert pretrain.main(["--config", str(tmp_path / "c.yaml"), "--output_dir", str(tmp_path / "out")]) == 0
    line = json.loads((tmp_path / "out" / "log.txt").read_text().splitlines()[-1])
    assert line["epoch"] == 0 and line["bad_records"] == 0
