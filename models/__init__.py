"""The library: BLIP's pre-training and retrieval models, their parts, losses, weights and evaluation.

It imports torch, timm, transformers and itself only (never the training app, the configs or the data
packages), so it can be used from notebooks and other code as it is. ``build_model(config, task)``
builds a model from a validated run config (or a :class:`ModelConfig`). Public API::

    from models import build_model, load_checkpoint, load_trained
    model = build_model(config, task="retrieval")
    image_embeds, image_feat = model.encode_image(images)          # (B, 1+N, Dv), (B, embed_dim)
    text_embeds, text_feat = model.encode_text(input_ids, mask)     # (B, L, D), (B, embed_dim)
    logits = model.itm_logits(image_embeds, input_ids, mask)        # (B, 2), [ENC] put in place of [CLS]
    losses = model(images, captions_or_batch, alpha)                # {"itc", "itm"[, "lm"]}
"""
from __future__ import annotations

from models.bert_weights import load_bert_weights
from models.blip import BlipBase
from models.blip_pretrain import BlipPretrain
from models.blip_retrieval import BlipRetrieval
from models.build import build_model
from models.checkpoint import LoadReport, load_checkpoint, load_state, load_vit_weights
from models.config import ModelConfig, ModelSetupError
from models.tokenizer import init_tokenizer, tokenize
from models.trained import load_trained

__all__ = ["build_model", "load_checkpoint", "load_state", "load_bert_weights", "load_vit_weights",
           "init_tokenizer", "tokenize", "load_trained", "BlipBase", "BlipPretrain", "BlipRetrieval", "LoadReport",
           "ModelConfig", "ModelSetupError"]
