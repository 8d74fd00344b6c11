"""The model: shapes, gradients, BERT parity, BLIP checkpoint layout, loading safety."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from models import BlipPretrain, BlipRetrieval, build_model, init_tokenizer, load_checkpoint
from models.bert_weights import load_bert_weights
from models.config import ModelSetupError
from models.vit import create_vit, interpolate_pos_embed
from tiny import minilm_folder, tiny_config


@pytest.fixture(scope="module")
def tokenizer():
    return init_tokenizer(minilm_folder())


@pytest.fixture
def pre_cfg(tmp_path, tokenizer):
    return tiny_config(tmp_path, "pretrain", minilm_folder())


@pytest.fixture
def ret_cfg(tmp_path, tokenizer):
    return tiny_config(tmp_path, "retrieval", minilm_folder())


CAPTIONS = ["axial flair mri shows a lesion in the left frontal lobe", "ct of the head", "a cyst",
            "normal brain mri without a lesion"]


def test_tokenizer_adds_dec_and_enc_like_blip(tokenizer):
    assert len(tokenizer) == 30524
    assert tokenizer.bos_token_id == 30522
    assert tokenizer.enc_token_id == 30523
    assert tokenizer.cls_token_id == 101 and tokenizer.sep_token_id == 102 and tokenizer.pad_token_id == 0


def _check_grads(model):
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} received no gradient"
            assert torch.isfinite(p.grad).all(), name
    for prefix in ("visual_encoder_m", "vision_proj_m", "text_encoder_m", "text_proj_m"):
        for name, p in getattr(model, prefix).named_parameters():
            assert not p.requires_grad and p.grad is None, f"{prefix}.{name} must not train"


def test_pretrain_forward_backward(pre_cfg, tokenizer):
    torch.manual_seed(0)
    model = build_model(pre_cfg, "pretrain", tokenizer)
    images = torch.randn(4, 3, 32, 32)
    out = model(images, CAPTIONS, alpha=0.4)
    assert set(out) == {"itc", "itm", "lm"}
    for v in out.values():
        assert v.dim() == 0 and torch.isfinite(v)
    sum(out.values()).backward()
    _check_grads(model)
    image_embeds, image_feat = model.encode_image(images)
    assert image_embeds.shape == (4, 1 + 4, 48) and image_feat.shape == (4, 16)
    assert torch.allclose(image_feat.norm(dim=-1), torch.ones(4), atol=1e-5)
    batch = model.tokenize(CAPTIONS)
    text_embeds, text_feat = model.encode_text(batch["input_ids"], batch["attention_mask"])
    width = batch["input_ids"].shape[1]  # the longest caption, not max_length 16 (dynamic padding)
    assert width < 16 and text_embeds.shape == (4, width, 32) and text_feat.shape == (4, 16)
    assert model.itm_logits(image_embeds, batch["input_ids"], batch["attention_mask"]).shape == (4, 2)


def test_retrieval_forward_backward(ret_cfg, tokenizer):
    torch.manual_seed(0)
    model = build_model(ret_cfg, "retrieval", tokenizer)
    out = model(torch.randn(4, 3, 32, 32), CAPTIONS, alpha=0.4, idx=torch.tensor([0, 0, 1, 2]))
    assert set(out) == {"itc", "itm"}
    sum(out.values()).backward()
    _check_grads(model)
    assert model.idx_queue[0, :4].tolist() == [0, 0, 1, 2]


def test_laterality_negatives_are_extra_itm_negatives(pre_cfg, tokenizer):
    torch.manual_seed(0)
    model = build_model(pre_cfg, "pretrain", tokenizer)
    batch = model.tokenize(CAPTIONS)
    swap = model.tokenize(["axial flair mri shows a lesion in the right frontal lobe"])
    image_embeds, _ = model.encode_image(torch.randn(4, 3, 32, 32))
    negs = (image_embeds.flip(0), batch["input_ids"].flip(0), batch["attention_mask"].flip(0))
    logits, labels = model.itm_loss_inputs(image_embeds, batch, *negs)
    assert logits.shape == (12, 2) and labels.tolist() == [1] * 4 + [0] * 8
    with_swap = {**batch, "swap_index": torch.tensor([0]), "swap_input_ids": swap["input_ids"],
                 "swap_attention_mask": swap["attention_mask"]}
    logits_s, labels_s = model.itm_loss_inputs(image_embeds, with_swap, *negs)
    assert logits_s.shape == (13, 2) and labels_s.tolist() == [1] * 4 + [0] * 9
    model.eval()  # no dropout: the swapped pair must be scored as the image with that caption
    logits_s, _ = model.itm_loss_inputs(image_embeds, with_swap, *negs)
    alone = model.itm_logits(image_embeds[:1], swap["input_ids"], swap["attention_mask"])
    assert torch.allclose(logits_s[-1], alone[0], atol=1e-5)
    model.train()
    out = model(torch.randn(4, 3, 32, 32), {**with_swap, "image_ids": torch.arange(4)}, alpha=0.4)
    sum(out.values()).backward()
    _check_grads(model)


def test_decoder_shares_all_but_self_attention(pre_cfg, tokenizer):
    model = BlipPretrain(pre_cfg, tokenizer)
    enc, dec = model.text_encoder, model.text_decoder.bert
    assert enc.embeddings.word_embeddings.weight is dec.embeddings.word_embeddings.weight
    assert model.text_decoder.cls.predictions.decoder.weight is enc.embeddings.word_embeddings.weight
    for le, ld in zip(enc.encoder.layer, dec.encoder.layer):
        assert le.crossattention is ld.crossattention and le.output is ld.output
        assert le.attention.self.query.weight is not ld.attention.self.query.weight


def test_queue_accepts_any_batch_size(ret_cfg, tokenizer):
    model = BlipRetrieval(ret_cfg, tokenizer)  # queue_size 12
    for n in (5, 5, 5):  # 12 is not a multiple of 5: the third batch wraps around
        model.enqueue(torch.ones(n, 16), torch.ones(n, 16), torch.arange(n))
    assert model.ptr_queue.item() == 15 % 12
    assert model.idx_queue[0].tolist() == [2, 3, 4, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    model.enqueue(torch.zeros(30, 16), torch.zeros(30, 16), torch.arange(30))  # larger than the queue
    assert model.idx_queue[0].sort().values.tolist() == list(range(18, 30))


def test_non_finite_features_never_enter_the_queue(ret_cfg, tokenizer):
    """A skipped step's NaN features keep the entries they would replace; finite rows go in as usual."""
    model = BlipRetrieval(ret_cfg, tokenizer)  # queue_size 12
    before_i, before_t, before_idx = model.image_queue.clone(), model.text_queue.clone(), model.idx_queue.clone()
    image, text = torch.ones(4, 16), torch.ones(4, 16)
    image[1, 3] = float("nan")
    text[2, 0] = float("inf")
    model.enqueue(image, text, torch.arange(4))
    assert torch.isfinite(model.image_queue).all() and torch.isfinite(model.text_queue).all()
    for col, kept in ((0, False), (1, True), (2, True), (3, False)):
        assert torch.equal(model.image_queue[:, col], before_i[:, col] if kept else torch.ones(16))
        assert torch.equal(model.text_queue[:, col], before_t[:, col] if kept else torch.ones(16))
    assert model.idx_queue[0, :4].tolist() == [0, before_idx[0, 1].item(), before_idx[0, 2].item(), 3]
    assert model.ptr_queue.item() == 4


