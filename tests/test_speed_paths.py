"""The fast training and evaluation paths compute the same math as the straightforward ones
(bench/reference.py: BLIP's way), within float tolerance: losses, gradients, queues, momentum weights,
evaluation scores. Also the ITM rows without a valid negative, and gradient checkpointing of the text towers."""
from __future__ import annotations

import pytest
import torch

from models import BlipPretrain, BlipRetrieval, build_model, init_tokenizer, losses
from models.evaluation import Features, fast_scores
from bench.reference import PlainPretrain, PlainRetrieval
from models.tokenizer import tokenize
from tiny import minilm_folder, tiny_config

CAPTIONS = ["axial flair mri shows a lesion in the left frontal lobe", "ct of the head", "a cyst",
            "ct of the head"]  # the last caption repeats the second: a same-text pair, never a negative


@pytest.fixture(scope="module")
def tokenizer():
    return init_tokenizer(minilm_folder())


def no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Dropout masks depend on tensor shapes, which dynamic padding changes: compare without them."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_p"):
            m.dropout_p = 0.0
    return model


def twins(cfg, tokenizer, fast_cls, plain_cls):
    torch.manual_seed(0)
    fast = no_dropout(fast_cls(cfg, tokenizer))
    plain = no_dropout(plain_cls(cfg, tokenizer))
    plain.load_state_dict(fast.state_dict())
    return fast, plain


