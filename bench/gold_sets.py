"""Gold labels for figure splitting made from real captions and real images (``bench/gold/``).

The gold files hold no caption text: each record names its source in ../shared/fixtures/ and marks
where every sub-caption starts (and, where needed, ends) with a few words quoted from the caption.
This module reads the captions from the fixtures, resolves those anchors and rebuilds the gold texts.
A record whose anchor cannot be found raises ``GoldError`` naming the record and the anchor.

- ``bench/gold/real_subcaptions.json``: see its ``conventions`` field for the labelling rules.
- ``bench/gold/unseen_subcaptions.json``: the same labelling of captions from public JATS articles that
  the sub-caption rules were not made on (``load_unseen_captions``).
- ``bench/gold/real_panels.json``: panel boxes and printed letters of the MedICaT sample figures.

Caption sources: ``pmc_xml/<file>#<fig id>`` (captions as ``data.scrape.jats`` flattens them),
``compound_figures/nature_closed_expected.json#<key>`` (``full_caption``) and
``image_caption/sample.jsonl#<image file>`` (``s2_caption``, else ``s2orc_caption``). Captions and
anchors are compared with their whitespace collapsed to single spaces.

The unseen set names its captions as ``github:<owner>/<repo>@<commit>:<path>#<fig id>`` and reads them
from a local sources folder laid out as ``<owner>+<repo>/<path>`` (``$MEDVL_UNSEEN_CAPTIONS``, default
``../shared/unseen_captions``); ``python -m bench.unseen_captions --fetch-from DIR`` fills that folder from
fetched repository snapshots. ``python -m bench.gold_sets --sources DIR`` prints its gold texts.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from data.captions import normalize_space

# The gold files are measurement data of the bench scripts; this module is their reader.
GOLD_DIR = Path(__file__).resolve().parent / "gold"
CAPTIONS_FILE = GOLD_DIR / "real_subcaptions.json"
PANELS_FILE = GOLD_DIR / "real_panels.json"
UNSEEN_CAPTIONS_FILE = GOLD_DIR / "unseen_subcaptions.json"
UNSEEN_SOURCES_ENV = "MEDVL_UNSEEN_CAPTIONS"

_GITHUB_SOURCE = re.compile(r"github:(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+)"
                            r"@(?P<commit>[0-9a-f]{40}):(?P<path>[^#]+)(?:#(?P<fig_id>.+))?")

# What may stand between a printed panel marker and the text it introduces: "(a–f): Time", "(a,b)—the".
_MARKER_GAP = " \t:;,.—–-"


class GoldError(ValueError):
    """A gold record that does not fit its fixture (anchor not found, box outside the image...)."""


@dataclass
class GoldCaption:
    source: str
    caption: str
    subs: list[tuple[list[str], str]]  # (labels, gold text) in caption order
    lead: str | None = None  # shared lead text before the first label
    tail: str | None = None  # shared trailing text after the last sub-caption
    ambiguous: str | None = None
    spans: list[tuple[int, int]] = field(default_factory=list)  # each sub's text in ``caption``
    markers: list[tuple[int, int] | None] = field(default_factory=list)  # each sub's printed marker, if any


@dataclass
class GoldPanel:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive
    label: str | None  # printed letter, upper case; None when the panel has none
    label_box: tuple[int, int, int, int] | None = None


@dataclass
class GoldFigure:
    source: str
    path: Path
    size: tuple[int, int]  # width, height
    panels: list[GoldPanel]
    note: str | None = None

    @property
    def single(self) -> bool:
        return len(self.panels) == 1


def normalize(text: str) -> str:
    """Whitespace collapsed, as split_caption and the JATS reader give it."""
    return normalize_space(text)


def caption_sources(fixtures: Path) -> dict[str, str]:
    """Every caption the gold may point at, keyed by source, whitespace collapsed."""
    from data.scrape.jats import parse_jats

    fixtures = Path(fixtures)
    out: dict[str, str] = {}
    for path in sorted((fixtures / "pmc_xml").iterdir()):
        if path.suffix not in (".xml", ".nxml"):
            continue
        for article in parse_jats(path.read_bytes(), path.name):
            for fig in article.figures:
                out[f"pmc_xml/{path.name}#{fig.fig_id}"] = normalize(fig.caption)
    nature = json.loads((fixtures / "compound_figures" / "nature_closed_expected.json").read_text("utf-8"))
    for key, entry in nature.items():
        out[f"compound_figures/nature_closed_expected.json#{key}"] = normalize(entry["full_caption"])
    with open(fixtures / "image_caption" / "sample.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                text = row.get("s2_caption") or row.get("s2orc_caption") or ""
                out[f"image_caption/sample.jsonl#{row['pdf_hash']}_{row['fig_uri']}"] = normalize(text)
    return out


def _find(text: str, anchor: str, start: int, where: str) -> int:
    pos = text.find(normalize(anchor), start)
    if pos < 0:
        raise GoldError(f"{where}: anchor {anchor!r} not found in the caption after character {start}")
    return pos


def _marker_pos(text: str, pos: int, marker: str, where: str) -> int:
    """Where ``marker`` begins when it is printed right before ``pos`` (only spaces/punctuation between)."""
    head = text[:pos].rstrip(_MARKER_GAP)
    marker = normalize(marker)
    begin = len(head) - len(marker)
    if not head.endswith(marker) or (begin > 0 and head[begin - 1].isalnum()):
        raise GoldError(f"{where}: marker {marker!r} does not precede {text[pos:pos + 30]!r}")
    return begin


def resolve_caption(record: dict, caption: str) -> GoldCaption:
    """Rebuild the gold texts of one record from its anchors."""
    src = record.get("source", "?")
    subs = record.get("subs") or []
    if not subs:
        raise GoldError(f"{src}: no sub-captions")
    cursor = 0
    lead_pos = None
    if record.get("lead"):
        lead_pos = _find(caption, record["lead"], 0, f"{src} lead")
        cursor = lead_pos + len(normalize(record["lead"]))
    starts, begins = [], []
    for i, sub in enumerate(subs):
        where = f"{src} sub {i} {sub.get('labels')}"
        pos = _find(caption, sub["start"], cursor, where)
        begin = _marker_pos(caption, pos, sub["marker"], where) if sub.get("marker") else pos
        if begin < cursor:
            raise GoldError(f"{where}: marker overlaps the text before it")
        starts.append(pos)
        begins.append(begin)
        cursor = pos + len(normalize(sub["start"]))
    tail_pos = None
    if record.get("tail"):
        tail_pos = _find(caption, record["tail"], cursor, f"{src} tail")
    texts, spans = [], []
    for i, sub in enumerate(subs):
        where = f"{src} sub {i} {sub.get('labels')}"
        limit = begins[i + 1] if i + 1 < len(subs) else (tail_pos if tail_pos is not None else len(caption))
        stop = limit
        if sub.get("end"):
            end = normalize(sub["end"])
            e = _find(caption, end, starts[i], f"{where} end")
            stop = e + len(end)
            if stop > limit:
                raise GoldError(f"{where}: end anchor {end!r} runs past the next sub-caption")
        text = caption[starts[i]:stop].strip()
        if not text:
            raise GoldError(f"{where}: empty text")
        labels = sub["labels"]
        if not isinstance(labels, list) or any(not isinstance(x, str) or x != x.upper() for x in labels):
            raise GoldError(f"{where}: labels must be a list of upper-case strings")
        texts.append((labels, text))
        spans.append((starts[i], starts[i] + len(text)))
    lead = caption[lead_pos:begins[0]].strip() if lead_pos is not None else None
    tail = caption[tail_pos:].strip() if tail_pos is not None else None
    markers = [(b, b + len(normalize(sub["marker"]))) if sub.get("marker") else None for b, sub in zip(begins, subs)]
    return GoldCaption(src, caption, texts, lead, tail, record.get("ambiguous"), spans, markers)


def load_real_captions(fixtures: Path, path: Path = CAPTIONS_FILE) -> list[GoldCaption]:
    gold = json.loads(Path(path).read_text("utf-8"))
    sources = caption_sources(fixtures)
    out = []
    for record in gold["captions"]:
        src = record.get("source")
        if src not in sources:
            raise GoldError(f"{src}: no such caption in the fixtures")
        out.append(resolve_caption(record, sources[src]))
    return out


@dataclass(frozen=True)
class GitHubSource:
    """``github:<owner>/<repo>@<commit>:<path>#<fig id>``: one figure of a JATS file in a repository."""

    owner: str
    repo: str
    commit: str
    path: str
    fig_id: str

    @property
    def folder(self) -> str:
        """The sources-folder directory of the repository: ``<owner>+<repo>``."""
        return f"{self.owner}+{self.repo}"

    def local_path(self, sources: Path) -> Path:
        return Path(sources) / self.folder / self.path


