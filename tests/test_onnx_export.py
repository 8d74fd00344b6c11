"""ONNX export of the ITC towers and the ITM head (models/export_onnx.py), run with onnxruntime, and search
from the ONNX files (models/onnx_embed.py) against the torch model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models import build_model, init_tokenizer
from models.embed import embed_images as torch_images, embed_texts as torch_texts
from models.export_onnx import check_onnx_folder, main as export_main, write_onnx_folder
from models.onnx_embed import embed_images, embed_texts, load_onnx_towers, rank
from tiny import minilm_folder, tiny_config

pytestmark = pytest.mark.slow  # the exporter traces each graph: several seconds each

TEXTS = ["axial flair mri shows a mass in the left frontal lobe", "a cyst", "normal brain",
         "ct of the head with a haemorrhage", "t2 weighted image of a glioma with surrounding oedema", "a lesion"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    config = tiny_config(folder, "retrieval", minilm_folder())
    torch.manual_seed(0)
    model = build_model(config, "retrieval", init_tokenizer(minilm_folder()), load_weights=False).eval()
    with torch.no_grad():
        for p in model.parameters():  # away from the initialisation, so that every tensor matters
            p.add_(torch.randn_like(p) * 0.05)
    out = folder / "onnx"
    files = write_onnx_folder(model, out, itm=True, max_words=30)
    return {"model": model, "out": out, "files": files, "config": config, "folder": folder}


def test_onnx_equals_torch_at_other_batch_sizes_and_text_lengths(exported):
    diffs = check_onnx_folder(exported["model"], exported["out"], batches=(1, 3, 7))
    assert set(diffs) == {"image_feat", "image_embeds", "text_feat", "itm_logits"}
    assert max(diffs.values()) < 1e-4, diffs
    config = json.loads((exported["out"] / "onnx_config.json").read_text())
    assert config["image_size"] == 32 and config["embed_dim"] == 16 and config["max_words"] == 30


def test_search_from_onnx_ranks_as_torch(exported):
    model, towers = exported["model"], load_onnx_towers(exported["out"])
    images = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    batches = [images[:5], images[5:]]
    bank_t, bank_o = torch_images(model, batches), embed_images(towers, [b.numpy() for b in batches])
    text_t, text_o = torch_texts(model, TEXTS, batch_size=4), embed_texts(towers, TEXTS, batch_size=4)
    assert bank_o.dtype == torch.float32 and bank_o.shape == (12, 16)
    assert (bank_t - bank_o).abs().max() < 1e-4 and (text_t - text_o).abs().max() < 1e-4
    for queries_t, bank_t_, queries_o, bank_o_ in ((text_t, bank_t, text_o, bank_o), (bank_t, text_t, bank_o, text_o)):
        scores_t, order_t = rank(queries_t, bank_t_, k=bank_t_.shape[0])
        scores_o, order_o = rank(queries_o, bank_o_, k=bank_o_.shape[0])
        assert torch.equal(order_t, order_o)
        assert (scores_t - scores_o).abs().max() < 1e-4


def test_itm_from_onnx_puts_enc_first_as_the_model(exported):
    model, towers = exported["model"], load_onnx_towers(exported["out"])
    images = torch.randn(2, 3, 32, 32)
    _, tokens = towers.image_features(images, tokens=True)
    logits = towers.itm_logits(tokens, TEXTS[:2])
    with torch.no_grad():
        batch = model.tokenize(TEXTS[:2])
        expected = model.itm_logits(model.encode_image(images)[0], batch["input_ids"], batch["attention_mask"])
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)


def test_towers_need_an_exported_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="models.export_onnx"):
        load_onnx_towers(tmp_path)


def test_export_command_checks_against_torch(exported, tmp_path, capsys):
    ckpt = tmp_path / "checkpoint.pth"
    torch.save({"model": exported["model"].state_dict(), "config": exported["config"], "epoch": 0}, ckpt)
    assert export_main([str(ckpt), str(tmp_path / "onnx"), "--no-itm"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert max(report["max_abs_diff_vs_torch"].values()) < 1e-4 and "itm_logits" not in report["max_abs_diff_vs_torch"]
    assert not (tmp_path / "onnx" / "itm_head.onnx").exists()
    assert export_main([str(ckpt), str(tmp_path / "onnx")]) == 2  # exists: refused


def test_predict_embeds_and_searches_from_the_onnx_files_as_from_the_checkpoint(exported, tmp_path, capsys):
    """``predict.py embed --onnx`` and ``search`` on that index give the ranking of the checkpoint's index."""
    import numpy as np
    from PIL import Image

    import predict

    ckpt = tmp_path / "checkpoint.pth"
    torch.save({"model": exported["model"].state_dict(), "config": exported["config"], "epoch": 0}, ckpt)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / f"{i}.png")
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS))
    rankings = {}
    for source in (["--checkpoint", str(ckpt)], ["--onnx", str(exported["out"])]):
        out = tmp_path / source[0].strip("-")
        assert predict.main(["embed", *source, "--images", str(images), "--texts", str(tmp_path / "texts.txt"),
                             "--out", str(out), "--device", "cpu"]) == 0
        capsys.readouterr()
        for query in (["--text", TEXTS[0]], ["--image", str(images / "2.png")]):
            assert predict.main(["search", "--index", str(out), *query, "--k", "5"]) == 0  # the index's own model
            hits = json.loads(capsys.readouterr().out)
            rankings.setdefault(query[0], []).append([h.get("image", h.get("text")) for h in hits])
    assert json.loads((tmp_path / "onnx" / "index.json").read_text())["onnx"] == str(exported["out"].resolve())
    for query, (from_torch, from_onnx) in rankings.items():
        assert from_torch == from_onnx, query
