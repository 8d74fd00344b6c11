"""Embeddings for search with the ITC towers: L2-normalised image and text features, and ranking.

    image_feat = embed_images(model, batches)           # (N, E) from an iterable of (B, 3, H, W) tensors
    text_feat = embed_texts(model, ["axial flair mri shows a mass", ...])   # (M, E)
    scores, index = rank(text_feat[0], image_feat, k=5) # best images for the first text

Features are those ITC compares (``vision_proj`` of the image [CLS], ``text_proj`` of the text [CLS]),
so a dot product is the cosine the model was trained to make high for matching pairs.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed_images(model, batches: Iterable[Tensor]) -> Tensor:
    """Image features (N, E), float32 on the CPU, from image batches (B, 3, H, W) (moved to the model's device)."""
    device = _device(model)
    feats = [model.encode_image(images.to(device))[1].float().cpu() for images in batches]
    if not feats:
        raise ValueError("no image to embed")
    return torch.cat(feats)


@torch.no_grad()
def embed_texts(model, texts: Sequence[str], batch_size: int = 256, clean: Callable[[str], str] | None = None,
                progress: Callable[[Iterable], Iterable] | None = None) -> Tensor:
    """Text features (M, E), float32 on the CPU. ``clean`` is the caption cleaning of training
    (``data.captions.pre_caption``); ``progress`` wraps the batch iterator (e.g. ``tqdm``)."""
    if not texts:
        raise ValueError("no text to embed")
    device = _device(model)
    starts = range(0, len(texts), batch_size)
    feats = []
    for i in (progress(starts) if progress else starts):
        chunk = [clean(t) if clean else t for t in texts[i:i + batch_size]]
        batch = model.tokenize(chunk, device)
        feats.append(model.encode_text(batch["input_ids"], batch["attention_mask"])[1].float().cpu())
    return torch.cat(feats)


def rank(queries: Tensor, bank: Tensor, k: int = 10) -> tuple[Tensor, Tensor]:
    """Cosine scores and indices (Q, k) of the ``k`` entries of ``bank`` (N, E) nearest each query (Q, E) or (E,).

    Both sides are expected L2-normalised (as :func:`embed_images` and :func:`embed_texts` give them).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of results k must be a whole number of at least 1, got {k!r}")
    if queries.dim() == 1:
        queries = queries[None]
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(f"query width {queries.shape[1]} differs from the stored embeddings' {bank.shape[1]}: "
                         f"they come from different models")
    sims = queries.float() @ bank.float().T
    return sims.topk(min(k, bank.shape[0]), dim=1)