def parse_github_source(source: str, fragment: bool = True) -> GitHubSource:
    """The parts of ``source``; with ``fragment=False`` the ``#<fig id>`` may be left out (a whole file,
    ``fig_id`` "")."""
    match = _GITHUB_SOURCE.fullmatch(source or "")
    if not match or (fragment and not match["fig_id"]):
        raise GoldError(f"{source!r}: not of the form github:<owner>/<repo>@<40-hex commit>:<path>#<fig id>")
    parts = match["path"].split("/")
    if match["path"].startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise GoldError(f"{source}: the path must be relative, without '.' or '..' parts")
    return GitHubSource(match["owner"], match["repo"], match["commit"], match["path"], match["fig_id"] or "")


def unseen_sources_dir() -> Path:
    """The local folder holding the unseen set's source files (``$MEDVL_UNSEEN_CAPTIONS``)."""
    return Path(os.environ.get(UNSEEN_SOURCES_ENV, str(GOLD_DIR.parents[2] / "shared" / "unseen_captions")))


def jats_captions(path: Path, data: bytes | None = None) -> dict[str, str]:
    """Figure id -> caption (whitespace collapsed, as ``data.scrape.jats`` flattens it) of one JATS file
    (its bytes ``data`` when given, else read from ``path``)."""
    from data.scrape.jats import figures_in

    out: dict[str, str] = {}
    for fig in figures_in(Path(path).read_bytes() if data is None else data, str(path)):
        out.setdefault(fig.fig_id, normalize(fig.caption))
    return out


