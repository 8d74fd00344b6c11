"""Plain CSV/TSV files of image paths and captions, with open_clip's column options.

``csv:pairs.tsv?img_key=filepath&caption_key=title&sep=tab`` (open_clip's ``--csv-img-key``,
``--csv-caption-key`` and ``--csv-separator``; the defaults are its ``filepath`` and ``title``). The
separator defaults to a tab for ``.tsv`` and a comma otherwise (``sep=tab`` or ``sep=,`` to choose).
Relative image paths resolve against the file's folder, or against ``images=DIR``. The other columns
are kept in the records.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from data.adapters import AdapterError, check_options, image_folder

_SEPARATORS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def read(path: Path, options: dict) -> Iterator[tuple[str, dict]]:
    check_options(options, ("img_key", "caption_key", "sep", "images"), path)
    sep = options.get("sep") or ("\t" if path.suffix.lower() == ".tsv" else ",")
    sep = _SEPARATORS.get(sep, sep)
    if len(sep) != 1:
        raise AdapterError(f"{path}: sep must be one character (or tab, comma, semicolon, pipe), got {sep!r}")
    img_key, caption_key = options.get("img_key", "filepath"), options.get("caption_key", "title")
    base = image_folder(options, path.parent, ())
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = csv.DictReader(fh, delimiter=sep)
        fields = rows.fieldnames or []
        for key, flag in ((img_key, "img_key"), (caption_key, "caption_key")):
            if key not in fields:
                raise AdapterError(f"{path}: no column {key!r} (columns: {fields}); set {flag}= to the right one")
        for number, row in enumerate(rows, 2):
            record = {k: v for k, v in row.items() if k not in (img_key, caption_key) and k is not None}
            if row.get(img_key):
                image = Path(row[img_key])
                record["image"] = str(image if image.is_absolute() else base / image)
            record["caption"] = row.get(caption_key) or ""
            yield f"{path}:{number}", record
