"""split_figures.py end to end on built compound figures, bad input, and the article-grouped splits."""
from __future__ import annotations

import json
import random

import pytest
from PIL import Image

import split_figures
from data.figures import Panel
from data.figures.pairing import panels_at
from data.figures.splits import article_key, karpathy_splits, parse_fractions
from bench.compound_synth import build, load_tiles


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy)


@pytest.fixture
def dataset(tmp_path, fixtures_dir):
    """captions.json with two built compound figures, one single image and three bad records."""
    tiles = load_tiles(fixtures_dir / "image_caption")
    rng = random.Random(7)
    (tmp_path / "images").mkdir()
    records = []
    for i, layout in enumerate(("grid", "black")):
        fig = build(tiles, layout, rng, tile_w=140)
        name = f"images/PMC10{i}_fig1.png"
        fig.image.save(tmp_path / name)
        letters = fig.labels
        caption = "Brain imaging. " + " ".join(f"({x}) View {x.lower()} of the lesion." for x in letters) + " (Z) Missing."
        records.append({"image": name, "caption": caption, "pmcid": f"PMC10{i}", "truth": [list(b) for b in fig.boxes]})
    tiles[0].save(tmp_path / "images" / "PMC200_fig2.png")
    records.append({"image": "images/PMC200_fig2.png", "caption": "Axial MRI.", "pmcid": "PMC200"})
    (tmp_path / "images" / "PMC300_fig1.png").write_bytes(b"not an image")
    records.append({"image": "images/PMC300_fig1.png", "caption": "(A) x. (B) y.", "pmcid": "PMC300"})
    records.append({"image": "images/PMC400_fig1.png", "pmcid": "PMC400"})
    records.append("not a record")
    (tmp_path / "captions.json").write_text(json.dumps(records))
    return tmp_path, records


