"""PMC-OA (PMC-CLIP's dataset, axiong/pmc_oa): JSON lines of sub-figure image and sub-caption.

Each line of ``train.jsonl`` / ``valid.jsonl`` / ``test.jsonl`` (or ``pmc_oa.jsonl``) is
``{"image": "PMC212319_Fig3_4.jpg", "caption": "...", "pmcid": "PMC212319", "url_name": "..."}``; the
images come in ``images.zip``, unpacked beside the file (``images/``, or the archive's own folder
``caption_T060_filtered_top4_sep_v0_subfigures/``; ``images=DIR`` names another). Other keys are kept.
``img_key=`` and ``caption_key=`` read any other JSON-lines file of pairs the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from data.adapters import check_options, image_folder, json_lines

IMAGE_FOLDERS = ("images", "caption_T060_filtered_top4_sep_v0_subfigures")


def read(path: Path, options: dict) -> Iterator[tuple[str, dict]]:
    check_options(options, ("images", "img_key", "caption_key"), path)
    images = image_folder(options, path.parent, IMAGE_FOLDERS)
    img_key, caption_key = options.get("img_key", "image"), options.get("caption_key", "caption")
    for number, row in json_lines(path):
        record = {k: v for k, v in row.items() if k not in (img_key, caption_key)}
        if isinstance(row.get(img_key), str) and row[img_key]:
            record["image"] = str(images / row[img_key])
        if caption_key in row:
            record["caption"] = row[caption_key]
        yield f"{path}:{number}", record
