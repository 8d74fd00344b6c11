"""Plain CSV/TSV files of image paths and captions, with open_clip's column options.

``csv:pairs.tsv?img_key=filepath&caption_key=title&sep=tab`` (open_clip's ``--csv-img-key``,
``--csv-caption-key`` and ``--csv-separator``; the defaults are its ``filepath`` and ``title``).

The separator: open_clip's ``--csv-separator`` defaults to a tab whatever the file is called, so files
written for it are often tab-separated ``.csv`` files. Here, without ``sep=``, the header line decides:
a tab if it holds one, else a comma. ``sep=tab``, ``sep=comma`` (or any one character, ``sep=;``) forces
one. Relative image paths resolve against the file's folder, or against ``images=DIR``; images must lie
inside one of those (``outside=allow`` lifts that, see :mod:`data.adapters`). The other columns are
kept in the records.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from data.adapters.common import AdapterError, check_options, csv_rows, image_folder

_SEPARATORS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def separator(path: Path, option: str | None) -> str:
    """The ``sep=`` option, else a tab if the header line has one, else a comma."""
    if option:
        sep = _SEPARATORS.get(option, option)
        if len(sep) != 1:
            raise AdapterError(f"{path}: sep must be one character (or tab, comma, semicolon, pipe), got {option!r}")
        return sep
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        header = fh.readline()
    return "\t" if "\t" in header else ","


def read(path: Path, options: dict) -> Iterator[tuple[str, dict]]:
    check_options(options, ("img_key", "caption_key", "sep", "images"), path)
    sep = separator(path, options.get("sep"))
    img_key, caption_key = options.get("img_key", "filepath"), options.get("caption_key", "title")
    base = image_folder(options, path.parent, ())
    checked = False
    for number, row, fields in csv_rows(path, delimiter=sep):
        if not checked:
            for key, flag in ((img_key, "img_key"), (caption_key, "caption_key")):
                if key not in fields:
                    raise AdapterError(f"{path}: no column {key!r} (columns: {fields}); set {flag}= to the right "
                                       f"one (the separator read was {sep!r}; sep= sets another)")
            checked = True
        record = {k: v for k, v in row.items() if k not in (img_key, caption_key) and k is not None}
        if row.get(img_key):
            image = Path(row[img_key])
            record["image"] = str(image if image.is_absolute() else base / image)
        record["caption"] = row.get(caption_key) or ""
        yield f"{path}:{number}", record