def run_step(model, images: torch.Tensor, image_ids: torch.Tensor, swap: str | None = None) -> dict:
    """One forward + backward from the same RNG state; returns losses, gradients and buffers."""
    torch.manual_seed(1)
    batch = {**model.tokenize(CAPTIONS), "image_ids": image_ids}
    if swap is not None:
        enc = model.tokenize([swap])
        batch.update(swap_index=torch.tensor([0]), swap_input_ids=enc["input_ids"],
                     swap_attention_mask=enc["attention_mask"])
    out = model(images, batch, alpha=0.4)
    sum(out.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {"losses": {k: v.item() for k, v in out.items()}, "grads": grads, "width": batch["input_ids"].shape[1],
            "dropped": int(model.itm_dropped), "buffers": {k: v.clone() for k, v in model.named_buffers()}}


def assert_grads_close(a: dict, b: dict) -> None:
    """Per tensor, within 1e-4 of its own scale, plus 1e-6 of the largest gradient anywhere (some exact
    zeros, such as the key biases' gradients, come out as float noise of either sign)."""
    assert a.keys() == b.keys()
    scale = max(g.abs().max().item() for g in b.values())
    for name in a:
        tol = 1e-4 * b[name].abs().max().item() + 1e-6 * scale
        assert (a[name] - b[name]).abs().max().item() <= tol, name


def assert_same_step(fast: dict, plain: dict) -> None:
    assert fast["width"] < plain["width"]  # dynamic padding was in play
    for k, v in plain["losses"].items():
        assert fast["losses"][k] == pytest.approx(v, rel=1e-5), k
    assert_grads_close(fast["grads"], plain["grads"])
    for k, v in plain["buffers"].items():  # queues, their pointer, position ids
        assert torch.allclose(fast["buffers"][k].float(), v.float(), atol=1e-6), k
    assert fast["dropped"] == plain["dropped"]


@pytest.mark.parametrize("host_reads", [True, False], ids=["cpu-branch", "accelerator-branch"])
def test_pretrain_fast_step_equals_plain(tmp_path, tokenizer, monkeypatch, host_reads):
    """Also with the branch an accelerator takes (no packing, every LM position but the last), run here."""
    import models.text_fast

    monkeypatch.setattr(models.text_fast, "host_reads", lambda device: host_reads)
    cfg = tiny_config(tmp_path, "pretrain", minilm_folder())
    fast, plain = twins(cfg, tokenizer, BlipPretrain, PlainPretrain)
    images = torch.randn(4, 3, 32, 32)
    # Longer than every caption of the batch: the ITM pass pads the other texts to its width.
    swap = "axial flair mri shows a lesion in the right frontal lobe with oedema around it and mass effect"
    a = run_step(fast, images, torch.arange(4), swap)
    b = run_step(plain, images, torch.arange(4), swap)
    assert_same_step(a, b)
    for (_, p), (_, q) in zip(fast.named_parameters(), plain.named_parameters()):
        assert torch.allclose(p, q)  # momentum twins after the foreach update


def test_retrieval_fast_step_equals_plain(tmp_path, tokenizer):
    cfg = tiny_config(tmp_path, "retrieval", minilm_folder())
    fast, plain = twins(cfg, tokenizer, BlipRetrieval, PlainRetrieval)
    images = torch.randn(4, 3, 32, 32)
    assert_same_step(run_step(fast, images, torch.tensor([0, 1, 2, 1])),
                     run_step(plain, images, torch.tensor([0, 1, 2, 1])))


def test_fused_adamw_makes_the_update_of_plain_adamw(tmp_path, tokenizer):
    """Same parameters, same gradients: the project's optimizer (fused) and BLIP's (one tensor at a time)
    move every weight alike. (Through a whole step, Adam's g / sqrt(g^2) would amplify the float noise
    of gradients that are exactly zero in theory, such as the key biases'.)"""
    from bench.reference import plain_optimizer
    from engine import build_optimizer

    cfg = tiny_config(tmp_path, "pretrain", minilm_folder(), weight_decay_all=True)
    fast, plain = twins(cfg, tokenizer, BlipPretrain, PlainPretrain)
    opts = [build_optimizer(fast, cfg), plain_optimizer(plain, cfg["init_lr"], cfg["weight_decay"])]
    assert opts[0].defaults["fused"]
    for step in range(2):
        for model, opt in zip((fast, plain), opts):
            torch.manual_seed(step)
            for p in model.parameters():
                if p.requires_grad:
                    p.grad = torch.randn_like(p)
            opt.step()
    for (name, p), (_, q) in zip(fast.named_parameters(), plain.named_parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6), name


def test_foreach_momentum_update_equals_the_loop_and_skips_frozen_towers(tmp_path, tokenizer):
    cfg = tiny_config(tmp_path, "pretrain", minilm_folder())
    fast, plain = twins(cfg, tokenizer, BlipPretrain, PlainPretrain)
    for model in (fast, plain):
        torch.manual_seed(3)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.visual_encoder.requires_grad_(False)
        frozen_twin = [p.clone() for p in model.visual_encoder_m.parameters()]
        model.momentum_update()
        assert all(torch.equal(a, b) for a, b in zip(frozen_twin, model.visual_encoder_m.parameters()))
    for (name, p), (_, q) in zip(fast.named_parameters(), plain.named_parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6), name


def test_dynamic_padding_gives_the_losses_of_max_length_padding(tmp_path, tokenizer):
    cfg = tiny_config(tmp_path, "pretrain", minilm_folder())
    torch.manual_seed(0)
    model = no_dropout(BlipPretrain(cfg, tokenizer))
    state = {k: v.clone() for k, v in model.state_dict().items()}  # the step updates queues in place
    images = torch.randn(4, 3, 32, 32)
    out = []
    for pad_to_max in (True, False):
        model.load_state_dict(state)
        torch.manual_seed(1)
        batch = {**tokenize(tokenizer, CAPTIONS, 16, pad_to_max=pad_to_max), "image_ids": torch.arange(4)}
        out.append({k: v.item() for k, v in model(images, batch, alpha=0.4).items()})
    assert out[0] == pytest.approx(out[1], rel=1e-5)


def test_evaluation_scores_do_not_depend_on_padding(tmp_path, tokenizer):
    cfg = tiny_config(tmp_path, "retrieval", minilm_folder())
    torch.manual_seed(0)
    model = build_model(cfg, "retrieval", tokenizer, load_weights=False).eval()
    texts = CAPTIONS + ["normal brain mri without a lesion", "a large infarct in the right temporal lobe"]
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        embeds, image_feat = model.encode_image(images)
        scores = []
        for pad_to_max in (True, False):
            tok = tokenize(tokenizer, texts, 16, pad_to_max=pad_to_max)
            text_feat = model.encode_text(tok["input_ids"], tok["attention_mask"])[1]
            feats = Features(embeds, 0, image_feat, tok["input_ids"], tok["attention_mask"], text_feat)
            scores.append(fast_scores(model, feats, 3, torch.device("cpu"), lambda i: embeds[i], batch_size=2))
    for a, b in zip(*scores):
        assert torch.allclose(torch.from_numpy(a), torch.from_numpy(b), atol=1e-5)


def test_text_grad_ckpt_gives_the_same_gradients(tmp_path, tokenizer):
    grads = []
    for ckpt in (False, True):
        cfg = tiny_config(tmp_path, "pretrain", minilm_folder(), text_grad_ckpt=ckpt)
        torch.manual_seed(0)
        model = BlipPretrain(cfg, tokenizer)  # dropout on: checkpointing replays the same masks
        assert model.text_encoder.grad_ckpt is ckpt and model.text_decoder.bert.grad_ckpt is ckpt
        grads.append(run_step(model, torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)),
                              torch.arange(4))["grads"])
    assert_grads_close(grads[1], grads[0])


