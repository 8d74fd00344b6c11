"""Parts shared by the pre-training and retrieval models: tokenizer, towers, projections, ITM head,
momentum copies and feature queues, and the public feature API (``encode_image``, ``encode_text``,
``itm_logits``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import losses, text_fast
from models.config import ModelConfig
from models.distributed import all_gather_no_grad
from models.text import CrossKV, TextConfig, TextTransformer
from models.tokenizer import init_tokenizer, tokenize
from models.vit import create_vit

DEFAULT_MED_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "med_config.json"


def resolve_med_config(value: str | None) -> Path:
    """``med_config`` from the config: a path (absolute, relative to the working folder or to the repo)."""
    if not value:
        return DEFAULT_MED_CONFIG
    path = Path(value)
    if not path.exists() and (DEFAULT_MED_CONFIG.parents[1] / path).exists():
        path = DEFAULT_MED_CONFIG.parents[1] / path
    return path


def _momentum_copy(module: nn.Module) -> nn.Module:
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


class BlipBase(nn.Module):
    """Towers, projections, ITM head, temperature, momentum copies and queues of BLIP.

    Subclasses add their objectives. Buffer names follow BLIP's checkpoints; ``ptr_name`` is
    ``queue_ptr`` for pre-training and ``ptr_queue`` for retrieval, as BLIP spells them.
    """

    ptr_name = "queue_ptr"
    with_idx_queue = False

    def __init__(self, config: ModelConfig | Mapping[str, Any], tokenizer=None):
        super().__init__()
        self.config = config = ModelConfig.of(config)
        self.tokenizer = tokenizer if tokenizer is not None else init_tokenizer(config.tokenizer)
        self.max_length = config.max_length
        self.visual_encoder, vision_width = create_vit(config.vit, config.image_size, config.vit_grad_ckpt,
                                                       config.vit_ckpt_layer, config.drop_path_rate)
        self.text_config = TextConfig.from_json(resolve_med_config(config.med_config))
        self.text_config.vocab_size = len(self.tokenizer)
        self.text_config.encoder_width = vision_width
        if self.max_length > self.text_config.max_position_embeddings:
            raise ValueError(f"max_length {self.max_length} exceeds the text model's "
                             f"max_position_embeddings {self.text_config.max_position_embeddings}")
        self.text_encoder = TextTransformer(self.text_config)
        self.text_encoder.grad_ckpt = config.text_grad_ckpt
        text_width = self.text_config.hidden_size
        self.vision_proj = nn.Linear(vision_width, config.embed_dim)
        self.text_proj = nn.Linear(text_width, config.embed_dim)
        self.itm_head = nn.Linear(text_width, 2)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.momentum = config.momentum
        self.queue_size = config.queue_size
        self._init_queues(config.embed_dim)

    # -- momentum encoders and queues ------------------------------------------------------------

    def _init_momentum(self) -> None:
        """Create the ``*_m`` copies from the online modules as they are now (call after weights load)."""
        self.visual_encoder_m = _momentum_copy(self.visual_encoder)
        self.vision_proj_m = _momentum_copy(self.vision_proj)
        self.text_encoder_m = _momentum_copy(self.text_encoder)
        self.text_proj_m = _momentum_copy(self.text_proj)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.visual_encoder, self.visual_encoder_m), (self.vision_proj, self.vision_proj_m),
                (self.text_encoder, self.text_encoder_m), (self.text_proj, self.text_proj_m)]

    @torch.no_grad()
    def copy_params(self) -> None:
        """Reset the momentum copies to the online weights (after loading weights that lack ``*_m``)."""
        for online, twin in self.momentum_pairs():
            for p, p_m in zip(online.parameters(), twin.parameters()):
                p_m.copy_(p)

    def momentum_params(self) -> tuple[list[Tensor], list[Tensor]]:
        """(online, twin) parameter lists of the momentum pairs, trainable online parameters only: a frozen
        tower (freeze_vit) keeps its twin exactly equal, without rounding drift."""
        online, twins = [], []
        for module, twin in self.momentum_pairs():
            for p, p_m in zip(module.parameters(), twin.parameters()):
                if p.requires_grad:
                    online.append(p.detach())
                    twins.append(p_m)
        return online, twins

    @torch.no_grad()
    def momentum_update(self) -> None:
        """p_m = m * p_m + (1 - m) * p for every trainable parameter, as two multi-tensor operations: a
        Python loop over the ~1,000 tensors of base size launches two kernels per tensor."""
        online, twins = self.momentum_params()
        if twins:
            torch._foreach_mul_(twins, self.momentum)
            torch._foreach_add_(twins, online, alpha=1.0 - self.momentum)

    def _init_queues(self, embed_dim: int) -> None:
        self.register_buffer("image_queue", F.normalize(torch.randn(embed_dim, self.queue_size), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(embed_dim, self.queue_size), dim=0))
        if self.with_idx_queue:
            self.register_buffer("idx_queue", torch.full((1, self.queue_size), -100, dtype=torch.long))
        self.register_buffer(self.ptr_name, torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, image_feat: Tensor, text_feat: Tensor, idx: Tensor | None = None) -> None:
        """Write the gathered momentum features (B, E) into the queues, wrapping around.

        Any batch size works (BLIP asserted that the queue is a multiple of the batch and crashed on
        short last batches); a batch larger than the queue keeps its last ``queue_size`` rows.
        """
        image_feat = all_gather_no_grad(image_feat)
        text_feat = all_gather_no_grad(text_feat)
        if self.with_idx_queue:
            idx = all_gather_no_grad(idx)
        n, q = image_feat.shape[0], self.queue_size
        ptr_buf = getattr(self, self.ptr_name)
        if n >= q:
            image_feat, text_feat = image_feat[-q:], text_feat[-q:]
            idx = idx[-q:] if idx is not None else None
            n = q
        # The pointer stays on the device: reading it (.item()) would wait for the step's work each step.
        cols = (ptr_buf + torch.arange(n, device=ptr_buf.device)) % q  # (n,)
        # A pair whose features are not finite (a step the training loop skips) keeps the entries it would
        # replace: one NaN in the queue would make every later ITC loss NaN until it left the queue.
        finite = (torch.isfinite(image_feat).all(1) & torch.isfinite(text_feat).all(1))[:, None]  # (n, 1)
        self.image_queue[:, cols] = torch.where(finite, image_feat.to(self.image_queue.dtype), self.image_queue[:, cols].T).T
        self.text_queue[:, cols] = torch.where(finite, text_feat.to(self.text_queue.dtype), self.text_queue[:, cols].T).T
        if self.with_idx_queue:
            self.idx_queue[0, cols] = torch.where(finite[:, 0], idx.to(self.idx_queue.dtype), self.idx_queue[0, cols])
        ptr_buf.copy_((ptr_buf + n) % q)

    def queue_ids(self, device: torch.device) -> Tensor:
        """Image ids of the queued features (Q,): -100 (never a positive) unless the model keeps an id queue."""
        if self.with_idx_queue:
            return self.idx_queue[0]
        return torch.full((self.queue_size,), -100, dtype=torch.long, device=device)

    def itc_step(self, images: Tensor, image_feat: Tensor, text_feat: Tensor, batch: dict[str, Tensor],
                 image_ids: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
        """BLIP's image-text contrastive loss with momentum distillation, against this batch's momentum
        features and the queues; then the momentum features are enqueued.

        images (B, 3, H, W); image_feat, text_feat (B, E) online features; image_ids (B,): captions of one
        image are positives of each other, in the batch and, with an id queue (retrieval), in the queue.
        Returns the loss and the similarities sim_i2t, sim_t2i (B, B+Q), divided by the temperature (no
        gradient flows through them: they serve the negative sampling).
        """
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
            self.momentum_update()
            image_feat_m, text_feat_m = self.momentum_features(images, batch["input_ids"], batch["attention_mask"])
            hard = losses.positive_targets(image_ids, torch.cat([image_ids, self.queue_ids(images.device)]))
        # Keys [feat_m.T | queue] without copying the queue, the gradient taken before enqueue writes it.
        loss, sim_i2t, sim_t2i = losses.queue_itc_loss(image_feat, text_feat, self.temp, image_feat_m, text_feat_m,
                                                       self.image_queue, self.text_queue, hard, alpha)
        self.enqueue(image_feat_m, text_feat_m, image_ids if self.with_idx_queue else None)
        return loss, sim_i2t, sim_t2i

    # -- public feature API ------------------------------------------------------------------------

    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images (B, 3, H, W) -> image_embeds (B, 1+N, Dv) and L2-normalised image_feat (B, embed_dim)."""
        image_embeds = self.visual_encoder(images)
        return image_embeds, F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L) ids and mask -> text_embeds (B, L, D) and L2-normalised text_feat (B, embed_dim)."""
        text_embeds = self.text_encoder(input_ids, attention_mask, mode="text")
        return text_embeds, F.normalize(self.text_proj(text_embeds[:, 0]), dim=-1)

    def text_features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The L2-normalised ITC text features (B, embed_dim) of ``encode_text`` alone: its last layer
        computes [CLS] only, the one position the features read, and on the CPU no padded position
        (``text_fast.first_hidden``; exact)."""
        cls = text_fast.first_hidden(self.text_encoder, input_ids, attention_mask)
        return F.normalize(self.text_proj(cls), dim=-1)

    @torch.no_grad()
    def momentum_features(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """L2-normalised image and text features (B, E) from the momentum encoders, whose last layers compute
        the [CLS] position alone (the only one read)."""
        image_feat = F.normalize(self.vision_proj_m(self.visual_encoder_m(images, cls_only=True)[:, 0]), dim=-1)
        cls = text_fast.first_hidden(self.text_encoder_m, input_ids, attention_mask)
        return image_feat, F.normalize(self.text_proj_m(cls), dim=-1)

    def enc_ids(self, input_ids: Tensor) -> Tensor:
        """A copy of ``input_ids`` with [ENC] in place of [CLS], as the image-grounded encoder expects."""
        ids = input_ids.clone()
        ids[:, 0] = self.tokenizer.enc_token_id
        return ids

    def itm_logits(self, image_embeds: Tensor | None, input_ids: Tensor, attention_mask: Tensor,
                   cross_kv: CrossKV | None = None, keep_cross_attention: list | None = None) -> Tensor:
        """Match/no-match logits (B, 2) for image tokens (B, 1+N, Dv) and texts (B, L).

        Puts [ENC] in place of [CLS] itself. ``cross_kv`` (from ``text_encoder.cross_kv``, one row per text)
        may replace ``image_embeds``. keep_cross_attention: a list that receives every layer's
        cross-attention probabilities (see :class:`TextTransformer`).
        """
        hidden = self.text_encoder(self.enc_ids(input_ids), attention_mask, image_embeds, mode="multimodal",
                                   cross_kv=cross_kv, first_only=keep_cross_attention is None,
                                   keep_cross_attention=keep_cross_attention)
        return self.itm_head(hidden[:, 0])

    def tokenize(self, captions: list[str], device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Tokenize cleaned captions (cut at ``max_length``, padded to the longest), as the data collate does."""
        return {k: v.to(device) for k, v in tokenize(self.tokenizer, captions, self.max_length).items()}

    def _as_batch(self, captions_or_batch, device: torch.device) -> dict[str, Tensor]:
        if isinstance(captions_or_batch, dict):
            return captions_or_batch
        return self.tokenize(list(captions_or_batch), device)

    def itm_loss_inputs(self, image_embeds: Tensor, batch: dict[str, Tensor], neg_images: Tensor,
                        neg_ids: Tensor, neg_mask: Tensor, cross_kv: CrossKV | None = None) -> tuple[Tensor, Tensor]:
        """ITM logits (3B + S, 2) and labels (3B + S,): B positives, B (text, negative image) and
        B (negative text, image) pairs, then S (image, caption with left/right swapped) negatives when the
        batch carries them (``swap_index``, ``swap_input_ids``, ``swap_attention_mask``).

        image_embeds (B, 1+N, Dv); neg_images: the negative images' rows (B,) long in this batch, or their
        tokens (B, 1+N, Dv) when they come from elsewhere (other processes). neg_ids, neg_mask (B, L').
        Every pair attends to this batch's image tokens through the same cross-attention weights, so their
        keys/values (``cross_kv`` from ``text_encoder.cross_kv``, computed here when not given) are
        computed once and gathered by row: a gathered row of keys/values equals the keys/values of the
        gathered image row, in value and in gradient. All 3B + S pairs go through the encoder in one pass
        (each row attends only to its own text and image), texts padded to the widest (masked, so exact).
        """
        ids, mask = batch["input_ids"], batch["attention_mask"]
        kv = cross_kv if cross_kv is not None else self.text_encoder.cross_kv(image_embeds)
        own = torch.arange(ids.shape[0], device=ids.device)
        texts, masks, later = [ids, ids, neg_ids], [mask, mask, neg_mask], own  # later: image rows after the negatives
        swap = batch.get("swap_index")
        if swap is not None and swap.numel():
            texts.append(batch["swap_input_ids"])
            masks.append(batch["swap_attention_mask"])
            later = torch.cat([own, swap])
        # Positives and negatives in one pass of the image-grounded encoder (every row is its own pair).
        if neg_images.dim() == 1:
            pair_kv = gather_kv(kv, torch.cat([own, neg_images, later]))
        else:
            pair_kv = cat_kv([kv, self.text_encoder.cross_kv(neg_images), gather_kv(kv, later)])
        width = max(t.shape[1] for t in texts)
        pair_ids = self.enc_ids(torch.cat([pad_to(t, width, self.tokenizer.pad_token_id) for t in texts]))
        pair_mask = torch.cat([pad_to(m, width, 0) for m in masks])
        # itm_logits' [ENC] state, on the CPU without the padded positions (text_fast.first_hidden).
        logits = self.itm_head(text_fast.first_hidden(self.text_encoder, pair_ids, pair_mask, cross_kv=pair_kv))
        bs = ids.shape[0]
        return logits, losses.itm_labels(bs, logits.shape[0] - bs, ids.device)

    def masked_itm_loss(self, logits: Tensor, labels: Tensor, has_neg_t2i: Tensor, has_neg_i2t: Tensor) -> Tensor:
        """ITM loss of :meth:`itm_loss_inputs`' pairs without the negatives that do not exist.

        has_neg_t2i, has_neg_i2t (B,) bool (``losses.has_negative``): a row with no valid negative (every
        candidate the same image or the same caption) drew an arbitrary pair, maybe the positive itself,
        which must not be taught as "no match". Their number is kept in ``self.itm_dropped`` (a 0-dim
        device tensor, so that nothing waits for the device; read it at log steps).
        """
        keep = losses.itm_keep(has_neg_t2i, has_neg_i2t, logits.shape[0] - 3 * has_neg_t2i.shape[0])
        self.itm_dropped = (~keep).sum()
        return losses.itm_loss(logits, labels, keep)


def pad_to(t: Tensor, width: int, value: int) -> Tensor:
    """Right-pad (B, L) ids or masks with ``value`` to (B, width); masked positions change no result."""
    return t if t.shape[1] == width else F.pad(t, (0, width - t.shape[1]), value=value)


def gather_kv(kv: CrossKV, rows: Tensor) -> CrossKV:
    """Rows (R,) of every layer's cross-attention keys/values (B, H, N, dh) -> (R, H, N, dh) each."""
    return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in kv]


def cat_kv(parts: list[CrossKV]) -> CrossKV:
    """Concatenate per-layer keys/values along the batch."""
    return [(torch.cat([p[i][0] for p in parts]), torch.cat([p[i][1] for p in parts])) for i in range(len(parts[0]))]
