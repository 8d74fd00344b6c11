"""Captions from the decoder (models/generate.py): the key/value cache, greedy, beam search, sampling."""
from __future__ import annotations

import pytest
import torch

from models import build_model, init_tokenizer
from models.generate import _beam_search, generate, generate_ids, prompt_ids, repetition_penalty_, top_k_top_p
from tiny import minilm_folder, tiny_config

CAPTION = "axial flair mri shows a large mass in the left frontal lobe"


@pytest.fixture(scope="module")
def tokenizer():
    return init_tokenizer(minilm_folder())


@pytest.fixture(scope="module")
def model(tmp_path_factory, tokenizer):
    cfg = tiny_config(tmp_path_factory.mktemp("gen"), "pretrain", minilm_folder(), max_length=24)
    torch.manual_seed(0)
    return build_model(cfg, "pretrain", tokenizer).eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer):
    """A tiny decoder trained on one image and one caption until it has learnt the caption."""
    cfg = tiny_config(tmp_path_factory.mktemp("gen_trained"), "pretrain", minilm_folder(), max_length=24)
    torch.manual_seed(0)
    m = build_model(cfg, "pretrain", tokenizer)
    image = torch.randn(1, 3, 32, 32)
    batch = m.tokenize([CAPTION])
    ids = batch["input_ids"].clone()
    ids[:, 0] = tokenizer.bos_token_id
    labels = ids.masked_fill(batch["attention_mask"] == 0, -100)
    params = list(m.text_decoder.parameters()) + list(m.visual_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)

    def loss_now():
        logits = m.text_decoder(ids, batch["attention_mask"], m.encode_image(image)[0])
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())

    m.train()
    for _ in range(100):
        loss = loss_now()
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        return m, image, float(loss_now())


def test_cached_step_logits_equal_the_full_causal_pass(model):
    torch.manual_seed(1)
    image_embeds = model.encode_image(torch.randn(2, 3, 32, 32))[0]
    ids = torch.randint(1000, 2000, (2, 7))
    full = model.text_decoder(ids, torch.ones_like(ids), image_embeds)
    logits, past = model.text_decoder.forward_cached(ids[:, :3], image_embeds=image_embeds)  # a 3-token prompt
    steps = [logits]
    for t in range(3, 7):
        logits, past = model.text_decoder.forward_cached(ids[:, t:t + 1], past, image_embeds=image_embeds)
        steps.append(logits)
    assert past[0][0].shape[2] == 7
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", [dict(num_beams=1), dict(num_beams=3), dict(top_p=0.9, repetition_penalty=1.1)])
def test_cached_and_uncached_decoding_give_the_same_tokens(model, tokenizer, mode):
    torch.manual_seed(2)
    image_embeds = model.encode_image(torch.randn(3, 3, 32, 32))[0]
    start = prompt_ids(tokenizer, "axial")
    out = {}
    for cache in (True, False):
        gen = torch.Generator().manual_seed(5)
        out[cache] = generate_ids(model.text_decoder, image_embeds, start, tokenizer.sep_token_id,
                                  tokenizer.pad_token_id, max_length=12, min_length=4, use_cache=cache,
                                  generator=gen, **mode)
    assert torch.equal(out[True], out[False])
    assert out[True].shape[0] == 3 and (out[True][:, :2] == start).all()


def test_greedy_and_beam_decoding_reproduce_the_trained_caption(trained):
    m, image, loss = trained
    assert loss < 0.5, f"the tiny decoder did not learn its caption (loss {loss:.3f})"
    assert generate(m, image, num_beams=1, max_length=24, min_length=1) == [CAPTION]
    assert generate(m, image, num_beams=3, max_length=24, min_length=1) == [CAPTION]
    assert generate(m, image, num_beams=3, use_cache=False, max_length=24, min_length=1) == [CAPTION]


def test_prompt_is_kept_out_of_the_caption_and_lengths_count_it(trained, tokenizer):
    m, image, _ = trained
    assert generate(m, image, prompt="axial flair", num_beams=1, max_length=24) == [CAPTION[len("axial flair "):]]
    # max_length counts [DEC] and the prompt: 6 tokens leave room for 5 words after [DEC]
    short = generate(m, image, num_beams=1, max_length=6, min_length=1)[0]
    assert short == "axial flair mri shows a"
    # min_length forbids [SEP] before it: the caption must go on past its end
    ids = tokenizer(CAPTION)["input_ids"]
    longer = generate(m, image, num_beams=1, max_length=24, min_length=len(ids) + 2)[0]
    assert longer.startswith(CAPTION) and len(longer.split()) > len(CAPTION.split())


def test_generate_needs_a_decoder(tmp_path, tokenizer):
    ret = build_model(tiny_config(tmp_path, "retrieval", minilm_folder()), "retrieval", tokenizer).eval()
    with pytest.raises(ValueError, match="no text decoder"):
        generate(ret, torch.randn(1, 3, 32, 32))


class MarkovStepper:
    """A fake decoder over 4 tokens whose next-token log-probabilities depend on the last token only.

    From the start token 0, greedy takes token 1 (p 0.6) and then ends (token 3) only with p 0.3;
    token 2 (p 0.4) ends with p 0.99. The best finished sequence is 0 2 3 (0.396 > 0.18).
    """

    table = torch.tensor([[0.0, 0.6, 0.4, 0.0], [0.0, 0.35, 0.35, 0.3], [0.0, 0.005, 0.005, 0.99],
                          [0.25, 0.25, 0.25, 0.25]]).clamp_min(1e-9).log()

    def logits(self, seqs):
        return self.table[seqs[:, -1]]

    def reorder(self, rows):
        pass


def test_beam_search_escapes_the_greedy_trap():
    beams = 2
    start = torch.zeros(beams, 1, dtype=torch.long)
    best = _beam_search(MarkovStepper(), start, beams, max_length=6, min_length=0, penalty=1.0, eos=3, pad=0)
    assert best[0].tolist() == [0, 2]  # eos is not part of the hypothesis
    from models.generate import _greedy_or_sample

    greedy = _greedy_or_sample(MarkovStepper(), start[:1], 6, 0, 1.0, 3, 0, False, None, None, None)
    assert greedy[0, 1].item() == 1


def test_repetition_penalty_is_ctrls():
    scores = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    out = repetition_penalty_(scores.clone(), torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = top_k_top_p(probs.log(), None, 0.7).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.5 + 0.3 reaches it
    assert top_k_top_p(probs.log(), None, 0.4).isfinite().tolist() == [[True, False, False, False]]
    assert top_k_top_p(probs.log(), 3, None).isfinite().sum().item() == 3
