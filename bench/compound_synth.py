"""Compound figures built from real single images, with known panel boxes and letters.

Used by the tests and by ``bench/split_quality.py`` to measure panel detection and letter reading
where the truth is exact. Layouts imitate journals: white gutters, panels touching with a thin line,
black backgrounds; letters inside the image (white) or in a white box, as ``A``, ``(a)`` or ``B.``.
This is the "old built set" of ``bench/split_quality.py``; its figures stay as they are for a given
seed. ``compound_rich`` builds the richer set (grids up to 5 x 5, irregular layouts, more label styles
and places, distractors).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

Box = tuple[int, int, int, int]

# Real single images of ../shared/fixtures/image_caption/ and the part of each that is one image
# (fractions of width and height; the printed caption strip and other panels are left out).
SOURCES: list[tuple[str, tuple[float, float, float, float]]] = [
    ("26491ab76c6e8d6acc582e71bb6b3b5f5601ccc2_3-Figure4-1.png", (0.0, 0.0, 0.62, 0.88)),
    ("57c9ad0f4aab133f96d40992c46926fabc901ffa_2-Figure3-1.png", (0.0, 0.0, 1.0, 0.93)),
    ("b362a19e4c4b1854f7cbe246a19502a56f52c2b5_3-Figure2-1.png", (0.05, 0.0, 0.96, 0.88)),
    ("e19039cd42f72102389f811643cd3036f8db5182_2-Figure1-1.png", (0.06, 0.0, 0.94, 0.9)),
    ("e19039cd42f72102389f811643cd3036f8db5182_2-Figure3-1.png", (0.05, 0.003, 0.95, 0.9)),
    ("57c9ad0f4aab133f96d40992c46926fabc901ffa_2-Figure1-1.png", (0.61, 0.0, 0.95, 0.72)),
]

LAYOUTS = ("grid", "touching", "black", "tall-left")


@dataclass
class Compound:
    image: Image.Image
    boxes: list[Box]
    labels: list[str]  # upper case, in the order of ``boxes``
    layout: str
    # The rich generator (``compound_rich``) also records what it printed: the label texts as drawn
    # ("(b)", "c."), their pixel boxes, the distractor texts and marks with theirs, and the figure's
    # look (label style, placement, ink, font, gutter, background).
    label_texts: list[str] = field(default_factory=list)
    label_boxes: list[Box] = field(default_factory=list)
    distractors: list[tuple[str, Box]] = field(default_factory=list)
    look: dict = field(default_factory=dict)


def load_tiles(image_dir: str | Path) -> list[Image.Image]:
    """The single-image regions of SOURCES, as RGB images."""
    tiles = []
    for name, (fx0, fy0, fx1, fy1) in SOURCES:
        with Image.open(Path(image_dir) / name) as im:
            w, h = im.size
            tiles.append(im.convert("RGB").crop((int(fx0 * w), int(fy0 * h), int(fx1 * w), int(fy1 * h))))
    return tiles


def _draw_label(canvas: Image.Image, box: Box, letter: str, rng: random.Random) -> None:
    style = rng.choice(["plain", "paren", "period"])
    text = {"plain": letter, "paren": f"({letter.lower()})", "period": f"{letter}."}[style]
    size = max(14, min(30, (box[3] - box[1]) // 7))
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(canvas)
    x, y = box[0] + 5, box[1] + 4
    if rng.random() < 0.5:  # white letter straight on the image, as radiology figures do
        draw.text((x, y), text, fill="white", font=font, stroke_width=1, stroke_fill="black")
    else:  # black letter in a white box
        l, t, r, b = draw.textbbox((x, y), text, font=font)
        draw.rectangle((box[0], box[1], r + 4, b + 4), fill="white")
        draw.text((x, y), text, fill="black", font=font)


def _grid_boxes(rows: int, cols: int, tw: int, th: int, gap: int, margin: int) -> list[Box]:
    return [(margin + c * (tw + gap), margin + r * (th + gap), margin + c * (tw + gap) + tw,
             margin + r * (th + gap) + th) for r in range(rows) for c in range(cols)]


def build(tiles: list[Image.Image], layout: str, rng: random.Random, tile_w: int = 180) -> Compound:
    """One compound figure of the given layout; tiles are picked and sized by ``rng``."""
    th = int(tile_w * rng.uniform(0.7, 1.0))
    if layout == "tall-left":
        gap, margin = rng.randint(6, 14), rng.randint(0, 8)
        boxes = [(margin, margin, margin + tile_w, margin + 2 * th + gap)]
        boxes += [(margin + tile_w + gap, margin + r * (th + gap), margin + 2 * tile_w + gap,
                   margin + r * (th + gap) + th) for r in range(2)]
        bg = "white"
    else:
        rows, cols = rng.choice([(1, 2), (1, 3), (2, 2), (2, 3)])
        if layout == "touching":
            gap, margin, bg = 2, rng.randint(0, 6), rng.choice(["white", "black"])
        elif layout == "black":
            gap, margin, bg = rng.randint(4, 10), rng.randint(0, 6), "black"
        else:
            gap, margin, bg = rng.randint(5, 16), rng.randint(0, 10), "white"
        boxes = _grid_boxes(rows, cols, tile_w, th, gap, margin)
    width = max(b[2] for b in boxes) + (boxes[0][0])
    height = max(b[3] for b in boxes) + (boxes[0][1])
    canvas = Image.new("RGB", (width, height), bg)
    order = rng.sample(range(len(tiles)), k=min(len(boxes), len(tiles)))
    letters = []
    for i, box in enumerate(boxes):
        tile = tiles[order[i % len(order)]].resize((box[2] - box[0], box[3] - box[1]), Image.BICUBIC)
        canvas.paste(tile, box[:2])
        letters.append(chr(ord("A") + i))
        _draw_label(canvas, box, letters[-1], rng)
    return Compound(canvas, boxes, letters, layout)


def build_set(image_dir: str | Path, n_per_layout: int, seed: int = 0, tile_w: int = 180) -> list[Compound]:
    """``n_per_layout`` figures of every layout, reproducible from ``seed``."""
    rng = random.Random(seed)
    tiles = load_tiles(image_dir)
    return [build(tiles, layout, rng, tile_w) for layout in LAYOUTS for _ in range(n_per_layout)]
