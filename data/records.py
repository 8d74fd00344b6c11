"""The records that pass between the pipeline stages, written down once, with one reader and one writer.

- :class:`FigureRecord`: one figure/caption pair of ``captions.json`` (``scrape.py``); an image file of a
  figure split by its authors carries :class:`AuthorPanel` keys;
- :class:`SubFigureRecord`: one panel crop with its sub-caption, of ``subfigures.json``
  (``split_figures.py``); it carries its parent's article keys but not the parent's image facts
  (width, height, hash), which describe another picture;
- :class:`PairRecord`: what the datasets read: ``{"image", "caption"[, "image_id"]}``, a caption being
  one string or (retrieval val/test) a list of strings; figure and sub-figure files are pair files too;
- :class:`FailedFigure`: one entry of ``failed.json``, a figure the splitter could not use.

Captions in figure and sub-figure records are clean text: HTML is removed once, where the scraper
reads it. Image paths are relative to the folder of the JSON file that holds them (or absolute).
Keys a type does not name are allowed and kept (``extra keys ignored``); the keys it names must have
its types. :func:`read_records` (and :func:`indexed_records`) checks that and names the file, the
index and the key when a record does not fit; :func:`write_records` checks the same before it
replaces a file atomically.
"""
# No ``from __future__ import annotations`` here: TypedDict reads Required/NotRequired from the
# annotations when the class is made, and Python 3.11 cannot see them inside string annotations.
import functools
import os
import types
from dataclasses import dataclass
from typing import (Annotated, Any, NotRequired, Required, TypedDict, TypeVar, Union, get_args, get_origin,
                    get_type_hints)

from data.files import JsonListError, atomic_write_json, read_json_list

NON_EMPTY = "non-empty"
# A path to an image file, relative to the JSON file's folder; "" names nothing and is refused.
ImagePath = Annotated[str, NON_EMPTY]


class ArticleKeys(TypedDict, total=False):
    """Where a figure comes from; scrape.py writes every key, other producers may write none."""

    pmcid: str
    figure_id: str
    label: str
    license: str
    license_url: str
    source: str  # "openi" or "pmc"
    url: str  # the image's address at the source
    graphic: str
    pmid: str
    doi: str
    title: str
    journal: str
    year: str


class ImageFacts(TypedDict, total=False):
    """Facts about one image file; they do not carry over to crops of it."""

    width: int
    height: int
    sha256: str


class AuthorPanel(TypedDict, total=False):
    """A figure its authors split into one image file per panel: this record is file ``panel_index``
    (from 0) of ``panel_count``, with its upper-case ``panel_letter`` when the file names or labels tell it
    (``data.scrape.panel_images``). ``split_figures.py`` pairs such an image with its sub-caption directly."""

    panel_letter: str | None
    panel_index: int
    panel_count: int


class FigureRecord(ArticleKeys, ImageFacts, AuthorPanel, total=False):
    """One entry of ``captions.json``."""

    image: Required[ImagePath]
    caption: Required[str]


class SubFigureRecord(ArticleKeys, total=False):
    """One entry of ``subfigures.json``: a crop (or, as fallback, the whole figure) and its text."""

    image: Required[ImagePath]
    caption: Required[str]
    parent_image: Required[ImagePath]  # the figure's ``image``, as its record wrote it
    panel_label: Required[str | None]  # "A", "TOP LEFT", ...; None for the whole figure
    box: Required[list[int]]  # x0, y0, x1, y1 in the parent's pixels


class PairRecord(TypedDict):
    """What the datasets read (extra keys ignored)."""

    image: ImagePath
    caption: str | list[str]
    image_id: NotRequired[str | int]


class FailedFigure(TypedDict):
    """One entry of ``failed.json``: the input's index, the record as it was, and why it failed."""

    index: int
    record: Any
    reason: str


R = TypeVar("R")
_NAMES = {FigureRecord: "figure record", SubFigureRecord: "sub-figure record", PairRecord: "pair record",
          FailedFigure: "failure record"}


class RecordError(JsonListError):
    """A record that does not fit its type; the message names the file, the index and the key."""