def load_unseen_captions(sources: Path, path: Path = UNSEEN_CAPTIONS_FILE) -> list[GoldCaption]:
    """The gold of ``path`` (default ``bench/gold/unseen_subcaptions.json``) with every caption read from
    the sources folder; a missing file, figure or anchor raises ``GoldError`` naming the record."""
    files: dict[Path, dict[str, str]] = {}
    return [resolve_caption(r, github_caption(r["source"], Path(sources), files, "bench.unseen_captions"))
            for r in caption_records(path)]


def caption_records(path: Path) -> list[dict]:
    """The ``captions`` records of a gold file; a source listed twice raises ``GoldError``."""
    records = json.loads(Path(path).read_text("utf-8"))["captions"]
    seen: set[str] = set()
    for record in records:
        src = record.setdefault("source", "?")
        if src in seen:
            raise GoldError(f"{src}: listed twice")
        seen.add(src)
    return records


def github_caption(src: str, sources: Path, files: dict[Path, dict[str, str]], script: str,
                   required: bool = True) -> str | None:
    """The caption a ``github:`` source names, read from its file in ``sources`` (``files`` caches the
    files read). A missing file raises ``GoldError`` (``script`` fills the folder), or gives None when not
    ``required``; a missing figure raises."""
    gh = parse_github_source(src)
    local = gh.local_path(sources)
    if local not in files:
        if not local.is_file():
            if not required:
                return None
            raise GoldError(f"{src}: source file {local} not found (fill {sources} with "
                            f"python -m {script} --fetch-from DIR)")
        try:
            files[local] = jats_captions(local)
        except ValueError as err:
            raise GoldError(f"{src}: {err}") from err
    if gh.fig_id not in files[local]:
        raise GoldError(f"{src}: no figure {gh.fig_id!r} in {local}")
    return files[local][gh.fig_id]


