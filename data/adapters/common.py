"""What the dataset readers of ``data/adapters`` share: their error, refused rows, option and folder
checks, and the CSV and JSON-lines readers that name the file and line of a bad row."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from data.errors import BadInput


class AdapterError(BadInput):
    """A dataset in a known layout that cannot be read; the message names the file and the row."""


@dataclass
class BadRow:
    """A row a reader refuses on its own (an id that is a path), yielded in place of its record."""

    reason: str
    row: object


def plain_name(name: object) -> bool:
    """Whether ``name`` can be a file name inside a folder: no separator, not ``.``/``..``, not hidden."""
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


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
