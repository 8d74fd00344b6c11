"""RandAugment on uint8 HWC arrays with cv2 and numpy, with BLIP's operations and magnitudes.

Every random choice comes from a ``numpy.random.Generator`` passed in, so that an augmentation is a
pure function of (image, generator state): runs resume exactly and workers need no seeding.
"""
from __future__ import annotations

import cv2
import numpy as np

MAX_LEVEL = 10.0
FILL = (128, 128, 128)


def identity(img: np.ndarray, _: float) -> np.ndarray:
    return img


def autocontrast(img: np.ndarray, _: float) -> np.ndarray:
    """Stretch each channel to the full 0..255 range (channels with one value are left alone)."""
    out = img.copy()
    for c in range(img.shape[2]):
        lo, hi = int(img[..., c].min()), int(img[..., c].max())
        if hi > lo:
            scale = 255.0 / (hi - lo)
            out[..., c] = np.clip((img[..., c].astype(np.float32) - lo) * scale, 0, 255).astype(np.uint8)
    return out


def equalize(img: np.ndarray, _: float) -> np.ndarray:
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(img[..., c])) for c in range(img.shape[2])], axis=-1)


def _blend(img: np.ndarray, other: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(other + factor * (img.astype(np.float32) - other), 0, 255).astype(np.uint8)


def brightness(img: np.ndarray, factor: float) -> np.ndarray:
    return _blend(img, np.zeros_like(img, dtype=np.float32), factor)


def sharpness(img: np.ndarray, factor: float) -> np.ndarray:
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0
    smooth = cv2.filter2D(img, -1, kernel).astype(np.float32)
    smooth[0, :], smooth[-1, :], smooth[:, 0], smooth[:, -1] = img[0, :], img[-1, :], img[:, 0], img[:, -1]
    return _blend(img, smooth, factor)


def _affine(img: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=FILL)


def shear_x(img: np.ndarray, factor: float) -> np.ndarray:
    return _affine(img, np.float32([[1, factor, 0], [0, 1, 0]]))


def shear_y(img: np.ndarray, factor: float) -> np.ndarray:
    return _affine(img, np.float32([[1, 0, 0], [factor, 1, 0]]))


def translate_x(img: np.ndarray, offset: float) -> np.ndarray:
    return _affine(img, np.float32([[1, 0, -offset], [0, 1, 0]]))


def translate_y(img: np.ndarray, offset: float) -> np.ndarray:
    return _affine(img, np.float32([[1, 0, 0], [0, 1, -offset]]))


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    return _affine(img, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0))


# name -> (operation, level -> magnitude, whether the magnitude takes a random sign)
OPS = {
    "Identity": (identity, lambda level: 0.0, False),
    "AutoContrast": (autocontrast, lambda level: 0.0, False),
    "Equalize": (equalize, lambda level: 0.0, False),
    "Brightness": (brightness, lambda level: level / MAX_LEVEL * 1.8 + 0.1, False),
    "Sharpness": (sharpness, lambda level: level / MAX_LEVEL * 1.8 + 0.1, False),
    "ShearX": (shear_x, lambda level: level / MAX_LEVEL * 0.3, True),
    "ShearY": (shear_y, lambda level: level / MAX_LEVEL * 0.3, True),
    "TranslateX": (translate_x, lambda level: level / MAX_LEVEL * 10.0, True),
    "TranslateY": (translate_y, lambda level: level / MAX_LEVEL * 10.0, True),
    "Rotate": (rotate, lambda level: level / MAX_LEVEL * 30.0, True),
}


class RandAugment:
    """Pick ``n`` operations (with replacement); apply each with probability 0.5 at level ``m``.

    With m=5, as in BLIP, Brightness and Sharpness have factor 1.0 and change nothing; shears are
    +-0.15, translations +-5 px and rotations +-15 degrees.
    """

    def __init__(self, n: int = 2, m: float = 5, ops: tuple[str, ...] = tuple(OPS)):
        unknown = [o for o in ops if o not in OPS]
        if unknown:
            raise ValueError(f"unknown RandAugment operations {unknown}; known: {list(OPS)}")
        self.n, self.m, self.ops = n, m, list(ops)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for name in rng.choice(self.ops, self.n):
            if rng.random() >= 0.5:
                continue
            op, magnitude, signed = OPS[str(name)]
            value = magnitude(self.m)
            if signed and rng.random() < 0.5:
                value = -value
            img = op(img, value)
        return img
