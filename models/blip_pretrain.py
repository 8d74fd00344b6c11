"""BLIP pre-training model: image-text contrastive (ITC), image-text matching (ITM) and image-grounded
language modelling (LM), with momentum encoders and feature queues."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from models import losses, text_fast
from models.blip import BlipBase
from models.config import ModelConfig
from models.text import TextDecoder


class BlipPretrain(BlipBase):
    """ITC + ITM + LM. The decoder shares every text parameter with the encoder but self-attention."""

    ptr_name = "queue_ptr"
    with_idx_queue = False

    def __init__(self, config: ModelConfig | Mapping[str, Any], tokenizer=None):
        super().__init__(config, tokenizer)
        self.text_decoder = TextDecoder(self.text_config, shared=self.text_encoder)
        self.text_decoder.bert.grad_ckpt = self.config.text_grad_ckpt
        self._init_momentum()

    def forward(self, images: Tensor, captions_or_batch, alpha: float) -> dict[str, Tensor]:
        """images (B, 3, H, W); a batch dict (``input_ids``, ``attention_mask`` (B, L), optional
        ``image_ids`` (B,)) or a list of captions. Returns ``{"itc", "itm", "lm"}`` scalar losses, and
        keeps the number of ITM pairs left out for want of a valid negative in ``self.itm_dropped``."""
        batch = self._as_batch(captions_or_batch, images.device)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        image_ids = batch.get("image_ids")
        if image_ids is None:
            image_ids = torch.arange(images.shape[0], device=images.device)
        image_embeds, image_feat = self.encode_image(images)
        text_feat = self.text_features(ids, mask)
        loss_itc, sim_i2t, sim_t2i = self.itc_step(images, image_feat, text_feat, batch, image_ids, alpha)

        # ITM with one hard negative image per text and one hard negative text per image (local batch),
        # never of the same image or with the same caption; rows with no such negative leave the loss.
        bs = images.shape[0]
        with torch.no_grad():
            same = (image_ids[:, None] == image_ids[None, :]) | losses.same_text(ids, ids)  # (B, B), symmetric
            neg_image = losses.sample_negatives(losses.negative_weights(sim_t2i[:, :bs], same, eps=1e-4))
            neg_text = losses.sample_negatives(losses.negative_weights(sim_i2t[:, :bs], same, eps=1e-4))
            has_neg = losses.has_negative(same)
        # The image tokens' cross-attention keys/values, once per layer for both ITM passes and the decoder,
        # whose cross-attention modules are the encoder's (share_except_self_attention).
        kv = self.text_encoder.cross_kv(image_embeds)
        logits, labels = self.itm_loss_inputs(image_embeds, batch, neg_image, ids[neg_text], mask[neg_text], kv)
        loss_itm = self.masked_itm_loss(logits, labels, has_neg, has_neg)

        # LM: [DEC] starts the sequence; padding is not predicted.
        dec_ids = ids.clone()
        dec_ids[:, 0] = self.tokenizer.bos_token_id
        labels = dec_ids.masked_fill(dec_ids == self.tokenizer.pad_token_id, -100)
        head = self.text_decoder.cls.predictions
        if text_fast.host_reads(ids.device):
            # The decoder's states and the head over the vocabulary only where a target is predicted, the
            # padding never computed: the same targets, the same mean, the same smoothing. (Selecting rows
            # by a mask would wait for an accelerator, so there every position is computed.)
            predicting = losses.lm_predicting(labels)
            hidden = text_fast.predicting_hidden(self.text_decoder.bert, dec_ids, mask, predicting, cross_kv=kv)
            loss_lm = losses.lm_loss_selected(head(hidden), labels, predicting, label_smoothing=0.1)
        else:
            hidden = self.text_decoder.bert(dec_ids, mask, mode="multimodal", causal=True, cross_kv=kv)
            loss_lm = losses.lm_loss(head(hidden[:, :-1]), labels[:, 1:], label_smoothing=0.1, shifted=True)
        return {"itc": loss_itc, "itm": loss_itm, "lm": loss_lm}
