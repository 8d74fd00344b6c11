"""What the rich compound-figure generator draws on its panels: varied tiles, panel labels, distractors.

- Tiles: the real single images of ``compound_synth.SOURCES``, cropped to the panel's shape from a
  random part of the image, and sometimes rotated, mirrored, turned grey or changed in contrast.
- Labels: one style per figure (``A``, ``a``, ``(a)``, ``(A)``, ``a)``, ``a.``, ``A.``, ``A1``), drawn
  white (or black on light corners) straight on the image or black in a white box, or printed on the
  figure's background above the panel; several fonts and sizes.
- Distractors: R/L side markers, sequence names, scale bars with their length ("5 mm") and arrows.

Every drawn label and distractor text is returned with its pixel box, so the truth is exact.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

Box = tuple[int, int, int, int]

STYLES = ("A", "a", "(a)", "(A)", "a)", "a.", "A.", "A1")
PLACEMENTS = ("top-left", "top-right", "bottom-left", "bottom-right", "above")
INK = ("white", "box")  # white (or dark) text on the image, black text in a white box

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu",
             "/usr/share/fonts/truetype/liberation", "/usr/share/fonts/liberation")
FONT_FILES = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif.ttf",
              "DejaVuSansCondensed-Bold.ttf", "LiberationSans-Bold.ttf", "LiberationSans-Regular.ttf",
              "LiberationSerif-Bold.ttf")


@lru_cache(maxsize=1)
def font_names() -> tuple[str, ...]:
    """The TrueType fonts found on this machine (paths), plus "default": Pillow's built-in font."""
    found = []
    for name in FONT_FILES:
        for folder in FONT_DIRS:
            path = Path(folder) / name
            if path.is_file():
                found.append(str(path))
                break
    return (*found, "default")


@lru_cache(maxsize=256)
def load_font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if name != "default":
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            pass
    return ImageFont.load_default(size=size)


def label_text(style: str, index: int, row: int = 0, col: int = 0) -> tuple[str, str]:
    """(printed text, truth label) of panel ``index`` (``row``/``col`` for the ``A1`` style)."""
    if style == "A1":
        truth = f"{chr(ord('A') + row)}{col + 1}"
        return truth, truth
    letter = chr(ord("A") + index)
    lower = letter.lower()
    printed = {"A": letter, "a": lower, "(a)": f"({lower})", "(A)": f"({letter})", "a)": f"{lower})",
               "a.": f"{lower}.", "A.": f"{letter}."}[style]
    return printed, letter


def _luma(image: Image.Image, box: Box) -> float:
    region = np.asarray(image.crop(box).convert("L"), dtype=np.float32)
    return float(region.mean()) if region.size else 0.0


