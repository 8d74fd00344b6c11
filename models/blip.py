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

from models import losses
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

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.momentum
        for online, twin in self.momentum_pairs():
            for p, p_m in zip(online.parameters(), twin.parameters()):
                if p.requires_grad:  # a frozen tower (freeze_vit) keeps its twin equal, without rounding drift
                    p_m.mul_(m).add_(p.detach(), alpha=1.0 - m)

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
        cols = (int(ptr_buf.item()) + torch.arange(n, device=image_feat.device)) % q
        self.image_queue[:, cols] = image_feat.T.to(self.image_queue.dtype)
        self.text_queue[:, cols] = text_feat.T.to(self.text_queue.dtype)
        if self.with_idx_queue:
            self.idx_queue[0, cols] = idx.to(self.idx_queue.dtype)
        ptr_buf[0] = (int(ptr_buf.item()) + n) % q

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
        Returns the loss and the similarities sim_i2t, sim_t2i (B, B+Q), divided by the temperature.
        """
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
            self.momentum_update()
            image_feat_m, text_feat_m = self.momentum_features(images, batch["input_ids"], batch["attention_mask"])
            image_keys = torch.cat([image_feat_m.T, self.image_queue.clone()], dim=1)  # (E, B+Q)
            text_keys = torch.cat([text_feat_m.T, self.text_queue.clone()], dim=1)
            hard = losses.positive_targets(image_ids, torch.cat([image_ids, self.queue_ids(images.device)]))
            targets_i2t = losses.distilled_targets(image_feat_m @ text_keys / self.temp, hard, alpha)
            targets_t2i = losses.distilled_targets(text_feat_m @ image_keys / self.temp, hard, alpha)
        sim_i2t = image_feat @ text_keys / self.temp
        sim_t2i = text_feat @ image_keys / self.temp
        loss = losses.itc_loss(sim_i2t, sim_t2i, targets_i2t, targets_t2i)
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

    @torch.no_grad()
    def momentum_features(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """L2-normalised image and text features (B, E) from the momentum encoders."""
        image_feat = F.normalize(self.vision_proj_m(self.visual_encoder_m(images)[:, 0]), dim=-1)
        text = self.text_encoder_m(input_ids, attention_mask, mode="text")
        return image_feat, F.normalize(self.text_proj_m(text[:, 0]), dim=-1)

    def enc_ids(self, input_ids: Tensor) -> Tensor:
        """A copy of ``input_ids`` with [ENC] in place of [CLS], as the image-grounded encoder expects."""
        ids = input_ids.clone()
        ids[:, 0] = self.tokenizer.enc_token_id
        return ids

    def itm_logits(self, image_embeds: Tensor | None, input_ids: Tensor, attention_mask: Tensor,
                   cross_kv: CrossKV | None = None, keep_cross_attention: list | None = None) -> Tensor:
        """Match/no-match logits (B, 2) for image tokens (B, 1+N, Dv) and texts (B, L).

        Puts [ENC] in place of [CLS] itself. ``cross_kv`` (from ``text_encoder.cross_kv``) may replace
        ``image_embeds`` to reuse an image's cross-attention keys/values across many texts.
        """
        hidden = self.text_encoder(self.enc_ids(input_ids), attention_mask, image_embeds, mode="multimodal",
                                   cross_kv=cross_kv, keep_cross_attention=keep_cross_attention,
                                   first_only=keep_cross_attention is None)
        return self.itm_head(hidden[:, 0])

    def tokenize(self, captions: list[str], device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Tokenize cleaned captions to ``max_length`` (padded), as the data collate function does."""
        return {k: v.to(device) for k, v in tokenize(self.tokenizer, captions, self.max_length).items()}

    def _as_batch(self, captions_or_batch, device: torch.device) -> dict[str, Tensor]:
        if isinstance(captions_or_batch, dict):
            return captions_or_batch
        return self.tokenize(list(captions_or_batch), device)

    def itm_loss_inputs(self, image_embeds: Tensor, batch: dict[str, Tensor], neg_images: Tensor,
                        neg_ids: Tensor, neg_mask: Tensor) -> tuple[Tensor, Tensor]:
        """ITM logits (3B + S, 2) and labels (3B + S,): B positives, B (text, negative image) and
        B (negative text, image) pairs, then S (image, caption with left/right swapped) negatives when the
        batch carries them (``swap_index``, ``swap_input_ids``, ``swap_attention_mask``)."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        images, texts, masks = [neg_images, image_embeds], [ids, neg_ids], [mask, neg_mask]
        swap = batch.get("swap_index")
        if swap is not None and swap.numel():
            images.append(image_embeds[swap])
            texts.append(batch["swap_input_ids"])
            masks.append(batch["swap_attention_mask"])
        logits_pos = self.itm_logits(image_embeds, ids, mask)
        logits_neg = self.itm_logits(torch.cat(images), torch.cat(texts), torch.cat(masks))
        bs = ids.shape[0]
        return torch.cat([logits_pos, logits_neg]), losses.itm_labels(bs, logits_neg.shape[0], ids.device)
