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
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qsl

from data.records import BadRecord, PairRecord, RecordError, check_record

Reader = Callable[[Path, dict], Iterator[tuple[str, dict]]]
SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "pmc-oa"}


class AdapterError(ValueError):
    """A dataset in a known layout that cannot be read; the message names the file and the row."""


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


def read_pairs(spec: str, bad: list[BadRecord] | None = None) -> list[tuple[str, PairRecord]]:
    """Like :func:`data.datasets.read_pairs` for a dataset layout: rows that are not pair records go to
    ``bad`` (or raise :class:`RecordError` without it)."""
    pairs = []
    for index, (where, record) in enumerate(iter_records(spec)):
        reason = check_record(record, PairRecord)
        if not reason:
            pairs.append((where, record))
            continue
        problem = BadRecord(where, index, record, reason)
        if bad is None:
            raise RecordError(str(problem))
        bad.append(problem)
    return pairs


def check_options(options: dict, allowed: tuple[str, ...], where: Path) -> None:
    """Refuse option names a layout does not take (a typo would otherwise be ignored)."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise AdapterError(f"{where}: unknown option(s) {unknown}; this layout takes {list(allowed)}")


def image_folder(options: dict, base: Path, defaults: tuple[str, ...]) -> Path:
    """The ``images=`` option (relative to ``base``), else the first of ``defaults`` under ``base`` that
    exists, else ``base``."""
    if options.get("images"):
        folder = Path(options["images"])
        return folder if folder.is_absolute() else base / folder
    return next((base / d for d in defaults if (base / d).is_dir()), base)


def json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSON-lines file; a line that is not a JSON object is an error naming it."""
    from data.files import json_objects

    with open(path, encoding="utf-8") as fh:
        yield from json_objects(fh, path, AdapterError)
