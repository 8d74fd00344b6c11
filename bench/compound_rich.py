"""Rich compound figures built from real single images, reproducible from a seed, with exact truth.

Layouts: grids from 1 x 2 up to 5 x 5; one tall panel beside a column of two or three (on the left or
the right); rows of unequal widths and counts. Gutters 0-20 px (0: the images touch with no line),
white, black or grey backgrounds. Labels and distractors: see ``compound_marks``.

Truth per figure (a ``compound_synth.Compound``): panel boxes in reading order (row by row; for a
tall panel beside a column, column by column, as the panels are read), the truth label of each panel
(upper-case letter, or letter and digit for the ``A1`` style), the printed label texts and their
boxes, the distractors with their boxes, and the figure's look.

    figures = build_rich_set(fixtures / "image_caption", n=50, seed=1)
"""
from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from bench.compound_marks import (choose_look, draw_distractors, draw_label, font_px,
                                           label_text, load_font, tile_variant)
from bench.compound_synth import Box, Compound, load_tiles

# (rows, cols) of grid figures and how often each comes up
GRIDS = {(1, 2): 12, (1, 3): 10, (2, 1): 4, (2, 2): 14, (2, 3): 14, (3, 2): 6, (1, 4): 5, (2, 4): 7,
         (3, 3): 9, (3, 4): 4, (4, 3): 3, (4, 4): 4, (4, 5): 2, (5, 4): 2, (5, 5): 3}
KINDS = {"grid": 6, "tall-left": 1.2, "tall-right": 0.8, "unequal-rows": 2}
BACKGROUNDS = {"white": 5, "black": 3, "grey": 2}
DISTRACTORS = {"side": 0.3, "sequence": 0.15, "scale": 0.3, "arrow": 0.4}
# How often each tile of compound_synth.SOURCES is drawn: the CT and MRI slices more than endoscopy.
TILE_WEIGHTS = (3, 1, 3, 3, 3, 1)


def _pick(rng: random.Random, weights: dict):
    keys = list(weights)
    return keys[rng.choices(range(len(keys)), weights=list(weights.values()))[0]]


def _gutter(rng: random.Random) -> int:
    return 0 if rng.random() < 0.07 else rng.randint(1, 20)


def _layout_spec(rng: random.Random) -> dict:
    """The layout drawn at random: kind, shape, sizes, gutter and margin (no pixels yet)."""
    kind = _pick(rng, KINDS)
    spec: dict = {"kind": kind, "gutter": _gutter(rng), "margin": rng.randint(0, 12),
                  "aspect": rng.uniform(0.7, 1.15)}
    if kind == "grid":
        rows, cols = _pick(rng, GRIDS)
        spec.update(rows=rows, cols=cols, width=rng.randint(max(380, 110 * cols), max(600, min(960, 190 * cols))))
    elif kind in ("tall-left", "tall-right"):
        spec.update(stack=rng.choice((2, 2, 3)), small_w=rng.randint(130, 230), tall_scale=rng.uniform(1.0, 1.6))
    else:
        counts = [rng.randint(1, 4) for _ in range(rng.choice((2, 2, 3)))]
        while len(set(counts)) == 1 or sum(counts) < 3:
            counts = [rng.randint(1, 4) for _ in counts]
        spec.update(counts=counts, width=rng.randint(max(420, 130 * max(counts)), 900),
                    shares=[[rng.uniform(0.6, 1.4) for _ in range(n)] for n in counts],
                    single_share=[rng.uniform(0.45, 0.7) for _ in counts])
    return spec


