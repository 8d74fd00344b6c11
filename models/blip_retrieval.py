"""BLIP retrieval model: ITC with image-id-aware targets and an id queue, plus ITM with id-masked hard
negatives drawn from the local batch or from every process (``negative_all_rank``). No decoder."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from models import losses
from models.blip import BlipBase, pad_to
from models.config import ModelConfig
from models.distributed import all_gather_no_grad, all_gather_with_grad, get_world_size


class BlipRetrieval(BlipBase):
    ptr_name = "ptr_queue"
    with_idx_queue = True

    def __init__(self, config: ModelConfig | Mapping[str, Any], tokenizer=None):
        super().__init__(config, tokenizer)
        self.negative_all_rank = self.config.negative_all_rank
        self._init_momentum()

    def forward(self, images: Tensor, captions_or_batch, alpha: float, idx: Tensor | None = None) -> dict[str, Tensor]:
        """images (B, 3, H, W); a batch dict (``input_ids``, ``attention_mask``, ``image_ids`` (B,)) or a list
        of captions with ``idx`` (B,) image ids. Every caption of the same image, in the batch or in the
        queue, is a positive. Returns ``{"itc", "itm"}``; the number of ITM pairs left out for want of a
        valid negative is kept in ``self.itm_dropped``."""
        batch = self._as_batch(captions_or_batch, images.device)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        idx = batch.get("image_ids", idx)
        if idx is None:
            raise ValueError("retrieval training needs image ids (batch['image_ids'] or idx)")
        idx = idx.view(-1).long()
        image_embeds, image_feat = self.encode_image(images)
        text_feat = self.text_features(ids, mask)
        loss_itc, _, _ = self.itc_step(images, image_feat, text_feat, batch, idx, alpha)

        neg_images, neg_ids, neg_mask, has_neg = self._hard_negatives(image_embeds, image_feat, text_feat, ids,
                                                                      mask, idx)
        logits, labels = self.itm_loss_inputs(image_embeds, batch, neg_images, neg_ids, neg_mask)
        loss_itm = self.masked_itm_loss(logits, labels, has_neg, has_neg)
        return {"itc": loss_itc, "itm": loss_itm}

    def _hard_negatives(self, image_embeds: Tensor, image_feat: Tensor, text_feat: Tensor, ids: Tensor,
                        mask: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One negative image per text and one negative text per image, never of the same image id or caption.

        Returns the negative images (their rows (B,) in this batch, or with ``negative_all_rank`` their
        tokens (B, 1+N, Dv) gathered from the world batch with gradient, so that each image's owner
        receives the gradient of its use elsewhere), the negative texts' ids and masks, and (B,) bool,
        True where a row had a valid negative (the same for both directions: one mask serves both).
        """
        all_rank = self.negative_all_rank and get_world_size() > 1
        if all_rank:
            # Processes pad their batches to their own longest caption: gather at one common width.
            ids, mask = pad_to(ids, self.max_length, self.tokenizer.pad_token_id), pad_to(mask, self.max_length, 0)
        with torch.no_grad():
            idx_w = all_gather_no_grad(idx) if all_rank else idx
            image_feat_w = all_gather_no_grad(image_feat) if all_rank else image_feat
            text_feat_w = all_gather_no_grad(text_feat) if all_rank else text_feat
            ids_w = all_gather_no_grad(ids) if all_rank else ids
            same = (idx[:, None] == idx_w[None, :]) | losses.same_text(ids, ids_w)
            w_i2t = losses.negative_weights(image_feat @ text_feat_w.T / self.temp, same)
            w_t2i = losses.negative_weights(text_feat @ image_feat_w.T / self.temp, same)
            neg_image = losses.sample_negatives(w_t2i)
            neg_text = losses.sample_negatives(w_i2t)
            has_neg = losses.has_negative(same)
        mask_w = all_gather_no_grad(mask) if all_rank else mask
        if not all_rank:
            return neg_image, ids_w[neg_text], mask_w[neg_text], has_neg
        return all_gather_with_grad(image_embeds)[neg_image], ids_w[neg_text], mask_w[neg_text], has_neg
