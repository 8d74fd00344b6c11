"""Export a checkpoint to a folder that transformers' BLIP classes load, with processor files and a model card.

    python -m models.export_hf output/pretrain/checkpoint_last.pth hf_model [--check]

    from transformers import BlipForImageTextRetrieval, BlipForConditionalGeneration, BlipProcessor
    BlipForImageTextRetrieval.from_pretrained("hf_model")      # towers, projections, ITM head
    BlipForConditionalGeneration.from_pretrained("hf_model")   # image tower + decoder (pre-training checkpoints)

The folder holds ``config.json``, ``model.safetensors`` (transformers' names), the tokenizer and image processor files, ``README.md`` and, unless ``--no-extra``, ``blip_extra.safetensors``
(temperature, queues, momentum encoders), so that :mod:`models.hf_import` gives back the exact state dict.
Each class reads its part of ``model.safetensors`` and lists the other part as unused keys.
``--check`` loads the folder with transformers and compares features, ITM logits, ITC similarities and
greedy captions with this project's model on random inputs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from collections.abc import Mapping
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from models.checkpoint import CheckpointError, load_state
from models.config import ModelSetupError
from models.optional import MissingDependency
from models.trained import load_trained
from models.hf_blip import blip_config, split_state
from models.model_card import model_card

log = logging.getLogger("medvl")
EXTRA_FILE = "blip_extra.safetensors"
CHECK_TEXTS = ["axial flair mri shows a hyperintense mass in the left frontal lobe", "normal brain",
               "ct of the head with a small haemorrhage"]


def load_for_export(checkpoint: str | Path, tokenizer: str | None = None):
    """(model in eval mode, task, run config, epoch) of a checkpoint written by pretrain.py or train_retrieval.py.

    ``tokenizer`` replaces the config's (a hub name or a folder that is not on this machine).
    """
    def resolve(stored, task):
        if not isinstance(stored, Mapping):
            raise ModelSetupError(f"checkpoint {checkpoint} carries no run config: export needs a checkpoint "
                                  f"written by pretrain.py or train_retrieval.py")
        return {**stored, **({"tokenizer": tokenizer} if tokenizer else {})}

    model, config = load_trained(checkpoint, resolve)
    task = "pretrain" if hasattr(model, "text_decoder") else "retrieval"
    return model, task, config, load_state(checkpoint, mmap=True).get("epoch")


def _save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    # Shared modules (the decoder's embeddings are the encoder's) appear under several names: copies.
    save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(path),
              metadata={"format": "pt"})


def write_hf_folder(model, out: Path, extra: bool = True, card: str | None = None) -> dict[str, int]:
    """Write ``model`` (a :class:`models.blip.BlipBase`) as a transformers BLIP folder ``out`` (created).

    Returns the number of tensors written to each file.
    """
    from transformers import BlipConfig, BlipImageProcessor, BlipProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

    out.mkdir(parents=True, exist_ok=False)
    tok = model.tokenizer
    decoder = hasattr(model, "text_decoder")
    config = BlipConfig(**blip_config(model, tok))
    config.architectures = ["BlipForImageTextRetrieval"] + (["BlipForConditionalGeneration"] if decoder else [])
    config.save_pretrained(out)
    # No generation_config.json: BlipForConditionalGeneration.generate hands over to its text decoder, whose
    # settings come from the text config, so a folder's generation settings would be silently ignored.
    hf, rest = split_state(model.state_dict())
    _save_tensors(hf, out / "model.safetensors")
    counts = {"model.safetensors": len(hf)}
    if extra and rest:
        _save_tensors(rest, out / EXTRA_FILE)
        counts[EXTRA_FILE] = len(rest)
    size = int(model.config.image_size)
    images = BlipImageProcessor(do_resize=True, size={"height": size, "width": size},
                                resample=PILImageResampling.BICUBIC, do_rescale=True, do_normalize=True,
                                image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD), do_convert_rgb=True)
    BlipProcessor(image_processor=images, tokenizer=tok).save_pretrained(out)
    if card is not None:
        (out / "README.md").write_text(card, encoding="utf-8")
    return counts


def export_hf(checkpoint: str | Path, out: str | Path, tokenizer: str | None = None, licence: str | None = None,
              extra: bool = True, overwrite: bool = False) -> tuple[Path, object, str]:
    """Export ``checkpoint`` to the folder ``out``; returns (folder, model, task).

    The folder is written beside ``out`` under a temporary name and renamed at the end, so that a failed
    export leaves no half-written folder under the final name.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: choose another folder or pass --overwrite")
    model, task, config, epoch = load_for_export(checkpoint, tokenizer)
    card = model_card(config, Path(checkpoint), task, epoch, licence, extra)
    tmp = out.with_name(f".{out.name}.part-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        counts = write_hf_folder(model, tmp, extra, card)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(f"wrote {out}: {counts}")
    return out, model, task


@torch.no_grad()
def compare_with_transformers(model, folder: str | Path, images: Tensor, texts: Sequence[str],
                              max_length: int = 20, min_length: int = 5) -> dict[str, float | bool]:
    """Largest absolute differences between ``model`` and transformers' BLIP loaded from ``folder``.

    images (B, 3, H, W) normalised pixels; ``texts`` cleaned captions (B of them: text i pairs with image i
    for ITM). Compared: image and text ITC features, the ITC similarity matrix, ITM logits (with [ENC]
    first, as the model was trained), and for models with a decoder the greedy captions (equal or not).
    """
    from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval

    from models.generate import generate_ids, prompt_ids

    model = model.eval()
    hf = BlipForImageTextRetrieval.from_pretrained(str(folder)).eval()
    batch = model.tokenize(list(texts), images.device)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    image_embeds, image_feat = model.encode_image(images)
    _, text_feat = model.encode_text(ids, mask)
    vision = hf.vision_model(pixel_values=images).last_hidden_state
    hf_image = F.normalize(hf.vision_proj(vision[:, 0]), dim=-1)
    hf_text = F.normalize(hf.text_proj(hf.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]),
                          dim=-1)
    hf_sims = hf(input_ids=ids, pixel_values=images, attention_mask=mask, use_itm_head=False).itm_score
    hf_itm = hf(input_ids=model.enc_ids(ids), pixel_values=images, attention_mask=mask).itm_score
    out: dict[str, float | bool] = {
        "image_tokens": (vision - image_embeds).abs().max().item(),
        "image_feat": (hf_image - image_feat).abs().max().item(),
        "text_feat": (hf_text - text_feat).abs().max().item(),
        "itc_sims": (hf_sims - image_feat @ text_feat.T).abs().max().item(),
        "itm_logits": (hf_itm - model.itm_logits(image_embeds, ids, mask)).abs().max().item(),
    }
    if hasattr(model, "text_decoder"):
        tok = model.tokenizer
        gen = BlipForConditionalGeneration.from_pretrained(str(folder)).eval()
        theirs = gen.generate(pixel_values=images, num_beams=1, do_sample=False, max_length=max_length,
                              min_length=min_length)
        ours = generate_ids(model.text_decoder, image_embeds, prompt_ids(tok), tok.sep_token_id, tok.pad_token_id,
                            max_length, min_length, num_beams=1)
        strip = lambda rows: [[t for t in r if t != tok.pad_token_id] for r in rows.tolist()]  # noqa: E731
        out["greedy_captions_equal"] = strip(theirs) == strip(ours)
        out["captions"] = [tok.decode(r, skip_special_tokens=True) for r in strip(ours)]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint written by pretrain.py or train_retrieval.py")
    p.add_argument("out", help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder or hub name, if the config's is not here")
    p.add_argument("--license", dest="licence", default=None, help="licence id for the card's header (default other)")
    p.add_argument("--no-extra", dest="no_extra", action="store_true", help=f"leave out {EXTRA_FILE} (queues, momentum encoders)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.add_argument("--check", action="store_true", help="compare transformers' outputs with ours on random inputs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # other libraries' INFO lines are noise here
    log.setLevel(logging.INFO)
    try:
        out, model, _ = export_hf(args.checkpoint, args.out, args.tokenizer, args.licence, not args.no_extra,
                                  args.overwrite)
    except (FileNotFoundError, FileExistsError, ModelSetupError, CheckpointError, MissingDependency) as e:
        print(f"export_hf: {e}", file=sys.stderr)
        return 2
    summary: dict = {"out": str(out)}
    if args.check:
        torch.manual_seed(0)
        size = int(model.config.image_size)
        summary["check"] = compare_with_transformers(model, out, torch.randn(len(CHECK_TEXTS), 3, size, size),
                                                     CHECK_TEXTS)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