def place(spec: dict, strip: int = 0) -> tuple[list[Box], list[tuple[int, int]]]:
    """Panel boxes in reading order and (row, column) of each, for ``spec``; ``strip`` px are kept free
    above every panel (for labels printed above it)."""
    g, m = spec["gutter"], spec["margin"]
    boxes: list[Box] = []
    cells: list[tuple[int, int]] = []
    if spec["kind"] == "grid":
        rows, cols = spec["rows"], spec["cols"]
        pw = (spec["width"] - 2 * m - (cols - 1) * g) // cols
        ph = int(pw * spec["aspect"])
        for r in range(rows):
            y = m + strip + r * (ph + g + strip)
            for c in range(cols):
                x = m + c * (pw + g)
                boxes.append((x, y, x + pw, y + ph))
                cells.append((r, c))
    elif spec["kind"] in ("tall-left", "tall-right"):
        k, sw = spec["stack"], spec["small_w"]
        sh = int(sw * spec["aspect"])
        tw = int(sw * spec["tall_scale"])
        th = k * sh + (k - 1) * (g + strip)
        tall_x, col_x = (m, m + tw + g) if spec["kind"] == "tall-left" else (m + sw + g, m)
        tall = (tall_x, m + strip, tall_x + tw, m + strip + th)
        column = [(col_x, m + strip + i * (sh + g + strip), col_x + sw, m + strip + i * (sh + g + strip) + sh)
                  for i in range(k)]
        ordered = [tall, *column] if spec["kind"] == "tall-left" else [*column, tall]
        boxes = ordered
        cells = [(0, i) for i in range(len(boxes))]
    else:
        width = spec["width"] - 2 * m
        y = m + strip
        for r, (n, shares, single) in enumerate(zip(spec["counts"], spec["shares"], spec["single_share"])):
            free = width - (n - 1) * g if n > 1 else int(width * single)  # a lone panel is narrower
            total = sum(shares)
            widths = [int(free * s / total) for s in shares]
            rh = max(90, int(spec["aspect"] * sum(widths) / n))
            x = m
            for c, w in enumerate(widths):
                boxes.append((x, y, x + w, y + rh))
                cells.append((r, c))
                x += w + g
            y += rh + g + strip
    return boxes, cells


def _colour(rng: random.Random, name: str) -> tuple[int, int, int]:
    if name == "white":
        return 255, 255, 255
    if name == "black":
        return 0, 0, 0
    level = rng.randint(40, 80) if rng.random() < 0.4 else rng.randint(180, 225)  # dark or light grey
    return level, level, level


def build_rich(tiles: list[Image.Image], rng: random.Random) -> Compound:
    """One rich compound figure; everything about it is drawn from ``rng``."""
    spec = _layout_spec(rng)
    look = choose_look(rng, grid=spec["kind"] == "grid")
    bg_name = _pick(rng, BACKGROUNDS)
    bg = _colour(rng, bg_name)
    boxes, cells = place(spec)
    strip = 0
    if look.placement == "above":  # room above each panel for its label, then lay the panels out again
        px = max(font_px(look, b) for b in boxes)
        l, t, r, b = load_font(look.font, px).getbbox("(Ag)")
        strip = (b - t) + 6
        boxes, cells = place(spec, strip)
    width = max(b[2] for b in boxes) + spec["margin"]
    height = max(b[3] for b in boxes) + spec["margin"]
    canvas = Image.new("RGB", (width, height), bg)
    for box in boxes:
        tile = tiles[rng.choices(range(len(tiles)), weights=TILE_WEIGHTS[:len(tiles)])[0]]
        canvas.paste(tile_variant(tile, (box[2] - box[0], box[3] - box[1]), rng), box[:2])
    kinds = {k for k, p in DISTRACTORS.items() if rng.random() < p}
    texts, truths, label_boxes, distractors = [], [], [], []
    for i, (box, (r, c)) in enumerate(zip(boxes, cells)):
        printed, truth = label_text(look.style, i, r, c)
        texts.append(printed)
        truths.append(truth)
    # Distractors first (so that the labels are printed over anything else), kept clear of where the
    # labels go: their boxes are measured on a scratch copy.
    scratch = canvas.copy()
    label_boxes = [draw_label(scratch, box, text, look, bg) for box, text in zip(boxes, texts)]
    for box, lbox in zip(boxes, label_boxes):
        if kinds and rng.random() < 0.7:
            distractors += draw_distractors(canvas, box, lbox, look, kinds, rng)
    for box, text in zip(boxes, texts):
        draw_label(canvas, box, text, look, bg)
    name = f"grid-{spec['rows']}x{spec['cols']}" if spec["kind"] == "grid" else spec["kind"]
    info = {**asdict(look), "gutter": spec["gutter"], "background": bg_name, "distractor_kinds": sorted(kinds)}
    return Compound(canvas, boxes, truths, name, texts, label_boxes, distractors, info)


def build_rich_set(image_dir: str | Path, n: int, seed: int) -> list[Compound]:
    """``n`` rich figures; figure ``i`` of a seed is always the same, whatever ``n`` is."""
    tiles = load_tiles(image_dir)
    return [build_rich(tiles, random.Random(f"rich:{seed}:{i}")) for i in range(n)]
