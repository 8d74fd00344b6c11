"""Retrieval splits grouped by article, in BLIP's COCO-Karpathy layout.

Sub-figures of one article look alike and share words, so an article that reached both train and
test would leak; whole articles go to one split. Train entries are ``{"image", "caption",
"image_id"}`` (one per caption); val/test entries are ``{"image", "caption": [...]}`` (one per image).
"""
from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import PurePosixPath

from data.records import PairRecord, SubFigureRecord

SPLIT_NAMES = ("train", "val", "test")


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> (0.8, 0.1, 0.1); three non-negative numbers that sum to 1."""
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError as e:
        raise ValueError(f"--splits wants three numbers such as 0.8,0.1,0.1, got {text!r}") from e
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise ValueError(f"--splits wants three non-negative fractions that sum to 1, got {text!r}")
    return parts  # type: ignore[return-value]


def article_key(record: dict) -> str:
    """The article a record comes from: ``pmcid``, else the parent image name up to ``_fig``/``-g``."""
    if record.get("pmcid"):
        return str(record["pmcid"])
    name = PurePosixPath(str(record.get("parent_image") or record.get("image", ""))).stem
    return re.split(r"(?i)_fig|-g\d|_f\d", name)[0] or name


def assign_articles(records: list[dict], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Article -> split name. Articles are shuffled with ``seed`` and filled in split order by record count."""
    sizes: dict[str, int] = defaultdict(int)
    for r in records:
        sizes[article_key(r)] += 1
    articles = sorted(sizes)
    random.Random(seed).shuffle(articles)
    total = sum(sizes.values())
    bounds = [fractions[0] * total, (fractions[0] + fractions[1]) * total]
    out, seen = {}, 0
    for a in articles:
        mid = seen + sizes[a] / 2  # an article goes where its middle falls
        out[a] = "train" if mid < bounds[0] else "val" if mid < bounds[1] else "test"
        seen += sizes[a]
    return out


def karpathy_splits(records: list[SubFigureRecord], fractions: tuple[float, float, float],
                    seed: int) -> dict[str, list[PairRecord]]:
    """``{"train": [...], "val": [...], "test": [...]}`` in the COCO-Karpathy layout."""
    where = assign_articles(records, fractions, seed)
    train: list[PairRecord] = []
    by_image: dict[str, dict[str, list[str]]] = {"val": {}, "test": {}}
    for r in records:
        split = where[article_key(r)]
        if split == "train":
            image_id = PurePosixPath(r["image"]).with_suffix("").as_posix()
            train.append({"image": r["image"], "caption": r["caption"], "image_id": image_id})
        else:
            by_image[split].setdefault(r["image"], []).append(r["caption"])
    out = {"train": train}
    for split in ("val", "test"):
        out[split] = [{"image": img, "caption": caps} for img, caps in by_image[split].items()]
    return out
