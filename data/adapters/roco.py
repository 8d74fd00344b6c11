"""ROCO and ROCOv2 (Radiology Objects in COntext): non-compound PMC figures with their captions.

ROCO (razorx89/roco-dataset): ``data/<split>/<radiology|non-radiology>/`` folders, each with
``captions.txt`` (``ROCO_00020<TAB> caption``, one image a line), ``dlinks.txt`` (``ROCO_ID<TAB>wget
<package URL><TAB><file name in the package>``) and the images that ``scripts/fetch.py`` saves in
``images/`` as ``<PMCID>_<file name>``; copies that name the files ``<ROCO_ID>.jpg`` are read as well.
``roco:`` takes one such folder or any folder above them (every ``captions*.txt`` below it is read).

ROCOv2 (Zenodo record 8333645, 2023): ``<split>_captions.csv`` with columns ``ID`` and ``Caption``
(``ROCOv2_2023_train_000001``, ...), ``<split>_concepts.csv`` (``ID``, ``CUIs`` joined by ``;``), kept as
``cuis`` when the file is there, and the images as ``<split>_images.zip`` (``train``, ``valid``, ``test``),
whose members are ``<split>/<ID>.jpg``. Unpacked beside the CSV files the images are in ``<split>/``, or
in ``<split>_images/<split>/`` where the archive was unpacked into a folder of its own name (what most
archive tools do); both are found without options, ``images=DIR`` names any other folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from data.adapters.common import AdapterError, BadRow, check_options, csv_rows, image_folder, plain_name


def _first(folder: Path, pattern: str) -> Path | None:
    exact = folder / pattern.replace("*", "")
    if exact.is_file():
        return exact
    return next(iter(sorted(folder.glob(pattern))), None)


def _links(folder: Path) -> dict[str, tuple[str, str]]:
    """ROCO id -> (PMCID, file name in its package), from ``dlinks*.txt`` if present."""
    path = _first(folder, "dlinks*.txt")
    links = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path else []:
        parts = line.split("\t")
        if len(parts) >= 3:
            package = parts[1].split()[2] if len(parts[1].split()) > 2 else parts[1]
            links[parts[0].strip()] = (package.rsplit("/", 1)[-1].split(".tar")[0], parts[-1].strip())
    return links


def _roco_image(images: Path, roco_id: str, link: tuple[str, str] | None) -> Path:
    candidates = [images / f"{roco_id}.jpg", images / f"{roco_id}.png"]
    if link and plain_name(link[0]) and plain_name(link[1]):
        candidates = [images / f"{link[0]}_{link[1]}", images / link[1]] + candidates
    return next((c for c in candidates if c.is_file()), candidates[0])


def read_roco(path: Path, options: dict) -> Iterator[tuple[str, dict]]:
    """Every image of the ROCO folder(s) under ``path`` with its caption."""
    check_options(options, ("images",), path)
    folders = [path] if _first(path, "captions*.txt") else sorted({p.parent for p in path.rglob("captions*.txt")})
    if not folders:
        raise AdapterError(f"{path} holds no ROCO captions.txt (expected data/<split>/<radiology|non-radiology>/)")
    for folder in folders:
        captions = _first(folder, "captions*.txt")
        links = _links(folder)
        images = image_folder(options, folder, ("images",))
        for number, line in enumerate(captions.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            roco_id, sep, caption = line.partition("\t")
            if not sep:
                raise AdapterError(f"{captions}:{number}: expected 'ROCO_ID<TAB>caption'")
            roco_id = roco_id.strip()
            if not plain_name(roco_id):
                yield f"{captions}:{number}", BadRow(f"the id {roco_id!r} is not a plain name", line)
                continue
            link = links.get(roco_id)
            record = {"image": str(_roco_image(images, roco_id, link)), "caption": caption.strip(),
                      "image_id": roco_id, "category": folder.name}
            if link:
                record["pmcid"] = link[0]
            yield f"{captions}:{number}", record


def _column(fields: list[str], name: str, path: Path) -> str:
    found = next((f for f in fields if f and f.strip().lower() == name.lower()), None)
    if found is None:
        raise AdapterError(f"{path}: no column {name!r} (columns: {fields}); is this a ROCOv2 captions file?")
    return found


def _concepts(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        return {}
    concepts = {}
    for _, row, fields in csv_rows(path):
        key, cuis = _column(fields, "ID", path), _column(fields, "CUIs", path)
        concepts[row[key]] = [c for c in (row[cuis] or "").split(";") if c]
    return concepts


def read_rocov2(path: Path, options: dict) -> Iterator[tuple[str, dict]]:
    """The rows of a ROCOv2 ``<split>_captions.csv`` with the image of the same ID."""
    check_options(options, ("images",), path)
    split = path.stem[: -len("_captions")] if path.stem.endswith("_captions") else path.stem
    folders = (split, f"{split}_images/{split}", f"{split}_images")
    concepts = _concepts(path.parent / f"{split}_concepts.csv")
    images = None
    for number, row, fields in csv_rows(path):
        key, caption = _column(fields, "ID", path), _column(fields, "Caption", path)
        image_id = (row[key] or "").strip()
        if not plain_name(image_id):
            yield f"{path}:{number}", BadRow(f"the ID {image_id!r} is not a plain name", row)
            continue
        if images is None:  # the folder that holds the first row's image
            images = image_folder(options, path.parent, folders, probe=f"{image_id}.jpg")
        image = images / f"{image_id}.jpg"
        if not image.is_file() and (images / f"{image_id}.png").is_file():
            image = images / f"{image_id}.png"
        record = {"image": str(image), "caption": row[caption], "image_id": image_id}
        if image_id in concepts:
            record["cuis"] = concepts[image_id]
        yield f"{path}:{number}", record
