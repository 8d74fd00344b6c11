"""Image-text retrieval evaluation as BLIP does it, fast and exact.

BLIP ranks by ITC similarity, re-ranks the top ``k_test`` candidates of every row with the ITM head and
scores them ``ITM match logit + ITC cosine``; every other cell stays at -100. ``fast_scores`` computes
the same matrices with less work: each (image, text) pair is scored once even when it is a candidate in
both directions, an image's cross-attention keys/values are computed once for all its candidate texts,
pairs are batched across rows, and the pairs are split evenly across processes. ``reference_scores``
is BLIP's per-row loop, kept as the reference for tests and benchmarks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from models import text_fast
from models.distributed import all_gather_uneven, all_reduce_sum, get_rank, get_world_size

log = logging.getLogger("medvl")
FLOOR = -100.0


@dataclass
class Features:
    """Per-split features: image tokens are kept on the CPU (they are large), the rest on the device."""

    image_embeds: Tensor  # (I_local, 1+N, Dv) for images [image_start, image_start + I_local)
    image_start: int
    image_feat: Tensor  # (I, E), every image
    text_ids: Tensor  # (T, L)
    text_mask: Tensor  # (T, L)
    text_feat: Tensor  # (T, E)


def _slice(n: int, rank: int, world: int) -> tuple[int, int]:
    return n * rank // world, n * (rank + 1) // world


@torch.no_grad()
def encode_images(model, dataset: Dataset, indices: list[int], device: torch.device, batch_size: int,
                  num_workers: int = 0, worker_init_fn: Callable[[int], None] | None = None) -> tuple[Tensor, Tensor]:
    """ViT tokens (on CPU) and ITC features of ``dataset`` images at ``indices``.

    ``dataset[i]`` is ``(image (3, H, W), i)``, as ``data.datasets.RetrievalEvalDataset`` gives;
    ``worker_init_fn`` is that of the loader's workers (the app's loaders make them ignore stop signals).
    """
    embeds, feats = [], []
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda", worker_init_fn=worker_init_fn)
    for images, _ in loader:
        e, f = model.encode_image(images.to(device))
        embeds.append(e.float().cpu())
        feats.append(f.float())
    if not embeds:
        tokens = model.visual_encoder.num_patches + 1
        return (torch.zeros(0, tokens, model.visual_encoder.width),
                torch.zeros(0, model.vision_proj.out_features, device=device))
    return torch.cat(embeds), torch.cat(feats)


@torch.no_grad()
def extract_features(model, dataset, device: torch.device, batch_size: int, text_batch: int = 256,
                     split_images: bool = True, num_workers: int = 0,
                     worker_init_fn: Callable[[int], None] | None = None) -> Features:
    """Features of a retrieval split. With ``split_images`` each process encodes an equal slice of the
    images and the ITC features are gathered; otherwise every process encodes every image (BLIP)."""
    model.eval()
    rank, world = (get_rank(), get_world_size()) if split_images else (0, 1)
    lo, hi = _slice(len(dataset), rank, world)
    image_embeds, image_feat = encode_images(model, dataset, list(range(lo, hi)), device, batch_size, num_workers,
                                             worker_init_fn)
    image_feat = all_gather_uneven(image_feat) if split_images else image_feat
    tok = model.tokenize(dataset.text, device)  # every process tokenizes every text: one common width
    text_feat = encode_texts(model, tok["input_ids"], tok["attention_mask"], text_batch)
    return Features(image_embeds, lo, image_feat, tok["input_ids"], tok["attention_mask"], text_feat)


def length_batches(lengths: Tensor, batch_size: int, slack: float = 0.25) -> list[tuple[Tensor, int]]:
    """Split positions 0..n-1 into batches of similar text length: [(positions (b,), longest length)].

    lengths (n,) on the CPU. Sorted by length, each batch is cut to its own longest text (padding is
    masked, so the cut changes no result). A batch closes when full, or when the next text is more than
    ``slack`` longer than the batch's shortest and the batch holds at least a quarter of ``batch_size``
    (smaller batches would cost more in per-call overhead than the padding they save).
    """
    order = torch.argsort(lengths, stable=True).tolist()
    values = lengths.tolist()
    batches, current = [], []
    for i in order:
        if current and (len(current) >= batch_size or (
                values[i] > (1 + slack) * values[current[0]] and len(current) >= max(1, batch_size // 4))):
            batches.append((torch.tensor(current), int(values[current[-1]])))
            current = []
        current.append(i)
    if current:
        batches.append((torch.tensor(current), int(values[current[-1]])))
    return batches


@torch.no_grad()
def encode_texts(model, input_ids: Tensor, attention_mask: Tensor, batch_size: int) -> Tensor:
    """ITC features (T, E) of (T, L) texts, in batches of similar length each cut to its longest text."""
    lengths = attention_mask.sum(dim=1).cpu()
    out = None
    for sel, width in length_batches(lengths, batch_size):
        sel = sel.to(input_ids.device)
        feat = model.encode_text(input_ids[sel, :width], attention_mask[sel, :width])[1].float()
        out = feat.new_empty(len(lengths), feat.shape[1]) if out is None else out
        out[sel] = feat
    return out


def itc_similarities(image_feat: Tensor, text_feat: Tensor) -> Tensor:
    """(I, T) cosine similarities of (I, E) and (T, E) features, in fp32 also under bf16 autocast: the
    score matrices are fp32 (ITM logit + cosine), and bf16 would round cosines to 3 significant digits,
    enough to reorder close candidates."""
    with torch.autocast(image_feat.device.type, enabled=False):
        return image_feat.float() @ text_feat.float().T


def _clamp_k(k_test: int, n: int, what: str) -> int:
    if k_test > n:
        log.warning(f"k_test {k_test} exceeds the {n} {what}: using {n}")
    return min(k_test, n)


def candidate_pairs(sims: Tensor, k_test: int) -> tuple[Tensor, Tensor, Tensor]:
    """The (image, text) cells in the top ``k_test`` of their row (i2t) or of their column (t2i).

    Returns the union as sorted flat indices ``i * T + t`` (P,), so grouped by image, and two (I * T,)
    masks telling in which direction each cell is a candidate.
    """
    num_images, num_texts = sims.shape
    k_i2t, k_t2i = _clamp_k(k_test, num_texts, "texts"), _clamp_k(k_test, num_images, "images")
    in_i2t = torch.zeros_like(sims, dtype=torch.bool).scatter_(1, sims.topk(k_i2t, dim=1).indices, True).flatten()
    in_t2i = torch.zeros_like(sims, dtype=torch.bool).scatter_(0, sims.topk(k_t2i, dim=0).indices, True).flatten()
    return torch.nonzero(in_i2t | in_t2i).squeeze(1), in_i2t, in_t2i


@torch.no_grad()
def text_states(model, feats: Features, texts: Tensor, device: torch.device,
                batch_size: int) -> tuple[Tensor | None, Tensor, Tensor]:
    """The image-independent start of the ITM pass (``text_fast.text_states`` of the [ENC] texts) of ``texts``
    (unique, CPU), once per text: (states (R, D) of their unmasked positions, text after text; offset (T,) of
    each text's first row; lengths (T,)), all texts' lengths on the CPU. Exact in eval mode (no dropout to
    share)."""
    lengths = feats.text_mask.sum(dim=1).cpu()
    offset = torch.zeros(len(lengths), dtype=torch.long)
    sub = lengths[texts]
    offset[texts] = torch.cumsum(sub, 0) - sub
    states = None
    for sel, width in length_batches(sub, batch_size):
        txt = texts[sel]
        ids = feats.text_ids[txt.to(feats.text_ids.device), :width].to(device)
        mask = feats.text_mask[txt.to(feats.text_mask.device), :width].to(device)
        out = text_fast.text_states(model.text_encoder, model.enc_ids(ids), mask)  # (b, width, D)
        if states is None:
            states = out.new_empty(int(sub.sum()), out.shape[-1])
        positions = torch.arange(width)
        valid = positions[None, :] < lengths[txt][:, None]  # (b, width), on the CPU
        src = valid.flatten().nonzero().squeeze(1)
        dst = (offset[txt][:, None] + positions[None, :])[valid]
        states.index_copy_(0, dst.to(device), out.reshape(-1, out.shape[-1]).index_select(0, src.to(device)))
    return states, offset, lengths


def gather_states(states: Tensor, offset: Tensor, lengths: Tensor, txt: Tensor, width: int) -> Tensor:
    """(b, width, D) states of texts ``txt`` (CPU) from :func:`text_states`; positions past a text's end
    repeat its last row (they are masked)."""
    positions = torch.minimum(torch.arange(width)[None, :], lengths[txt][:, None] - 1)
    rows = (offset[txt][:, None] + positions).flatten().to(states.device)
    return states.index_select(0, rows).view(len(txt), width, -1)


@torch.no_grad()
def score_pairs(model, feats: Features, pairs: Tensor, num_texts: int, image_source, device: torch.device,
                batch_size: int) -> Tensor:
    """ITM match logits of ``pairs`` (sorted ``i * T + t``, so grouped by image).

    Each image's cross-attention keys/values are computed once and shared by all its candidate texts,
    which come from its own row and from every text row that ranked it; each text's embeddings and first
    self-attention (which do not see the image) are computed once for all its candidate images;
    ``image_source(indices)`` supplies image tokens that this process did not encode.
    """
    images, texts = pairs // num_texts, pairs % num_texts
    scores = torch.empty(len(pairs), device=device)
    if not len(pairs):
        return scores
    bounds = torch.searchsorted(images, torch.unique(images), right=True).tolist()
    # Host copies, read once: each image's candidate texts are batched by length and cut to the
    # batch's longest text, which the re-ranking's text work scales with.
    images_c, texts_c = images.cpu(), texts.cpu()
    states, offset, lengths = text_states(model, feats, torch.unique(texts_c), device, batch_size)
    start = 0
    for end in bounds:
        image = int(images_c[start])
        kv = model.text_encoder.cross_kv(_image_tokens(feats, [image], image_source).to(device))  # batch 1
        group = texts_c[start:end]
        for sel, width in length_batches(lengths[group], batch_size):
            txt = group[sel]
            mask = feats.text_mask[txt.to(feats.text_mask.device), :width].to(device)
            first = gather_states(states, offset, lengths, txt, width)
            hidden = text_fast.first_hidden_one_image(model.text_encoder, kv, mask, states=first)  # itm_logits' [ENC]
            scores[(start + sel).to(device)] = model.itm_head(hidden)[:, 1].float()
        start = end
    return scores


def _image_tokens(feats: Features, indices: list[int], image_source) -> Tensor:
    """Image tokens for ``indices``: from this process's slice, else from ``image_source``."""
    own = [0 <= i - feats.image_start < len(feats.image_embeds) for i in indices]
    if all(own):
        return feats.image_embeds[[i - feats.image_start for i in indices]]
    out = [None] * len(indices)
    missing = [i for i, o in zip(indices, own) if not o]
    extra = iter(image_source(missing))
    for j, (i, o) in enumerate(zip(indices, own)):
        out[j] = feats.image_embeds[i - feats.image_start] if o else next(extra)
    return torch.stack(out)


@torch.no_grad()
def fast_scores(model, feats: Features, k_test: int, device: torch.device, image_source,
                batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(scores_i2t (I, T), scores_t2i (T, I)) with BLIP's values: match logit + cosine for candidates,
    -100 elsewhere. ``k_test == 0`` gives the ITC similarities alone."""
    sims = itc_similarities(feats.image_feat, feats.text_feat)  # (I, T) cosine, no temperature
    if k_test == 0:
        return sims.cpu().numpy(), sims.T.cpu().numpy()
    pairs, in_i2t, in_t2i = candidate_pairs(sims, k_test)
    lo, hi = _slice(len(pairs), get_rank(), get_world_size())
    mine = pairs[lo:hi]
    itm = score_pairs(model, feats, mine, sims.shape[1], image_source, device, batch_size)
    pairs_all = all_gather_uneven(mine)
    values = all_gather_uneven(itm) + sims.flatten()[pairs_all]
    # A pair is scored once, but its score counts only in the direction(s) where it was a candidate.
    i2t = torch.full_like(sims, FLOOR).flatten()
    t2i = i2t.clone()
    i2t[pairs_all] = torch.where(in_i2t[pairs_all], values, FLOOR)
    t2i[pairs_all] = torch.where(in_t2i[pairs_all], values, FLOOR)
    return i2t.view_as(sims).cpu().numpy(), t2i.view_as(sims).T.contiguous().cpu().numpy()


@torch.no_grad()
def reference_scores(model, image_embeds: Tensor, image_feat: Tensor, text_ids: Tensor, text_mask: Tensor,
                     text_feat: Tensor, k_test: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """BLIP's loop, row by row: rows split across processes, matrices summed with all_reduce.

    Every process needs every image's tokens. Absolute values depend on the number of processes
    (unscored cells sum to -100 * world), rankings do not.
    """
    sims = itc_similarities(image_feat, text_feat)
    num_images, num_texts = sims.shape
    i2t = torch.full((num_images, num_texts), FLOOR, device=device)
    t2i = torch.full((num_texts, num_images), FLOOR, device=device)
    world, rank = get_world_size(), get_rank()
    step = num_images // world + 1
    for i in range(rank * step, min(num_images, (rank + 1) * step)):
        top_sim, top_idx = sims[i].topk(min(k_test, num_texts))
        enc = image_embeds[i:i + 1].to(device).repeat(len(top_idx), 1, 1)
        score = model.itm_logits(enc, text_ids[top_idx].to(device), text_mask[top_idx].to(device))[:, 1]
        i2t[i, top_idx] = score.float() + top_sim
    step = num_texts // world + 1
    for t in range(rank * step, min(num_texts, (rank + 1) * step)):
        top_sim, top_idx = sims[:, t].topk(min(k_test, num_images))
        enc = image_embeds[top_idx.cpu()].to(device)
        ids = text_ids[t:t + 1].to(device).repeat(len(top_idx), 1)
        mask = text_mask[t:t + 1].to(device).repeat(len(top_idx), 1)
        t2i[t, top_idx] = model.itm_logits(enc, ids, mask)[:, 1].float() + top_sim
    return all_reduce_sum(i2t).cpu().numpy(), all_reduce_sum(t2i).cpu().numpy()


def itm_eval(scores_i2t: np.ndarray, scores_t2i: np.ndarray, txt2img: list[int], img2txt: list[list[int]]) -> dict:
    """Recall@1/5/10 in both directions, as BLIP's ``itm_eval`` computes them (percentages).

    An image counts as retrieved at rank r when its best-ranked caption is at r.
    """
    ranks = np.zeros(scores_i2t.shape[0])
    for i, score in enumerate(scores_i2t):
        inds = np.argsort(score)[::-1]
        ranks[i] = min(np.where(inds == t)[0][0] for t in img2txt[i])
    tr = [100.0 * np.mean(ranks < k) for k in (1, 5, 10)]
    ranks = np.zeros(scores_t2i.shape[0])
    for t, score in enumerate(scores_t2i):
        inds = np.argsort(score)[::-1]
        ranks[t] = np.where(inds == txt2img[t])[0][0]
    ir = [100.0 * np.mean(ranks < k) for k in (1, 5, 10)]
    result = {"txt_r1": tr[0], "txt_r5": tr[1], "txt_r10": tr[2], "txt_r_mean": float(np.mean(tr)),
              "img_r1": ir[0], "img_r5": ir[1], "img_r10": ir[2], "img_r_mean": float(np.mean(ir))}
    result["r_mean"] = (result["txt_r_mean"] + result["img_r_mean"]) / 2
    return {k: float(v) for k, v in result.items()}


def format_table(results: dict[str, dict]) -> str:
    """A recall table, one row per split."""
    keys = ["txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "r_mean"]
    lines = [f"{'split':<8}" + "".join(f"{k:>9}" for k in keys)]
    for split, m in results.items():
        lines.append(f"{split:<8}" + "".join(f"{m[k]:>9.2f}" for k in keys))
    return "\n".join(lines)


@torch.no_grad()
def evaluate(model, dataset: Dataset, device: torch.device, k_test: int, batch_size: int, itm_batch_size: int,
             num_workers: int = 0, bf16: bool = False, worker_init_fn: Callable[[int], None] | None = None) -> dict:
    """Retrieval metrics of one split with the fast path (collective: every process must call it).

    ``dataset`` has ``text`` (cleaned captions), ``img2txt``, ``txt2img`` and yields ``(image, index)``.
    """
    model.eval()
    with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        feats = extract_features(model, dataset, device, batch_size, num_workers=num_workers,
                                 worker_init_fn=worker_init_fn)

        def image_source(indices: list[int]) -> Tensor:
            return encode_images(model, dataset, indices, device, batch_size)[0]

        i2t, t2i = fast_scores(model, feats, k_test, device, image_source, itm_batch_size)
    return itm_eval(i2t, t2i, dataset.txt2img, dataset.img2txt)
