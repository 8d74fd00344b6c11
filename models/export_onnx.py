"""Export the ITC towers and the ITM head of a checkpoint to ONNX, checked with onnxruntime.

    python -m models.export_onnx output/pretrain/checkpoint_last.pth onnx_model [--no-itm]

Writes into the folder:

- ``image_encoder.onnx``: ``pixel_values`` (B, 3, S, S) float32 -> ``image_feat`` (B, E), L2-normalised,
  and ``image_embeds`` (B, 1+N, Dv), the image tokens the ITM head reads;
- ``text_encoder.onnx``: ``input_ids``, ``attention_mask`` (B, L) int64 -> ``text_feat`` (B, E), L2-normalised;
- ``itm_head.onnx``: ``image_embeds`` (B, 1+N, Dv), ``input_ids``, ``attention_mask`` (B, L) -> ``itm_logits``
  (B, 2) (it puts [ENC] in place of [CLS] itself, as the model does);
- the tokenizer files and ``onnx_config.json`` (image size, normalisation, text lengths), which is all
  :mod:`models.onnx_embed` needs to embed and search without this project's model code.

Batch size and text length are dynamic. After writing, the files are run with onnxruntime on inputs of
other batch sizes and text lengths than the export's, and compared with torch (``--tolerance``, 1e-4).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from models.checkpoint import CheckpointError
from models.config import ModelSetupError
from models.export_hf import load_for_export
from models.optional import MissingDependency, require

log = logging.getLogger("medvl")
CONFIG_FILE = "onnx_config.json"
FILES = {"image": "image_encoder.onnx", "text": "text_encoder.onnx", "itm": "itm_head.onnx"}
PROBE_TEXTS = ["axial flair mri shows a hyperintense mass in the left frontal lobe with surrounding oedema",
               "normal brain", "ct of the head with a small haemorrhage", "a cyst", "t2 weighted image"]


class ImageTower(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        image_embeds, image_feat = self.model.encode_image(pixel_values)
        return image_feat, image_embeds


class TextTower(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.encode_text(input_ids, attention_mask)[1]


class ItmHead(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image_embeds: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.itm_logits(image_embeds, input_ids, attention_mask)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            shapes: tuple) -> None:
    big = sum(p.numel() * p.element_size() for p in module.parameters()) > 1.8e9  # protobuf's 2 GB limit
    with warnings.catch_warnings():  # the exporter warns that axes sharing one name are merged: as intended
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_shapes=shapes, external_data=big, verbose=False)


def _probe_inputs(model, batch: int) -> tuple[Tensor, dict[str, Tensor]]:
    size = int(model.config.image_size)
    gen = torch.Generator().manual_seed(batch)
    texts = [PROBE_TEXTS[i % len(PROBE_TEXTS)] for i in range(batch)]
    return torch.randn(batch, 3, size, size, generator=gen), model.tokenize(texts)


@torch.no_grad()
def write_onnx_folder(model, out: Path, itm: bool = True, max_words: int | None = None) -> list[str]:
    """Export ``model``'s towers (and ITM head) into the new folder ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=False)
    model = model.eval()
    images, text = _probe_inputs(model, 2)
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("length", min=2, max=model.text_config.max_position_embeddings)
    _export(ImageTower(model), (images,), out / FILES["image"], ["pixel_values"], ["image_feat", "image_embeds"],
            ({0: batch},))
    ids, mask = text["input_ids"], text["attention_mask"]
    _export(TextTower(model), (ids, mask), out / FILES["text"], ["input_ids", "attention_mask"], ["text_feat"],
            ({0: batch, 1: length}, {0: batch, 1: length}))
    written = [FILES["image"], FILES["text"]]
    if itm:
        image_embeds = model.encode_image(images)[0]
        _export(ItmHead(model), (image_embeds, ids, mask), out / FILES["itm"],
                ["image_embeds", "input_ids", "attention_mask"], ["itm_logits"],
                ({0: batch}, {0: batch, 1: length}, {0: batch, 1: length}))
        written.append(FILES["itm"])
    model.tokenizer.save_pretrained(out)
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD  # BLIP's normalisation (CLIP's)

    from models.hf_blip import blip_config  # the same sizes transformers' config would state

    sizes = blip_config(model, model.tokenizer)
    config = {
        "image_size": int(model.config.image_size), "mean": list(OPENAI_CLIP_MEAN), "std": list(OPENAI_CLIP_STD),
        "resize": "bicubic, to a square (aspect ratio not kept)",
        "max_length": int(model.max_length), "max_words": max_words, "embed_dim": model.vision_proj.out_features,
        "image_tokens": model.visual_encoder.num_patches + 1, "vision_width": sizes["vision_config"]["hidden_size"],
        "enc_token_id": int(model.tokenizer.enc_token_id), "files": {k: v for k, v in FILES.items() if v in written},
        "texts": "cleaned as in training (data.captions.pre_caption with max_words), then tokenized with the "
                 "folder's tokenizer, truncated to max_length, padded to the longest",
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    return written + [CONFIG_FILE]


@torch.no_grad()
def check_onnx_folder(model, folder: Path, batches: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Largest absolute differences between onnxruntime on the folder's files and ``model`` in torch, on
    inputs of ``batches`` sizes (other than the export's 2) and their own text lengths."""
    import onnxruntime as ort

    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    sessions = {k: ort.InferenceSession(str(folder / f), providers=["CPUExecutionProvider"])
                for k, f in config["files"].items()}
    worst: dict[str, float] = {}
    for b in batches:
        images, text = _probe_inputs(model, b)
        ids, mask = text["input_ids"], text["attention_mask"]
        image_embeds, image_feat = model.encode_image(images)
        feat, tokens = sessions["image"].run(None, {"pixel_values": images.numpy()})
        diffs = {"image_feat": abs(feat - image_feat.numpy()).max(), "image_embeds": abs(tokens - image_embeds.numpy()).max()}
        text_feat = sessions["text"].run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        diffs["text_feat"] = abs(text_feat - model.encode_text(ids, mask)[1].numpy()).max()
        if "itm" in sessions:
            logits = sessions["itm"].run(None, {"image_embeds": image_embeds.numpy(), "input_ids": ids.numpy(),
                                                "attention_mask": mask.numpy()})[0]
            diffs["itm_logits"] = abs(logits - model.itm_logits(image_embeds, ids, mask).numpy()).max()
        for k, v in diffs.items():
            worst[k] = max(worst.get(k, 0.0), float(v))
    return worst


def export_onnx(checkpoint: str | Path, out: str | Path, tokenizer: str | None = None, itm: bool = True,
                overwrite: bool = False) -> tuple[Path, dict[str, float]]:
    """Export and check; the folder is written under a temporary name and renamed when complete."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: choose another folder or pass --overwrite")
    model, _, config, _ = load_for_export(checkpoint, tokenizer)
    tmp = out.with_name(f".{out.name}.part-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_onnx_folder(model, tmp, itm, config.get("max_words"))
        diffs = check_onnx_folder(model, tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint written by pretrain.py or train_retrieval.py")
    p.add_argument("out", help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder or hub name, if the config's is not here")
    p.add_argument("--no-itm", dest="no_itm", action="store_true", help="export the ITC towers only")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest difference from torch accepted")
    args = p.parse_args(argv)
    require("export", "python -m models.export_onnx")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # other libraries' INFO lines are noise here
    log.setLevel(logging.INFO)
    try:
        out, diffs = export_onnx(args.checkpoint, args.out, args.tokenizer, not args.no_itm, args.overwrite)
    except (FileNotFoundError, FileExistsError, ModelSetupError, CheckpointError, MissingDependency) as e:
        print(f"export_onnx: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out), "max_abs_diff_vs_torch": diffs}))
    if max(diffs.values()) > args.tolerance:
        print(f"export_onnx: onnxruntime differs from torch by more than {args.tolerance}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