def tile_variant(tile: Image.Image, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A random part of ``tile`` with the aspect ratio of ``size``, varied, resized to ``size``."""
    w, h = size
    im = tile
    turn = rng.random()
    if turn < 0.15:
        im = im.transpose(Image.Transpose.ROTATE_90)
    elif turn < 0.22:
        im = im.transpose(Image.Transpose.ROTATE_180)
    elif turn < 0.3:
        im = im.transpose(Image.Transpose.ROTATE_270)
    if rng.random() < 0.3:
        im = ImageOps.mirror(im)
    if rng.random() < 0.15:  # a slightly tilted acquisition, black where the rotation leaves no image
        im = im.rotate(rng.uniform(-12, 12), resample=Image.BICUBIC, fillcolor=(0, 0, 0))
    tw, th = im.size
    aspect = w / h
    keep = rng.uniform(0.6, 1.0)
    cw = min(tw, int(keep * tw), int(keep * th * aspect)) or 1
    ch = max(1, min(th, int(cw / aspect)))
    cw = max(1, min(tw, int(ch * aspect)))
    x0, y0 = rng.randint(0, tw - cw), rng.randint(0, th - ch)
    im = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BICUBIC)
    if rng.random() < 0.3:
        im = ImageOps.grayscale(im).convert("RGB")
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.7, 1.4))
    return ImageEnhance.Brightness(im).enhance(rng.uniform(0.8, 1.2))


@dataclass(frozen=True)
class LabelLook:
    """How a figure prints its panel labels; one look for all its panels."""

    style: str
    placement: str
    ink: str  # "white" or "box"; "above" labels are printed on the background
    font: str
    size_frac: float  # font size as a share of the smaller panel side
    stroke: bool  # a thin dark outline around light letters
    offset: int  # distance of the text from the panel's edges, px


def choose_look(rng: random.Random, grid: bool) -> LabelLook:
    styles = STYLES if grid else STYLES[:-1]  # letter and digit name a grid's row and column
    style = rng.choices(styles, weights=[1.0] * 7 + [0.5] * (len(styles) - 7))[0]
    placement = rng.choices(PLACEMENTS, weights=(0.4, 0.15, 0.2, 0.1, 0.15))[0]
    return LabelLook(style=style, placement=placement, ink=rng.choice(INK),
                     font=rng.choice(font_names()), size_frac=rng.uniform(0.08, 0.16),
                     stroke=rng.random() < 0.5, offset=rng.randint(2, 8))


def font_px(look: LabelLook, panel: Box) -> int:
    side = min(panel[2] - panel[0], panel[3] - panel[1])
    return int(max(12, min(36, look.size_frac * side)))


def draw_label(canvas: Image.Image, panel: Box, text: str, look: LabelLook, bg: tuple[int, int, int]) -> Box:
    """Print ``text`` at the look's place on or above ``panel``; the box of the printed label."""
    draw = ImageDraw.Draw(canvas)
    font = load_font(look.font, font_px(look, panel))
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    tw, th = r - l, b - t
    off = look.offset
    pad = 3
    if look.placement == "above":
        x, y = panel[0] + off, panel[1] - th - 3
    else:
        left = look.placement.endswith("left")
        top = look.placement.startswith("top")
        x = panel[0] + off if left else panel[2] - off - tw
        y = panel[1] + off if top else panel[3] - off - th
        if look.ink == "box":  # the box sits in the panel's corner, the text inside it
            x = panel[0] + pad if left else panel[2] - pad - tw
            y = panel[1] + pad if top else panel[3] - pad - th
    origin = (x - l, y - t)
    if look.placement == "above":
        ink = "black" if sum(bg) / 3 > 110 else "white"
        draw.text(origin, text, fill=ink, font=font)
        return x, y, x + tw, y + th
    if look.ink == "box":  # the white box reaches the panel's corner
        left, top = look.placement.endswith("left"), look.placement.startswith("top")
        bx0, bx1 = (panel[0], x + tw + pad) if left else (x - pad, panel[2])
        by0, by1 = (panel[1], y + th + pad) if top else (y - pad, panel[3])
        draw.rectangle((bx0, by0, bx1 - 1, by1 - 1), fill="white")
        draw.text(origin, text, fill="black", font=font)
        return bx0, by0, bx1, by1
    light = _luma(canvas, (x, y, x + tw, y + th)) > 150
    fill, outline = ("black", "white") if light else ("white", "black")
    stroke = 1 if look.stroke else 0
    draw.text(origin, text, fill=fill, font=font, stroke_width=stroke, stroke_fill=outline)
    return x - stroke, y - stroke, x + tw + stroke, y + th + stroke


def _free(box: Box, taken: list[Box], margin: int = 3) -> bool:
    return all(box[2] + margin <= o[0] or o[2] + margin <= box[0] or box[3] + margin <= o[1]
               or o[3] + margin <= box[1] for o in taken)


def _inside(box: Box, panel: Box, inset: int = 2) -> bool:
    return (box[0] >= panel[0] + inset and box[1] >= panel[1] + inset and box[2] <= panel[2] - inset
            and box[3] <= panel[3] - inset)


def _spot(panel: Box, w: int, h: int, where: str, inset: int) -> tuple[int, int]:
    """Top-left corner of a ``w`` x ``h`` text at ``where`` (tl, tr, bl, br, ml, mr) inside ``panel``."""
    x0, y0, x1, y1 = panel
    x = x0 + inset if where[1] in "l" else x1 - inset - w
    y = {"t": y0 + inset, "b": y1 - inset - h, "m": (y0 + y1 - h) // 2}[where[0]]
    return x, y


def _arrow(draw: ImageDraw.ImageDraw | None, tip: tuple[int, int], angle: float, length: int,
           colour: tuple[int, int, int], width: int) -> Box:
    """An arrow pointing at ``tip`` from direction ``angle``; its bounding box."""
    tx, ty = tip
    sx, sy = tx + length * math.cos(angle), ty + length * math.sin(angle)
    head = max(5, length // 3)
    pts = [(tx, ty)]
    for side in (-0.45, 0.45):
        pts.append((tx + head * math.cos(angle + side), ty + head * math.sin(angle + side)))
    if draw is not None:  # None: only the box is wanted
        draw.line((sx, sy, tx, ty), fill=colour, width=width)
        draw.polygon(pts, fill=colour)
    xs = [sx, tx] + [p[0] for p in pts]
    ys = [sy, ty] + [p[1] for p in pts]
    return int(min(xs)) - width, int(min(ys)) - width, int(max(xs)) + width, int(max(ys)) + width


def draw_distractors(canvas: Image.Image, panel: Box, label_box: Box, look: LabelLook, kinds: set[str],
                     rng: random.Random) -> list[tuple[str, Box]]:
    """Markers, scale bars and arrows on ``panel``, kept clear of its label; (text or kind, box) each."""
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = panel
    pw, ph = x1 - x0, y1 - y0
    size = max(10, int(font_px(look, panel) * rng.uniform(0.7, 1.0)))
    font = load_font(rng.choice(font_names()), size)
    taken = [label_box]
    out: list[tuple[str, Box]] = []

    def put(text: str, spots: tuple[str, ...]) -> None:
        """``text`` at the first free one of ``spots``, in the colour that stands out there."""
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        for where in spots:
            x, y = _spot(panel, r - l, b - t, where, rng.randint(4, 8))
            box = (x, y, x + r - l, y + b - t)
            if _inside(box, panel) and _free(box, taken):
                fill = "black" if _luma(canvas, box) > 150 else "white"
                draw.text((x - l, y - t), text, fill=fill, font=font)
                taken.append(box)
                out.append((text, box))
                return

    if "side" in kinds:  # R and L at the middle of the panel's sides, or one of them in a free corner
        if rng.random() < 0.6:
            put("R", ("ml",))
            put("L", ("mr",))
        else:
            put(rng.choice("RL"), ("tr", "tl", "br", "bl"))
    if "sequence" in kinds:
        put(rng.choice(("T1", "T2", "FLAIR", "DWI", "CT", "T1+C")), ("tr", "bl", "br", "tl"))
    if "scale" in kinds:  # a bar with its length printed over it, in a bottom corner
        text = rng.choice(("5 mm", "1 cm", "10 mm", "2 cm", "50 µm", "100 µm"))
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        tw, th = r - l, b - t
        bar = max(12, pw // rng.randint(5, 8), tw // 2)
        for where in ("br", "bl"):
            bx, by = _spot(panel, max(bar, tw), th + 6, where, 8)
            bar_box = (bx, by + th + 3, bx + bar, by + th + 6)
            text_box = (bx, by, bx + tw, by + th)
            if all(_inside(x, panel) and _free(x, taken) for x in (bar_box, text_box)):
                colour = "black" if _luma(canvas, bar_box) > 150 else "white"
                draw.rectangle((bar_box[0], bar_box[1], bar_box[2] - 1, bar_box[3] - 1), fill=colour)
                draw.text((bx - l, by - t), text, fill=colour, font=font)
                taken += [bar_box, text_box]
                out.append((text, text_box))
                break
    if "arrow" in kinds:
        for _ in range(rng.randint(1, 3)):
            length = max(12, int(min(pw, ph) * rng.uniform(0.1, 0.22)))
            tip = (rng.randint(x0 + pw // 5, x1 - pw // 5), rng.randint(y0 + ph // 5, y1 - ph // 5))
            angle = rng.uniform(0, 2 * math.pi)
            colour = rng.choice([(255, 255, 255), (255, 230, 0), (0, 0, 0), (230, 30, 30)])
            box = _arrow(None, tip, angle, length, colour, 2)
            if _free(box, taken) and box[0] >= x0 and box[1] >= y0 and box[2] <= x1 and box[3] <= y1:
                _arrow(draw, tip, angle, length, colour, 2)
                taken.append(box)
                out.append(("arrow", box))
    return out
