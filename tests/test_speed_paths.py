"""The fast training and evaluation paths compute the same math as the straightforward ones
(models/reference.py: BLIP's way), within float tolerance: losses, gradients, queues, momentum weights,
evaluation scores. Also the ITM rows without a valid negative, and gradient checkpointing of the text towers."""
from __future__ import annotations

import pytest
import torch

from models import BlipPretrain, BlipRetrieval, build_model, init_tokenizer, losses
from models.evaluation import Features, fast_scores
from models.reference import PlainPretrain, PlainRetrieval
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


def test_pretrain_fast_step_equals_plain(tmp_path, tokenizer):
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
    from models.reference import plain_optimizer
    from utils import build_optimizer

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
