"""Controlled variations of the demo set, for measuring what a trained model knows (used by the
bench scripts ``demo_baseline``, ``itm_attributes`` and ``vis_lesions``, and tested on their own):

- ``sequence_only_recall``: the exact expected recall of a model that knows only each image's sequence;
- ``changed_captions``: a caption with exactly one attribute of its findings changed;
- ``head_mask`` and ``painted``: the head of a slice, and the slice with its lesions (or, as a control,
  their mirror region) painted over.
"""
from __future__ import annotations

import random
from math import comb

import cv2
import numpy as np
from PIL import Image

from data.synthetic.demo import KINDS, LOBES, SEQUENCES, captions_for


def hit_chance(n: int, good: int, k: int) -> float:
    """P(at least one of ``good`` items is among the first ``k`` of a random order of ``n`` items)."""
    k = min(k, n)
    return 1.0 - comb(n - good, k) / comb(n, k)


def sequence_only_recall(records: list[dict], sequences: list[str], ks=(1, 5, 10)) -> dict[str, float]:
    """Expected recall of a model that ranks the query's sequence first and is random within it.

    records: val/test entries ``{"image", "caption": [...]}``; sequences: each record's sequence. BLIP's
    metric names (txt_r* = image query, img_r* = text query) in percent, and r_mean.
    """
    n_caps = [len(r["caption"]) for r in records]
    texts_of = {s: sum(c for s2, c in zip(sequences, n_caps) if s2 == s) for s in set(sequences)}
    out = {}
    for k in ks:
        txt = [hit_chance(texts_of[s], n_caps[i], k) for i, s in enumerate(sequences)]
        img = [hit_chance(sequences.count(s), 1, k) for i, s in enumerate(sequences) for _ in range(n_caps[i])]
        out[f"txt_r{k}"] = 100 * sum(txt) / len(txt)
        out[f"img_r{k}"] = 100 * sum(img) / len(img)
    out["r_mean"] = sum(out.values()) / len(out)
    return {key: round(v, 2) for key, v in out.items()}


def changed_captions(case: dict, rng: random.Random) -> dict[str, str]:
    """The first caption of ``case`` (a ``lesions.json`` entry with lesions) with one attribute changed:
    ``side``, ``lobe``, ``kind``, ``sequence``, or ``none`` (the "no focal abnormality" caption)."""
    def other(options, current):
        return rng.choice([o for o in options if o != current])

    def with_lesions(change) -> str:
        return captions_for({**case, "lesions": [{**les, **change(les)} for les in case["lesions"]]})[0]

    return {
        "side": with_lesions(lambda les: {"side": "right" if les["side"] == "left" else "left"}),
        "lobe": with_lesions(lambda les: {"lobe": other(LOBES, les["lobe"])}),
        "kind": with_lesions(lambda les: {"kind": other(KINDS, les["kind"])}),
        "sequence": captions_for({**case, "sequence": other(SEQUENCES, case["sequence"])})[0],
        "none": captions_for({**case, "lesions": []})[0],
    }


def head_mask(gray: np.ndarray) -> np.ndarray:
    """The head (scalp and everything inside it) of a (H, W) uint8 slice: the largest bright region, filled."""
    _, fg = cv2.threshold(gray, 20, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    mask = np.zeros_like(gray)
    if contours:
        cv2.drawContours(mask, [max(contours, key=cv2.contourArea)], -1, 255, thickness=-1)
    return mask > 0


def painted(gray: np.ndarray, lesion: np.ndarray) -> tuple[Image.Image, Image.Image]:
    """(lesions painted over, their mirror region painted over) for one (H, W) uint8 slice and bool mask.

    The lesions' masks are widened by 2 pixels and filled with the median grey of the head; the control
    paints the mirror image of that region in the other hemisphere and never a lesion pixel.
    """
    head = head_mask(gray)
    fill = np.median(gray[head & ~lesion])
    region = cv2.dilate(lesion.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    mirror = region[:, ::-1] & head & ~lesion
    out = []
    for area in (region, mirror):
        g = gray.copy()
        g[area] = fill
        out.append(Image.fromarray(g).convert("RGB"))
    return out[0], out[1]