def test_text_mode_matches_hf_bert(tmp_path):
    """Our text transformer with MiniLM's real weights equals transformers.BertModel."""
    from transformers import BertModel

    folder = minilm_folder()
    cfg = tiny_config(tmp_path, "retrieval", folder, med_config=os.path.join(folder, "config.json"))
    model = BlipRetrieval(cfg).eval()
    report = load_bert_weights(model, folder)
    assert not report["unused"], report["unused"]
    assert report["not_in_bert"] and all(".crossattention." in k for k in report["not_in_bert"])
    hf = BertModel.from_pretrained(folder).eval()
    batch = model.tokenize(["an enhancing mass in the right temporal lobe", "no lesion"])
    with torch.no_grad():
        ours, _ = model.encode_text(batch["input_ids"], batch["attention_mask"])
        ref = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    keep = batch["attention_mask"].bool()
    assert (ours - ref)[keep].abs().max().item() < 1e-4


def _hf_decoder_and_ours():
    """transformers' BertLMHeadModel with cross-attention and our decoder with the same weights by name,
    and inputs with padding and an image mask."""
    from transformers import BertConfig, BertLMHeadModel

    from models.text import TextConfig, TextDecoder

    sizes = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    hf = BertLMHeadModel(BertConfig(**sizes, is_decoder=True, add_cross_attention=True)).eval()
    ours = TextDecoder(TextConfig(**sizes, encoder_width=32)).eval()
    state = hf.state_dict()
    assert not state["bert.embeddings.token_type_embeddings.weight"].eq(0).all()
    # Our tower has no token-type table: BERT adds row 0 of it to every position; fold it into the positions.
    state["bert.embeddings.position_embeddings.weight"] = (state["bert.embeddings.position_embeddings.weight"]
                                                           + state.pop("bert.embeddings.token_type_embeddings.weight")[0])
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) == {"bert.embeddings.position_ids"}
    ids = torch.randint(1, 120, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 5:] = mask[2, 3:] = 0
    image = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(2))
    image_atts = torch.ones(3, 5, dtype=torch.long)
    image_atts[0, 4:] = 0
    return hf, ours, (ids, mask, image, image_atts)


