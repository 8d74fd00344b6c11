"""The real compound-figure gold (``bench/gold/real_figures.json``): reading it, its tuning / held-out
split, and where its images and captions are found on this machine.

The gold holds no image. Each figure names its image as ``github:<owner>/<repo>@<commit>:<path>``
(with the file's sha256) and where its caption is kept: a figure-collection .yml or .rds table, a JATS
file and the figure's id, or any other text file with the first and last words of the caption
(``caption_anchors``); the caption text itself is stored (``caption_text``) only where its licence
allows. A local sources folder (``$MEDVL_REAL_FIGURES``, default ``../shared/real_figures``) holds the images as
``<owner>+<repo>/<path>`` and the captions in ``captions.json`` (figure id -> caption), as
``python -m bench.real_figures --fetch-from DIR`` writes it. A missing or changed file raises
``GoldError`` naming the figure.

Which part a figure belongs to is decided by its article alone (:func:`held_out`), so that no article
straddles the parts and the rule cannot drift with the labelling.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from bench.gold_sets import GOLD_DIR, GitHubSource, GoldError, GoldPanel, parse_github_source

FIGURES_FILE = GOLD_DIR / "real_figures.json"
SOURCES_ENV = "MEDVL_REAL_FIGURES"
CAPTIONS_NAME = "captions.json"
PARTS = ("tuning", "held_out")
_SPLIT_SALT = b"real-figures-split:"
_HELD_OUT_BELOW = 86  # first byte of the hash: about one article in three is held out


def held_out(article: str) -> bool:
    """Whether the figures of ``article`` (a PMC id) belong to the held-out part."""
    return hashlib.sha256(_SPLIT_SALT + article.encode("utf-8")).digest()[0] < _HELD_OUT_BELOW


@dataclass
class RealFigure:
    id: str
    article: str
    part: str  # "tuning" or "held_out"
    draw: int  # the labelling round that added it (1, 2, ...); each round drew from new sources
    image: GitHubSource  # the image file (fig_id "")
    sha256: str
    size: tuple[int, int]  # width, height
    caption_source: GitHubSource  # the .yml beside the image, a table and its row, a JATS file and fig id ...
    panels: list[GoldPanel]
    note: str | None = None
    caption_text: str | None = None  # stored where the caption's licence allows
    caption_anchors: tuple[str, str] | None = None  # first and last words of the caption in its file


def sources_dir() -> Path:
    """The local folder of the real figures' images and captions (``$MEDVL_REAL_FIGURES``)."""
    return Path(os.environ.get(SOURCES_ENV, str(GOLD_DIR.parents[2] / "shared" / "real_figures")))


def _panel(value: dict, where: str, size: tuple[int, int]) -> GoldPanel:
    box = value.get("box")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) for v in box)):
        raise GoldError(f"{where}: a box is four integers [x0, y0, x1, y1]")
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]):
        raise GoldError(f"{where}: box {box} is empty or outside the {size[0]}x{size[1]} image")
    label = value.get("label")
    if label is not None and (not isinstance(label, str) or label != label.upper() or not label):
        raise GoldError(f"{where}: a label is an upper-case letter or null, got {label!r}")
    return GoldPanel((x0, y0, x1, y1), label)


def _anchors(record: dict, fid: str) -> tuple[str, str] | None:
    anchors = record.get("caption_anchors")
    if anchors is None:
        return None
    if not (isinstance(anchors, list) and len(anchors) == 2 and all(isinstance(a, str) and a for a in anchors)):
        raise GoldError(f"{fid}: caption_anchors is a list of two texts, the caption's first and last words")
    return anchors[0], anchors[1]


def read_figures(path: Path = FIGURES_FILE, part: str | None = None, draw: int | None = None) -> list[RealFigure]:
    """The gold figures of ``path`` (of one part and one draw, or all), checked for form and for the split
    rule."""
    if part is not None and part not in PARTS:
        raise GoldError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    data = json.loads(Path(path).read_text("utf-8"))
    out, seen = [], set()
    for record in data["figures"]:
        fid = record.get("id", "?")
        if fid in seen:
            raise GoldError(f"{fid}: listed twice")
        seen.add(fid)
        expected = "held_out" if held_out(record["article"]) else "tuning"
        if record.get("part") != expected:
            raise GoldError(f"{fid}: part {record.get('part')!r}, but the split rule puts article "
                            f"{record['article']} in {expected!r}")
        if not (isinstance(record.get("draw"), int) and record["draw"] >= 1):
            raise GoldError(f"{fid}: draw is the labelling round that added the figure, an integer from 1")
        size = tuple(record["size"])
        panels = [_panel(p, f"{fid} panel {k}", size) for k, p in enumerate(record["panels"])]
        if not panels:
            raise GoldError(f"{fid}: no panels")
        fig = RealFigure(fid, record["article"], expected, record["draw"],
                         parse_github_source(record["image"], fragment=False),
                         record["sha256"], size, parse_github_source(record["caption"], fragment=False), panels,
                         record.get("note"), record.get("caption_text"), _anchors(record, fid))
        if (part is None or fig.part == part) and (draw is None or fig.draw == draw):
            out.append(fig)
    return out


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_sources(figures: list[RealFigure], sources: Path) -> list[tuple[RealFigure, Path, str]]:
    """(figure, local image path, caption) of every figure; a missing or changed file raises GoldError."""
    sources = Path(sources)
    captions_file = sources / CAPTIONS_NAME
    if not captions_file.is_file():
        raise GoldError(f"{captions_file} not found (fill {sources} with python -m bench.real_figures "
                        f"--fetch-from DIR)")
    captions = json.loads(captions_file.read_text("utf-8"))
    out = []
    for fig in figures:
        image = fig.image.local_path(sources)
        if not image.is_file():
            raise GoldError(f"{fig.id}: image {image} not found (python -m bench.real_figures --fetch-from DIR)")
        if file_sha256(image) != fig.sha256:
            raise GoldError(f"{fig.id}: {image} is not the gold's image (sha256 differs)")
        caption = captions.get(fig.id)
        if not isinstance(caption, str) or not caption.strip():
            raise GoldError(f"{fig.id}: no caption in {captions_file}")
        out.append((fig, image, caption))
    return out
