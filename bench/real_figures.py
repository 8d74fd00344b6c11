"""Panel and letter quality on real compound figures (bench/gold/real_figures.json), printed as JSON.

The figures and captions are read from a local sources folder (``--sources``, else
``$MEDVL_REAL_FIGURES``, else ../shared/real_figures). ``--fetch-from DIR`` first fills it from fetched
repository snapshots (DIR holds one git directory per repository, ``<owner>+<repo>`` or
``<owner>+<repo>/repo``): each image is copied at the commit the gold names, and each caption is taken
from the gold where its licence let it be stored, else read from the file the gold names: the .yml beside
the image, an .rds table (``pip install rdata``), a JATS file (by figure id), or any text between the
caption's first and last words.

The tuning part is scored by default, with every figure that is not entirely right listed;
``--held-out`` scores the held-out part and prints totals only (it refuses ``--failures``).
``--draw N`` scores only the figures of labelling round N (each round drew from sources the earlier ones
had not used, so a new round's held-out part is the cleanest check); without it the totals of each round
follow the totals of all (``by_draw``). Each figure that is not right is put down to kinds of failure
(:mod:`bench.figure_failures`), counted over the part (``failure_kinds``). ``--no-caption`` splits as if no
caption were known (letters read by OCR alone), as split_figures.py did before captions steered the letters.

    python -m bench.real_figures [--sources DIR] [--fetch-from DIR] [--held-out] [--draw N] [--no-caption]
        [--ocr rapidocr|none] [--ocr-cache DIR]
"""
from __future__ import annotations

import argparse
import ast
import html
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from bench.figure_failures import count_kinds, failure_kinds
from bench.split_quality import match
from bench.unseen_captions import ROOT, _git_dir
from data.figures import caption_letters, find_panels
from bench.figure_gold import (CAPTIONS_NAME, FIGURES_FILE, GoldError, RealFigure, file_sha256, load_sources,
                                      read_figures, sources_dir)
from bench.gold_sets import GitHubSource, jats_captions, normalize
from data.figures.ocr import make_ocr
from data.files import atomic_write_bytes, atomic_write_json
from data.images import to_rgb


def _git_show(snapshots: Path, source: GitHubSource) -> bytes:
    git_dir = _git_dir(snapshots, source.folder)
    done = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{source.commit}:{source.path}"],
                          capture_output=True)
    if done.returncode:
        raise GoldError(f"github:{source.owner}/{source.repo}@{source.commit}:{source.path}: "
                        f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def caption_from_yml(text: str) -> str:
    """The caption of a PMC figure-collection .yml (front matter with figure_title and caption)."""
    import yaml

    body = text.split("---")[1] if text.startswith("---") else text.split("\n---")[0]
    body = "\n".join(line for line in body.split("\n") if line.strip() != "~")  # stray YAML nulls
    meta = yaml.safe_load(body) or {}
    title, caption = (meta.get("figure_title") or "").strip(), (meta.get("caption") or "").strip()
    return caption if not title or caption.startswith(title) else f"{title}. {caption}"


def captions_from_rds(data: bytes, keys: set[str]) -> dict[str, str]:
    """Captions of the rows ``keys`` (column figid) of a PMC figure table saved by R (figtitle, caption)."""
    try:
        import rdata
    except ImportError as err:
        raise GoldError("reading captions from an .rds table needs `pip install rdata`") from err
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".rds") as tmp:
        tmp.write(data)
        tmp.flush()
        table = rdata.read_rds(tmp.name)
    out = {}
    for _, row in table.iterrows():
        if row["figid"] in keys:
            title = row["figtitle"] if isinstance(row["figtitle"], str) else ""
            caption = row["caption"] if isinstance(row["caption"], str) else ""
            out[row["figid"]] = caption if not title or caption.startswith(title) else f"{title}. {caption}"
    return out


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [text for item in items for text in _strings(item)]


_TEX_KEEP = re.compile(r"\\(?:textbf|textit|emph|textsc|texttt|textrm|textsuperscript|textsubscript|mathrm)\{([^{}]*)\}")
_TEX_OLD_FONT = re.compile(r"\{\\(?:bf|it|em|sc|tt|rm)\s+([^{}]*)\}")  # {\bf Title.}
_TEX_DROP = re.compile(r"\\(?:label|cite|citep|citet|ref|autoref|cref|Cref|eqref)\{[^{}]*\}")
_TEX_SYMBOLS = {"Delta": "Δ", "alpha": "α", "beta": "β", "gamma": "γ", "mu": "μ", "sigma": "σ", "tau": "τ",
                "times": "×", "pm": "±", "circ": "°", "log": "log", "ln": "ln", "exp": "exp"}
