"""Load Hugging Face BERT weights (hub name or local folder) into our text transformer by name."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from models.checkpoint import load_state
from models.config import ModelSetupError
from models.hub import offline_hint, require_hub_name
from models.text import TextTransformer

log = logging.getLogger("medvl")


def bert_folder(name_or_path: str) -> Path:
    """A local folder for ``name_or_path``: the folder itself, or the hub snapshot (cached or downloaded)."""
    if os.path.isdir(name_or_path):
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    require_hub_name(name_or_path, "text_encoder", "config.json")
    try:
        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"]))
    except Exception as e:  # noqa: BLE001  (hub errors have many types)
        raise ModelSetupError(f"cannot find BERT weights {name_or_path!r}: {e}. "
                              f"{offline_hint(name_or_path, 'text_encoder')}") from e


def read_bert_state(name_or_path: str) -> dict[str, Tensor]:
    """BERT tensors with BERT's own names, prefixes such as ``bert.`` removed, old gamma/beta renamed."""
    folder = bert_folder(name_or_path)
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        raw = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        raw = load_state(folder / "pytorch_model.bin")
    else:
        raise FileNotFoundError(f"{folder} holds neither model.safetensors nor pytorch_model.bin")
    state = {}
    for key, value in raw.items():
        key = key.removeprefix("bert.").replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        state[key] = value
    return state


def _copy(target: Tensor, source: Tensor, key: str) -> None:
    """Copy ``source`` into ``target``; a larger vocabulary keeps its extra rows ([DEC], [ENC]) as initialised."""
    if source.shape == target.shape:
        target.copy_(source)
    elif source.dim() >= 1 and source.shape[1:] == target.shape[1:] and source.shape[0] < target.shape[0]:
        target[: source.shape[0]].copy_(source)
    else:
        raise ValueError(f"BERT tensor {key}: shape {tuple(source.shape)} does not fit {tuple(target.shape)}")


@torch.no_grad()
def load_bert_into(text: TextTransformer, state: dict[str, Tensor], head: nn.Module | None = None) -> dict:
    """Copy BERT tensors into ``text`` (and the LM ``head`` when given) by name.

    BERT adds a token-type embedding that this model does not have; its row 0 (every token's type)
    is folded into the position table, so that the text-mode output equals BertModel's exactly.
    Returns ``{"loaded", "not_in_bert", "unused"}`` key lists, also logged.
    """
    own = dict(text.state_dict(keep_vars=True))
    if head is not None:
        own.update({f"cls.{k}": v for k, v in head.state_dict(keep_vars=True).items()})
    loaded = []
    for key, target in own.items():
        if key in state and not key.endswith("position_ids"):
            _copy(target.data, state[key], key)
            loaded.append(key)
    type_key = "embeddings.token_type_embeddings.weight"
    if type_key in state and "embeddings.position_embeddings.weight" in loaded:
        text.embeddings.position_embeddings.weight.add_(state[type_key][0])
    ignored = ("pooler.", "cls.seq_relationship.", "embeddings.position_ids", type_key)
    report = {
        "loaded": loaded,
        "not_in_bert": sorted(k for k in own if k not in state and not k.endswith("position_ids")),
        "unused": sorted(k for k in state if k not in own and not k.startswith(ignored)),
    }
    if not loaded:
        raise RuntimeError("no BERT tensor matched the text model: is this a BERT checkpoint?")
    log.info(f"BERT weights: {len(loaded)} tensors loaded; {len(report['not_in_bert'])} model tensors not in "
             f"BERT (e.g. {report['not_in_bert'][:3]}); {len(report['unused'])} BERT tensors unused "
             f"{report['unused'][:5]}")
    return report


def load_bert_weights(model: nn.Module, name_or_path: str) -> dict:
    """Initialise ``model.text_encoder`` (and ``model.text_decoder`` if present) from BERT weights.

    Cross-attention has no BERT counterpart and keeps its initialisation, as in BLIP.
    """
    state = read_bert_state(name_or_path)
    report = load_bert_into(model.text_encoder, state)
    decoder = getattr(model, "text_decoder", None)
    if decoder is not None:
        load_bert_into(decoder.bert, state, decoder.cls)
    return report
