"""Building a model from a validated run config: the towers and heads of the task, and the weights the config
names (a BLIP-style checkpoint, or BERT and ViT weights)."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from models.bert_weights import load_bert_weights
from models.blip import BlipBase
from models.blip_pretrain import BlipPretrain
from models.blip_retrieval import BlipRetrieval
from models.checkpoint import load_checkpoint, load_vit_weights
from models.config import ModelConfig
from models.distributed import local_main_first

log = logging.getLogger("medvl")

TASKS = {"pretrain": BlipPretrain, "retrieval": BlipRetrieval}


def build_model(config: Mapping[str, Any] | ModelConfig, task: str = "pretrain", tokenizer=None,
                load_weights: bool = True) -> BlipBase:
    """Build the model for ``task`` from a validated run config (or its :class:`ModelConfig`).

    With ``load_weights``: ``pretrained`` (a BLIP-style checkpoint, path or URL) if set; otherwise
    ``text_encoder`` (BERT hub name or folder) for the text towers and ``vit_pretrained`` (a DeiT/timm
    checkpoint) for the image tower, each when set. Momentum copies start equal to the online weights.
    Under torchrun, each machine's first process builds first (it alone downloads the tokenizer and the
    weights into the cache); a collective then.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, not {task!r}")
    with local_main_first():
        return _build(ModelConfig.of(config), task, tokenizer, load_weights)


def _build(cfg: ModelConfig, task: str, tokenizer, load_weights: bool) -> BlipBase:
    model = TASKS[task](cfg, tokenizer)
    if cfg.freeze_vit:
        # The optimizer takes only parameters that require grad and the momentum update skips the
        # others, so both image towers stay exactly as loaded.
        for name in ("visual_encoder", "visual_encoder_m"):
            if hasattr(model, name):
                getattr(model, name).requires_grad_(False)
    if not load_weights:
        return model
    if cfg.pretrained:
        _, report = load_checkpoint(model, cfg.pretrained)
        if report.missing_keys:
            log.info(f"keys not in the checkpoint (kept as initialised): {report.missing_keys[:20]}")
        return model
    if cfg.text_encoder:
        load_bert_weights(model, cfg.text_encoder)
    if cfg.vit_pretrained:
        load_vit_weights(model.visual_encoder, cfg.vit_pretrained)
    model.copy_params()
    return model