@torch.no_grad()
def test_decoder_matches_hf_bert_lm_head_with_cross_attention():
    """The causal, image-grounded pass with the LM head (BLIP's decoder) equals transformers'
    BertLMHeadModel with cross-attention, padding and an image mask included."""
    hf, ours, (ids, mask, image, image_atts) = _hf_decoder_and_ours()
    ref = hf(input_ids=ids, attention_mask=mask, encoder_hidden_states=image, encoder_attention_mask=image_atts).logits
    assert (ours(ids, mask, image, image_atts) - ref)[mask.bool()].abs().max().item() < 1e-4


@torch.no_grad()
def test_grounded_encoder_matches_hf_bert_with_cross_attention():
    """The non-causal image-grounded pass (ITM's) equals transformers' BERT with cross-attention run
    without its causal mask; ``first_only`` gives its first position."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("transformers 4.x runs BERT's cross-attention only as a causal decoder")
    hf, ours, (ids, mask, image, image_atts) = _hf_decoder_and_ours()
    hf.config.is_decoder = False
    for layer in hf.bert.encoder.layer:
        layer.attention.self.is_causal = False
    ref_enc = hf.bert(input_ids=ids, attention_mask=mask, encoder_hidden_states=image,
                      encoder_attention_mask=image_atts).last_hidden_state
    keep = mask.bool()
    enc = ours.bert(ids, mask, image, image_atts)
    assert (enc - ref_enc)[keep].abs().max().item() < 1e-4
    assert (ours.bert(ids, mask, image, image_atts, causal=True) - ref_enc)[keep].abs().max().item() > 1e-2
    first = ours.bert(ids, mask, image, image_atts, first_only=True)
    assert first.shape == (3, 1, 32) and torch.allclose(first[:, 0], enc[:, 0], atol=1e-6)


def blip_state_shapes(cfg: dict, task: str, vocab: int = 30524) -> dict[str, tuple]:
    """BLIP's checkpoint keys and shapes (blip_spec.md §6), written out independently of our modules."""
    w, depth, p = cfg["vit"]["width"], cfg["vit"]["depth"], cfg["vit"]["patch_size"]
    n = (cfg["image_size"] // p) ** 2
    h, inter, layers, maxpos, e, q = 32, 64, 2, 64, cfg["embed_dim"], cfg["queue_size"]
    vit = {"cls_token": (1, 1, w), "pos_embed": (1, n + 1, w), "patch_embed.proj.weight": (w, 3, p, p),
           "patch_embed.proj.bias": (w,), "norm.weight": (w,), "norm.bias": (w,)}
    for i in range(depth):
        b = f"blocks.{i}."
        vit.update({b + "norm1.weight": (w,), b + "norm1.bias": (w,), b + "attn.qkv.weight": (3 * w, w),
                    b + "attn.qkv.bias": (3 * w,), b + "attn.proj.weight": (w, w), b + "attn.proj.bias": (w,),
                    b + "norm2.weight": (w,), b + "norm2.bias": (w,), b + "mlp.fc1.weight": (4 * w, w),
                    b + "mlp.fc1.bias": (4 * w,), b + "mlp.fc2.weight": (w, 4 * w), b + "mlp.fc2.bias": (w,)})
    text = {"embeddings.position_ids": (1, maxpos), "embeddings.word_embeddings.weight": (vocab, h),
            "embeddings.position_embeddings.weight": (maxpos, h), "embeddings.LayerNorm.weight": (h,),
            "embeddings.LayerNorm.bias": (h,)}
    for i in range(layers):
        for att, kv in (("attention", h), ("crossattention", w)):
            b = f"encoder.layer.{i}.{att}."
            text.update({b + "self.query.weight": (h, h), b + "self.query.bias": (h,), b + "self.key.weight": (h, kv),
                         b + "self.key.bias": (h,), b + "self.value.weight": (h, kv), b + "self.value.bias": (h,),
                         b + "output.dense.weight": (h, h), b + "output.dense.bias": (h,),
                         b + "output.LayerNorm.weight": (h,), b + "output.LayerNorm.bias": (h,)})
        b = f"encoder.layer.{i}."
        text.update({b + "intermediate.dense.weight": (inter, h), b + "intermediate.dense.bias": (inter,),
                     b + "output.dense.weight": (h, inter), b + "output.dense.bias": (h,),
                     b + "output.LayerNorm.weight": (h,), b + "output.LayerNorm.bias": (h,)})
    out = {}
    for suffix in ("", "_m"):
        out.update({f"visual_encoder{suffix}.{k}": s for k, s in vit.items()})
        out.update({f"text_encoder{suffix}.{k}": s for k, s in text.items()})
        out.update({f"vision_proj{suffix}.weight": (e, w), f"vision_proj{suffix}.bias": (e,),
                    f"text_proj{suffix}.weight": (e, h), f"text_proj{suffix}.bias": (e,)})
    out.update({"itm_head.weight": (2, h), "itm_head.bias": (2,), "temp": (), "image_queue": (e, q),
                "text_queue": (e, q)})
    if task == "pretrain":
        out["queue_ptr"] = (1,)
        out.update({f"text_decoder.bert.{k}": s for k, s in text.items()})
        out.update({"text_decoder.cls.predictions.bias": (vocab,), "text_decoder.cls.predictions.decoder.weight": (vocab, h),
                    "text_decoder.cls.predictions.decoder.bias": (vocab,),
                    "text_decoder.cls.predictions.transform.dense.weight": (h, h),
                    "text_decoder.cls.predictions.transform.dense.bias": (h,),
                    "text_decoder.cls.predictions.transform.LayerNorm.weight": (h,),
                    "text_decoder.cls.predictions.transform.LayerNorm.bias": (h,)})
    else:
        out.update({"idx_queue": (1, q), "ptr_queue": (1,)})
    return out


def _fake_blip_checkpoint(path, shapes):
    state = {k: (torch.zeros(s, dtype=torch.long) if k.endswith(("position_ids", "ptr", "queue_ptr", "ptr_queue",
                                                                      "idx_queue")) else torch.randn(s))
             for k, s in shapes.items()}
    state["text_encoder.embeddings.position_ids"] = torch.arange(64)[None]
    torch.save({"model": state, "config": {}, "epoch": 3}, path)
    return state


@pytest.mark.parametrize("task", ["pretrain", "retrieval"])
def test_state_dict_has_exactly_blips_keys_and_shapes(tmp_path, tokenizer, task):
    cfg = tiny_config(tmp_path, task, minilm_folder(), vit_grad_ckpt=True, vit_ckpt_layer=2)
    model = build_model(cfg, task, tokenizer, load_weights=False)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == blip_state_shapes(cfg, task)


def test_blip_pretrain_checkpoint_loads_into_both_models(tmp_path, tokenizer):
    cfg = tiny_config(tmp_path, "pretrain", minilm_folder())
    path = tmp_path / "model_base.pth"
    state = _fake_blip_checkpoint(path, blip_state_shapes(cfg, "pretrain"))
    model, report = load_checkpoint(BlipPretrain(cfg, tokenizer), str(path))
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert torch.equal(model.visual_encoder.blocks[1].attn.qkv.weight, state["visual_encoder.blocks.1.attn.qkv.weight"])
    ret_cfg = tiny_config(tmp_path, "retrieval", minilm_folder())
    _, report = load_checkpoint(BlipRetrieval(ret_cfg, tokenizer), str(path))
    assert sorted(report.missing_keys) == ["idx_queue", "ptr_queue"]
    assert "queue_ptr" in report.unexpected_keys and any(k.startswith("text_decoder.") for k in report.unexpected_keys)


def test_base_sizes_match_blip_key_counts(tokenizer, tmp_path):
    """At ViT-B / BERT-base sizes the state dicts have BLIP's 949 (retrieval) and 1272 (pre-training) entries."""
    for task, count in (("retrieval", 949), ("pretrain", 1272)):
        cfg = tiny_config(tmp_path, task, minilm_folder(), vit="base", image_size=224,
                          med_config="configs/med_config.json", embed_dim=256, queue_size=57600)
        with torch.device("meta"):
            model = build_model(cfg, task, tokenizer, load_weights=False)
        assert len(model.state_dict()) == count
        assert model.image_queue.shape == (256, 57600)


def test_checkpoint_round_trip_and_pos_embed_interpolation(tmp_path, tokenizer):
    cfg = tiny_config(tmp_path, "retrieval", minilm_folder())
    model = BlipRetrieval(cfg, tokenizer)
    torch.save({"model": model.state_dict()}, tmp_path / "ours.pth")
    twin, report = load_checkpoint(BlipRetrieval(cfg, tokenizer), str(tmp_path / "ours.pth"))
    assert not report.missing_keys and not report.unexpected_keys
    for (k, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), k
    big = BlipRetrieval(tiny_config(tmp_path, "retrieval", minilm_folder(), image_size=64), tokenizer)
    big, report = load_checkpoint(big, str(tmp_path / "ours.pth"))
    assert big.visual_encoder.pos_embed.shape == (1, 17, 48) and not report.missing_keys
    assert torch.equal(big.visual_encoder.pos_embed[:, 0], model.visual_encoder.pos_embed[:, 0])


def test_interpolate_197_to_577():
    pos = torch.randn(1, 197, 8)
    out = interpolate_pos_embed(pos, 576)
    assert out.shape == (1, 577, 8) and torch.equal(out[:, 0], pos[:, 0])
    assert interpolate_pos_embed(pos, 196) is pos
    # A constant grid stays constant under bicubic resizing.
    flat = torch.ones(1, 197, 8)
    assert torch.allclose(interpolate_pos_embed(flat, 576), torch.ones(1, 577, 8), atol=1e-5)


def test_grad_checkpointing_keeps_keys_and_gradients():
    torch.manual_seed(0)
    plain, _ = create_vit({"width": 48, "depth": 3, "heads": 2, "patch_size": 16}, 32)
    ckpt, _ = create_vit({"width": 48, "depth": 3, "heads": 2, "patch_size": 16}, 32, grad_ckpt=True, ckpt_layer=2)
    ckpt.load_state_dict(plain.state_dict())
    assert list(plain.state_dict()) == list(ckpt.state_dict())
    x = torch.randn(2, 3, 32, 32)
    plain(x).sum().backward()
    ckpt(x).sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_malicious_pickle_is_refused(tmp_path, tokenizer, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": _Evil()}, f, protocol=2)  # the protocol torch.load expects: only the payload is bad
    cfg = tiny_config(tmp_path, "retrieval", minilm_folder())
    with pytest.raises(RuntimeError, match="weights_only"):
        load_checkpoint(BlipRetrieval(cfg, tokenizer), str(path))
    assert not (tmp_path / "pwned_marker").exists()


def test_other_architecture_is_named(tmp_path, tokenizer):
    cfg = tiny_config(tmp_path, "retrieval", minilm_folder())
    wide = tiny_config(tmp_path, "retrieval", minilm_folder(), vit={"width": 64, "depth": 2, "heads": 2})
    torch.save({"model": BlipRetrieval(wide, tokenizer).state_dict()}, tmp_path / "wide.pth")
    with pytest.raises(ModelSetupError, match=r"visual_encoder\.cls_token"):
        load_checkpoint(BlipRetrieval(cfg, tokenizer), str(tmp_path / "wide.pth"))
    torch.save({"model": {"fc.weight": torch.zeros(3, 3)}}, tmp_path / "other.pth")
    with pytest.raises(ModelSetupError, match="does not match this model's architecture"):
        load_checkpoint(BlipRetrieval(cfg, tokenizer), str(tmp_path / "other.pth"))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(BlipRetrieval(cfg, tokenizer), str(tmp_path / "absent.pth"))


def test_checkpoint_url_is_downloaded_once_into_the_cache(tmp_path, tokenizer, monkeypatch):
    """Cached by the whole URL (two files of one name on different paths stay apart), verified before
    it enters the cache (an HTML reply is refused and not kept), and no partial file is left."""
    import functools
    import http.server
    import threading

    from models.checkpoint import cached_path

    cfg = tiny_config(tmp_path, "retrieval", minilm_folder())
    served = tmp_path / "served"
    for sub in ("a", "b"):
        (served / sub).mkdir(parents=True)
    first, second = BlipRetrieval(cfg, tokenizer), BlipRetrieval(cfg, tokenizer)
    torch.save({"model": first.state_dict()}, served / "a" / "model_base.pth")
    torch.save({"model": second.state_dict()}, served / "b" / "model_base.pth")
    (served / "html").mkdir()
    (served / "html" / "model_base.pth").write_text("<html><body>Sign in to continue</body></html>")
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MEDVL_CACHE", str(tmp_path / "cache"))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for _ in range(2):
            _, report = load_checkpoint(BlipRetrieval(cfg, tokenizer), f"{base}/a/model_base.pth")
            assert not report.missing_keys
        assert hits == ["/a/model_base.pth"]  # the second load reads the cache
        assert cached_path(f"{base}/a/model_base.pth").is_file()
        loaded, _ = load_checkpoint(BlipRetrieval(cfg, tokenizer), f"{base}/b/model_base.pth")
        assert torch.equal(loaded.itm_head.weight, second.itm_head.weight)  # not file a's weights
        assert not torch.equal(loaded.itm_head.weight, first.itm_head.weight)
        for bad in ("absent/model_base.pth", "html/model_base.pth"):
            with pytest.raises(RuntimeError, match="could not download"):
                load_checkpoint(BlipRetrieval(cfg, tokenizer), f"{base}/{bad}")
            assert not cached_path(f"{base}/{bad}").exists()
        assert sorted(p.name for p in (tmp_path / "cache" / "checkpoints").iterdir()) == \
            sorted(cached_path(f"{base}/{s}/model_base.pth").name for s in "ab")  # no partial file left
    finally:
        server.shutdown()


def test_bf16_autocast_step_is_finite(pre_cfg, tokenizer):
    model = build_model(pre_cfg, "pretrain", tokenizer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 3, 32, 32), CAPTIONS, alpha=0.4)
    loss = sum(out.values())
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_reply_that_is_no_checkpoint_is_named_and_killed_downloads_are_cleaned_up(tmp_path, monkeypatch):
    import functools
    import http.server
    import socket
    import subprocess
    import sys
    import threading
    import time

    from models.checkpoint import download_cached

    served = tmp_path / "served"
    served.mkdir()
    torch.save({"model": {"w": torch.zeros(2)}}, served / "ok.pth")
    torch.save({"model": {"w": torch.zeros(2)}}, served / "legacy.pth", _use_new_zipfile_serialization=False)
    (served / "login.pth").write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>")
    (served / "cut.pth").write_bytes(b"PK\x03\x04" + b"\x00" * 40)  # a zip archive cut short
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MEDVL_CACHE", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "checkpoints"
    cache.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    parts = {name: cache / name for name in (f".1-a.pth.part-{host}-{dead.pid}",  # its process is gone
                                             ".2-b.pth.part-elsewhere-1",  # another host's, untouched for 2 h
                                             f".3-c.pth.part-{host}-{os.getpid()}",  # still downloading
                                             ".4-d.pth.part-elsewhere-2")}  # another host's, written just now
    for path in parts.values():
        path.write_bytes(b"half a checkpoint")
    two_hours_ago = time.time() - 7200
    os.utime(parts[".2-b.pth.part-elsewhere-1"], (two_hours_ago, two_hours_ago))
    try:
        with pytest.raises(RuntimeError, match=f"from {base}/login.pth: the server returned an HTML page "
                                               r"\(\d+ bytes\), not a checkpoint") as err:
            download_cached(f"{base}/login.pth")
        assert "weights_only" not in str(err.value)  # loading it differently would not help
        with pytest.raises(RuntimeError, match=f"from {base}/cut.pth: what the server returned does not load"):
            download_cached(f"{base}/cut.pth")
        assert download_cached(f"{base}/ok.pth").is_file()
        assert download_cached(f"{base}/legacy.pth").is_file()  # torch's old format, which cannot be mapped
    finally:
        server.shutdown()
    assert sorted(p.name for p in cache.glob(".*")) == [f".3-c.pth.part-{host}-{os.getpid()}",
                                                         ".4-d.pth.part-elsewhere-2"]
