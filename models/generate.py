"""Captions from the image-grounded decoder that pre-training trains (the LM objective).

Greedy decoding, beam search and nucleus sampling, as BLIP's captioner offers them (``BLIP_Decoder.generate``
over HF transformers 4.x ``generate``), with a key/value cache so that each step runs only the new token:

    captions = generate(model, images)                              # beam search, 3 beams
    captions = generate(model, images, top_p=0.9, repetition_penalty=1.1)   # BLIP's nucleus sampling

Conventions kept from BLIP / HF 4.x, so that numbers compare:

- the decoder input is ``[DEC] prompt`` (the prompt tokenized without its trailing [SEP]); [SEP] ends a
  caption; ``max_length`` and ``min_length`` count the prompt's tokens too (HF's convention);
- beam search: log-softmax, then the repetition penalty and the minimum length on the log-probabilities;
  a finished hypothesis scores its summed log-probability divided by its length (``length_penalty`` 1;
  [DEC] and the prompt counted, eos not, as in the HF 4.15 that BLIP ran; later HF versions count only the
  generated tokens); a batch row stops when it holds ``num_beams`` hypotheses none of which the best live
  beam can beat (HF's ``early_stopping=False``);
- sampling: the repetition penalty and minimum length on the logits, then top-k (HF's default 50), then
  top-p; ``num_beams`` is not used, as in BLIP's ``sample=True``;
- the repetition penalty is CTRL's (Keskar et al. 2019): a score of a token already in the sequence is
  divided by the penalty when positive and multiplied by it when negative.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor

from models.text import CrossKV, SelfKV


class _Stepper:
    """Next-token logits for growing sequences, with or without the key/value cache.

    The cross-attention keys/values of the images are computed once; rows ``b * copies ... + copies - 1``
    belong to image ``b`` (beams of one image stay in its block, so reordering never crosses images).
    """

    def __init__(self, decoder, image_embeds: Tensor, copies: int, use_cache: bool):
        self.decoder, self.use_cache = decoder, use_cache
        kv = decoder.bert.cross_kv(image_embeds)
        if copies > 1 and image_embeds.shape[0] > 1:  # batch 1 is shared by every row without a copy
            kv = [(k.repeat_interleave(copies, 0), v.repeat_interleave(copies, 0)) for k, v in kv]
        self.cross_kv: CrossKV = kv
        self.past: list[SelfKV] | None = None
        self.fed = 0

    def logits(self, seqs: Tensor) -> Tensor:
        """seqs (R, L) -> logits (R, V) of the token after the last one."""
        if self.use_cache:
            logits, self.past = self.decoder.forward_cached(seqs[:, self.fed:], self.past, cross_kv=self.cross_kv)
            self.fed = seqs.shape[1]
            return logits[:, -1].float()
        kv = self.cross_kv
        if kv[0][0].shape[0] != seqs.shape[0]:  # one image's keys/values, as views for every row
            kv = [(k.expand(seqs.shape[0], -1, -1, -1), v.expand(seqs.shape[0], -1, -1, -1)) for k, v in kv]
        hidden = self.decoder.bert(seqs, torch.ones_like(seqs), mode="multimodal", causal=True, cross_kv=kv)
        return self.decoder.cls.predictions(hidden[:, -1]).float()

    def reorder(self, rows: Tensor) -> None:
        """Keep the cache of ``rows`` (R,), in that order (the beams that survived a step)."""
        if self.past is not None:
            self.past = [(k[rows], v[rows]) for k, v in self.past]


def repetition_penalty_(scores: Tensor, seqs: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty, in place on scores (R, V) for the tokens present in seqs (R, L)."""
    if penalty == 1.0:
        return scores
    seen = scores.gather(1, seqs)
    scores.scatter_(1, seqs, torch.where(seen < 0, seen * penalty, seen / penalty))
    return scores


