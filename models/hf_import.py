"""Read a transformers BLIP folder (ours from :mod:`models.export_hf`, or one laid out like
``Salesforce/blip-itm-base-coco`` / ``blip-image-captioning-base``) as a BLIP-keyed state dict, so that it
can be ``pretrained:`` for fine-tuning here.

    python -m models.hf_import FOLDER --med-config FOLDER_med_config.json   # prints the config keys to set

The run config must build towers of the folder's sizes: ``vit``, ``image_size`` and ``embed_dim`` as
printed, ``med_config`` the JSON this command writes, ``tokenizer`` the folder itself.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

import torch
from torch import Tensor

from models.hf_blip import join_state, med_config, run_config_keys

log = logging.getLogger("medvl")
EXTRA_FILE = "blip_extra.safetensors"
# What BLIP's pre-training model shares between its text encoder and decoder (all but self-attention).
_SHARED = re.compile(r"embeddings\..*|encoder\.layer\.\d+\.(crossattention|intermediate|output)\..*")


def untied_decoder_keys(state: dict[str, Tensor]) -> list[str]:
    """Decoder tensors that differ from the encoder's although BLIP's pre-training model shares them.

    transformers keeps the two towers apart; loaded into the pre-training model here (which ties them),
    such a folder would keep only one of each pair.
    """
    out = []
    for key, value in state.items():
        if key.startswith("text_decoder.bert.") and _SHARED.fullmatch(key[len("text_decoder.bert."):]):
            twin = state.get("text_encoder." + key[len("text_decoder.bert."):])
            if twin is not None and not (twin.shape == value.shape and torch.equal(twin, value)):
                out.append(key)
    return out


def is_hf_blip_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a transformers BLIP ``config.json``."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "blip"
    except ValueError:
        return False


def _read_weights(folder: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():  # sharded
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for name in files:
            state.update(load_file(str(folder / name)))
        return state
    if (folder / "model.safetensors").is_file():
        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder} holds no model.safetensors, sharded safetensors or pytorch_model.bin")


def load_hf_blip_state_dict(folder: str | Path) -> dict[str, Tensor]:
    """The weights of a transformers BLIP folder under BLIP's checkpoint names.

    Image tower ``vision_model.*`` -> ``visual_encoder.*``; text towers, projections and ITM head keep their
    names; position ids and the tied LM head are rebuilt; ``blip_extra.safetensors`` (temperature, queues,
    momentum encoders), when present, is merged in. What the folder lacks (a captioning folder has no
    text encoder) stays as the model initialises it when loaded with ``models.checkpoint``'s loader.
    """
    folder = Path(folder)
    if not is_hf_blip_folder(folder):
        raise ValueError(f"{folder} is not a transformers BLIP folder (no config.json with model_type 'blip')")
    weights = _read_weights(folder)
    # transformers keeps a pooler for BlipTextModel when built with one; BLIP has none.
    weights = {k: v for k, v in weights.items() if ".pooler." not in k}
    extra = {}
    if (folder / EXTRA_FILE).is_file():
        from safetensors.torch import load_file

        extra = load_file(str(folder / EXTRA_FILE))
    try:
        state = join_state(weights, extra)
    except KeyError as e:
        raise ValueError(f"{folder}: {e.args[0]}") from None
    untied = untied_decoder_keys(state)
    if untied:
        log.warning(f"{folder}: its text decoder does not share {len(untied)} tensors with its text encoder "
                    f"(e.g. {untied[0]}), as BLIP's pre-training model does: use it for retrieval (encoder) or "
                    f"captioning, not to resume pre-training")
    return state


def config_for(folder: str | Path, med_config_path: str | Path) -> dict:
    """Write the folder's text sizes as a med_config JSON; return the run-config keys to set."""
    from transformers import BlipConfig

    folder = Path(folder)
    # Through transformers' own class: config.json may leave out every value equal to its default.
    config = BlipConfig.from_pretrained(str(folder)).to_dict()
    vision = config.get("vision_config", {})
    width, hidden = vision.get("hidden_size", 768), vision.get("intermediate_size", 3072)
    if hidden != 4 * width:
        raise ValueError(f"{folder}: the image tower's MLP is {hidden} wide for a width of {width}; the towers "
                         f"here use 4 x width")
    Path(med_config_path).write_text(json.dumps(med_config(config), indent=2) + "\n", encoding="utf-8")
    return {**run_config_keys(config), "med_config": str(med_config_path), "tokenizer": str(folder),
            "pretrained": str(folder), "text_encoder": None, "vit_pretrained": None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Print the run-config keys that use a transformers BLIP folder "
                                            "as `pretrained:`, and write its med_config JSON.")
    p.add_argument("folder", help="a transformers BLIP folder (config.json, model.safetensors, tokenizer files)")
    p.add_argument("--med-config", dest="med_config", required=True, help="where to write the text towers' med_config JSON")
    args = p.parse_args(argv)
    if not is_hf_blip_folder(args.folder):
        print(f"hf_import: {args.folder} is not a transformers BLIP folder", file=sys.stderr)
        return 2
    keys = config_for(args.folder, args.med_config)
    state = load_hf_blip_state_dict(args.folder)
    print(json.dumps({"set_in_run_config": keys, "tensors": len(state)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
