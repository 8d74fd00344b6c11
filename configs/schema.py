"""Every config key, its type, default, allowed range and meaning. BLIP's key names are kept; keys for
what BLIP hard-coded (text length, embed_dim, momentum, workers, seed, precision...) are added."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    kind: str  # int, float, optfloat, bool, str, optstr, files, choice, vit, fixed
    default: Any = _REQUIRED
    help: str = ""
    lo: float | None = None
    hi: float | None = None
    choices: tuple = ()

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def coerce(self, v: Any) -> Any:
        """Return the value checked (and ints widened to floats where a float is expected)."""
        k = self.kind
        if k == "bool":
            if not isinstance(v, bool):
                raise TypeError(f"expected true or false, got {v!r} ({type(v).__name__})")
        elif k == "optfloat" and v is None:
            return None
        elif k in ("int", "float", "optfloat"):
            ok = isinstance(v, int) if k == "int" else isinstance(v, (int, float))
            if isinstance(v, bool) or not ok:
                raise TypeError(f"expected {'an integer' if k == 'int' else 'a number'}, got {v!r} "
                                f"({type(v).__name__})")
            v = v if k == "int" else float(v)
            # NaN compares false with everything, so a plain range check would let it through.
            if not math.isfinite(v):
                raise ValueError(f"expected a finite number, got {v}")
            if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
                raise ValueError(f"{v} is outside the allowed range [{self.lo}, {self.hi}]")
        elif k in ("str", "optstr"):
            if v is None or v == "":
                if k == "str":
                    raise TypeError("expected a non-empty string")
                return None
            if not isinstance(v, str):
                raise TypeError(f"expected a string, got {v!r} ({type(v).__name__})")
        elif k == "choice":
            if v not in self.choices:
                raise ValueError(f"expected one of {list(self.choices)}, got {v!r}")
        elif k == "files":
            if v is None:
                return [] if self.default == [] else None
            v = [v] if isinstance(v, str) else v
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                raise TypeError(f"expected a file path or a list of file paths, got {v!r}")
        elif k == "fixed":
            # A setting the task's model does not offer, kept in the config so the model reads every key.
            if type(v) is not type(self.default) or v != self.default:
                raise ValueError(f"only {self.default!r} is allowed ({self.help})")
        elif k == "vit":
            if isinstance(v, Mapping):
                return _vit_mapping(v)
            if v not in ("base", "large"):
                raise ValueError(f"expected 'base', 'large' or a mapping {{width, depth, heads, patch_size}}, "
                                 f"got {v!r}")
        return v


VIT_KEYS = {"width": (8, 8192), "depth": (1, 128), "heads": (1, 128), "patch_size": (1, 512)}
VIT_PATCH_SIZE = 16  # when a vit mapping leaves it out: BLIP's ViT-B/16 and ViT-L/16


def _vit_mapping(v: Mapping) -> dict:
    """An explicit ViT size: positive integers, width divisible by heads; patch_size filled in, so the
    model reads every key."""
    unknown = sorted(set(v) - set(VIT_KEYS))
    missing = sorted({"width", "depth", "heads"} - set(v))
    if unknown or missing:
        raise ValueError(f"vit mapping: unknown keys {unknown}, missing keys {missing}; allowed {sorted(VIT_KEYS)}")
    for key, value in v.items():
        lo, hi = VIT_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"vit.{key}: expected an integer in [{lo}, {hi}], got {value!r}")
    if v["width"] % v["heads"]:
        raise ValueError(f"vit.width {v['width']} is not divisible by vit.heads {v['heads']}")
    return {**v, "patch_size": v.get("patch_size", VIT_PATCH_SIZE)}


COMMON = {
    "vit": Field("vit", "base", "image tower: base, large, or {width, depth, heads, patch_size}"),
    "vit_grad_ckpt": Field("bool", False, "gradient checkpointing in the last vit_ckpt_layer ViT blocks"),
    "vit_ckpt_layer": Field("int", 0, "how many of the last ViT blocks to checkpoint", 0, 64),
    "text_grad_ckpt": Field("bool", False, "gradient checkpointing in every layer of the text encoder and "
                            "decoder: less activation memory for about one more text forward per step"),
    "drop_path_rate": Field("optfloat", None, "stochastic depth rate of the ViT (default: 0.1 for vit: large, "
                            "as BLIP's create_vit, 0 otherwise)", 0.0, 0.99),
    "image_size": Field("int", 224, "input resolution in pixels", 16, 4096),
    "embed_dim": Field("int", 256, "dimension of the ITC projections", 1, 65536),
    "momentum": Field("float", 0.995, "EMA coefficient of the momentum encoders", 0.0, 1.0),
    "queue_size": Field("int", 57600, "length of the ITC feature queue", 1, 10**8),
    "alpha": Field("float", 0.4, "largest weight of the momentum-distillation soft targets", 0.0, 1.0),
    "alpha_ramp_epochs": Field("float", 2.0, "epochs over which alpha ramps up linearly from 0", 0.0, 1e6),
    "weight_decay": Field("float", 0.05, "AdamW weight decay", 0.0, 10.0),
    "weight_decay_all": Field("bool", False, "decay biases, norms, position tables and temp too (BLIP)"),
    "init_lr": Field("float", _REQUIRED, "peak learning rate", 0.0, 10.0),
    "min_lr": Field("float", 0.0, "lowest learning rate of the schedule", 0.0, 10.0),
    "max_epoch": Field("int", _REQUIRED, "number of epochs", 1, 10**6),
    "schedule": Field("choice", "step", "per-epoch LR schedule after warm-up", choices=("step", "cosine")),
    "tokenizer": Field("str", "bert-base-uncased", "BERT WordPiece tokenizer: hub name or local folder"),
    "text_encoder": Field("optstr", "bert-base-uncased", "BERT weights for the text towers (hub name or folder)"),
    "vit_pretrained": Field("optstr", None, "timm/DeiT checkpoint (path or URL) for the image tower"),
    "freeze_vit": Field("bool", False, "keep the image tower as loaded (locked-image tuning, LiT): only the text "
                        "towers, the projections and the heads train"),
    "pretrained": Field("optstr", None, "BLIP-style checkpoint (path or URL), or a transformers BLIP folder, to "
                        "start from"),
    "med_config": Field("str", "configs/med_config.json", "BERT-style JSON with the text model sizes"),
    "max_length": Field("int", 30, "text length in tokens, for training and evaluation alike", 4, 4096),
    "max_words": Field("int", 30, "captions are cut to this many words before tokenization", 1, 10**5),
    "image_root": Field("optstr", None, "folder that relative image paths resolve against"),
    "num_workers": Field("int", 4, "data-loading worker processes per rank", 0, 256),
    "shard_shuffle_buffer": Field("int", 1000, "samples each shard reader shuffles among, when train_file names "
                                  "WebDataset shards (0 or 1: shard order; larger: more memory, better mixing)",
                                  0, 10**6),
    "seed": Field("int", 42, "random seed (rank is added)", 0, 2**31 - 1),
    "precision": Field("choice", "fp32", "fp32, or bf16 autocast", choices=("fp32", "bf16")),
    "tf32": Field("bool", True, "on CUDA, TensorFloat-32 matmuls and convolutions for fp32 work (several times "
                  "faster on A100/H100; torch <= 1.11, which BLIP used, had it on by default); no effect on CPU"),
    "grad_clip": Field("float", 0.0, "clip the gradient norm to this value (0 = off)", 0.0, 1e9),
    "hflip": Field("choice", "swap", "horizontal flip: swap left/right words, off, or blind (BLIP)",
                   choices=("swap", "off", "blind")),
    "min_scale": Field("float", 0.2, "smallest area fraction of RandomResizedCrop", 0.01, 1.0),
    "randaugment": Field("bool", True, "apply RandAugment(2, 5) during training"),
    "laterality_negatives": Field("bool", False, "also train ITM against each one-sided caption with left "
                                  "and right swapped, as a negative of its own image"),
    "max_bad_fraction": Field("float", 0.01, "stop when more than this fraction of records is unreadable",
                              0.0, 1.0),
    # decompression bombs are bad records; the default and ceiling are data.images.DEFAULT_MAX_PIXELS,
    # PIL's own hard limit (2 * Image.MAX_IMAGE_PIXELS), which the loader never changes for the process.
    "max_image_pixels": Field("int", 178_956_970, "images with more pixels (width x height) are bad records, "
                              "refused from their header before decoding (decompression bombs)", 1, 178_956_970),
    "print_freq": Field("int", 50, "progress line every N steps", 1, 10**9),
    "log_every_steps": Field("int", 0, "also write a log.txt line every N steps (0 = per epoch only)", 0, 10**9),
    "save_every_steps": Field("int", 0, "write checkpoint_last.pth every N steps (0 = per epoch only)", 0, 10**9),
    "max_nonfinite_steps": Field("int", 5, "stop after this many non-finite losses in a row", 1, 10**6),
    "report_to": Field("choice", "none", "also log the numbers of log.txt to TensorBoard (output_dir/tensorboard)",
                       choices=("none", "tensorboard")),
    "dist_timeout_s": Field("int", 1800, "seconds a collective may wait for the other processes before the run "
                            "stops with an error (a dead or frozen rank)", 1, 10**7),
    "deterministic": Field("bool", False, "remove every source of run-to-run difference torch can remove "
                           "(deterministic kernels, one intra-op thread, cuDNN/cuBLAS settings): slower, and "
                           "kill + resume is bit-exact"),
}

PRETRAIN = {
    **COMMON,
    "train_file": Field("files", _REQUIRED, "JSON list(s) of {image, caption} records"),
    "batch_size": Field("int", 75, "batch per process", 1, 10**6),
    "warmup_lr": Field("float", 1e-6, "learning rate at the first warm-up step", 0.0, 10.0),
    "warmup_steps": Field("int", 3000, "linear warm-up steps within epoch 0", 0, 10**9),
    "lr_decay_rate": Field("float", 0.9, "per-epoch decay of the step schedule", 0.0, 1.0),
    "negative_all_rank": Field("fixed", False, "pre-training draws ITM negatives from the local batch, as BLIP; "
                               "retrieval configs choose"),
}

RETRIEVAL = {
    **COMMON,
    "alpha_ramp_epochs": Field("float", 1.0, "epochs over which alpha ramps up linearly from 0", 0.0, 1e6),
    "max_length": Field("int", 35, "text length in tokens, for training and evaluation alike", 4, 4096),
    "min_scale": Field("float", 0.5, "smallest area fraction of RandomResizedCrop", 0.01, 1.0),
    "schedule": Field("choice", "cosine", "per-epoch LR schedule", choices=("step", "cosine")),
    "lr_decay_rate": Field("float", 0.9, "per-epoch decay of the step schedule", 0.0, 1.0),
    "dataset": Field("str", "coco", "name of the dataset (used in file names under ann_root)"),
    "ann_root": Field("optstr", "annotation", "folder of <dataset>_karpathy_{train,val,test}.json"),
    "train_file": Field("files", None, "training list (default: ann_root/<dataset>_karpathy_train.json)"),
    "val_file": Field("optstr", None, "validation list (default: ann_root/<dataset>_karpathy_val.json)"),
    "test_file": Field("optstr", None, "test list (default: ann_root/<dataset>_karpathy_test.json)"),
    "batch_size_train": Field("int", 32, "training batch per process", 1, 10**6),
    "batch_size_test": Field("int", 64, "image batch in evaluation", 1, 10**6),
    "k_test": Field("int", 256, "candidates re-ranked by ITM per query (0 = ITC only)", 0, 10**7),
    "itm_batch_size": Field("int", 256, "image-text pairs per ITM forward in evaluation", 1, 10**6),
    "negative_all_rank": Field("bool", True, "draw ITM negatives from every process's batch"),
}

SCHEMAS = {"pretrain": PRETRAIN, "retrieval": RETRIEVAL}
