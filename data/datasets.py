"""Datasets of image/caption pairs read from JSON lists, for pre-training, retrieval training and
retrieval evaluation. Bad records are counted and skipped, never allowed to stop a run silently."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from data.captions import pre_caption
from data.files import JsonListError
from data.image_limits import DEFAULT_MAX_PIXELS, BadImageError
from data.images import image_exists, load_rgb
from data.records import BadRecord, PairRecord, indexed_records
from data.errors import BadInput

log = logging.getLogger("medvl")
MAX_ATTEMPTS = 20


class DatasetError(BadInput):
    """A dataset file that cannot be used at all; the message names the file."""


@dataclass
class Pair:
    image: Path
    caption: str
    image_id: int
    where: str  # "file.json[17]" for messages


@contextmanager
def _dataset_errors() -> Iterator[None]:
    """Callers of the datasets catch DatasetError; the shared readers raise JsonListError."""
    try:
        yield
    except JsonListError as e:
        raise DatasetError(str(e)) from None


def read_pairs(path: Path, bad: list[BadRecord] | None = None) -> list[tuple[str, PairRecord]]:
    """("file.json[i]", record) for the pair records of ``path`` (see :func:`data.records.read_records`);
    a file, or without ``bad`` a record, that cannot be used raises :class:`DatasetError`, naming it.
    Datasets in a public layout (``roco:DIR``, ``pmc-oa:FILE``, ``x.csv``, ...) are read by :mod:`data.adapters`."""
    # the field's dataset layouts (data/adapters/)
    from data import adapters

    if adapters.is_adapter_spec(path):
        try:
            return adapters.read_pairs(str(path), bad)
        except (ValueError, OSError) as e:  # AdapterError, RecordError; the message names file and row
            raise DatasetError(str(e)) from None
    with _dataset_errors():
        return [(f"{path}[{i}]", r) for i, r in indexed_records(path, PairRecord, bad=bad, what="dataset file")]


def resolve_image(image: str, json_path: Path, image_root: str | None) -> Path:
    """Relative paths resolve against ``image_root`` if set, else against the JSON file's folder."""
    p = Path(image)
    if p.is_absolute():
        return p
    return Path(image_root) / p if image_root else json_path.parent / p


def _captions_of(item: PairRecord) -> list[str]:
    caption = item["caption"]
    return caption if isinstance(caption, list) else [caption]


def load_pairs(files: Sequence[str | Path], image_root: str | None, max_words: int,
               check_files: bool = True) -> tuple[list[Pair], list[str]]:
    """Read one or more JSON lists of ``{"image", "caption"[, "image_id"]}`` into pairs.

    A caption may be a list (one pair per caption). Image ids come from ``image_id`` when present (scoped
    to its file: equal ids in two files are two images), else from the image path (global), and are
    mapped to contiguous ints in order of first appearance.
    Returns (pairs, problems) where each problem names the file, record and reason.
    """
    pairs: list[Pair] = []
    problems: list[str] = []
    ids: dict = {}
    for file in files:
        file = Path(file)
        bad: list[BadRecord] = []
        for where, item in read_pairs(file, bad):
            image = resolve_image(item["image"], file, image_root)
            if check_files and not image_exists(image):
                problems.append(f"{where}: image file {image} does not exist")
                continue
            # An explicit image_id is scoped to its file (two lists may both number their images 0, 1, ...);
            # the image path is global, since one path is one image whichever list names it.
            key = (str(file), item["image_id"]) if "image_id" in item else str(image)
            for caption in _captions_of(item):
                text = pre_caption(caption, max_words)  # the file may come from anywhere: clean it here
                if not text:
                    problems.append(f"{where}: empty caption {caption!r}"[:300])
                    continue
                pairs.append(Pair(image, text, ids.setdefault(key, len(ids)), where))
        problems += [str(b) for b in bad]
    return pairs, problems