def _box(value, where: str) -> tuple[int, int, int, int]:
    if not (isinstance(value, list) and len(value) == 4 and all(isinstance(v, int) for v in value)):
        raise GoldError(f"{where}: a box is four integers [x0, y0, x1, y1]")
    x0, y0, x1, y1 = value
    if not (x0 < x1 and y0 < y1):
        raise GoldError(f"{where}: empty box {value}")
    return x0, y0, x1, y1


def load_real_panels(fixtures: Path, path: Path = PANELS_FILE, check_images: bool = True) -> list[GoldFigure]:
    """Gold figures; with ``check_images`` every image must exist, have the recorded size and hold
    every box."""
    from PIL import Image

    gold = json.loads(Path(path).read_text("utf-8"))
    out = []
    for record in gold["figures"]:
        src = record["source"]
        image_path = Path(fixtures) / src
        w, h = record["size"]
        panels = []
        for k, p in enumerate(record["panels"]):
            where = f"{src} panel {k}"
            box = _box(p["box"], where)
            label_box = _box(p["label_box"], where + " label_box") if p.get("label_box") else None
            label = p.get("label")
            if label is not None and label != label.upper():
                raise GoldError(f"{where}: letters are recorded upper case")
            for b in (box, label_box):
                if b and not (0 <= b[0] and 0 <= b[1] and b[2] <= w and b[3] <= h):
                    raise GoldError(f"{where}: box {b} outside the {w}x{h} image")
            if label_box and not (box[0] <= label_box[0] and box[1] <= label_box[1]
                                  and label_box[2] <= box[2] and label_box[3] <= box[3]):
                raise GoldError(f"{where}: letter box {label_box} outside its panel {box}")
            panels.append(GoldPanel(box, label, label_box))
        if check_images:
            if not image_path.is_file():
                raise GoldError(f"{src}: image not found")
            with Image.open(image_path) as im:
                if im.size != (w, h):
                    raise GoldError(f"{src}: image is {im.size[0]}x{im.size[1]}, gold says {w}x{h}")
        out.append(GoldFigure(src, image_path, (w, h), panels, record.get("note")))
    return out


def _main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Print the gold sub-captions rebuilt from the fixtures, or with "
                                 "--sources those of the unseen set rebuilt from its source files.")
    ap.add_argument("--fixtures", default=os.environ.get("MEDVL_FIXTURES", str(GOLD_DIR.parents[2] / "shared" / "fixtures")))
    ap.add_argument("--sources", help=f"sources folder of {UNSEEN_CAPTIONS_FILE.name} (<owner>+<repo>/<path>)")
    args = ap.parse_args()
    if args.sources:
        _print_captions(load_unseen_captions(Path(args.sources)))
        return 0
    _print_captions(load_real_captions(Path(args.fixtures)))
    for f in load_real_panels(Path(args.fixtures)):
        print(f"== {f.source} {f.size}: " + ", ".join(f"{p.label}{list(p.box)}" for p in f.panels))
    return 0


def _print_captions(gold: list[GoldCaption]) -> None:
    for g in gold:
        print(f"== {g.source}" + (f"  [ambiguous: {g.ambiguous}]" if g.ambiguous else ""))
        if g.lead:
            print(f"   lead: {g.lead}")
        for labels, text in g.subs:
            print(f"   {labels}: {text}")
        if g.tail:
            print(f"   tail: {g.tail}")


if __name__ == "__main__":
    raise SystemExit(_main())
