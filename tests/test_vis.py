"""Grad-CAM maps (models/gradcam.py) against a hand-written reference, and the vis.py CLI (maps, curves)."""
from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import vis  # noqa: E402
from models import build_model, init_tokenizer  # noqa: E402
from models.gradcam import default_layer, itm_gradcam, merge_words, real_token_mask, to_heatmap  # noqa: E402
from tiny import minilm_folder, tiny_config, write_text_config  # noqa: E402

LAYERS = 3
CAPTIONS = ["axial flair mri shows a hyperintense mass in the left frontal lobe", "a cyst"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny pre-training model (3 text layers, 4x4 patch grid), its checkpoint, an image and a record list."""
    folder = tmp_path_factory.mktemp("vis")
    tokenizer = init_tokenizer(minilm_folder())
    (folder / "text").mkdir()  # tiny_config writes its own 2-layer file into ``folder``
    config = tiny_config(folder, "pretrain", minilm_folder(), image_size=64,
                         med_config=write_text_config(folder / "text", layers=LAYERS))
    torch.manual_seed(0)
    model = build_model(config, "pretrain", tokenizer).eval()
    # A random ITM head gives near-zero, structureless gradients; a larger one makes the maps distinct.
    with torch.no_grad():
        model.itm_head.weight.normal_(0, 0.2)
    ckpt = folder / "checkpoint_00.pth"
    torch.save({"model": model.state_dict(), "config": config, "epoch": 0}, ckpt)
    bare = folder / "blip_style.pth"  # BLIP's own files carry no config
    torch.save({"model": model.state_dict()}, bare)
    (folder / "run.yaml").write_text(json.dumps(config))  # JSON is YAML
    rng = np.random.default_rng(0)
    (folder / "images").mkdir()
    Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(folder / "images" / "a.png")
    (folder / "test.json").write_text(json.dumps([{"image": "images/a.png", "caption": CAPTIONS}]))
    return {"folder": folder, "model": model, "config": config, "ckpt": ckpt, "bare": bare}


# -- the maps against an independent reference ---------------------------------------------------------


def _heads(x, n):
    b, length, d = x.shape
    return x.view(b, length, n, d // n).transpose(1, 2)


def _attend(att, x, context, mask, n, leaf=None):
    """BERT attention written out by hand; ``leaf`` (a list) receives the probabilities as a new leaf."""
    q, k, v = _heads(att.self.query(x), n), _heads(att.self.key(context), n), _heads(att.self.value(context), n)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + (1.0 - mask[:, None, None, :].float()) * -1e9
    probs = scores.softmax(-1)
    if leaf is not None:
        probs = probs.detach().requires_grad_(True)
        leaf.append(probs)
    out = (probs @ v).transpose(1, 2).flatten(2)
    return att.output.LayerNorm(att.output.dense(out) + x)


def reference_gradcam(model, images, ids, mask, layer):
    """Grad-CAM by a separate forward pass: d(match logit)/d(probabilities of ``layer``) by autograd on a leaf."""
    enc = model.text_encoder
    n = enc.config.num_attention_heads
    image_embeds = model.visual_encoder(images).detach()
    ids = ids.clone()
    ids[:, 0] = model.tokenizer.enc_token_id
    x = enc.embeddings(ids)
    leaf = []
    for i, lay in enumerate(enc.encoder.layer):
        x = _attend(lay.attention, x, x, mask, n)
        x = _attend(lay.crossattention, x, image_embeds, None, n, leaf if i == layer else None)
        x = lay.output.LayerNorm(lay.output.dense(torch.nn.functional.gelu(lay.intermediate.dense(x))) + x)
    logits = model.itm_head(x[:, 0])
    (grad,) = torch.autograd.grad(logits[:, 1].sum(), leaf[0])
    cam = (leaf[0] * grad.clamp(min=0)).mean(1)[..., 1:] * mask[:, :, None]
    return cam, logits.softmax(-1)[:, 1]


@pytest.mark.parametrize("layer", range(LAYERS))
def test_maps_equal_handwritten_reference(setup, layer):
    model = setup["model"]
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    batch = model.tokenize(CAPTIONS)
    cams, prob = itm_gradcam(model, images, batch["input_ids"], batch["attention_mask"], layer)
    ref, ref_prob = reference_gradcam(model, images, batch["input_ids"], batch["attention_mask"], layer)
    ref = ref.detach()
    assert cams.shape == (2, 16, 4, 4)
    assert torch.allclose(cams.flatten(2), ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()))
    assert torch.allclose(prob, ref_prob, atol=1e-6)
    pad = batch["attention_mask"] == 0
    assert pad.any() and cams[pad].abs().max() == 0
    if layer < LAYERS - 1:
        assert (ref[:, 1:] > 0).sum() > 40  # real maps at the word tokens
    else:  # past the last cross-attention only [ENC] reaches the ITM head: the words get nothing
        assert ref[:, 0].abs().max() > 0 and ref[:, 1:].abs().max() == 0


def test_layers_differ_and_state_is_left_alone(setup):
    model = setup["model"]
    batch = model.tokenize(CAPTIONS[:1])
    images = torch.randn(1, 3, 64, 64)
    first, _ = itm_gradcam(model, images, batch["input_ids"], batch["attention_mask"], 0)
    last, _ = itm_gradcam(model, images, batch["input_ids"], batch["attention_mask"], LAYERS - 2)
    assert not torch.allclose(first, last)
    # Frozen parameters, no_grad and train mode (dropout) change nothing, and the mode is restored.
    model.train()
    model.requires_grad_(False)
    try:
        with torch.no_grad():
            again, _ = itm_gradcam(model, images, batch["input_ids"], batch["attention_mask"], LAYERS - 2)
        assert model.training
    finally:
        model.requires_grad_(True)
        model.eval()
    assert torch.allclose(again, last)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match=f"layer {LAYERS} is out of range.*{LAYERS} layers"):
        itm_gradcam(model, images, batch["input_ids"], batch["attention_mask"], LAYERS)


def test_merge_words_groups_pieces_by_caption_word():
    text = "a hyperintense ring-enhancing mass, left"
    tok = init_tokenizer(minilm_folder())
    enc = tok(text, return_offsets_mapping=True)
    offsets = enc["offset_mapping"][1:-1]  # without [CLS] and [SEP]
    pieces = tok.convert_ids_to_tokens(enc["input_ids"][1:-1])
    assert pieces[1:4] == ["hyper", "##int", "##ense"]  # the case being tested: one word, three pieces
    maps = torch.arange(len(pieces), dtype=torch.float32)[:, None, None].expand(-1, 2, 2)
    words, merged = merge_words(text, offsets, maps)
    assert words == ["a", "hyperintense", "ring-enhancing", "mass,", "left"]
    assert merged[:, 0, 0].tolist() == [0.0, 2.0, 5.0, 7.5, 9.0]  # mean of the pieces' indices


def test_explain_sentence_map_is_mean_over_word_tokens(setup):
    model = setup["model"]
    image = Image.open(setup["folder"] / "images" / "a.png")
    result = vis.explain_image(model, image, "Axial FLAIR MRI shows a Mass.", layer=1)
    assert result.caption == "axial flair mri shows a mass"
    assert result.words == ["axial", "flair", "mri", "shows", "a", "mass"]
    from transform.pipeline import EvalTransform

    batch = model.tokenize([result.caption])
    cams, prob = itm_gradcam(model, EvalTransform(64)(image)[None], batch["input_ids"], batch["attention_mask"], 1)
    n = int(batch["attention_mask"].sum())
    assert torch.allclose(result.sentence_map, cams[0, 1:n - 1].mean(0))  # [ENC] and [SEP] left out
    assert real_token_mask(model, batch["input_ids"], batch["attention_mask"])[0].sum() == n - 2
    assert abs(result.match_prob - float(prob[0])) < 1e-6
    with pytest.raises(ValueError, match="empty after cleaning"):
        vis.explain_image(model, image, " .. ", layer=1)
    with pytest.raises(ValueError, match=f"layer {LAYERS - 1} is the text encoder's last.*0 to {LAYERS - 2}"):
        vis.explain_image(model, image, "a mass", layer=LAYERS - 1)


def test_heatmap_is_normalised_and_peaks_at_the_hot_patch():
    cam = torch.zeros(4, 4)
    cam[1, 2] = 3.0
    for blur in (0.0, 0.02):
        heat = to_heatmap(cam, (80, 96), blur)
        assert heat.shape == (80, 96) and float(heat.min()) == 0.0 and abs(float(heat.max()) - 1.0) < 1e-6
        y, x = divmod(int(heat.argmax()), 96)
        assert 20 <= y < 40 and 48 <= x < 72  # inside patch (row 1, col 2) of the 80x96 image
    assert [default_layer(n) for n in (12, 6, 4, 3, 2)] == [8, 4, 2, 1, 0]


# -- the CLI --------------------------------------------------------------------------------------------


def test_cli_writes_the_figure(setup, tmp_path, capsys):
    folder = setup["folder"]
    out = tmp_path / "maps.png"
    assert vis.main(["--checkpoint", str(setup["ckpt"]), "--image", str(folder / "images" / "a.png"),
                     "--caption", CAPTIONS[0], "--out", str(out), "--blur"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["layer"] == default_layer(LAYERS) and printed["words"] == len(CAPTIONS[0].split())
    assert 0.0 < printed["match_prob"] < 1.0
    assert Image.open(out).format == "PNG"
    # --data/--index with BLIP's config-less checkpoint and --config; a PDF this time.
    pdf = tmp_path / "maps.pdf"
    assert vis.main(["--checkpoint", str(setup["bare"]), "--config", str(folder / "run.yaml"),
                     "--data", str(folder / "test.json"), "--index", "0", "--tokens", "Left", "mass",
                     "--layer", "0", "--out", str(pdf)]) == 0
    assert pdf.read_bytes().startswith(b"%PDF")


def test_figure_panels_and_titles(setup):
    image = Image.open(setup["folder"] / "images" / "a.png").convert("RGB")
    result = vis.explain_image(setup["model"], image, CAPTIONS[0], layer=1)
    fig = vis.draw_maps(image, result, vis.select_words(result.words, ["LEFT", "lobe"]))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["image", "sentence (mean of words)", "left", "lobe"]
    assert vis.select_words(["a", "mass,", "and", "a", "cyst"], ["A", "mass"]) == [0, 1, 3]
    assert f"{result.match_prob:.3f}" in fig._suptitle.get_text()
    with pytest.raises(vis.VisError, match="not in the caption"):
        vis.select_words(result.words, ["tumour"])


def _run_error(argv, capsys):
    assert vis.main(argv) == 2
    return capsys.readouterr().err


def test_cli_bad_input_is_named(setup, tmp_path, capsys):
    folder, ckpt = setup["folder"], str(setup["ckpt"])
    image = str(folder / "images" / "a.png")
    err = _run_error(["--checkpoint", ckpt, "--image", str(tmp_path / "no.png"), "--caption", "x"], capsys)
    assert "no.png does not exist" in err
    assert "empty after cleaning" in _run_error(["--checkpoint", ckpt, "--image", image, "--caption", " ; "], capsys)
    wrong = tmp_path / "vit.pth"
    torch.save({"model": setup["model"].visual_encoder.state_dict()}, wrong)
    err = _run_error(["--checkpoint", str(wrong), "--image", image, "--caption", "a mass"], capsys)
    assert "vit.pth is not a BLIP pre-training or retrieval checkpoint" in err and "itm_head.weight" in err
    err = _run_error(["--checkpoint", ckpt, "--image", image, "--caption", "a mass", "--layer", "7"], capsys)
    assert "layer 7 is out of range" in err and "0 to 2" in err
    err = _run_error(["--checkpoint", ckpt, "--image", image, "--caption", "a mass", "--layer", "2"], capsys)
    assert "layer 2 is the text encoder's last" in err
    err = _run_error(["--checkpoint", ckpt, "--data", str(folder / "test.json"), "--index", "1"], capsys)
    assert "--index 1 is out of range" in err and "test.json holds 1 records" in err
    err = _run_error(["--checkpoint", str(setup["bare"]), "--image", image, "--caption", "a mass"], capsys)
    assert "blip_style.pth carries no run config" in err and "--config" in err
    err = _run_error(["--checkpoint", str(tmp_path / "none.pth"), "--image", image, "--caption", "a"], capsys)
    assert "none.pth does not exist" in err
    assert "is not a matplotlib colormap" in _run_error(["--checkpoint", ckpt, "--image", image, "--caption", "a",
                                                         "--cmap", "nope"], capsys)
    assert "must end in one of" in _run_error(["--checkpoint", ckpt, "--image", image, "--caption", "a",
                                               "--out", "x.gif"], capsys)


# -- training curves ------------------------------------------------------------------------------------


def _write_log(path, losses, lrs, r_mean=None):
    path.parent.mkdir(parents=True)
    lines = []
    for epoch, (loss, lr) in enumerate(zip(losses, lrs)):
        lines.append({"epoch": epoch, "step": 5, "global_step": 10 * epoch + 5, "train_loss": loss + 1, "train_lr": lr})
        row = {"epoch": epoch, "train_loss": loss, "train_itc": loss / 2, "train_lr": lr, "bad_records": 0}
        if r_mean is not None:
            row.update(val_r_mean=r_mean[epoch], test_txt_r1=r_mean[epoch] / 2)
        lines.append(row)
    path.write_text("\n".join(json.dumps(r) for r in lines) + '\n{"epoch": 3, "train_lo')  # a torn last line


def test_curves_overlay_runs(tmp_path, capsys):
    a, b = tmp_path / "run_a" / "log.txt", tmp_path / "run_b" / "log.txt"
    _write_log(a, [5.0, 4.0, 3.5], [1e-4, 9e-5, 8e-5])
    _write_log(b, [6.0, 4.5], [2e-4, 1.8e-4], r_mean=[10.0, 20.0])
    epochs, steps = vis.read_log(a)
    assert [r["epoch"] for r in epochs] == [0, 1, 2] and len(steps) == 3
    out = tmp_path / "curves.png"
    assert vis.main(["curves", str(a), str(b), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["runs"] == ["run_a", "run_b"]
    assert printed["keys"] == ["train_loss", "train_itc", "train_lr", "val_r_mean", "test_txt_r1"]
    assert Image.open(out).format == "PNG"
    runs = {"run_a": vis.read_log(a)[0], "run_b": vis.read_log(b)[0]}
    fig = vis.draw_curves(runs, ["train_loss", "val_r_mean"], "epoch")
    loss_lines = fig.axes[0].get_lines()
    assert [list(l.get_ydata()) for l in loss_lines] == [[5.0, 4.0, 3.5], [6.0, 4.5]]
    assert [list(l.get_xdata()) for l in fig.axes[1].get_lines()] == [[0, 1]]  # only run_b has recalls
    fig = vis.draw_curves({"run_a": vis.read_log(a)[1]}, ["train_loss"], "global_step")
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [5, 15, 25]
    assert vis.curve_keys(epochs, ["train_i*"]) == ["train_itc"]


def test_curves_bad_input(tmp_path, capsys):
    assert "missing.txt does not exist" in _run_error(["curves", str(tmp_path / "missing.txt")], capsys)
    empty = tmp_path / "log.txt"
    empty.write_text("not json\n")
    assert "holds no JSON log line" in _run_error(["curves", str(empty)], capsys)


def test_itm_attribute_bench_changes_one_attribute_at_a_time():
    import random

    from bench.probes import changed_captions
    from data.synthetic.demo import captions_for

    case = {"sequence": "T2", "lesions": [{"kind": "cyst", "side": "left", "lobe": "frontal", "size": "small"}]}
    true = captions_for(case)[0]
    changed = changed_captions(case, random.Random(0))
    assert true == "Axial T2-weighted MRI shows a small hyperintense cyst in the left frontal lobe."
    assert changed["side"] == true.replace("left", "right")
    diff = {k: [(a, b) for a, b in zip(true.split(), v.split()) if a != b] for k, v in changed.items() if k != "none"}
    assert len(diff["lobe"]) == 1 and diff["lobe"][0][0] == "frontal"
    assert diff["kind"] and all(a in ("hyperintense", "cyst") for a, _ in diff["kind"])
    assert diff["sequence"] and diff["sequence"][0][0] == "T2-weighted"
    assert "no focal abnormality" in changed["none"]


def test_itm_attribute_bench_paints_the_lesions_and_their_mirror_region():
    from bench.probes import painted

    yy, xx = np.mgrid[:40, :40]
    head = ((xx - 19.5) / 16) ** 2 + ((yy - 19.5) / 18) ** 2 <= 1
    gray = np.where(head, 100 + xx % 3, 0).astype(np.uint8)  # a textured head, median grey 101
    gray[14:18, 10:14] = 250  # a lesion on the image's left half
    lesion = gray == 250
    no_lesion, no_mirror = (np.asarray(im.convert("L")) for im in painted(gray, lesion))
    widened = np.zeros_like(lesion)
    widened[12:20, 8:16] = True  # the mask widened by 2 pixels
    assert (no_lesion[widened] == 101).all() and (no_lesion[~widened] == gray[~widened]).all()
    mirror = widened[:, ::-1]
    assert (no_mirror[mirror] == 101).all() and (no_mirror[~mirror] == gray[~mirror]).all()

    gray[14:18, 27:31] = 240  # a second lesion inside the first one's mirror region
    lesion = gray >= 240
    _, no_mirror = (np.asarray(im.convert("L")) for im in painted(gray, lesion))
    assert (no_mirror[lesion] == gray[lesion]).all()  # lesions are never painted in the control
    assert (no_mirror[mirror & ~lesion] == 101).all()


def test_token_locality_is_one_without_self_attention(setup, tmp_path):
    """With every ViT attention output zeroed, a patch token depends on its own patch only: locality 1.0."""
    import copy

    from models.gradcam import patch_token_locality
    from transform.pipeline import EvalTransform

    pixels = EvalTransform(64)(Image.open(setup["folder"] / "images" / "a.png").convert("RGB"))

    def token_locality(model, _):
        return float(np.mean(patch_token_locality(model, pixels)))

    image = None
    mixed = token_locality(setup["model"], [image])
    local = copy.deepcopy(setup["model"])
    with torch.no_grad():
        for block in local.visual_encoder.blocks:
            block.attn.proj.weight.zero_()
            block.attn.proj.bias.zero_()
    assert token_locality(local, [image]) == pytest.approx(1.0)
    assert 1 / 16 < mixed < 0.99  # the random ViT mixes its tokens, but not uniformly