_TEX_SYMBOL = re.compile(r"\\(%|[A-Za-z]+ ?)")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_HTML_TAG = re.compile(r"<[^<>]+>")
_MD_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_MD_BOLD_CUT = re.compile(r"(?<=\S)\*\*(?=\s|$)|(?:^|(?<=\s))\*\*(?=\w)")  # a bold span the caption cuts
_MD_ITALIC = re.compile(r"(?<![\w*])([*_])(?=\w)(.+?)(?<=[\w.)])\1(?![\w*])")
_MD_SCRIPT = re.compile(r"(?<=\w)([~^])(\w+)\1")


def plain_caption(text: str, path: str) -> str:
    """The caption as a reader sees it: LaTeX's font commands, a markdown file's emphasis and an HTML
    page's tags taken off (``\\textbf{(A)}`` -> ``(A)``, ``**a.** *Title.*`` -> ``a. Title.``,
    ``<I>A</I>`` -> ``A``), as a publisher's JATS gives it."""
    suffix = Path(path).suffix.lower()
    if suffix == ".tex":
        for _ in range(3):  # nested font commands
            text = _TEX_OLD_FONT.sub(r"\1", _TEX_KEEP.sub(r"\1", text))
        text = _TEX_DROP.sub("", text).replace("~", " ").replace("$", "")
        # Symbols become their characters; other commands (a paper's own macros) and stray braces of a
        # font command that the caption's first words cut go.
        text = _TEX_SYMBOL.sub(lambda m: "%" if m[1] == "%" else _TEX_SYMBOLS.get(m[1].strip(), ""), text)
        text = text.replace("{", "").replace("}", "").replace("---", "\u2014").replace("--", "\u2013")
    elif suffix in (".htm", ".html"):
        text = re.sub(r"<br\s*/?>", " ", _HTML_COMMENT.sub("", text), flags=re.I)
        text = html.unescape(_HTML_TAG.sub("", text))
    elif suffix in (".md", ".rmd", ".qmd"):
        text = _MD_BOLD_CUT.sub("", _MD_BOLD.sub(r"\2", text))
        text = _MD_SCRIPT.sub(r"\2", _MD_ITALIC.sub(r"\2", text))
        text = re.sub(r"\\([<>_*#\[\]])", r"\1", text)
    return normalize(text)


def caption_by_anchors(data: bytes, path: str, anchors: tuple[str, str], where: str) -> str:
    """The caption from its first to its last words in a file's text, whitespace collapsed. The text of a
    JSON file is its strings; a text file holding a list of strings (as some figure extractors write
    their captions, line by line) is its items joined."""
    text = data.decode("utf-8", errors="replace")
    if path.endswith(".json"):
        text = " ".join(_strings(json.loads(text)))
    elif text.lstrip().startswith("["):
        try:
            text = " ".join(_strings(ast.literal_eval(text.strip())))
        except (ValueError, SyntaxError):
            pass  # a text that merely starts with a bracket
    text = normalize(text)
    start = text.find(anchors[0])
    end = text.find(anchors[1], start) if start >= 0 else -1
    if end < 0:
        raise GoldError(f"{where}: the caption's first and last words are not found in {path}")
    # The shortest such text: a markdown figure repeats its caption's first words in the image's alt text.
    start = text.rfind(anchors[0], start, end + len(anchors[0]))
    return plain_caption(text[start:end + len(anchors[1])], path)


def materialise(snapshots: Path, sources: Path, figures: list[RealFigure]) -> None:
    """Copy every gold image into ``sources`` and write the captions to ``sources/captions.json``."""
    snapshots, sources = Path(snapshots).resolve(), Path(sources).resolve()
    if sources == ROOT or ROOT in sources.parents:
        raise GoldError(f"{sources} is inside the repository; the source files are kept outside it")
    captions: dict[str, str] = {}
    tables: dict[tuple, list[RealFigure]] = {}
    for fig in figures:
        target = fig.image.local_path(sources)
        data = _git_show(snapshots, fig.image)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
        if file_sha256(target) != fig.sha256:
            raise GoldError(f"{fig.id}: the fetched image's sha256 is not the gold's")
        source = fig.caption_source
        if fig.caption_text is not None:
            captions[fig.id] = fig.caption_text
        elif fig.caption_anchors is not None:
            captions[fig.id] = caption_by_anchors(_git_show(snapshots, source), source.path, fig.caption_anchors,
                                                  fig.id)
        elif source.path.endswith(".rds"):
            tables.setdefault((source.owner, source.repo, source.commit, source.path), []).append(fig)
        elif source.fig_id:
            caption = jats_captions(Path(source.path), _git_show(snapshots, source)).get(source.fig_id)
            if not caption:
                raise GoldError(f"{fig.id}: no figure {source.fig_id!r} with a caption in {source.path}")
            captions[fig.id] = caption
        else:
            captions[fig.id] = caption_from_yml(_git_show(snapshots, source).decode("utf-8"))
    for (owner, repo, commit, path), figs in tables.items():
        rows = captions_from_rds(_git_show(snapshots, GitHubSource(owner, repo, commit, path, "")),
                                 {f.caption_source.fig_id for f in figs})
        for fig in figs:
            if fig.caption_source.fig_id not in rows:
                raise GoldError(f"{fig.id}: no row {fig.caption_source.fig_id!r} in {path}")
            captions[fig.id] = rows[fig.caption_source.fig_id]
    atomic_write_json(sources / CAPTIONS_NAME, captions)


