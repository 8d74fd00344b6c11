"""The layout of transformers' BLIP models, and how our BLIP-keyed state dicts map onto it.

transformers' ``BlipForImageTextRetrieval`` and ``BlipForConditionalGeneration`` hold the tensors of BLIP's
checkpoints: the text towers, projections and ITM head under the same names, the image tower under
``vision_model.*`` with its own names (timm's ``blocks.{i}.attn.qkv`` is ``encoder.layers.{i}.self_attn.qkv``).
Tensors transformers has no place for (``temp``, the queues, the momentum copies) travel in a side file.

``embeddings.position_ids`` (0..P-1) are not written, since loading rebuilds them; the LM head's ``decoder``
weight and bias (tied to the word embeddings and ``predictions.bias``) are written, for transformers 4.x.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import Tensor

# (our name, transformers' name); {i} a layer index, {p} weight or bias, {rest} any dotted tail.
_RULES = [
    ("visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
    ("visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
    ("visual_encoder.patch_embed.proj.{p}", "vision_model.embeddings.patch_embedding.{p}"),
    ("visual_encoder.blocks.{i}.norm1.{p}", "vision_model.encoder.layers.{i}.layer_norm1.{p}"),
    ("visual_encoder.blocks.{i}.attn.qkv.{p}", "vision_model.encoder.layers.{i}.self_attn.qkv.{p}"),
    ("visual_encoder.blocks.{i}.attn.proj.{p}", "vision_model.encoder.layers.{i}.self_attn.projection.{p}"),
    ("visual_encoder.blocks.{i}.norm2.{p}", "vision_model.encoder.layers.{i}.layer_norm2.{p}"),
    ("visual_encoder.blocks.{i}.mlp.fc1.{p}", "vision_model.encoder.layers.{i}.mlp.fc1.{p}"),
    ("visual_encoder.blocks.{i}.mlp.fc2.{p}", "vision_model.encoder.layers.{i}.mlp.fc2.{p}"),
    ("visual_encoder.norm.{p}", "vision_model.post_layernorm.{p}"),
    ("vision_proj.{p}", "vision_proj.{p}"),
    ("text_proj.{p}", "text_proj.{p}"),
    ("itm_head.{p}", "itm_head.{p}"),
    ("text_encoder.{rest}", "text_encoder.{rest}"),
    ("text_decoder.{rest}", "text_decoder.{rest}"),
]
_PARTS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "rest": r"(?P<rest>.+)"}
TEXT_PREFIXES = ("text_encoder.", "text_decoder.bert.")
HEAD = "text_decoder.cls.predictions."


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, part in _PARTS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), part)
    return re.compile(pattern)


_TO_HF = [(_compile(ours), hf) for ours, hf in _RULES]
_FROM_HF = [(_compile(hf), ours) for ours, hf in _RULES]


def _rename(key: str, table: list[tuple[re.Pattern, str]]) -> str | None:
    for pattern, template in table:
        found = pattern.fullmatch(key)
        if found:
            return template.format(**found.groupdict())
    return None


def derived_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The tensors of ``state`` that loading rebuilds (see :func:`rebuild_derived`), with their values."""
    out = {}
    for prefix in TEXT_PREFIXES:
        key = f"{prefix}embeddings.position_ids"
        if key in state:
            out[key] = state[key]
    for name in ("decoder.weight", "decoder.bias"):
        if HEAD + name in state:
            out[HEAD + name] = state[HEAD + name]
    return out


