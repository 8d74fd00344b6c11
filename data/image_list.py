"""Image inputs of the use-the-model commands (``vis.py classify|caption|embed``): folders, JSON lists
and clinical files, turned into one list of items and batched.

A source is
- a JSON list of records ``{"image": ..., "label": ..., "caption": str or [str, ...]}`` (relative paths
  resolve against ``image_root`` if given, else the JSON file's folder; extra keys are ignored),
- a folder: every image under it (PNG, JPEG, TIFF, ..., DICOM, NIfTI), sorted; a folder that holds DICOM
  files and no other image is one DICOM series,
- or one image file or clinical reference (``scan.nii.gz#axial:all`` expands to every slice).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from data import clinical
from data.datasets import DatasetError, resolve_image
from data.files import read_json_list
from data.image_limits import DEFAULT_MAX_PIXELS, BadImageError
from data.images import image_exists, load_rgb
from data.volumes import DICOM_SUFFIXES, NIFTI_SUFFIXES, RASTER_SUFFIXES, kind_of

IMAGE_SUFFIXES = tuple(sorted(RASTER_SUFFIXES)) + DICOM_SUFFIXES + NIFTI_SUFFIXES


@dataclass
class Item:
    image: str  # path or clinical reference, resolved
    label: str | None = None
    captions: list[str] = field(default_factory=list)


def with_choice(ref: str, choice: str | None) -> str:
    """Append the command's ``--slice``/``--window`` choice to a clinical reference that has none."""
    if not choice or "#" in ref or not clinical.is_clinical(ref):
        return ref
    return f"{ref}#{choice}"


def _from_json(path: Path, image_root: str | None, label_key: str) -> list[Item]:
    items = []
    for i, rec in enumerate(read_json_list(path, "image list")):
        where = f"{path}[{i}]"
        if not isinstance(rec, dict) or not isinstance(rec.get("image"), str) or not rec["image"]:
            raise DatasetError(f"{where}: not a record with an 'image' path")
        label = rec.get(label_key)
        if label is not None and not isinstance(label, (str, int)):
            raise DatasetError(f"{where}: '{label_key}' must be a string, not {type(label).__name__}")
        caps = rec.get("caption")
        caps = [caps] if isinstance(caps, str) else [c for c in caps if isinstance(c, str)] if isinstance(
            caps, list) else []
        image = resolve_image(rec["image"], path, image_root)
        items.append(Item(str(image), None if label is None else str(label), caps))
    return items


def _is_series(folder: Path) -> bool:
    files = [p for p in folder.iterdir() if p.is_file()]
    dicom = [p for p in files if kind_of(p) == "dicom"]
    others = [p for p in files if p.name.lower().endswith(IMAGE_SUFFIXES) and p not in dicom]
    return bool(dicom) and not others


def _from_folder(folder: Path) -> list[Item]:
    if _is_series(folder):
        return [Item(str(folder))]
    items, series = [], {}
    for p in sorted(folder.rglob("*")):
        if p.is_dir():
            if _is_series(p):
                series[p] = True
                items.append(Item(str(p)))
        elif p.name.lower().endswith(IMAGE_SUFFIXES) and p.parent not in series:
            items.append(Item(str(p)))
    return items


def collect(sources: Sequence[str], choice: str | None = None, image_root: str | None = None,
            label_key: str = "label", max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Item]:
    """Items of every source, in order, with volumes' ``all`` slice choices expanded.

    ``choice`` (e.g. ``axial:all,window=bone``) applies to every clinical image that has none of its own.
    A volume larger than ``max_pixels`` allows is refused from its header before it is expanded.
    """
    if choice:
        clinical.parse_choice(choice)  # fail on a typo before reading anything
    items: list[Item] = []
    for src in sources:
        path, _ = clinical.split_ref(src)
        if path.suffix.lower() == ".json" and path.is_file():
            found = _from_json(path, image_root, label_key)
        elif path.is_dir() and "#" not in src and not _is_series(path):
            found = _from_folder(path)
            if not found:
                raise DatasetError(f"folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        elif image_exists(src):
            found = [Item(src)]
        else:
            raise DatasetError(f"{src} is neither an image, a folder nor a JSON list that exists")
        for item in found:
            ref = with_choice(item.image, choice)
            refs = clinical.expand(ref, max_pixels) if clinical.is_clinical(ref) else [ref]
            items.extend(Item(r, item.label, item.captions) for r in refs)
    if not items:
        raise DatasetError(f"no image in {list(sources)}")
    return items


def read_texts(path: str | Path) -> list[str]:
    """Texts to embed: a JSON list of strings (or of records with ``caption``), or a text file, one per line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"text file {path} does not exist")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            texts = [d if isinstance(d, str) else d.get("caption") if isinstance(d, dict) else None for d in data]
            texts = [t for group in texts for t in (group if isinstance(group, list) else [group])]
            if texts and all(isinstance(t, str) for t in texts):
                return texts
        raise DatasetError(f"{path} must hold a JSON list of strings or of records with a 'caption'")
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise DatasetError(f"text file {path} holds no text")
    return texts


class ImageListDataset(Dataset):
    """Decodes item ``i`` and applies ``transform`` (an eval transform); a bad image stops with its name,
    since skipping it would misalign outputs and inputs."""

    def __init__(self, items: Sequence[Item], transform: Callable, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.items, self.transform, self.max_pixels = list(items), transform, max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            return self.transform(load_rgb(self.items[index].image, self.max_pixels))
        except BadImageError as e:
            raise DatasetError(f"image {index} ({self.items[index].image}): {e}") from e


def image_batches(items: Sequence[Item], transform: Callable, batch_size: int = 32, workers: int = 0,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> DataLoader:
    """Batches (B, 3, H, W) of the items, in order; an image above ``max_pixels`` stops with its name."""
    return DataLoader(ImageListDataset(items, transform, max_pixels), batch_size=batch_size, shuffle=False,
                      num_workers=workers)
