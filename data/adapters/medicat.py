"""MedICaT (allenai/medicat): PMC figures with captions, and sub-figure/sub-caption annotations.

Figure files (``s2_full_figures_oa_nonroco_combined_medical_top4_public.jsonl``, ``sample/sample.jsonl``)
hold one figure a line: ``pdf_hash``, ``fig_uri``, ``s2_caption`` and ``s2orc_caption`` (the caption
text), ``radiology``, ``oa_info`` (DOI, licence) ...; the image is ``figures/<pdf_hash>_<fig_uri>``
beside the file (``images=DIR`` names another folder). ``medicat:`` reads them as figure/caption pairs,
the S2ORC caption first (``caption_key=s2_caption`` chooses the other).

The sub-figure annotations are pairs only once each sub-figure is cut out: :func:`write_subfigures`
(``python -m data.adapters medicat-subfigures subcaptions_public.jsonl --out DIR``) writes the crops and
a ``subfigures.json`` of :class:`~data.records.SubFigureRecord`, which configs then name. Each line has
``pdf_hash``, ``fig_key``, ``fig_uri``, ``width``, ``height``, the caption ``text`` and its ``tokens``
(``{"text", "start", "end", ...}``), the boxes and ``subcaptions`` (label -> indices of its caption
tokens, or the sub-caption text). Two key sets are in use: the published ``subcaptions_public.jsonl``
holds accepted figures only, their boxes under ``subfigures`` (``{"label", "points": [[x, y], ...]}``);
the annotation tool's own export (which the MedICaT code reads) has ``answer`` (``accept``, ``reject``,
``ignore``) and the boxes under ``spans``. Both are read; lines that give no sub-figure are counted by
reason, and a file where no line gives one is refused with those counts.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Iterator

from data.adapters.common import AdapterError, BadRow, check_options, image_folder, json_lines, plain_name
from data.files import atomic_write
from data.image_limits import BadImageError
from data.images import load_rgb
from data.records import SubFigureRecord, write_records
from data.scrape.safe_paths import safe_component

log = logging.getLogger(__name__)
IMAGE_FOLDERS = ("figures", "release/figures")
CAPTION_KEYS = ("s2orc_caption", "s2_caption", "caption")


def figure_name(row: dict, where: str) -> str:
    if not (isinstance(row.get("pdf_hash"), str) and isinstance(row.get("fig_uri"), str)):
        raise AdapterError(f"{where}: a MedICaT line needs 'pdf_hash' and 'fig_uri'")
    return f"{row['pdf_hash']}_{row['fig_uri']}"


def _caption(row: dict, key: str | None) -> object:
    if key:
        return row.get(key)
    return next((row[k] for k in CAPTION_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)


def read(path: Path, options: dict) -> Iterator[tuple[str, dict]]:
    """Figure/caption pairs of a MedICaT figure file (annotation lines give their whole figure)."""
    check_options(options, ("images", "caption_key"), path)
    images = image_folder(options, path.parent, IMAGE_FOLDERS)
    for number, row in json_lines(path):
        where = f"{path}:{number}"
        name = figure_name(row, where)
        if not plain_name(name):
            yield where, BadRow(f"the figure name {name!r} (pdf_hash_fig_uri) is not a plain name", row)
            continue
        record = {"image": str(images / name), "image_id": name, "pdf_hash": row["pdf_hash"],
                  "fig_uri": row["fig_uri"]}
        caption = _caption(row, options.get("caption_key"))
        if caption is None and isinstance(row.get("tokens"), list):
            caption = " ".join(str(t.get("text", "")) for t in row["tokens"] if isinstance(t, dict))
        if caption is not None:
            record["caption"] = caption
        if "radiology" in row:
            record["radiology"] = row["radiology"]
        oa = row.get("oa_info") if isinstance(row.get("oa_info"), dict) else {}
        licence = oa.get("oa", {}).get("license") if isinstance(oa.get("oa"), dict) else None
        if isinstance(licence, str):
            record["license"] = licence
        yield where, record


def _box(points: object, width: int, height: int, where: str) -> list[int]:
    if not (isinstance(points, list) and points and all(isinstance(p, list) and len(p) == 2 for p in points)):
        raise AdapterError(f"{where}: a span needs 'points', a list of [x, y]")
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    box = [max(0, int(min(xs))), max(0, int(min(ys))),
           min(width, int(round(max(xs)))), min(height, int(round(max(ys))))]
    if box[2] <= box[0] or box[3] <= box[1]:
        raise AdapterError(f"{where}: the span's box {box} is empty")
    return box


def _subcaption(row: dict, indices: object, where: str) -> str:
    if isinstance(indices, str):  # the sub-caption itself
        return indices.strip()
    tokens = row.get("tokens")
    if not isinstance(tokens, list) or not isinstance(indices, list):
        raise AdapterError(f"{where}: needs 'tokens' and token indices per sub-caption")
    chosen = [i for i in sorted(set(indices)) if isinstance(i, int) and 0 <= i < len(tokens)]
    text = row.get("text")
    if isinstance(text, str) and all(isinstance(tokens[i].get("start"), int) and isinstance(tokens[i].get("end"), int)
                                     for i in chosen):
        runs, start = [], 0  # contiguous token runs, cut from the caption with its own spacing
        for k in range(1, len(chosen) + 1):
            if k == len(chosen) or chosen[k] != chosen[k - 1] + 1:
                runs.append(text[tokens[chosen[start]]["start"]:tokens[chosen[k - 1]]["end"]])
                start = k
        return " ".join(r.strip() for r in runs if r.strip())
    return " ".join(w for w in (str(tokens[i].get("text", "")) for i in chosen) if w)


def _boxes(row: dict) -> tuple[list, str]:
    """(sub-figure boxes, "") of an annotation line with usable sub-figures, else ([], why not)."""
    answer = row.get("answer")
    if answer is not None and answer != "accept":
        return [], f"answer {answer!r}"
    boxes = row.get("subfigures", row.get("spans"))
    if not isinstance(boxes, list) or not boxes:
        return [], "no sub-figure boxes ('subfigures' or 'spans')"
    if not isinstance(row.get("subcaptions"), dict) or not row["subcaptions"]:
        return [], "no 'subcaptions'"
    return boxes, ""


def write_subfigures(path: Path, out: Path, images: Path | None = None) -> list[SubFigureRecord]:
    """Crop every annotated sub-figure of ``path`` into ``out/images/`` and write ``out/subfigures.json``;
    returns the records. Figures that cannot be read are logged and skipped; a file where no line gives
    a sub-figure is an :class:`AdapterError` saying why, line counts by reason."""
    images = images or image_folder({}, path.parent, IMAGE_FOLDERS)
    out = Path(out)
    records: list[SubFigureRecord] = []
    skipped: Counter = Counter()
    lines = 0
    for number, row in json_lines(path):
        where = f"{path}:{number}"
        lines += 1
        boxes, reason = _boxes(row)
        if reason:
            skipped[reason] += 1
            continue
        name = figure_name(row, where)
        if not plain_name(name):
            skipped["a figure name that is not a plain file name"] += 1
            continue
        try:
            figure = load_rgb(images / name)
        except BadImageError as err:
            log.warning("%s: %s; skipped", where, err)
            skipped["figure image missing or unreadable"] += 1
            continue
        for span in boxes:
            label = str(span.get("label", ""))
            if label not in row["subcaptions"]:
                continue
            box = _box(span.get("points"), figure.width, figure.height, where)
            crop = Path("images") / f"{Path(name).stem}_{safe_component(label)}.png"
            atomic_write(out / crop, lambda tmp, b=box: figure.crop(b).save(tmp, format="PNG"))
            records.append({"image": crop.as_posix(), "caption": _subcaption(row, row["subcaptions"][label], where),
                            "parent_image": str(images / name), "panel_label": label.upper(), "box": box,
                            "pdf_hash": row["pdf_hash"], "fig_uri": row["fig_uri"]})
    counts = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
    if lines and not records:
        raise AdapterError(f"{path}: none of its {lines} line(s) gives a sub-figure ({counts}); expected "
                           f"MedICaT sub-caption lines with 'subfigures' (or 'spans') boxes and 'subcaptions'")
    if skipped:
        log.warning("%s: %d of %d line(s) gave no sub-figure: %s", path, sum(skipped.values()), lines, counts)
    write_records(out / "subfigures.json", records, SubFigureRecord)
    return records
