"""``split_figures.py report OUT``: static HTML pages to look at what a splitting run did.

Each figure is drawn with every panel found (boxes and letters over the image, an SVG layer), beside the
panels' sub-captions, and flagged where a person should look: whole-figure fallbacks, caption letters
that no panel carries, panels without a letter, and caption labels that named no panel. The pages are
plain files (no server, no script): ``OUT/report/index.html`` counts the flags and links to a paged list
of all figures and one per flag, ``per_page`` figures a page, so 100,000 figures make a few thousand
small pages rather than one that no browser opens.

Everything is read from ``OUT/split_manifest.jsonl`` (the figure events of :mod:`data.figures.store`);
figures split before events carried their panels are drawn from their sub-figure records alone.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import quote

from data.figures.store import read_folder
from data.files import atomic_write_bytes

FLAGS = {
    "fallback": "whole-figure fallback",
    "letters_not_found": "caption letters never found",
    "panels_without_letter": "panels without a letter",
    "labels_without_panel": "caption labels without a panel",
}
COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")
STYLE = """body{font-family:sans-serif;margin:16px;color:#222}
.fig{display:flex;gap:16px;border-top:1px solid #ccc;padding:12px 0}
.pic{position:relative;flex:0 0 auto}.pic img{display:block;max-width:640px;max-height:640px}
.pic svg{position:absolute;left:0;top:0;width:100%;height:100%}
.flag{display:inline-block;background:#ffe08a;border-radius:3px;padding:1px 6px;margin:2px;font-size:90%}
.key{display:inline-block;width:12px;height:12px;margin-right:6px}.nav a{margin-right:10px}
ul{padding-left:18px}li{margin:4px 0}"""


def labelled_panels(event: dict) -> list[tuple[list[int], str | None, list[str]]]:
    """(box, letter, sub-captions) of every panel found: the letter and sub-captions of the sub-figure
    records cut from it (letters paired in reading order included), else the letter read on it."""
    records = [r for r in event.get("records") or [] if r.get("panel_label")]
    panels = event.get("panels")
    if panels is None:  # an event written before panels were recorded
        panels = [[*r["box"], r["panel_label"]] for r in records]
    out = []
    for *box, label in panels:
        mine = [r for r in records if list(r["box"]) == list(box)]
        out.append((box, mine[0]["panel_label"] if mine else label, [r.get("caption", "") for r in mine]))
    return out


def figure_flags(event: dict) -> list[str]:
    """The flags of one figure event (keys of FLAGS)."""
    panels = labelled_panels(event)
    found = {label for _, label, _ in panels if label}
    counts = event.get("counts") or {}
    flags = []
    if event.get("outcome") == "fallback":
        flags.append("fallback")
    if any(x not in found for x in event.get("letters") or []):
        flags.append("letters_not_found")
    if len(panels) > 1 and any(not label for _, label, _ in panels):
        flags.append("panels_without_letter")
    if counts.get("labels_without_panel"):
        flags.append("labels_without_panel")
    return flags


def _image_path(event: dict, out: Path, input_root: Path) -> Path:
    record = (event.get("records") or [{}])[0]
    if record.get("panel_label") is None and "image" in record:  # a whole-figure record: relative to OUT
        return (out / record["image"]).resolve()
    return (input_root / record.get("parent_image", "")).resolve()


def _size(event: dict, image: Path) -> tuple[int, int]:
    if event.get("size"):
        return tuple(event["size"])
    boxes = [r["box"] for r in event.get("records") or [] if r.get("panel_label") is None]
    if boxes:
        return boxes[0][2], boxes[0][3]
    from PIL import Image

    with Image.open(image) as im:
        return im.size


def render_figure(event: dict, out: Path, input_root: Path, page_dir: Path) -> str:
    """One figure: the image with its panels drawn over it, the panels' sub-captions and its flags."""
    image = _image_path(event, out, input_root)
    width, height = _size(event, image)
    src = quote(Path(os.path.relpath(image, page_dir)).as_posix())
    shapes, items = [], []
    stroke = max(2, round(max(width, height) / 250))
    for k, ((x0, y0, x1, y1), label, texts) in enumerate(labelled_panels(event)):
        colour = COLOURS[k % len(COLOURS)]
        shapes.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" '
                      f'stroke="{colour}" stroke-width="{stroke}"/>')
        if label:
            shapes.append(f'<text x="{x0 + stroke * 2}" y="{y0 + stroke * 10}" fill="{colour}" '
                          f'font-size="{stroke * 9}" font-weight="bold">{html.escape(label)}</text>')
        caption = " / ".join(texts)
        items.append(f'<li><span class="key" style="background:{colour}"></span><b>{html.escape(label or "-")}</b> '
                     f'{html.escape(caption) or "<i>no sub-caption</i>"}</li>')
    if event.get("outcome") == "fallback":
        whole = " / ".join(r.get("caption", "") for r in event.get("records") or [])
        items.append(f"<li><i>whole figure:</i> {html.escape(whole)}</li>")
    flags = "".join(f'<span class="flag">{FLAGS[f]}</span>' for f in figure_flags(event))
    letters = ", ".join(event.get("letters") or []) or "none"
    return (f'<div class="fig" id="f{event["index"]}"><div class="pic"><img src="{src}" alt="figure '
            f'{event["index"]}" width="{width}" height="{height}" style="width:{min(width, 640)}px;height:auto">'
            f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none">{"".join(shapes)}</svg></div>'
            f'<div><div>#{event["index"]} {html.escape(image.name)} &middot; {html.escape(event.get("outcome", ""))}'
            f' &middot; caption letters: {html.escape(letters)}</div><div>{flags}</div><ul>{"".join(items)}</ul>'
            f'</div></div>')


def _page_name(listing: str, page: int) -> str:
    return f"{listing}-{page:05d}.html"


def _nav(listing: str, page: int, pages: int) -> str:
    def link(target: int, text: str) -> str:
        return f'<a href="{_page_name(listing, target)}">{text}</a>'

    links = ['<a href="index.html">index</a>']
    if page > 1:
        links += [link(1, "first"), link(page - 1, "previous")]
    links.append(f"page {page} of {pages}")
    if page < pages:
        links += [link(page + 1, "next"), link(pages, "last")]
    return f'<div class="nav">{" ".join(links)}</div>'


def _document(title: str, body: str) -> bytes:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>').encode("utf-8")


def write_report(out: Path, per_page: int = 100) -> Path:
    """Write ``out/report/`` for the splitting run in ``out``; returns the index page."""
    out = Path(out)
    identity, events, _complete = read_folder(out)
    if identity is None:
        raise ValueError(f"{out} holds no split_figures.py run (no split_manifest.jsonl)")
    if per_page < 1:
        raise ValueError(f"per_page must be at least 1, got {per_page}")
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    input_root = Path(identity["input"]).parent
    figures = [events[i] for i in sorted(events) if events[i].get("outcome") != "failed"]
    listings = {"all": figures}
    for flag in FLAGS:
        listings[flag] = [e for e in figures if flag in figure_flags(e)]
    for listing, chosen in listings.items():
        pages = max(1, -(-len(chosen) // per_page))
        for page in range(1, pages + 1):
            cards = "".join(render_figure(e, out, input_root, report)
                            for e in chosen[(page - 1) * per_page:page * per_page])
            title = f"{FLAGS.get(listing, 'all figures')}: {len(chosen)}"
            nav = _nav(listing, page, pages)
            page_html = _document(title, nav + (cards or "<p>none</p>") + nav)
            atomic_write_bytes(report / _page_name(listing, page), page_html)
    failed = sum(1 for e in events.values() if e.get("outcome") == "failed")
    rows = "".join(f'<li><a href="{_page_name(k, 1)}">{html.escape(FLAGS.get(k, "all figures"))}</a>: {len(v)}</li>'
                   for k, v in listings.items())
    body = (f"<p>{len(figures)} figures split, {failed} failed (see failed.json); input "
            f"{html.escape(str(identity['input']))}, OCR {html.escape(str(identity.get('ocr')))}.</p><ul>{rows}</ul>")
    index = report / "index.html"
    atomic_write_bytes(index, _document("split_figures.py report", body))
    return index