def test_rows_without_a_valid_negative_leave_the_itm_loss(tmp_path, tokenizer):
    same = torch.tensor([[True, True, False], [True, True, True], [False, True, True]])
    assert losses.has_negative(same).tolist() == [True, False, True]
    logits = torch.randn(9, 2)
    labels = losses.itm_labels(3, 6)
    keep = losses.itm_keep(losses.has_negative(same), losses.has_negative(same))
    assert keep.tolist() == [True] * 3 + [True, False, True] * 2
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert torch.allclose(losses.itm_loss(logits, labels, keep), expected)
    # A batch whose four captions are one caption: no row has a negative; only the positives count.
    cfg = tiny_config(tmp_path, "pretrain", minilm_folder())
    model = BlipPretrain(cfg, tokenizer)
    out = model(torch.randn(4, 3, 32, 32), ["a cyst"] * 4, alpha=0.4)
    assert int(model.itm_dropped) == 8 and torch.isfinite(out["itm"])


def test_queue_itc_loss_equals_itc_loss_over_the_concatenated_keys():
    """Value and gradients (online features, temperature) of the fast ITC against autograd through
    BLIP's concatenated keys, with queue entries that are positives (an id queue)."""
    gen = torch.Generator().manual_seed(0)
    b, e, q = 4, 8, 20
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=gen, dtype=torch.float64), dim=-1)
    image_feat, text_feat, image_m, text_m = unit(b, e), unit(b, e), unit(b, e), unit(b, e)
    image_queue, text_queue = unit(q, e).T.contiguous(), unit(q, e).T.contiguous()
    ids = torch.tensor([0, 1, 2, 1])
    queue_ids = torch.full((q,), -100)
    queue_ids[[3, 7]] = torch.tensor([2, 0])
    hard = losses.positive_targets(ids, torch.cat([ids, queue_ids])).double()
    results = []
    for fast in (True, False):
        x_i, x_t = image_feat.clone().requires_grad_(), text_feat.clone().requires_grad_()
        temp = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
        if fast:
            loss, s_i2t, s_t2i = losses.queue_itc_loss(x_i, x_t, temp, image_m, text_m, image_queue, text_queue,
                                                       hard, 0.4)
        else:
            text_keys, image_keys = torch.cat([text_m.T, text_queue], 1), torch.cat([image_m.T, image_queue], 1)
            s_i2t, s_t2i = x_i @ text_keys / temp, x_t @ image_keys / temp
            with torch.no_grad():
                t_i2t = losses.distilled_targets(image_m @ text_keys / temp, hard, 0.4)
                t_t2i = losses.distilled_targets(text_m @ image_keys / temp, hard, 0.4)
            loss = losses.itc_loss(s_i2t, s_t2i, t_i2t, t_t2i)
        (3.0 * loss).backward()  # an upstream factor, as a loss weight or a gradient scaler gives
        results.append((loss.detach(), s_i2t.detach(), s_t2i.detach(), x_i.grad, x_t.grad, temp.grad))
    for a, b_ in zip(*results):
        assert torch.allclose(a, b_, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # no gradient wanted: the forward alone
        loss = losses.queue_itc_loss(image_feat, text_feat, torch.tensor(0.07, dtype=torch.float64), image_m, text_m,
                                     image_queue, text_queue, hard, 0.4)[0]
    assert torch.allclose(loss, results[0][0])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_lm_loss_on_the_predicting_rows_equals_lm_loss(smoothing):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (3, 6), generator=gen)
    labels[0, 4:] = labels[2, 2:] = -100  # padding
    full = losses.lm_loss(logits, labels, smoothing)
    (g_full,) = torch.autograd.grad(full, logits)
    predicting = losses.lm_predicting(labels)
    assert predicting.sum() == (labels[:, 1:] != -100).sum() and not predicting[:, -1].any()
    part = losses.lm_loss_selected(logits[predicting], labels, predicting, smoothing)
    (g_part,) = torch.autograd.grad(part, logits)
    assert torch.allclose(full, part) and torch.allclose(g_full, g_part)
    shifted = losses.lm_loss(logits[:, :-1], labels[:, 1:], smoothing, shifted=True)
    assert torch.allclose(full, shifted)


