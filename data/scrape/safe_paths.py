"""Turning remote identifiers into local file names without trusting them."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_LEN = 80


def safe_component(name: str) -> str:
    """A file-name component made from an untrusted string.

    Only ``[A-Za-z0-9._-]`` survive (other runs become ``_``), leading dots and underscores go (no
    hidden files, no ``..``), and the length is capped. When anything had to change, a short hash of the original is
    appended so that two different remote names never map to the same file.
    """
    cleaned = _UNSAFE.sub("_", name).lstrip("._")[:_MAX_LEN].rstrip("_")
    if cleaned != name or not cleaned:
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
        cleaned = f"{cleaned}-{digest}" if cleaned else digest
    return cleaned


def path_inside(root: Path, relative: str) -> Path:
    """Resolve ``relative`` under ``root`` and refuse anything that would land outside it."""
    root = root.resolve()
    target = (root / relative).resolve()
    if target == root or root not in target.parents:
        raise ValueError(f"refusing path {relative!r}: it leaves {root}")
    return target