def top_k_top_p(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Logits (R, V) with every token outside the top ``top_k`` and outside the smallest set whose
    probability reaches ``top_p`` set to -inf (HF's warpers; the most likely token is always kept)."""
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative > top_p
        drop[:, 1:] = drop[:, :-1].clone()  # keep the token that crosses the threshold
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def _greedy_or_sample(step: _Stepper, seqs: Tensor, max_length: int, min_length: int, penalty: float,
                      eos: int, pad: int, sample: bool, top_k: int | None, top_p: float | None,
                      generator: torch.Generator | None) -> Tensor:
    live = torch.ones(seqs.shape[0], dtype=torch.bool, device=seqs.device)
    while seqs.shape[1] < max_length:
        logits = repetition_penalty_(step.logits(seqs), seqs, penalty)
        if seqs.shape[1] < min_length:
            logits[:, eos] = float("-inf")
        if sample:
            probs = top_k_top_p(logits, top_k, top_p).softmax(-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            token = logits.argmax(-1)
        token = torch.where(live, token, torch.full_like(token, pad))
        seqs = torch.cat([seqs, token[:, None]], dim=1)
        live &= token != eos
        if not live.any():
            break
    return seqs


class _Hypotheses:
    """The ``num_beams`` best finished sequences of one image, scored by mean log-probability per token."""

    def __init__(self, num_beams: int):
        self.num_beams, self.items = num_beams, []  # (score, tokens)

    def add(self, tokens: Tensor, sum_logprobs: float) -> None:
        score = sum_logprobs / tokens.shape[-1]
        if len(self.items) < self.num_beams or score > self.worst():
            self.items.append((score, tokens))
            if len(self.items) > self.num_beams:
                self.items.remove(min(self.items, key=lambda item: item[0]))

    def worst(self) -> float:
        return min(s for s, _ in self.items)

    def done(self, best_live_sum: float, length: int) -> bool:
        return len(self.items) >= self.num_beams and self.worst() >= best_live_sum / length

    def best(self) -> Tensor:
        return max(self.items, key=lambda item: item[0])[1]


def _beam_search(step: _Stepper, seqs: Tensor, beams: int, max_length: int, min_length: int, penalty: float,
                 eos: int, pad: int) -> list[Tensor]:
    """seqs (B * beams, P), rows of one image together -> the best sequence of each image (without eos)."""
    batch = seqs.shape[0] // beams
    beam_scores = torch.zeros(batch, beams, device=seqs.device)
    beam_scores[:, 1:] = -1e9  # identical beams at the start: only the first may expand
    beam_scores = beam_scores.view(-1)
    hyps = [_Hypotheses(beams) for _ in range(batch)]
    done = [False] * batch
    while seqs.shape[1] < max_length:
        length = seqs.shape[1]
        scores = repetition_penalty_(F.log_softmax(step.logits(seqs), dim=-1), seqs, penalty)
        if length < min_length:
            scores[:, eos] = float("-inf")
        vocab = scores.shape[-1]
        top, flat = (scores + beam_scores[:, None]).view(batch, beams * vocab).topk(2 * beams, dim=1)
        top, flat = top.tolist(), flat.tolist()
        new_scores, new_tokens, new_rows = [], [], []
        for b in range(batch):
            kept = []
            if not done[b]:
                for rank, (score, index) in enumerate(zip(top[b], flat[b])):
                    row, token = b * beams + index // vocab, index % vocab
                    if token == eos:
                        if rank < beams:  # an eos below the first ``beams`` candidates is not a hypothesis
                            hyps[b].add(seqs[row].clone(), score)
                    else:
                        kept.append((score, token, row))
                    if len(kept) == beams:
                        break
                done[b] = hyps[b].done(max(top[b]), length)
            if done[b] or len(kept) < beams:
                kept = [(0.0, pad, b * beams)] * beams  # finished rows carry padding until all are done
            for score, token, row in kept:
                new_scores.append(score), new_tokens.append(token), new_rows.append(row)
        if all(done):
            break
        rows = torch.tensor(new_rows, device=seqs.device)
        seqs = torch.cat([seqs[rows], torch.tensor(new_tokens, device=seqs.device)[:, None]], dim=1)
        step.reorder(rows)
        beam_scores = torch.tensor(new_scores, device=seqs.device)
    for b in range(batch):
        if not done[b]:  # max_length reached: the live beams compete with the finished ones
            for k in range(beams):
                hyps[b].add(seqs[b * beams + k], float(beam_scores[b * beams + k]))
    return [h.best() for h in hyps]


def _pad_batch(rows: list[Tensor], max_length: int, eos: int, pad: int) -> Tensor:
    """Sequences without eos -> (B, T) with eos appended where there is room, then padding (as HF)."""
    width = min(max(len(r) for r in rows) + 1, max_length)
    out = torch.full((len(rows), width), pad, dtype=torch.long, device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
        if len(r) < max_length:
            out[i, len(r)] = eos
    return out


@torch.no_grad()
def generate_ids(decoder, image_embeds: Tensor, prompt_ids: Tensor, eos_token_id: int, pad_token_id: int,
                 max_length: int = 30, min_length: int = 5, num_beams: int = 3, top_p: float | None = None,
                 top_k: int | None = 50, repetition_penalty: float = 1.0, use_cache: bool = True,
                 generator: torch.Generator | None = None) -> Tensor:
    """Token ids (B, T), the prompt included, ending in eos then padding, from a :class:`TextDecoder`.

    image_embeds: (B, 1+N, Dv) from ``model.encode_image``. prompt_ids: (P,) or (B, P), starting with
    [DEC], no padding. Greedy when ``num_beams == 1`` and ``top_p`` is None; nucleus sampling (with
    ``generator`` for reproducible draws) when ``top_p`` is set; beam search otherwise.
    ``use_cache=False`` re-runs the whole sequence at every step (the reference the cache is tested against).
    """
    batch = image_embeds.shape[0]
    if prompt_ids.dim() == 1:
        prompt_ids = prompt_ids[None].expand(batch, -1)
    if prompt_ids.shape[0] != batch or prompt_ids.shape[1] < 1:
        raise ValueError(f"prompt_ids {tuple(prompt_ids.shape)} do not match {batch} images")
    if max_length <= prompt_ids.shape[1]:
        raise ValueError(f"max_length {max_length} leaves no room after the {prompt_ids.shape[1]} prompt tokens")
    if num_beams < 1:
        raise ValueError(f"num_beams must be at least 1, not {num_beams}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], not {top_p}")
    prompt_ids = prompt_ids.to(image_embeds.device)
    if top_p is not None or num_beams == 1:
        step = _Stepper(decoder, image_embeds, 1, use_cache)
        return _greedy_or_sample(step, prompt_ids, max_length, min_length, repetition_penalty, eos_token_id,
                                 pad_token_id, top_p is not None, top_k, top_p, generator)
    step = _Stepper(decoder, image_embeds, num_beams, use_cache)
    seqs = prompt_ids.repeat_interleave(num_beams, dim=0)
    best = _beam_search(step, seqs, num_beams, max_length, min_length, repetition_penalty, eos_token_id,
                        pad_token_id)
    return _pad_batch(best, max_length, eos_token_id, pad_token_id)


def prompt_ids(tokenizer, prompt: str = "") -> Tensor:
    """``[DEC] prompt`` as ids (P,): the prompt tokenized as BLIP does, its trailing [SEP] removed."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"][0]
    ids[0] = tokenizer.bos_token_id
    return ids[:-1]


def generate(model, images: Tensor, prompt: str = "", max_length: int = 30, min_length: int = 5,
             num_beams: int = 3, top_p: float | None = None, top_k: int | None = 50,
             repetition_penalty: float = 1.0, use_cache: bool = True,
             generator: torch.Generator | None = None) -> list[str]:
    """One caption per image (B, 3, H, W) from a pre-training model (it has ``text_decoder``).

    The prompt starts every caption and is not part of the returned text (BLIP's captioner used
    "a picture of "; our pre-training uses none, hence the default ""). See :func:`generate_ids`.
    """
    decoder = getattr(model, "text_decoder", None)
    if decoder is None:
        raise ValueError("this model has no text decoder: captions need a pre-training checkpoint, "
                         "not a retrieval one")
    tok = model.tokenizer
    start = prompt_ids(tok, prompt)
    with torch.no_grad():
        image_embeds, _ = model.encode_image(images)
    ids = generate_ids(decoder, image_embeds, start, tok.sep_token_id, tok.pad_token_id, max_length, min_length,
                       num_beams, top_p, top_k, repetition_penalty, use_cache, generator)
    return [detokenize(tok.decode(row[len(start):], skip_special_tokens=True)) for row in ids.tolist()]


_JOINED = re.compile(r" ?([-/]) ?")
_DECIMAL = re.compile(r"(\d)\. (\d)")


def detokenize(text: str) -> str:
    """Undo the spaces WordPiece decoding puts around hyphens, slashes and decimal points
    ("t2 - weighted" -> "t2-weighted", "2. 5 cm" -> "2.5 cm"), so that captions read like their
    references and score against them word for word."""
    return _DECIMAL.sub(r"\1.\2", _JOINED.sub(r"\1", text)).strip()
