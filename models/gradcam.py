"""Grad-CAM of the image-text matching (ITM) head over the text encoder's cross-attention.

The recipe of ALBEF and BLIP: run the image-grounded encoder and the ITM head, differentiate the
"match" logit with respect to one layer's cross-attention probabilities, keep ``probs * max(grad, 0)``,
drop the image [CLS] token and average over heads. Everything here returns tensors, so it can be
tested and used from notebooks::

    from models.gradcam import explain
    result = explain(model, pixels, "axial flair mri shows a mass", layer=8)   # pixels (1, 3, H, W)
    result.sentence_map   # (h, w) grid, result.word_maps (W, h, w), result.words, result.match_prob

``vis.py`` reads images and checkpoints and cleans captions; this module sees tensors and a model only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from models.blip import BlipBase
from models.tokenizer import tokenize


def default_layer(num_layers: int) -> int:
    """Layer 8 of a 12-layer text encoder (the original work and ALBEF), two thirds of the depth otherwise,
    and never the last layer (see :func:`check_layer`)."""
    return max(0, min(num_layers * 2 // 3, num_layers - 2))


def check_layer(model: BlipBase, layer: int, words: bool = True) -> int:
    """Return ``layer`` if it exists (and, with ``words``, can map words); raise ValueError otherwise.

    The last layer cannot map words: after its cross-attention only the [ENC] position reaches the
    ITM head, so the gradient at every word token is zero and so is every word's map.
    """
    n = len(model.text_encoder.encoder.layer)
    if not 0 <= layer < n:
        raise ValueError(f"layer {layer} is out of range: the text encoder has {n} layers (0 to {n - 1})")
    if words and layer == n - 1:
        raise ValueError(f"layer {layer} is the text encoder's last: past it only [ENC] reaches the ITM head, "
                         f"so every word's map is zero; choose a layer from 0 to {n - 2}")
    return layer


def patch_grid(model: BlipBase) -> tuple[int, int]:
    """(rows, cols) of image patches the ViT produces."""
    return tuple(int(s) for s in model.visual_encoder.patch_embed.grid_size)


def itm_gradcam(model: BlipBase, images: Tensor, input_ids: Tensor, attention_mask: Tensor,
                layer: int) -> tuple[Tensor, Tensor]:
    """Per-token Grad-CAM maps and match probabilities.

    images (B, 3, H, W); input_ids, attention_mask (B, L) as ``model.tokenize`` returns them.
    Returns ``cams`` (B, L, h, w) on the patch grid, zero at padding, not normalised (row 0 is [ENC]), and
    ``match_prob`` (B,), the ITM probability that image and text match. Dropout is off while it runs.
    """
    check_layer(model, layer, words=False)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            with torch.no_grad():
                image_embeds, _ = model.encode_image(images)
            # The image tokens are a leaf that needs grad, so the attention probabilities are in the
            # graph even when every parameter is frozen.
            image_embeds = image_embeds.detach().requires_grad_(True)
            probs: list[Tensor] = []
            logits = model.itm_logits(image_embeds, input_ids, attention_mask, keep_cross_attention=probs)
            attn = probs[layer]  # (B, heads, L, 1+N)
            (grad,) = torch.autograd.grad(logits[:, 1].sum(), attn)
    finally:
        model.train(was_training)
    cam = (attn.detach() * grad.clamp(min=0))[..., 1:].mean(dim=1)  # (B, L, N), image [CLS] dropped
    cam = cam * attention_mask[:, :, None].to(cam.dtype)
    h, w = patch_grid(model)
    if cam.shape[-1] != h * w:
        raise ValueError(f"{cam.shape[-1]} image tokens do not form the {h}x{w} patch grid")
    return cam.view(*cam.shape[:2], h, w), logits.detach().softmax(dim=-1)[:, 1]


def real_token_mask(model: BlipBase, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, L) bool: True at word pieces, False at [CLS]/[ENC], [SEP] and padding."""
    tok = model.tokenizer
    special = torch.tensor([tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.enc_token_id],
                           device=input_ids.device)
    return attention_mask.bool() & ~torch.isin(input_ids, special)


