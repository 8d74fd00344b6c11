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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qsl

from data.records import BadRecord, PairRecord, RecordError, check_record

Reader = Callable[[Path, dict], Iterator[tuple[str, "dict | BadRow"]]]
SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "pmc-oa"}


class AdapterError(ValueError):
    """A dataset in a known layout that cannot be read; the message names the file and the row."""


@dataclass
class BadRow:
    """A row a reader refuses on its own (an id that is a path), yielded in place of its record."""

    reason: str
    row: object


def plain_name(name: object) -> bool:
    """Whether ``name`` can be a file name inside a folder: no separator, not ``.``/``..``, not hidden."""
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


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


def check_options(options: dict, allowed: tuple[str, ...], where: Path) -> None:
    """Refuse option names a layout does not take (a typo would otherwise be ignored); every layout
    takes ``outside=allow``."""
    allowed = (*allowed, "outside")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise AdapterError(f"{where}: unknown option(s) {unknown}; this layout takes {list(allowed)}")
    if options.get("outside", "allow") != "allow":
        raise AdapterError(f"{where}: outside= takes only 'allow', not {options['outside']!r}")


def image_folder(options: dict, base: Path, defaults: tuple[str, ...], probe: str | None = None) -> Path:
    """The ``images=`` option (relative to ``base``); else, of the folders ``defaults`` under ``base``
    (the layouts a dataset is published or commonly unpacked in), the first that holds the image
    ``probe`` (the first row's), else the first that exists; else ``base``."""
    if options.get("images"):
        folder = Path(options["images"])
        return folder if folder.is_absolute() else base / folder
    found = [base / d for d in defaults if (base / d).is_dir()]
    if probe:
        holding = next((f for f in found if (f / probe).is_file()), None)
        if holding is not None:
            return holding
    return found[0] if found else base


def csv_rows(path: Path, **reader_options) -> Iterator[tuple[int, dict, list[str]]]:
    """(line number, row, column names) of a CSV file; a line csv cannot read (an unclosed quote, a field
    over csv's 131,072-character limit) is an AdapterError naming the file and line."""
    import csv

    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = csv.DictReader(fh, **reader_options)
        try:
            fields = rows.fieldnames or []
            for row in rows:
                yield rows.line_num, row, fields
        except csv.Error as err:  # the record that fails starts on the line after those read
            raise AdapterError(f"{path}:{rows.line_num + 1}: not readable as CSV ({err}); check the separator "
                               f"and quoting, or whether this is the right file") from None
        except UnicodeDecodeError as err:
            raise AdapterError(f"{path}: not UTF-8 text ({err})") from None


def json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSON-lines file; a line that is not a JSON object is an error naming it."""
    from data.files import json_objects

    with open(path, encoding="utf-8") as fh:
        try:
            yield from json_objects(fh, path, AdapterError)
        except UnicodeDecodeError as err:
            raise AdapterError(f"{path}: not UTF-8 text ({err})") from None


def source_files(spec: str) -> list[Path]:
    """The files whose content makes up the dataset ``spec`` (what a conversion's identity hashes)."""
    kind, path, _ = parse_spec(spec)
    if path.is_dir():
        return sorted(p for p in path.rglob("*.txt") if p.name.startswith(("captions", "dlinks")))
    return [path]