def test_vit_class_token_only_equals_the_full_tower():
    from models.vit import create_vit

    torch.manual_seed(0)
    vit, _ = create_vit({"width": 48, "depth": 3, "heads": 3, "patch_size": 16}, 64, drop_path_rate=0.3)
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        for training in (False, True):  # drop-path draws one value per sample either way
            vit.train(training)
            torch.manual_seed(5)
            full = vit(images)[:, :1]
            torch.manual_seed(5)
            cls = vit(images, cls_only=True)
            assert cls.shape == (4, 1, 48) and torch.allclose(full, cls, atol=1e-6)


def text_tower(tmp_path, tokenizer):
    from models.text import TextConfig, TextTransformer
    from tiny import write_text_config

    cfg = TextConfig.from_json(write_text_config(tmp_path, hidden=32, layers=3))
    cfg.vocab_size, cfg.encoder_width = len(tokenizer), 24
    torch.manual_seed(0)
    return no_dropout(TextTransformer(cfg))


def outputs_and_grads(tower, run) -> tuple[torch.Tensor, dict]:
    """run(tower)'s output and every parameter's gradient of a weighted sum of it (every row counts)."""
    tower.zero_grad()
    out = run(tower)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in tower.named_parameters() if p.grad is not None}


def assert_same_outputs_and_grads(tower, fast, plain) -> None:
    (out_f, grads_f), (out_p, grads_p) = outputs_and_grads(tower, fast), outputs_and_grads(tower, plain)
    assert out_f.shape == out_p.shape
    assert torch.allclose(out_f, out_p, atol=1e-5)
    assert_grads_close(grads_f, grads_p)


@pytest.mark.parametrize("host_reads", [True, False], ids=["cpu-branch", "accelerator-branch"])
def test_skipping_padding_gives_the_same_outputs_and_gradients(tmp_path, tokenizer, monkeypatch, host_reads):
    """text_fast.first_hidden and predicting_hidden (on the CPU: computed on the unmasked positions alone,
    Packing) against the plain forward: outputs and every parameter's gradient, text and multimodal, causal
    included, with and without gradient checkpointing."""
    from models import text_fast

    monkeypatch.setattr(text_fast, "host_reads", lambda device: host_reads)
    tower = text_tower(tmp_path, tokenizer)
    tok = tokenize(tokenizer, CAPTIONS, 16)
    ids, mask = tok["input_ids"], tok["attention_mask"]
    assert text_fast.Packing.worth_it(mask) is host_reads and not text_fast.Packing.worth_it(torch.ones_like(mask))
    image = torch.randn(4, 5, 24)
    kv = lambda t: t.cross_kv(image)  # computed inside each run: its gradient counts
    select = losses.lm_predicting(ids.masked_fill(mask == 0, -100))
    rows = lambda h: h.reshape(-1, h.shape[-1])[select.reshape(-1)]
    cases = [
        (lambda t: text_fast.first_hidden(t, ids, mask), lambda t: t(ids, mask, mode="text", first_only=True)[:, 0]),
        (lambda t: text_fast.first_hidden(t, ids, mask, image_embeds=image),
         lambda t: t(ids, mask, image, first_only=True)[:, 0]),
        (lambda t: text_fast.first_hidden(t, ids, mask, cross_kv=kv(t)),
         lambda t: t(ids, mask, image, first_only=True)[:, 0]),
        (lambda t: text_fast.predicting_hidden(t, ids, mask, select, image_embeds=image),
         lambda t: rows(t(ids, mask, image, causal=True))),
        (lambda t: text_fast.predicting_hidden(t, ids, mask, select, cross_kv=kv(t)),
         lambda t: rows(t(ids, mask, image, causal=True))),
        (lambda t: text_fast.predicting_hidden(t, ids, mask, select), lambda t: rows(t(ids, mask, mode="text", causal=True))),
    ]
    for ckpt in (False, True):
        tower.grad_ckpt = ckpt
        for fast, plain in cases:
            assert_same_outputs_and_grads(tower, fast, plain)
    with pytest.raises(ValueError, match="masked positions"):
        text_fast.predicting_hidden(tower, ids, mask, torch.ones_like(mask, dtype=torch.bool))


