"""The public layouts of the field's datasets, read as the project's pair records.

A ``train_file``, ``val_file`` or ``test_file`` entry (and any input of ``python -m data.check`` or
``python -m data.shards``) may name a dataset in its own layout instead of a JSON list:

==========================================  ===================================================
``roco:datasets/roco/data/train/radiology``  ROCO: ``captions.txt`` + ``images/`` (:mod:`.roco`)
``rocov2:datasets/rocov2/train_captions.csv`` ROCOv2: ``<split>_captions.csv`` + ``<split>/``
``pmc-oa:datasets/pmc_oa/train.jsonl``       PMC-OA: JSON lines of image/caption (:mod:`.pmc_oa`)
``medicat:datasets/medicat/s2_full_figures_oa_nonroco_combined_medical_top4_public.jsonl``
                                             MedICaT figures and captions (:mod:`.medicat`)
``csv:pairs.tsv?img_key=filepath&caption_key=title``  any CSV/TSV (:mod:`.csv_pairs`)
==========================================  ===================================================

Options follow ``?`` as ``key=value`` pairs joined by ``&`` (``images=DIR`` points every layout at
another image folder). A plain ``.csv``, ``.tsv`` or ``.jsonl`` path needs no prefix: CSV/TSV files are
read with open_clip's default columns (``filepath``, ``title``) and JSON lines as PMC-OA. Image paths
come out absolute, so ``image_root`` does not apply to these inputs. ``python -m data.adapters SPEC
--out pairs.json`` writes the pairs as a JSON list.

A dataset names its images by paths taken from its own files, so every image must lie inside the
dataset's folder (the folder of the file, or the folder ``roco:`` names) or inside ``images=DIR``: a row
whose image path leaves them (an absolute path elsewhere, ``../``, a ROCO id ``/etc/shadow``) is a bad
record, named and counted, never read. ``outside=allow`` lifts this for a dataset whose files you trust
(e.g. a CSV of absolute paths into another tree). Paths are compared as written (``..`` resolved, symbolic
links not followed), so a dataset folder may link its images in from elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qsl

from data.adapters.common import AdapterError, BadRow
from data.records import BadRecord, PairRecord, RecordError, check_record

Reader = Callable[[Path, dict], Iterator[tuple[str, "dict | BadRow"]]]
SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "pmc-oa"}


def _readers() -> dict[str, Reader]:
    from data.adapters import csv_pairs, medicat, pmc_oa, roco

    return {"roco": roco.read_roco, "rocov2": roco.read_rocov2, "pmc-oa": pmc_oa.read, "medicat": medicat.read,
            "csv": csv_pairs.read}


KINDS = ("roco", "rocov2", "pmc-oa", "medicat", "csv")


def parse_spec(spec: str) -> tuple[str, Path, dict] | None:
    """(layout, path, options) of an adapter spec, or None for anything else (a JSON list, shards)."""
    spec = os.fspath(spec)
    kind, sep, rest = spec.partition(":")
    if not (sep and kind in KINDS):
        kind, rest = "", spec
    path, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    if not kind:
        kind = SUFFIXES.get(Path(path).suffix.lower(), "")
        if not kind:
            return None
    return kind, Path(path), options


def is_adapter_spec(spec: str | os.PathLike) -> bool:
    return parse_spec(os.fspath(spec)) is not None


def iter_records(spec: str) -> Iterator[tuple[str, dict]]:
    """("where", raw record) of every row of the dataset ``spec`` names, in its order."""
    parsed = parse_spec(spec)
    if parsed is None:
        raise AdapterError(f"{spec!r} names no dataset layout; prefixes are {', '.join(k + ':' for k in KINDS)}")
    kind, path, options = parsed
    if not path.exists():
        raise AdapterError(f"{kind} dataset {path} does not exist")
    yield from _readers()[kind](path, options)


def roots(spec: str) -> list[Path]:
    """The folders that the images of ``spec`` must lie in: the dataset's own folder and ``images=DIR``;
    [] with ``outside=allow``."""
    kind, path, options = parse_spec(spec)
    if options.get("outside") == "allow":
        return []
    base = path if path.is_dir() else path.parent
    found = [lexical(base)]
    if options.get("images"):
        folder = Path(options["images"])
        found.append(lexical(folder if folder.is_absolute() else base / folder))
    return found


def lexical(path: Path) -> Path:
    """``path`` made absolute with ``..`` resolved, symbolic links left alone."""
    return Path(os.path.normpath(Path.cwd() / path))


def outside_reason(image: object, allowed: list[Path],
                   remedy: str = "add outside=allow to the spec if this dataset's paths are meant to point "
                                 "elsewhere") -> str:
    """Why ``image`` may not be read (it leaves every folder of ``allowed``, made :func:`lexical`), or ""."""
    if not allowed or not isinstance(image, str) or not image:
        return ""
    path = lexical(Path(image))
    if any(root in path.parents for root in allowed):
        return ""
    return (f"image path {image!r} leaves the dataset folder {allowed[0]}"
            + (f" and images= {allowed[1]}" if len(allowed) > 1 else "") + f"; {remedy}")


def read_pairs(spec: str, bad: list[BadRecord] | None = None) -> list[tuple[str, PairRecord]]:
    """Like :func:`data.datasets.read_pairs` for a dataset layout: rows that are not pair records, or
    whose image leaves the dataset's folders (:func:`roots`), go to ``bad`` (or raise
    :class:`RecordError` without it)."""
    pairs = []
    allowed = roots(spec) if parse_spec(spec) else []
    for index, (where, record) in enumerate(iter_records(spec)):
        if isinstance(record, BadRow):
            reason, record = record.reason, record.row
        else:
            reason = check_record(record, PairRecord) or outside_reason(record.get("image"), allowed)
        if not reason:
            pairs.append((where, record))
            continue
        problem = BadRecord(where, index, record, reason)
        if bad is None:
            raise RecordError(str(problem))
        bad.append(problem)
    return pairs


def source_files(spec: str) -> list[Path]:
    """The files whose content makes up the dataset ``spec`` (what a conversion's identity hashes)."""
    kind, path, _ = parse_spec(spec)
    if path.is_dir():
        return sorted(p for p in path.rglob("*.txt") if p.name.startswith(("captions", "dlinks")))
    return [path]
