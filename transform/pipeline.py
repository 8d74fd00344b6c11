"""Training and evaluation transforms as BLIP defines them, with a laterality-aware horizontal flip."""
from __future__ import annotations

import math

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from data.captions import swap_left_right
from transform.randaugment import RandAugment

# CLIP's normalisation, as BLIP uses.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
BLIP_OPS = ("Identity", "AutoContrast", "Brightness", "Sharpness", "Equalize",
            "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def crop_box(width: int, height: int, scale: tuple[float, float], rng: np.random.Generator,
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A random (top, left, h, w) covering ``scale`` of the area with aspect ratio in ``ratio``.

    Ten tries as RandomResizedCrop does, then a centre crop clamped to the ratio range.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def to_normalized_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    return TF.normalize(TF.to_tensor(img), MEAN, STD)


class TrainTransform:
    """RandomResizedCrop (bicubic) -> horizontal flip -> RandAugment(2, 5) -> tensor, CLIP-normalised.

    ``hflip``: ``swap`` flips half of the images and swaps left/right words in their captions, so that
    laterality stays true; ``off`` never flips; ``blind`` flips like BLIP, leaving captions as they are.
    """

    def __init__(self, image_size: int, min_scale: float = 0.5, hflip: str = "swap", randaugment: bool = True):
        if hflip not in ("swap", "off", "blind"):
            raise ValueError(f"hflip must be swap, off or blind, not {hflip!r}")
        self.size, self.min_scale, self.hflip = image_size, min_scale, hflip
        self.augment = RandAugment(2, 5, BLIP_OPS) if randaugment else None

    def __call__(self, img: Image.Image, caption: str, rng: np.random.Generator) -> tuple[torch.Tensor, str]:
        top, left, h, w = crop_box(img.width, img.height, (self.min_scale, 1.0), rng)
        img = TF.resized_crop(img, top, left, h, w, [self.size, self.size], InterpolationMode.BICUBIC)
        if self.hflip != "off" and rng.random() < 0.5:
            img = TF.hflip(img)
            if self.hflip == "swap":
                caption = swap_left_right(caption)
        arr = np.array(img, dtype=np.uint8)  # a writable copy
        if self.augment is not None:
            arr = self.augment(arr, rng)
        return to_normalized_tensor(np.ascontiguousarray(arr)), caption


class EvalTransform:
    """Resize to a square (bicubic, aspect ratio not kept, as BLIP) -> tensor, CLIP-normalised."""

    def __init__(self, image_size: int):
        self.size = image_size

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return to_normalized_tensor(TF.resize(img, [self.size, self.size], InterpolationMode.BICUBIC))


def build_transform(config: dict, train: bool) -> TrainTransform | EvalTransform:
    if not train:
        return EvalTransform(config["image_size"])
    return TrainTransform(config["image_size"], config["min_scale"], config["hflip"], config["randaugment"])
