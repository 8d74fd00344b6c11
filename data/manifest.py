"""Append-only JSON-lines manifests that a killed run can be resumed from.

A manifest holds one JSON object per line, each appended and fsynced by
:func:`data.files.append_jsonl`. A kill during an append can leave half a line at the end: it carries
nothing complete, so :func:`read_manifest` cuts it off (rather than let the next append glue a new line
onto it). The first ``start`` event records the settings (the *identity*) that decide what the folder
holds; :func:`check_identity` refuses a later run whose settings differ, naming each difference.
"""
from __future__ import annotations

import logging
from pathlib import Path

from data.files import json_objects
from data.errors import BadInput

log = logging.getLogger(__name__)


class ManifestError(BadInput):
    """A manifest that cannot be used: a corrupt line, or another run's settings."""


def read_manifest(path: str | Path, repair: bool = True) -> list[dict]:
    """The complete entries of the manifest at ``path`` ([] when it does not exist).

    With ``repair`` an incomplete last line (a kill during an append) is cut off the file itself.
    A complete line that is not a JSON object raises :class:`ManifestError` naming the line.
    """
    return [entry for _, entry in numbered_entries(path, repair)]


def numbered_entries(path: str | Path, repair: bool = True) -> list[tuple[int, dict]]:
    """(line number, entry) for each complete entry, so that a reader can name the line it refuses."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping an incomplete last line (%d bytes)", path, len(data) - cut)
        if repair:
            with open(path, "r+b") as fh:
                fh.truncate(cut)
        data = data[:cut]
    lines = data.decode("utf-8").splitlines()
    return list(json_objects(lines, path, ManifestError, "corrupt manifest line"))


def first_identity(entries: list[dict]) -> dict | None:
    """The identity of the first ``start`` event, or None for a fresh manifest."""
    return next((e.get("identity") for e in entries if e.get("event") == "start"), None)


def identity_differences(found: object, wanted: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """``"name: X there, Y now"`` for every setting that differs ([] when they agree)."""
    if not isinstance(found, dict):
        return ["unreadable identity"]
    names = sorted((set(found) | set(wanted)) - set(ignore))
    return [f"{n}: {found.get(n)!r} there, {wanted.get(n)!r} now" for n in names if found.get(n) != wanted.get(n)]


def check_identity(manifest: str | Path, found: object, wanted: dict, what: str = "run") -> None:
    """Raise :class:`ManifestError` when ``found`` (the folder's identity) is not ``wanted``."""
    if found is None:
        return
    diffs = identity_differences(found, wanted)
    if diffs:
        raise ManifestError(f"{manifest} belongs to a {what} with other settings ({'; '.join(diffs)}); "
                            f"rerun with the same arguments or choose another output folder")
