"""The typed settings a model is built from, and the error raised when a model cannot be set up as they say.

The fields carry no defaults on purpose: every default is written once, in ``configs/schema.py``, and
``ModelConfig.from_run_config`` takes the validated run config (a dict with every key filled in), so a
model can never disagree with the schema about a value nobody set.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


class ModelSetupError(ValueError):
    """A model cannot be built as configured: a tokenizer, hub name or weights file that is unusable or
    does not fit the model. The message names the config key and says what to do."""

    exit_code = 2  # data/errors.py: BAD_INPUT (this package imports no data code)


@dataclass(frozen=True)
class ModelConfig:
    """What BLIP's towers, heads and queues need. Names are the run config's keys."""

    vit: str | Mapping  # base, large, or {width, depth, heads, patch_size} (all four keys)
    image_size: int
    vit_grad_ckpt: bool
    vit_ckpt_layer: int
    text_grad_ckpt: bool
    drop_path_rate: float
    embed_dim: int
    momentum: float
    queue_size: int
    tokenizer: str
    med_config: str
    max_length: int
    freeze_vit: bool
    pretrained: str | None
    text_encoder: str | None
    vit_pretrained: str | None
    negative_all_rank: bool  # ITM negatives from every process's batch (pre-training's schema fixes False)

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> "ModelConfig":
        """Pick this dataclass's keys from a validated run config. A missing key is an error naming it,
        since a default written here would be a second source of truth."""
        missing = [f.name for f in fields(cls) if f.name not in config]
        if missing:
            raise KeyError(f"run config lacks model keys {missing}: check it with configs.validate(raw, task) "
                           "for the task of the model being built")
        return cls(**{f.name: config[f.name] for f in fields(cls)})

    @classmethod
    def of(cls, config: "Mapping[str, Any] | ModelConfig") -> "ModelConfig":
        """``config`` itself, or the ModelConfig of a validated run config."""
        if isinstance(config, cls):
            return config
        return cls.from_run_config(config)
