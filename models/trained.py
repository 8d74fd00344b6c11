"""A trained model for use (classification, captions, embeddings, search, attention maps): the model a
pre-training or retrieval checkpoint holds, built from the run config stored in it, in eval mode."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

from models.blip import BlipBase
from models.build import build_model
from models.checkpoint import CheckpointError, load_checkpoint, load_state
from models.config import ModelSetupError

# Keys a checkpoint must hold for ITM scores and maps to mean anything: a random ITM head or
# cross-attention would still produce numbers, just meaningless ones.
REQUIRED_KEYS = ("itm_head.weight", "text_encoder.encoder.layer.0.crossattention.self.key.weight")

# (the config stored in the checkpoint or None, the checkpoint's task) -> the validated run config to build.
ConfigResolver = Callable[[Mapping[str, Any] | None, str], Mapping[str, Any]]


def checkpoint_task(state: Mapping[str, Any]) -> str:
    """``pretrain`` when the state dict holds the decoder (``text_decoder.*``), else ``retrieval``."""
    return "pretrain" if any(str(k).startswith("text_decoder.") for k in state) else "retrieval"


def _stored(stored: Mapping[str, Any] | None, task: str) -> Mapping[str, Any]:
    if not isinstance(stored, Mapping):
        raise ModelSetupError("the checkpoint carries no run config (BLIP's own files do not): give one")
    return stored


def load_trained(path: str | Path, resolve_config: ConfigResolver = _stored,
                 device: str = "cpu") -> tuple[BlipBase, Mapping[str, Any]]:
    """(model in eval mode on ``device``, its run config) for the checkpoint at ``path``.

    ``resolve_config(stored, task)`` turns the run config saved in the checkpoint (None if it has none)
    into the validated config to build from; by default the stored one is used as it is. A file without
    an ITM head and cross-attention (a ViT or BERT file, an optimizer dump) is refused.
    """
    ckpt = load_state(path)
    state = ckpt.get("model", ckpt)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds no model state dict")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ModelSetupError(f"checkpoint {path} is not a BLIP pre-training or retrieval checkpoint: it lacks "
                              f"{missing} (the ITM head and the text encoder's cross-attention)")
    task = checkpoint_task(state)
    config = resolve_config(ckpt.get("config"), task)
    del ckpt, state  # load_checkpoint reads the file again; do not hold two copies
    model = build_model(config, task, load_weights=False)
    load_checkpoint(model, str(path))
    return model.to(device).eval(), config
