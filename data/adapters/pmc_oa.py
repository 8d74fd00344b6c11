"""PMC-OA (PMC-CLIP's dataset, axiong/pmc_oa): JSON lines of sub-figure image and sub-caption.

Each line of ``train.jsonl`` / ``valid.jsonl`` / ``test.jsonl`` (or ``pmc_oa.jsonl``, ``pmc_oa_beta.jsonl``)
is ``{"image": "PMC212319_Fig3_4.jpg", "caption": "...", ...}`` (older releases add ``pmcid`` and
``url_name``, newer ones ``alignment_type`` and ``alignment_score``; other keys are kept). The images come
in ``images.zip``, whose members lie in its folder ``caption_T060_filtered_top4_sep_v0_subfigures/``.
Unpacked beside the JSON-lines file that folder is found as it is, inside ``images/`` (the archive
unpacked into a folder of its own name), or the images directly in ``images/``; ``images=DIR`` names any
other folder. ``img_key=`` and ``caption_key=`` read any other JSON-lines file of pairs the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from data.adapters.common import check_options, image_folder, json_lines

ARCHIVE_FOLDER = "caption_T060_filtered_top4_sep_v0_subfigures"
IMAGE_FOLDERS = (f"images/{ARCHIVE_FOLDER}", ARCHIVE_FOLDER, "images")


def read(path: Path, options: dict) -> Iterator[tuple[str, dict]]:
    check_options(options, ("images", "img_key", "caption_key"), path)
    img_key, caption_key = options.get("img_key", "image"), options.get("caption_key", "caption")
    images = None
    for number, row in json_lines(path):
        record = {k: v for k, v in row.items() if k not in (img_key, caption_key)}
        if isinstance(row.get(img_key), str) and row[img_key]:
            if images is None:  # the folder that holds the first row's image
                images = image_folder(options, path.parent, IMAGE_FOLDERS, probe=row[img_key])
            record["image"] = str(images / row[img_key])
        if caption_key in row:
            record["caption"] = row[caption_key]
        yield f"{path}:{number}", record
