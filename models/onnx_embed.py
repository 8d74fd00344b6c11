"""Embeddings for search from the ONNX files of :mod:`models.export_onnx`, with onnxruntime and the folder's
tokenizer only (no model code of this project). The same interface as :mod:`models.embed`:

    towers = load_onnx_towers("onnx_model")
    image_feat = embed_images(towers, batches)           # (N, E) from an iterable of (B, 3, S, S) arrays
    text_feat = embed_texts(towers, ["axial flair mri shows a mass", ...])
    scores, index = rank(text_feat[0], image_feat, k=5)

Images are resized and normalised as in evaluation (``towers.image_size``, ``towers.mean``, ``towers.std``:
``transform.pipeline.EvalTransform`` does it); texts are cleaned as in training when ``clean`` is given.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from models.embed import rank
from models.optional import require

__all__ = ["OnnxTowers", "load_onnx_towers", "embed_images", "embed_texts", "rank"]
CONFIG_FILE = "onnx_config.json"


class OnnxTowers:
    """The exported towers of one model: onnxruntime sessions (made when first used) and the tokenizer."""

    def __init__(self, folder: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)):
        self.folder = Path(folder)
        config_path = self.folder / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{self.folder} holds no {CONFIG_FILE}: export it with python -m models.export_onnx")
        self.config = json.loads(config_path.read_text(encoding="utf-8"))
        self.image_size, self.max_length = int(self.config["image_size"]), int(self.config["max_length"])
        self.max_words, self.embed_dim = self.config.get("max_words"), int(self.config["embed_dim"])
        self.mean, self.std = tuple(self.config["mean"]), tuple(self.config["std"])
        self.providers = list(providers)
        self._sessions: dict = {}
        self._tokenizer = None

    def session(self, part: str):
        """The onnxruntime session of ``image``, ``text`` or ``itm``."""
        if part not in self._sessions:
            require("export", "running the ONNX towers", ("onnxruntime",))
            import onnxruntime as ort

            name = self.config["files"].get(part)
            if name is None:
                raise ValueError(f"{self.folder} has no {part} model (exported with --no-itm?)")
            self._sessions[part] = ort.InferenceSession(str(self.folder / name), providers=self.providers)
        return self._sessions[part]

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        return self._tokenizer

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """(B, L) int64 ``input_ids`` and ``attention_mask``: cut at ``max_length``, padded to the longest, as
        the model's own tokenization."""
        enc = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_length,
                             return_tensors="np")
        return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}

    def image_features(self, pixels: np.ndarray | Tensor, tokens: bool = False):
        """(B, 3, S, S) normalised pixels -> L2-normalised features (B, E); with ``tokens`` also (B, 1+N, Dv)."""
        array = pixels.detach().cpu().numpy() if isinstance(pixels, Tensor) else np.asarray(pixels)
        names = ["image_feat", "image_embeds"] if tokens else ["image_feat"]
        out = self.session("image").run(names, {"pixel_values": array.astype(np.float32, copy=False)})
        return tuple(out) if tokens else out[0]

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        """Cleaned texts -> L2-normalised features (B, E)."""
        return self.session("text").run(["text_feat"], self.tokenize(texts))[0]

    def itm_logits(self, image_tokens: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Match/no-match logits (B, 2) of text i on image i (tokens from ``image_features(.., tokens=True)``)."""
        return self.session("itm").run(["itm_logits"], {"image_embeds": image_tokens, **self.tokenize(texts)})[0]


def load_onnx_towers(folder: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> OnnxTowers:
    return OnnxTowers(folder, providers)


def embed_images(model: OnnxTowers, batches: Iterable[np.ndarray | Tensor]) -> Tensor:
    """Image features (N, E), float32 on the CPU, from image batches (B, 3, S, S)."""
    feats = [torch.from_numpy(np.ascontiguousarray(model.image_features(images))) for images in batches]
    if not feats:
        raise ValueError("no image to embed")
    return torch.cat(feats).float()


def embed_texts(model: OnnxTowers, texts: Sequence[str], batch_size: int = 256, clean: Callable[[str], str] | None = None,
                progress: Callable[[Iterable], Iterable] | None = None) -> Tensor:
    """Text features (M, E), float32 on the CPU. ``clean``: the training's caption cleaning
    (``data.captions.pre_caption``); ``progress`` wraps the batch iterator."""
    if not texts:
        raise ValueError("no text to embed")
    starts = range(0, len(texts), batch_size)
    feats = []
    for i in (progress(starts) if progress else starts):
        chunk = [clean(t) if clean else t for t in texts[i:i + batch_size]]
        feats.append(torch.from_numpy(np.ascontiguousarray(model.text_features(chunk))))
    return torch.cat(feats).float()