def test_one_image_shared_by_many_texts_gives_the_itm_logits(tmp_path, tokenizer):
    """Evaluation's and zero-shot's path (one image's keys/values for every text, each text's start computed
    once) against itm_logits on the image repeated per text."""
    from models import text_fast

    cfg = tiny_config(tmp_path, "retrieval", minilm_folder())
    torch.manual_seed(0)
    model = no_dropout(build_model(cfg, "retrieval", tokenizer, load_weights=False))
    tok = tokenize(tokenizer, CAPTIONS, 16)
    ids, mask = tok["input_ids"], tok["attention_mask"]
    embeds = model.encode_image(torch.randn(1, 3, 32, 32))[0].detach()
    tower = model.text_encoder

    def one_image(t):
        return model.itm_head(text_fast.first_hidden_one_image(t, t.cross_kv(embeds), mask,
                                                               input_ids=model.enc_ids(ids)))

    # Values and gradients of the shared keys/values (train mode, dropout off), then the cached text states.
    assert_same_outputs_and_grads(tower, one_image, lambda t: model.itm_logits(embeds.expand(4, -1, -1), ids, mask))
    model.eval()
    with torch.no_grad():
        kv = tower.cross_kv(embeds)
        plain = model.itm_logits(embeds.expand(4, -1, -1), ids, mask)
        states = text_fast.text_states(tower, model.enc_ids(ids), mask)
        cached = model.itm_head(text_fast.first_hidden_one_image(tower, kv, mask, states=states))
    assert torch.allclose(plain, cached, atol=1e-5)
    with pytest.raises(ValueError, match="holds 1 rows for 4 texts"):
        model.itm_logits(None, ids, mask, cross_kv=kv)
    with pytest.raises(ValueError, match="one of the two"):
        text_fast.first_hidden_one_image(tower, kv, mask)
    with pytest.raises(ValueError, match="holds 4 images"):
        text_fast.first_hidden_one_image(tower, tower.cross_kv(embeds.expand(4, -1, -1)), mask, states=states)
    model.train()
    with pytest.raises(ValueError, match="eval mode"):
        text_fast.first_hidden_one_image(tower, kv, mask, states=states)


def test_cached_decoding_shares_one_images_keys_and_values(tmp_path, tokenizer):
    """Beams of one image: the decoder's cache steps with keys/values of batch 1 for every row equal those
    with the keys/values repeated per row."""
    from models.text import TextDecoder

    tower = text_tower(tmp_path, tokenizer)
    decoder = no_dropout(TextDecoder(tower.config, shared=tower)).eval()
    ids = torch.randint(1000, 2000, (3, 6), generator=torch.Generator().manual_seed(0))
    kv = decoder.bert.cross_kv(torch.randn(1, 5, 24))
    repeated = [(k.expand(3, -1, -1, -1).contiguous(), v.expand(3, -1, -1, -1).contiguous()) for k, v in kv]
    with torch.no_grad():
        outs = []
        for shared in (kv, repeated):
            logits, past = decoder.forward_cached(ids[:, :2], cross_kv=shared)
            steps = [logits]
            for t in range(2, 6):
                logits, past = decoder.forward_cached(ids[:, t:t + 1], past, cross_kv=shared)
                steps.append(logits)
            outs.append(torch.cat(steps, 1))
        full = decoder.cls.predictions(decoder.bert(ids, torch.ones_like(ids), causal=True, cross_kv=repeated))
    assert torch.allclose(outs[0], full, atol=1e-5) and torch.allclose(outs[1], full, atol=1e-5)
