"""Licence names: one spelling for Open-i codes, Creative Commons URLs and JATS licence elements."""
from __future__ import annotations

import re

UNKNOWN = "unknown"
PUBLIC_DOMAIN = "public domain"

# Open-i's `ccLicense` / `lic` codes.
_OPENI_CODES = {
    "by": "CC BY", "bysa": "CC BY-SA", "bynd": "CC BY-ND", "bync": "CC BY-NC",
    "byncsa": "CC BY-NC-SA", "byncnd": "CC BY-NC-ND", "cc0": "CC0",
}
# What PMC puts in its commercial-use subset (oa_comm), plus the public-domain mark.
COMMERCIAL = ("CC0", "CC BY", "CC BY-SA", "CC BY-ND", PUBLIC_DOMAIN)
_CC_URL = re.compile(r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)", re.IGNORECASE)


def from_url(url: str) -> str | None:
    """The licence named by a Creative Commons URL, or None when ``url`` is not one."""
    match = _CC_URL.search(url or "")
    if not match:
        return None
    kind, name = match.group(1).lower(), match.group(2).lower()
    if kind == "publicdomain":
        return "CC0" if name == "zero" else PUBLIC_DOMAIN
    return _OPENI_CODES.get(name.replace("-", ""))


def from_openi_code(code: str) -> str | None:
    """The licence for an Open-i ``ccLicense`` code such as ``byncnd``."""
    return _OPENI_CODES.get((code or "").strip().lower().replace("-", "").replace("_", ""))


def normalize_name(name: str) -> str:
    """Canonical spelling of a user-given licence name (``cc-by``, ``CC BY-NC``, ``cc0``, ``by``...)."""
    text = name.strip().lower()
    if text in ("public domain", "public-domain", "pd", "pdm"):
        return PUBLIC_DOMAIN
    if text == UNKNOWN:
        return UNKNOWN
    code = re.sub(r"[\s_-]+", "", text)
    code = code[2:] if code.startswith("cc") and code != "cc0" else code
    canonical = _OPENI_CODES.get(code)
    if canonical is None:
        raise ValueError(f"unknown licence {name!r}; use e.g. 'CC BY', 'CC0', 'CC BY-NC', 'public domain' or 'commercial'")
    return canonical


def parse_filter(spec: str | None) -> frozenset[str] | None:
    """The set of accepted licences from ``--license`` (comma list; ``commercial`` expands), or None."""
    if not spec:
        return None
    accepted: set[str] = set()
    for part in spec.split(","):
        if part.strip().lower() == "commercial":
            accepted.update(COMMERCIAL)
        elif part.strip():
            accepted.add(normalize_name(part))
    return frozenset(accepted) or None
