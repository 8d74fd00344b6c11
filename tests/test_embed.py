"""Embeddings for search (models/embed.py), `predict.py embed` and `predict.py search`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from models import build_model, init_tokenizer
from models.embed import embed_images, embed_texts, rank
from tiny import minilm_folder, tiny_config

TEXTS = ["axial flair mri shows a mass", "a cyst", "normal brain", "ct of the head with a haemorrhage"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embed")
    config = tiny_config(folder, "retrieval", minilm_folder())
    torch.manual_seed(0)
    model = build_model(config, "retrieval", init_tokenizer(minilm_folder())).eval()
    ckpt = folder / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "config": config, "epoch": 0}, ckpt)
    rng = np.random.default_rng(0)
    (folder / "images" / "sub").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "sub/c.png"):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(folder / "images" / name)
    (folder / "texts.txt").write_text("\n".join(TEXTS) + "\n\n")
    return {"folder": folder, "model": model, "ckpt": ckpt, "config": config}


def test_features_are_the_itc_features_and_batching_does_not_change_them(setup):
    model = setup["model"]
    images = torch.randn(5, 3, 32, 32)
    feats = embed_images(model, [images[:2], images[2:]])
    with torch.no_grad():
        torch.testing.assert_close(feats, model.encode_image(images)[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(5))
    one, three = embed_texts(model, TEXTS, batch_size=1), embed_texts(model, TEXTS, batch_size=3)
    torch.testing.assert_close(one, three, atol=1e-5, rtol=1e-4)
    assert one.shape == (4, 16) and one.dtype == torch.float32
    seen = []
    embed_texts(model, TEXTS, batch_size=3, progress=lambda it: seen.append(list(it)) or seen[-1])
    assert seen == [[0, 3]]


def test_rank_orders_by_cosine_and_refuses_other_widths():
    bank = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    scores, index = rank(bank[2], bank, k=3)
    assert index[0, 0].item() == 2 and scores[0, 0].item() == pytest.approx(1.0)
    assert (scores[0, :-1] >= scores[0, 1:]).all()
    assert rank(bank[:2], bank, k=10)[1].shape == (2, 6)
    with pytest.raises(ValueError, match="different models"):
        rank(torch.randn(5), bank)


def test_embed_then_search_both_ways(setup, tmp_path, capsys):
    folder, out = setup["folder"], tmp_path / "index"
    assert predict.main(["embed", "--checkpoint", str(setup["ckpt"]), "--images", str(folder / "images"),
                     "--texts", str(folder / "texts.txt"), "--out", str(out), "--batch_size", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "out": str(out), "images": 3, "texts": 4, "embed_dim": 16}
    index = json.loads((out / "index.json").read_text())
    assert [p.split("images/")[1] for p in index["images"]] == ["a.jpg", "b.png", "sub/c.png"]
    assert index["texts"] == TEXTS
    image_embeds, text_embeds = np.load(out / "image_embeds.npy"), np.load(out / "text_embeds.npy")
    assert image_embeds.shape == (3, 16) and text_embeds.shape == (4, 16) and image_embeds.dtype == np.float32

    assert predict.main(["search", "--index", str(out), "--text", TEXTS[1], "--k", "2"]) == 0
    hits = json.loads(capsys.readouterr().out)
    expected = np.argsort(-(image_embeds @ text_embeds[1]))[:2]
    assert [h["image"] for h in hits] == [index["images"][i] for i in expected]
    assert hits[0]["rank"] == 1 and hits[0]["score"] == pytest.approx(float((image_embeds @ text_embeds[1]).max()),
                                                                      abs=1e-4)

    assert predict.main(["search", "--index", str(out), "--image", index["images"][0]]) == 0
    hits = json.loads(capsys.readouterr().out)
    expected = np.argsort(-(text_embeds @ image_embeds[0]))
    assert [h["text"] for h in hits] == [TEXTS[i] for i in expected]


def test_embed_and_search_bad_input_is_named(setup, tmp_path, capsys):
    ckpt = str(setup["ckpt"])
    assert predict.main(["embed", "--checkpoint", ckpt, "--out", str(tmp_path / "o")]) == 2
    assert "give --images, --texts or both" in capsys.readouterr().err
    assert predict.main(["embed", "--checkpoint", ckpt, "--images", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "neither an image, a folder nor a JSON list" in capsys.readouterr().err
    assert predict.main(["search", "--index", str(tmp_path), "--text", "a"]) == 2
    assert "holds no index.json" in capsys.readouterr().err
    only_texts = tmp_path / "t"
    assert predict.main(["embed", "--checkpoint", ckpt, "--texts", str(setup["folder"] / "texts.txt"),
                     "--out", str(only_texts)]) == 0
    capsys.readouterr()
    assert predict.main(["search", "--index", str(only_texts), "--text", "a"]) == 2
    assert "holds no images to rank" in capsys.readouterr().err


def test_embed_takes_every_slice_of_a_volume(setup, tmp_path, capsys):
    nib = pytest.importorskip("nibabel")
    volume = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((12, 14, 5), dtype=np.float32), np.eye(4)), str(volume))
    out = tmp_path / "vol"
    assert predict.main(["embed", "--checkpoint", str(setup["ckpt"]), "--images", str(volume), "--slice", "axial:all",
                     "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 5
    index = json.loads((out / "index.json").read_text())
    assert index["images"] == [f"{volume}#axial:{k}" for k in range(5)]
    assert predict.main(["search", "--index", str(out), "--image", str(volume), "--slice", "axial:2", "--k", "1",
                     "--target", "images"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"rank": 1, "score": pytest.approx(1.0, abs=1e-4),
                                                   "image": f"{volume}#axial:2"}]