def test_cli_end_to_end(dataset):
    root, records = dataset
    out = root / "sub"
    rc = split_figures.main(["--in", str(root / "captions.json"), "--out", str(out), "--ocr", "rapidocr",
                             "--splits", "0.5,0.25,0.25", "--seed", "1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["figures"], summary["failed"]) == (6, 3)
    assert summary["matched"] + summary["fallback"] == 3
    assert summary["labels_without_panel"] >= 2  # (Z) in both captions
    failed = json.loads((out / "failed.json").read_text())
    reasons = " ".join(f["reason"] for f in failed)
    assert "PMC300_fig1.png" in reasons and "'caption' is missing" in reasons and "not an object" in reasons
    rows = json.loads((out / "subfigures.json").read_text())
    crops = [r for r in rows if r["panel_label"]]
    n_panels = sum(len(rec["truth"]) for rec in records[:2])
    assert len(crops) >= n_panels - 1  # at most one letter unread
    for r in crops:
        truth = next(rec["truth"] for rec in records[:2] if rec["image"] == r["parent_image"])
        want = truth[ord(r["panel_label"]) - ord("A")]  # letters were drawn A, B, ... in box order
        assert _iou(want, r["box"]) >= 0.8, (r["panel_label"], want, r["box"])
        assert r["caption"] == f"Brain imaging. View {r['panel_label'].lower()} of the lesion."
        with Image.open(out / r["image"]) as im:
            assert im.size == (r["box"][2] - r["box"][0], r["box"][3] - r["box"][1])
    single = [r for r in rows if r["parent_image"] == "images/PMC200_fig2.png"]
    assert len(single) == 1 and single[0]["caption"] == "Axial MRI." and single[0]["panel_label"] is None
    assert (out / single[0]["image"]).resolve() == (root / "images" / "PMC200_fig2.png").resolve()
    splits = {n: json.loads((out / f"{n}.json").read_text()) for n in ("train", "val", "test")}
    assert all({"image", "caption", "image_id"} == set(e) for e in splits["train"])
    assert all(isinstance(e["caption"], list) for e in splits["val"] + splits["test"])
    assert sum(len(e["caption"]) for e in splits["val"] + splits["test"]) + len(splits["train"]) == len(rows)


def test_cli_without_ocr_pairs_by_order_only_when_asked(dataset):
    root, _ = dataset
    plain, ordered = root / "plain", root / "ordered"
    assert split_figures.main(["--in", str(root / "captions.json"), "--out", str(plain), "--ocr", "none"]) == 0
    assert json.loads((plain / "summary.json").read_text())["matched"] == 0
    args = ["--in", str(root / "captions.json"), "--out", str(ordered), "--ocr", "none", "--order-fallback"]
    assert split_figures.main(args) == 0
    # The captions name one letter more ("Z") than there are panels, so order pairing must refuse.
    assert json.loads((ordered / "summary.json").read_text())["matched"] == 0


def test_cli_gcv_without_credentials(dataset, monkeypatch, caplog):
    root, _ = dataset
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(root / "absent.json"))
    rc = split_figures.main(["--in", str(root / "captions.json"), "--out", str(root / "g"), "--ocr", "gcv"])
    assert rc == 2 and "GOOGLE_APPLICATION_CREDENTIALS" in caplog.text


def test_bad_splits_argument(dataset):
    root, _ = dataset
    assert split_figures.main(["--in", str(root / "captions.json"), "--out", str(root / "x"), "--splits", "0.8,0.3"]) == 2
    with pytest.raises(ValueError):
        parse_fractions("0.5,0.6,-0.1")


def test_splits_keep_articles_apart():
    rng = random.Random(0)
    records = [{"image": f"sub/PMC{a}_fig{f}_{p}.png", "caption": f"c{a}{f}{p}", "pmcid": f"PMC{a}"}
               for a in range(40) for f in range(rng.randint(1, 3)) for p in "AB"]
    splits = karpathy_splits(records, (0.8, 0.1, 0.1), seed=3)
    owners = {}
    for name, rows in splits.items():
        for row in rows:
            owners.setdefault(row["image"].split("_")[0], set()).add(name)
    assert all(len(v) == 1 for v in owners.values())
    n_train = len(splits["train"])
    assert 0.6 < n_train / len(records) < 0.95 and splits["val"] and splits["test"]
    assert karpathy_splits(records, (0.8, 0.1, 0.1), seed=3) == splits
    assert karpathy_splits(records, (0.8, 0.1, 0.1), seed=4) != splits
    assert article_key({"parent_image": "images/PMC9_fig2.jpg", "image": "x"}) == "PMC9"


def test_positions_name_panels():
    grid = [Panel((0, 0, 10, 10)), Panel((12, 0, 22, 10)), Panel((0, 12, 10, 22)), Panel((12, 12, 22, 22))]
    assert panels_at("TOP", grid) == grid[:2]
    assert panels_at("RIGHT", grid) == [grid[1], grid[3]]
    assert panels_at("BOTTOM LEFT", grid) == [grid[2]]
    assert panels_at("MIDDLE", grid) == []  # no middle row or column in a 2 x 2 grid


def test_cli_order_fallback_pairs_panels_in_reading_order(tmp_path, fixtures_dir):
    """Without OCR, --order-fallback pairs caption letters with panels in reading order when their
    numbers agree; a figure whose caption names one letter more keeps the whole-figure fallback."""
    tiles = load_tiles(fixtures_dir / "image_caption")
    rng = random.Random(11)
    (tmp_path / "images").mkdir()
    records, truths = [], {}
    for i, layout in enumerate(("grid", "tall-left")):
        fig = build(tiles, layout, rng, tile_w=140)
        name = f"images/PMC50{i}_fig1.png"
        fig.image.save(tmp_path / name)
        letters = fig.labels + (["Z"] if i == 1 else [])  # the second caption cannot be paired by order
        caption = "Chest CT. " + " ".join(f"({x}) Slice {x.lower()} of the scan." for x in letters)
        records.append({"image": name, "caption": caption, "pmcid": f"PMC50{i}"})
        truths[name] = dict(zip(fig.labels, fig.boxes))
    (tmp_path / "captions.json").write_text(json.dumps(records))

    ordered = tmp_path / "ordered"
    args = ["--in", str(tmp_path / "captions.json"), "--out", str(ordered), "--ocr", "none", "--order-fallback"]
    assert split_figures.main(args) == 0
    summary = json.loads((ordered / "summary.json").read_text())
    assert (summary["matched"], summary["fallback"], summary["paired_by_order"]) == (1, 1, 1)
    rows = json.loads((ordered / "subfigures.json").read_text())
    first = [r for r in rows if r["parent_image"] == records[0]["image"]]
    truth = truths[records[0]["image"]]
    assert [r["panel_label"] for r in first] == list(truth)  # one crop per panel, A, B, ... in order
    for r in first:
        assert _iou(truth[r["panel_label"]], r["box"]) >= 0.8, (r["panel_label"], r["box"])
        assert r["caption"] == f"Chest CT. Slice {r['panel_label'].lower()} of the scan."
        with Image.open(ordered / r["image"]) as im:
            assert im.size == (r["box"][2] - r["box"][0], r["box"][3] - r["box"][1])
    second = [r for r in rows if r["parent_image"] == records[1]["image"]]
    assert len(second) == 1 and second[0]["panel_label"] is None and second[0]["caption"] == records[1]["caption"]

    plain = tmp_path / "plain"
    assert split_figures.main(["--in", str(tmp_path / "captions.json"), "--out", str(plain), "--ocr", "none"]) == 0
    summary = json.loads((plain / "summary.json").read_text())
    assert (summary["matched"], summary["fallback"]) == (0, 2) and "paired_by_order" not in summary
    assert all(r["panel_label"] is None for r in json.loads((plain / "subfigures.json").read_text()))


def test_transparent_figure_is_split_on_white(tmp_path):
    """A PNG drawn on a transparent ground (black where hidden) is split as a page shows it: on white."""
    import numpy as np

    rgba = np.zeros((200, 300, 4), dtype=np.uint8)
    rgba[20:180, 20:130, 3] = 255
    rgba[20:180, 170:280, 3] = 255
    (tmp_path / "images").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "images" / "PMC7_fig1.png")
    records = [{"image": "images/PMC7_fig1.png", "caption": "Masks. (A) Left mask. (B) Right mask.", "pmcid": "PMC7"}]
    (tmp_path / "captions.json").write_text(json.dumps(records))
    out = tmp_path / "out"
    args = ["--in", str(tmp_path / "captions.json"), "--out", str(out), "--ocr", "none", "--order-fallback"]
    assert split_figures.main(args) == 0
    rows = json.loads((out / "subfigures.json").read_text())
    assert [(r["panel_label"], r["box"]) for r in rows] == [("A", [20, 20, 130, 180]), ("B", [170, 20, 280, 180])]