def rebuild_derived(state: dict[str, Tensor], like: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The derived tensors for a state dict without them: position ids and the tied LM head.

    ``like`` gives the shapes and dtypes to rebuild (a model's own state dict); without it, every text tower
    present in ``state`` gets position ids of its position table's length.
    """
    out = {}
    for prefix in TEXT_PREFIXES:
        table = state.get(f"{prefix}embeddings.position_embeddings.weight")
        key = f"{prefix}embeddings.position_ids"
        if table is None or (like is not None and key not in like):
            continue
        ids = torch.arange(table.shape[0])[None]
        out[key] = ids.to(like[key].dtype) if like is not None else ids
    words = state.get("text_decoder.bert.embeddings.word_embeddings.weight")
    if words is not None and f"{HEAD}bias" in state:
        out[f"{HEAD}decoder.weight"] = words
        out[f"{HEAD}decoder.bias"] = state[f"{HEAD}bias"]
    return out


def split_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Our state dict -> (transformers-named tensors, our tensors transformers has no place for).

    A derived tensor whose value loading would not rebuild exactly (position ids that are not 0..P-1, an
    untied head) goes with the extras, so that the round trip stays exact.
    """
    derived = derived_keys(state)
    rebuilt = rebuild_derived({k: v for k, v in state.items() if k not in derived}, state)
    hf, extra = {}, {}
    for key, value in state.items():
        if key in derived:
            if key in rebuilt and torch.equal(rebuilt[key], value):
                if key.startswith(HEAD):
                    # Written although tied: transformers 4.x does not tie BLIP's LM head when loading, and
                    # would start it from random values; 5.x takes the copy as the tied tensor.
                    hf[_rename(key, _TO_HF) or key] = value
                continue
            extra[key] = value
            continue
        name = _rename(key, _TO_HF)
        if name is None:
            extra[key] = value
        else:
            hf[name] = value
    return hf, extra


def join_state(hf: dict[str, Tensor], extra: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """transformers-named tensors (plus our extras) -> our state dict, derived tensors rebuilt.

    Keys transformers may hold that BLIP has no use for (a text pooler) are refused by name.
    """
    state, unknown = {}, []
    for key, value in hf.items():
        name = _rename(key, _FROM_HF)
        if name is None:
            unknown.append(key)
        else:
            state[name] = value
    if unknown:
        raise KeyError(f"tensors with no BLIP counterpart: {unknown[:10]}")
    state.update(extra or {})
    for key, value in rebuild_derived(state).items():
        state.setdefault(key, value)
    return state


def blip_config(model, tokenizer) -> dict[str, Any]:
    """``BlipConfig`` keyword arguments describing ``model`` (a :class:`models.blip.BlipBase`)."""
    vit, text = model.visual_encoder, model.text_config
    block = vit.blocks[0]
    vision = {
        "hidden_size": vit.width, "intermediate_size": block.mlp.fc1.out_features,
        "num_hidden_layers": len(vit.blocks), "num_attention_heads": block.attn.num_heads,
        "image_size": int(model.config.image_size), "patch_size": int(vit.patch_embed.patch_size[0]),
        "hidden_act": "gelu", "layer_norm_eps": float(vit.norm.eps), "attention_dropout": 0.0,
        "initializer_range": 0.02,
    }
    text_cfg = {
        "vocab_size": text.vocab_size, "hidden_size": text.hidden_size, "encoder_hidden_size": vit.width,
        "intermediate_size": text.intermediate_size, "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads, "max_position_embeddings": text.max_position_embeddings,
        "hidden_act": "gelu", "layer_norm_eps": text.layer_norm_eps, "hidden_dropout_prob": text.hidden_dropout_prob,
        "attention_probs_dropout_prob": text.attention_probs_dropout_prob, "initializer_range": text.initializer_range,
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.sep_token_id, "sep_token_id": tokenizer.sep_token_id,
        "is_decoder": True, "label_smoothing": 0.1,  # BLIP's LM loss
    }
    embed_dim = model.vision_proj.out_features
    return {"vision_config": vision, "text_config": text_cfg, "image_text_hidden_size": embed_dim,
            "projection_dim": embed_dim, "logit_scale_init_value": math.log(1.0 / float(model.temp.detach())),
            "label_smoothing": 0.1}


def run_config_keys(config: dict[str, Any]) -> dict[str, Any]:
    """The run-config keys that build our towers to the sizes of a transformers BLIP ``config.json``."""
    vision = config["vision_config"]
    return {
        "vit": {"width": vision["hidden_size"], "depth": vision["num_hidden_layers"],
                "heads": vision["num_attention_heads"], "patch_size": vision["patch_size"]},
        "image_size": vision["image_size"],
        "embed_dim": config.get("image_text_hidden_size", 256),
    }


def med_config(config: dict[str, Any]) -> dict[str, Any]:
    """A BERT-style ``med_config`` JSON for the text towers of a transformers BLIP ``config.json``."""
    text, vision = config["text_config"], config["vision_config"]
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "layer_norm_eps", "hidden_dropout_prob", "attention_probs_dropout_prob",
            "initializer_range", "pad_token_id")
    defaults = {"vocab_size": 30524, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 8,
                "intermediate_size": 3072, "max_position_embeddings": 512, "layer_norm_eps": 1e-12,
                "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02,
                "pad_token_id": 0}
    out = {k: text.get(k, defaults[k]) for k in keys}
    out.update({"architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
                "encoder_width": vision.get("hidden_size", 768), "add_cross_attention": True})
    return out