@dataclass(frozen=True)
class BadRecord:
    """A record :func:`read_records` set aside: where it was, what it was, and why it does not fit."""

    where: str  # "captions.json[17]"
    index: int
    record: object
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def subfigure_record(parent: FigureRecord, image: str, caption: str, panel_label: str | None,
                     box: list[int]) -> SubFigureRecord:
    """A sub-figure record: the parent's keys (article and extra ones) without its image facts and panel
    file facts."""
    own_facts = {*ImageFacts.__annotations__, *AuthorPanel.__annotations__}
    inherited = {k: v for k, v in parent.items() if k not in own_facts}
    own = {"image": image, "caption": caption, "parent_image": parent["image"], "panel_label": panel_label,
           "box": list(box)}
    return {**inherited, **own}  # type: ignore[return-value]


def check_record(record: object, kind: type) -> str:
    """"" when ``record`` fits the record type ``kind``, else the reason, naming the key."""
    if not isinstance(record, dict):
        return f"the record is not an object but {_article(type(record).__name__)}"
    hints = _hints(kind)
    required = [k for k in hints if k in kind.__required_keys__]
    for key in required:
        if key not in record:
            needs = ", ".join(f"'{k}'" for k in required)
            return f"'{key}' is missing (a {_NAMES.get(kind, kind.__name__)} needs {needs})"
    for key, hint in hints.items():
        if key in record and not _accepts(hint, record[key]):
            return f"'{key}' must be {_describe(hint)}, not {_shown(record[key])}"
    return ""


def read_records(path: str | os.PathLike, kind: type[R], bad: list[BadRecord] | None = None,
                 limit: int | None = None, what: str = "record file") -> list[R]:
    """The records of the JSON list in ``path`` that fit ``kind``, in file order.

    Without ``bad`` the first record that does not fit raises :class:`RecordError`; with it, such
    records are appended there and skipped, so that a caller can count and report them. ``limit``
    reads only the first ``limit`` entries (smoke runs). A missing file, bad JSON or a top-level value
    other than a list raises :class:`~data.files.JsonListError` (``what`` names the file's role).
    """
    return [record for _, record in indexed_records(path, kind, bad, limit, what)]


def indexed_records(path: str | os.PathLike, kind: type[R], bad: list[BadRecord] | None = None,
                    limit: int | None = None, what: str = "record file") -> list[tuple[int, R]]:
    """:func:`read_records` with each record's index in the file, for messages that name it."""
    kept = []
    for index, record in enumerate(read_json_list(path, what)[:limit]):
        reason = check_record(record, kind)
        if not reason:
            kept.append((index, record))
            continue
        problem = BadRecord(f"{os.fspath(path)}[{index}]", index, record, reason)
        if bad is None:
            raise RecordError(str(problem))
        bad.append(problem)
    return kept


def write_records(path: str | os.PathLike, records: list, kind: type) -> None:
    """Check every record against ``kind`` (a bug in a producer must not reach the next stage) and
    replace ``path`` atomically with the JSON list."""
    for index, record in enumerate(records):
        reason = check_record(record, kind)
        if reason:
            raise RecordError(f"{os.fspath(path)}[{index}] (not written): {reason}")
    atomic_write_json(path, records)


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    """The annotations of ``kind`` with its bases', resolved once per type (records are checked by the thousand)."""
    return get_type_hints(kind, include_extras=True)


def _accepts(hint: Any, value: object) -> bool:
    """Does the JSON value fit the annotation? Lists must not be empty: an empty caption list or box
    carries nothing."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if origin in (Required, NotRequired):
        return _accepts(args[0], value)
    if origin is Annotated:
        return _accepts(args[0], value) and (NON_EMPTY not in args[1:] or bool(value))
    if origin in (Union, types.UnionType):
        return any(_accepts(a, value) for a in args)
    if origin is list:
        return isinstance(value, list) and bool(value) and all(_accepts(args[0], v) for v in value)
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Required, NotRequired):
        return _describe(args[0])
    if origin is Annotated:
        return "a non-empty path string" if NON_EMPTY in args[1:] else _describe(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a non-empty list of {_describe(args[0]).split(' ', 1)[1]}s"
    return {str: "a string", int: "an integer", type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def _article(name: str) -> str:
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _shown(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, str)) and not value:
        return f"an empty {'list' if isinstance(value, list) else 'string'}"
    return _article(type(value).__name__)