def report_problems(problems: list[str], total: int, max_bad_fraction: float, what: str) -> None:
    """Log the bad records; refuse the dataset when they exceed ``max_bad_fraction`` of it."""
    if not problems:
        return
    for p in problems[:20]:
        log.warning(f"skipping {p}")
    if len(problems) > 20:
        log.warning(f"... and {len(problems) - 20} more bad records in {what}")
    fraction = len(problems) / max(total, 1)
    if fraction > max_bad_fraction:
        raise DatasetError(f"{what}: {len(problems)} of {total} records are bad ({fraction:.1%} > max_bad_fraction "
                           f"{max_bad_fraction:.1%}); first: {problems[0]}. Run `python -m data.check` for a list")


class PairDataset(Dataset):
    """Training pairs. An unreadable image is replaced by another sample; ``bad`` is 1 when the record
    drawn was unreadable (however many replacements it took), so that the epoch's count is of bad records
    drawn, comparable with the number of samples drawn.

    All randomness (crop, flip, RandAugment, replacement) comes from a generator seeded by
    (seed, epoch, index), so a sample is the same whichever worker loads it and after a resume. A key
    is an index (epoch from :meth:`set_epoch`) or ``(epoch, index)``, as the training sampler hands it
    to persistent workers. ``max_pixels`` (the ``max_image_pixels`` key) travels with the dataset into
    every loader worker.
    """

    def __init__(self, pairs: list[Pair], transform, seed: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS):
        if not pairs:
            raise DatasetError("the training set holds no usable pair")
        self.pairs, self.transform, self.seed, self.epoch = pairs, transform, seed, 0
        self.max_pixels = max_pixels

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        i, bad = index, 0
        for _ in range(MAX_ATTEMPTS):
            pair = self.pairs[i]
            try:
                img = load_rgb(pair.image, self.max_pixels)
            except BadImageError as e:
                log.warning(f"{pair.where}: {e}; using another sample")
                # One bad record drawn, however many replacements fail after it (counting
                # every attempt reported ~157 "bad" of 192 draws where ~96 bad records were drawn).
                bad = 1
                i = int(rng.integers(len(self.pairs)))
                continue
            image, caption = self.transform(img, pair.caption, rng)
            return {"image": image, "caption": caption, "image_id": pair.image_id, "bad": bad}
        raise DatasetError(f"{MAX_ATTEMPTS} unreadable images in a row (last: {self.pairs[i].where}); "
                           f"run `python -m data.check` on the dataset")


class RetrievalEvalDataset(Dataset):
    """One entry per image with one or more captions: ``text``, ``img2txt`` and ``txt2img`` as BLIP builds.

    Images are decoded when used; one that fails stops evaluation with its name, since replacing it
    would change the metrics.
    """

    def __init__(self, file: str | Path, transform, image_root: str | None, max_words: int,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        file = Path(file)
        self.transform, self.max_pixels = transform, max_pixels
        self.file = file
        self.images: list[Path] = []
        self.where: list[str] = []  # "file.json[i]" of each image, for messages (data.check.check_eval_images)
        self.text: list[str] = []
        self.img2txt: list[list[int]] = []
        self.txt2img: list[int] = []
        for where, item in read_pairs(file):
            captions = _captions_of(item)
            image = resolve_image(item["image"], file, image_root)
            if not image_exists(image):
                raise DatasetError(f"{where}: image file {image} does not exist")
            self.img2txt.append([])
            for c in captions:
                self.img2txt[-1].append(len(self.text))
                self.txt2img.append(len(self.images))
                self.text.append(pre_caption(c, max_words))
            self.images.append(image)
            self.where.append(where)
        if not self.images:
            raise DatasetError(f"evaluation file {file} holds no image")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            img = load_rgb(self.images[index], self.max_pixels)
        except BadImageError as e:
            raise DatasetError(f"evaluation image {index}: {e}") from e
        return self.transform(img), index
