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
        return m, image, float(loss_now()), cfg


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
    m, image, loss, _ = trained
    assert loss < 0.5, f"the tiny decoder did not learn its caption (loss {loss:.3f})"
    assert generate(m, image, num_beams=1, max_length=24, min_length=1) == [CAPTION]
    assert generate(m, image, num_beams=3, max_length=24, min_length=1) == [CAPTION]
    assert generate(m, image, num_beams=3, use_cache=False, max_length=24, min_length=1) == [CAPTION]


def test_prompt_is_kept_out_of_the_caption_and_lengths_count_it(trained, tokenizer):
    m, image, _, _ = trained
    assert generate(m, image, prompt="axial flair", num_beams=1, max_length=24) == [CAPTION[len("axial flair "):]]
    # max_length counts [DEC] and the prompt: 6 tokens leave room for 5 words after [DEC]
    short = generate(m, image, num_beams=1, max_length=6, min_length=1)[0]
    assert short == "axial flair mri shows a"
    # min_length forbids [SEP] before it: the caption must go on past its end
    ids = tokenizer(CAPTION)["input_ids"]
    longer = generate(m, image, num_beams=1, max_length=24, min_length=len(ids) + 2)[0]
    assert longer.startswith(CAPTION) and len(longer.split()) > len(CAPTION.split())


def test_decoded_captions_keep_hyphens_and_decimals_attached(tokenizer):
    from models.generate import detokenize

    ids = tokenizer("axial t2-weighted mri shows a 2.5 cm ring-enhancing mass / cyst")["input_ids"]
    assert detokenize(tokenizer.decode(ids, skip_special_tokens=True)) == (
        "axial t2-weighted mri shows a 2.5 cm ring-enhancing mass/cyst")


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


# -- caption metrics (models/caption_metrics.py) ---------------------------------------------------------

REFS = {
    "a": ["axial flair mri shows a large hyperintense mass in the left frontal lobe",
          "large hyperintense mass in the left frontal lobe on axial flair mri of the brain"],
    "b": ["axial ct of the brain shows no focal abnormality", "normal axial ct slice of the brain without a lesion"],
    "c": ["axial t2 weighted mri shows a small hyperintense infarct in the right occipital lobe",
          "small hyperintense infarct in the right occipital lobe on axial t2 weighted mri of the brain"],
    "d": ["a man is riding a horse on the beach", "a person rides a brown horse along the shore",
          "horse riding at the sea"],
}
HYPS = {"a": "axial flair mri shows a large mass in the right frontal lobe",
        "b": "axial ct of the brain shows no focal abnormality",
        "c": "small infarct in the right occipital lobe on axial t2 weighted mri", "d": "a man riding a horse"}


def test_caption_metrics_equal_coco_captions_scorers():
    """Reference values computed with pycocoevalcap 1.2 (the coco-caption scorers BLIP reports:
    Bleu(4), Rouge(), Cider()) on these pre-tokenised captions."""
    from models.caption_metrics import caption_scores, cider_d

    scores = caption_scores(HYPS, REFS)
    expected = [0.899770439373474, 0.8421359311651635, 0.7832970152096992, 0.7340778931983405]
    assert [scores[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx(expected, abs=1e-12)
    assert scores["rouge_l"] == pytest.approx(0.8471504150363313, abs=1e-12)
    assert scores["cider_d"] == pytest.approx(4.516203882039519, abs=1e-12)
    per_image = cider_d([HYPS[k].split() for k in REFS], [[r.split() for r in REFS[k]] for k in REFS])
    assert per_image == pytest.approx([4.325815282276559, 5.512931401976472, 6.573509791078601,
                                       1.6525590528264447], abs=1e-12)


def test_bleu_and_rouge_reproduce_the_papers_examples():
    from models.caption_metrics import bleu, rouge_l

    # Papineni et al. 2002, section 2.1.1: the modified unigram precision of this candidate is 2/7.
    refs = [["the", "cat", "is", "on", "the", "mat"], ["there", "is", "a", "cat", "on", "the", "mat"]]
    assert bleu([["the"] * 7], [refs], n=1)[0] == pytest.approx(2 / 7)  # closest reference has 7 words: no penalty
    # Lin 2004, section 3.1: against "police killed the gunman", S2 scores 3/4 and S3 scores 1/2.
    ref = "police killed the gunman".split()
    assert rouge_l("police kill the gunman".split(), [ref]) == pytest.approx(3 / 4)
    assert rouge_l("the gunman kill police".split(), [ref]) == pytest.approx(1 / 2)


def test_tokenizer_is_coco_captions_ptb_tokenizer():
    """The output of pycocoevalcap's Java PTBTokenizer on this caption: brackets kept as -lrb-/-rrb-."""
    from models.caption_metrics import tokenize

    assert tokenize("A ring-enhancing mass, 2.5 cm; isn't it? (Left.)") == [
        "a", "ring-enhancing", "mass", "2.5", "cm", "is", "n't", "it", "-lrb-", "left", "-rrb-"]


def test_caption_command_writes_captions_and_scores(trained, tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    import predict

    m, _, _, cfg = trained
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": m.state_dict(), "config": cfg, "epoch": 0}, ckpt)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "list.json").write_text(json.dumps([{"image": "0.png", "caption": [CAPTION, "a cyst"]},
                                                    {"image": "1.png", "caption": "a mass"}]))
    out = tmp_path / "caps"
    assert predict.main(["caption", "--checkpoint", str(ckpt), "--images", str(tmp_path / "list.json"),
                     "--out", str(out), "--num_beams", "2", "--max_length", "12"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = json.loads((out / "captions.json").read_text())
    assert len(rows) == 2 and rows[0]["references"] == [CAPTION, "a cyst"] and rows[1]["references"] == ["a mass"]
    assert all(isinstance(r["caption"], str) and r["caption"] for r in rows)
    assert summary["n"] == 2 and 0 <= summary["bleu_4"] <= 1 and summary["cider_d"] >= 0
    assert json.loads((out / "metrics.json").read_text())["rouge_l"] == summary["rouge_l"]
    # nucleus sampling is reproducible from its seed; a folder has no references, so no scores
    runs = []
    for _ in range(2):
        assert predict.main(["caption", "--checkpoint", str(ckpt), "--images", str(tmp_path / "0.png"),
                         "--out", str(out), "--top_p", "0.9", "--seed", "3"]) == 0
        runs.append(json.loads((out / "captions.json").read_text())[0]["caption"])
        assert "bleu_4" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert runs[0] == runs[1]