def figure_result(fig: RealFigure, image: Image.Image, caption: str | None, ocr) -> dict:
    """Found, matched and rightly lettered panels of one figure, and whether all of it is right."""
    letters = caption_letters(caption) if caption is not None else None
    t0 = time.perf_counter()
    pred = find_panels(image, ocr, letters=letters)
    seconds = time.perf_counter() - t0
    truth = [p.box for p in fig.panels]
    pairs = match(truth, pred)
    lettered = [(i, j) for i, j in pairs if fig.panels[i].label]
    right_letters = sum(1 for i, j in lettered if pred[j].label == fig.panels[i].label)
    all_right = (len(pred) == len(truth) == len(pairs)
                 and all(pred[j].label == fig.panels[i].label for i, j in pairs))
    read = {i: pred[j].label for i, j in pairs}
    kinds = failure_kinds([(p.box, p.label) for p in fig.panels], [(p.box, p.label) for p in pred], pairs)
    return {"id": fig.id, "true": len(truth), "detected": len(pred), "matched": len(pairs),
            "lettered_matched": len(lettered), "letters_right": right_letters, "right": all_right,
            "seconds": seconds, "kinds": kinds, "want": " ".join(p.label or "-" for p in fig.panels),
            "read": " ".join(str(read.get(i) or "-") if i in read else "x" for i in range(len(truth))),
            "extra": [list(p.box) + [p.label] for k, p in enumerate(pred) if k not in {j for _, j in pairs}]}


def totals(results: list[dict]) -> dict:
    tp, n_pred, n_true = (sum(r[k] for r in results) for k in ("matched", "detected", "true"))
    p, r = tp / max(n_pred, 1), tp / max(n_true, 1)
    lettered = sum(r["lettered_matched"] for r in results)
    return {"figures": len(results), "true_panels": n_true, "detected": n_pred, "precision": round(p, 3),
            "recall": round(r, 3), "f1": round(2 * p * r / max(p + r, 1e-9), 3),
            "letter_accuracy": round(sum(r["letters_right"] for r in results) / max(lettered, 1), 3),
            "lettered_matched": lettered, "figures_right": sum(r["right"] for r in results),
            "figures_right_share": round(sum(r["right"] for r in results) / max(len(results), 1), 3),
            "seconds_per_figure": round(sum(r["seconds"] for r in results) / max(len(results), 1), 2),
            "failure_kinds": count_kinds([r["kinds"] for r in results])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", default=None, help="folder of the images and captions.json (default "
                    "$MEDVL_REAL_FIGURES)")
    ap.add_argument("--fetch-from", default=None, help="folder of fetched repository snapshots; fills --sources first")
    ap.add_argument("--gold", default=str(FIGURES_FILE))
    ap.add_argument("--held-out", action="store_true", help="score the held-out part, totals only")
    ap.add_argument("--failures", action="store_true", help="list the tuning figures that are not all right")
    ap.add_argument("--draw", type=int, default=None, help="score only the figures of this labelling round")
    ap.add_argument("--no-caption", action="store_true", help="split without the captions' letters")
    ap.add_argument("--ocr", default="rapidocr", choices=("rapidocr", "gcv", "none"))
    ap.add_argument("--ocr-cache", default=None, help="folder of an OCR cache kept between runs")
    args = ap.parse_args(argv)
    if args.held_out and args.failures:
        ap.error("--failures lists figures; the held-out figures are scored as totals only")
    sources = Path(args.sources) if args.sources else sources_dir()
    part = "held_out" if args.held_out else "tuning"
    try:
        if args.fetch_from:
            materialise(Path(args.fetch_from), sources, read_figures(Path(args.gold)))
        items = load_sources(read_figures(Path(args.gold), part, args.draw), sources)
    except GoldError as err:
        print(f"real_figures: {err}", file=sys.stderr)
        return 2
    ocr = make_ocr(args.ocr, args.ocr_cache)
    results = []
    for fig, path, caption in items:
        with Image.open(path) as im:
            results.append(figure_result(fig, to_rgb(im), None if args.no_caption else caption, ocr))
    out = {"part": part, **({"draw": args.draw} if args.draw else {}), "ocr": args.ocr,
           "captions": not args.no_caption, **totals(results)}
    draws = sorted({fig.draw for fig, _, _ in items})
    if len(draws) > 1:  # each labelling round's figures: a new round's first score is the cleanest check
        out["by_draw"] = {str(d): totals([r for (fig, _, _), r in zip(items, results) if fig.draw == d])
                          for d in draws}
    if args.failures:
        out["failures"] = [{k: r[k] for k in ("id", "kinds", "want", "read", "true", "detected", "extra")}
                           for r in results if not r["right"]]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
