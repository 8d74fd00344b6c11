"""Lists of PMCIDs given by the user (``--pmcid-file``): a text file or a CSV with a PMCID column."""
from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

from data.scrape.candidates import normalize_pmcid

_ID_COLUMNS = ("pmcid", "accessionid", "accession id", "accession_id")


def read_pmcid_file(path: str | Path) -> list[str]:
    """PMCIDs of a text file (one a line, ``#`` comments) or a CSV with a PMCID column, deduplicated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise ValueError(f"--pmcid-file {path} cannot be read: {err}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if lines and "," in lines[0]:
        rows = list(csv.DictReader(io.StringIO(text)))
        column = next((c for c in (rows[0] if rows else {}) if c and c.strip().lower() in _ID_COLUMNS), None)
        if column is None:
            raise ValueError(f"--pmcid-file {path}: a CSV needs a column named pmcid, AccessionID or Accession ID")
        lines = [row[column].strip() for row in rows if (row.get(column) or "").strip()]
    ids = []
    for number, value in enumerate(lines, 1):
        try:
            ids.append(normalize_pmcid(value))
        except ValueError:
            raise ValueError(f"--pmcid-file {path}: entry {number} ({value!r}) is not a PMCID") from None
    if not ids:
        raise ValueError(f"--pmcid-file {path} holds no PMCID")
    return list(dict.fromkeys(ids))


def pmcid_list_digest(path: str | Path) -> str:
    """A short hash of the PMCIDs a file names (its identity for resuming a scrape)."""
    return hashlib.sha256("\n".join(read_pmcid_file(path)).encode()).hexdigest()[:16]
