"""The straightforward training step, written plainly as BLIP's own code does it: the reference that the
fast step of :mod:`models.blip_pretrain` and :mod:`models.blip_retrieval` is measured and tested against.

Same modules, same parameters, same losses (``models.losses``), same random draws; only the way of
computing differs:

- the text towers compute every position of their last layer although ITC reads [CLS] only, and the
  momentum ViT every token of its last block although ITC reads its [CLS] only;
- every text position is computed in every layer, padding included (the fast path skips the masked
  positions on the CPU: ``models.text_fast.first_hidden`` / ``predicting_hidden``);
- every multimodal pass (positive ITM, negative ITM, LM decoder) projects the image tokens to
  cross-attention keys/values again, and the negative pass gathers image tokens, not keys/values;
  positives and negatives go through the encoder in two passes;
- the LM head over the vocabulary runs at every position, including padding and the last position,
  which predict nothing;
- the momentum update is a Python loop over the parameters, two kernels per tensor;
- the queue pointer is read to the host (``.item()``) at every enqueue, and each queue is cloned
  before it is concatenated with the batch's momentum features into the ITC keys, which autograd keeps
  for backward (the fast path never copies the queue: ``losses.queue_itc_loss``);
- captions are padded to ``max_length``.

Use :func:`plain_optimizer` for BLIP's optimizer (AdamW, one tensor at a time). Nothing in training uses
this module; ``bench/train_step.py --baseline`` and ``tests/test_speed_paths.py`` do.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models import losses
from models.blip import BlipBase, pad_to
from models.blip_pretrain import BlipPretrain
from models.blip_retrieval import BlipRetrieval
from models.distributed import all_gather_no_grad
from models.tokenizer import tokenize


class PlainMixin:
    """The BLIP-style versions of the shared parts; put it before the model class in the bases."""

    def tokenize(self: BlipBase, captions: list[str], device=None) -> dict[str, Tensor]:
        """Captions padded to ``max_length``, as BLIP tokenizes."""
        out = tokenize(self.tokenizer, captions, self.max_length, pad_to_max=True)
        return {k: v.to(device) for k, v in out.items()}

    def text_features(self: BlipBase, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.encode_text(input_ids, attention_mask)[1]

    @torch.no_grad()
    def momentum_features(self: BlipBase, images: Tensor, input_ids: Tensor,
                          attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        image_feat = F.normalize(self.vision_proj_m(self.visual_encoder_m(images)[:, 0]), dim=-1)
        text = self.text_encoder_m(input_ids, attention_mask, mode="text")
        return image_feat, F.normalize(self.text_proj_m(text[:, 0]), dim=-1)

    @torch.no_grad()
    def momentum_update(self: BlipBase) -> None:
        m = self.momentum
        for online, twin in self.momentum_pairs():
            for p, p_m in zip(online.parameters(), twin.parameters()):
                if p.requires_grad:
                    p_m.mul_(m).add_(p.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self: BlipBase, image_feat: Tensor, text_feat: Tensor, idx: Tensor | None = None) -> None:
        """BLIP's enqueue (any batch size), the pointer read on the host."""
        image_feat, text_feat = all_gather_no_grad(image_feat), all_gather_no_grad(text_feat)
        idx = all_gather_no_grad(idx) if self.with_idx_queue else None
        n, q = image_feat.shape[0], self.queue_size
        ptr_buf = getattr(self, self.ptr_name)
        if n >= q:
            image_feat, text_feat, n = image_feat[-q:], text_feat[-q:], q
            idx = idx[-q:] if idx is not None else None
        ptr = int(ptr_buf.item())
        cols = (ptr + torch.arange(n, device=image_feat.device)) % q
        self.image_queue[:, cols] = image_feat.T.to(self.image_queue.dtype)  # bf16 under autocast
        self.text_queue[:, cols] = text_feat.T.to(self.text_queue.dtype)
        if self.with_idx_queue:
            self.idx_queue[0, cols] = idx
        ptr_buf[0] = (ptr + n) % q

    def itc_step(self: BlipBase, images: Tensor, image_feat: Tensor, text_feat: Tensor, batch: dict[str, Tensor],
                 image_ids: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
            self.momentum_update()
            image_feat_m, text_feat_m = self.momentum_features(images, batch["input_ids"], batch["attention_mask"])
            image_keys = torch.cat([image_feat_m.T, self.image_queue.clone().detach()], dim=1)
            text_keys = torch.cat([text_feat_m.T, self.text_queue.clone().detach()], dim=1)
            hard = losses.positive_targets(image_ids, torch.cat([image_ids, self.queue_ids(images.device)]))
            targets_i2t = losses.distilled_targets(image_feat_m @ text_keys / self.temp, hard, alpha)
            targets_t2i = losses.distilled_targets(text_feat_m @ image_keys / self.temp, hard, alpha)
        sim_i2t = image_feat @ text_keys / self.temp
        sim_t2i = text_feat @ image_keys / self.temp
        loss = losses.itc_loss(sim_i2t, sim_t2i, targets_i2t, targets_t2i)
        self.enqueue(image_feat_m, text_feat_m, image_ids if self.with_idx_queue else None)
        return loss, sim_i2t, sim_t2i

    def itm_loss_inputs(self: BlipBase, image_embeds: Tensor, batch: dict[str, Tensor], neg_images: Tensor,
                        neg_ids: Tensor, neg_mask: Tensor, cross_kv=None) -> tuple[Tensor, Tensor]:
        """BLIP's two ITM passes on image tokens; ``neg_images`` may be rows (B,) of this batch."""
        if neg_images.dim() == 1:
            neg_images = image_embeds[neg_images]
        ids, mask = batch["input_ids"], batch["attention_mask"]
        images, texts, masks = [neg_images, image_embeds], [ids, neg_ids], [mask, neg_mask]
        swap = batch.get("swap_index")
        if swap is not None and swap.numel():
            images.append(image_embeds[swap])
            texts.append(batch["swap_input_ids"])
            masks.append(batch["swap_attention_mask"])
        width = max(t.shape[1] for t in texts)
        texts = [pad_to(t, width, self.tokenizer.pad_token_id) for t in texts]
        masks = [pad_to(m, width, 0) for m in masks]
        logits_pos = self.itm_logits(image_embeds, ids, mask)
        logits_neg = self.itm_logits(torch.cat(images), torch.cat(texts), torch.cat(masks))
        bs = ids.shape[0]
        return torch.cat([logits_pos, logits_neg]), losses.itm_labels(bs, logits_neg.shape[0], ids.device)


class PlainPretrain(PlainMixin, BlipPretrain):
    """:class:`BlipPretrain` computed as BLIP computes it (see the module docstring)."""

    def forward(self, images: Tensor, captions_or_batch, alpha: float) -> dict[str, Tensor]:
        batch = self._as_batch(captions_or_batch, images.device)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        image_ids = batch.get("image_ids")
        if image_ids is None:
            image_ids = torch.arange(images.shape[0], device=images.device)
        image_embeds, image_feat = self.encode_image(images)
        _, text_feat = self.encode_text(ids, mask)
        loss_itc, sim_i2t, sim_t2i = self.itc_step(images, image_feat, text_feat, batch, image_ids, alpha)
        bs = images.shape[0]
        with torch.no_grad():
            same = (image_ids[:, None] == image_ids[None, :]) | losses.same_text(ids, ids)
            neg_image = losses.sample_negatives(losses.negative_weights(sim_t2i[:, :bs], same, eps=1e-4))
            neg_text = losses.sample_negatives(losses.negative_weights(sim_i2t[:, :bs], same, eps=1e-4))
            has_neg = losses.has_negative(same)
        logits, labels = self.itm_loss_inputs(image_embeds, batch, image_embeds[neg_image], ids[neg_text],
                                              mask[neg_text])
        loss_itm = self.masked_itm_loss(logits, labels, has_neg, has_neg)
        dec_ids = ids.clone()
        dec_ids[:, 0] = self.tokenizer.bos_token_id
        labels = dec_ids.masked_fill(dec_ids == self.tokenizer.pad_token_id, -100)
        logits_lm = self.text_decoder(dec_ids, mask, image_embeds)
        return {"itc": loss_itc, "itm": loss_itm, "lm": losses.lm_loss(logits_lm, labels, label_smoothing=0.1)}


class PlainRetrieval(PlainMixin, BlipRetrieval):
    """:class:`BlipRetrieval` computed as BLIP computes it (its forward calls the plain parts above)."""


def plain_optimizer(model: torch.nn.Module, lr: float = 1e-4, weight_decay: float = 0.05) -> torch.optim.AdamW:
    """BLIP's optimizer: AdamW over every trainable parameter, updated one tensor at a time."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=False, fused=False)