def merge_words(text: str, offsets: list[tuple[int, int]], maps: Tensor) -> tuple[list[str], Tensor]:
    """Group word-piece maps into the caption's words; a word's map is the mean of its pieces' maps.

    text: the cleaned caption; offsets: each piece's (start, end) characters in ``text``; maps (L, h, w)
    for those L pieces. Words are the whitespace-separated words of ``text`` (``ring-enhancing`` is one
    word although BERT splits it in three); words cut off by truncation are left out. Returns W words
    and their maps (W, h, w).
    """
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    groups: dict[int, list[int]] = {}
    for i, (start, _) in enumerate(offsets):
        word = next(w for w, (a, b) in enumerate(spans) if a <= start < b)
        groups.setdefault(word, []).append(i)
    words = [text[spans[w][0]:spans[w][1]] for w in groups]
    if not groups:
        return [], maps.new_zeros((0, *maps.shape[1:]))
    return words, torch.stack([maps[g].mean(dim=0) for g in groups.values()])


@dataclass
class Explanation:
    """Grad-CAM of one image and caption, on the patch grid (h, w)."""

    caption: str  # the caption as the model saw it (cleaned)
    words: list[str]  # W words, word pieces merged
    word_maps: Tensor  # (W, h, w)
    sentence_map: Tensor  # (h, w): mean over the word-piece tokens
    match_prob: float  # ITM probability of "match"
    layer: int


def explain(model: BlipBase, pixels: Tensor, text: str, layer: int) -> Explanation:
    """Grad-CAM maps of the cleaned caption ``text`` on one preprocessed image ``pixels`` (1, 3, H, W).

    ``text`` is tokenised as in training; one that holds no word token is refused.
    """
    check_layer(model, layer)
    if not text.strip():
        raise ValueError(f"caption {text!r} is empty: there is no word to map")
    device = next(model.parameters()).device
    # The same tokenisation as training, plus the character offsets that group pieces into words.
    enc = tokenize(model.tokenizer, [text], model.max_length, offsets=True)
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    cams, prob = itm_gradcam(model, pixels.to(device), ids, mask, layer)
    real = real_token_mask(model, ids, mask)[0]
    if not real.any():
        raise ValueError(f"caption {text!r} holds no word token after tokenisation")
    offsets = [tuple(o) for o in enc["offset_mapping"][0][real.cpu()].tolist()]
    words, word_maps = merge_words(text, offsets, cams[0][real])
    return Explanation(text, words, word_maps.cpu(), cams[0][real].mean(dim=0).cpu(), float(prob[0]), layer)


def normalize(cam: Tensor) -> Tensor:
    """Scale a map to [0, 1] (min subtracted, divided by the max when positive), as ALBEF displays them."""
    cam = cam - cam.min()
    top = cam.max()
    return cam / top if top > 0 else cam


def to_heatmap(cam: Tensor, size: tuple[int, int], blur: float = 0.0) -> Tensor:
    """A grid map (h, w) -> a display map (H, W) in [0, 1]: normalised, bicubic upsampled, optionally blurred.

    ``blur`` is the Gaussian sigma as a fraction of the larger image side (ALBEF uses 0.02); 0 is off.
    """
    up = F.interpolate(normalize(cam.float())[None, None], size=size, mode="bicubic", align_corners=False)[0, 0]
    up = normalize(up)  # bicubic over- and undershoots a little
    if blur > 0:
        from torchvision.transforms.functional import gaussian_blur

        sigma = blur * max(size)
        kernel = 2 * int(3 * sigma) + 1
        up = normalize(gaussian_blur(up[None, None], [kernel, kernel], [sigma, sigma])[0, 0])
    return up


@torch.no_grad()
def patch_token_locality(model: BlipBase, pixels: Tensor, stride: int = 3) -> list[float]:
    """How local the image tower's output tokens are, for one preprocessed image ``pixels`` (3, H, W).

    Every ``stride``-th patch is painted flat (the image mean plus one) in turn; for each, the share of
    the change of all patch tokens (L2 norm) that falls on that patch's own token. Maps on the patch
    grid assume locality: 1.0 means each token sees only its patch; 1/N means evidence spreads evenly.
    """
    x = pixels.unsqueeze(0).to(next(model.parameters()).device)
    p = model.visual_encoder.patch_embed.patch_size[0]
    cols = x.shape[-1] // p
    painted = []
    for j in range(0, model.visual_encoder.num_patches, stride):
        r, c = divmod(j, cols)
        y = x.clone()
        y[..., r * p:(r + 1) * p, c * p:(c + 1) * p] = x.mean() + 1.0
        painted.append(y)
    base = model.encode_image(x)[0][:, 1:]
    change = (model.encode_image(torch.cat(painted))[0][:, 1:] - base).norm(dim=-1)  # (P, N)
    own = change[torch.arange(len(painted)), torch.arange(0, change.shape[1], stride)]
    return (own / change.sum(dim=1)).tolist()
