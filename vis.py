"""Where the model looks for each word (Grad-CAM of image-text matching), and training curves.

    python vis.py --checkpoint output/Pretrain/checkpoint_59.pth --image brain.png \\
        --caption "axial flair mri shows a mass in the left frontal lobe" --out attention.png
    python vis.py --checkpoint CKPT --data datasets/demo/test.json --index 3 --out attention.pdf
    python vis.py curves output/RUN_A/log.txt output/RUN_B/log.txt --out curves.png

Using a trained model (classification, captions, embeddings, search) is predict.py's job.

The figure shows the image, the sentence map (mean over the caption's word tokens) and one map per
word (word pieces merged), with the ITM match probability. The maps are Grad-CAM of the "match" logit
over one cross-attention layer of the text encoder (``--layer``; default: layer 8 of a 12-layer
encoder as in the original work, two thirds of the depth for other sizes).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import math
import string
import sys
import textwrap
from pathlib import Path

log = logging.getLogger("medvl")

FORMATS = (".png", ".pdf", ".svg", ".jpg")
DISPLAY_SIDE = 512  # pixels of the longer side of each panel's image
# Curves drawn when --keys is not given (those a run logged); BLIP's names for losses and recalls.
DEFAULT_KEYS = ("train_loss", "train_itc", "train_itm", "train_lm", "train_lr", "val_r_mean", "test_r_mean",
                "val_txt_r1", "val_img_r1", "test_txt_r1", "test_img_r1")
BOOKKEEPING = {"epoch", "step", "global_step", "bad_records", "epoch_time_s", "best_epoch"}


class VisError(ValueError):
    """Bad input to vis.py; the message names the file, key or option."""

    exit_code = 2  # data.errors.BAD_INPUT (not imported: --help stays fast)


# -- attention maps -----------------------------------------------------------------------------------


def maps_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vis.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="pre-training or retrieval checkpoint (.pth)")
    p.add_argument("--config", default=None,
                   help="run config YAML (default: the one saved in the checkpoint; needed for BLIP's own files)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="image file")
    src.add_argument("--data", help="JSON list of {image, caption} records (any dataset of the project)")
    p.add_argument("--index", type=int, default=None, help="record of --data to show (0-based)")
    p.add_argument("--caption", default=None, help="text to map (with --data: replaces the record's caption)")
    p.add_argument("--layer", type=int, default=None,
                   help="cross-attention layer of the text encoder, 0-based (default: 8 of 12, 2/3 of the depth)")
    p.add_argument("--tokens", nargs="+", default=None, metavar="WORD",
                   help="words to draw a map for (default: every word of the caption)")
    p.add_argument("--blur", type=float, nargs="?", const=0.02, default=0.0, metavar="FRACTION",
                   help="Gaussian blur, sigma as a fraction of the larger image side (flag alone: 0.02)")
    p.add_argument("--cmap", default="jet", help="matplotlib colormap (default: jet)")
    p.add_argument("--out", default="attention.png", help="output figure: .png, .pdf, .svg or .jpg")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--max-image-pixels", "--max_image_pixels", dest="max_image_pixels", type=int,
                   default=None, metavar="N", help="refuse images with more pixels, from their header "
                   "(default 178956970, PIL's own ceiling)")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. tokenizer=path/to/folder when the saved path moved")
    return p


def pick_record(args: argparse.Namespace) -> tuple[str, str, Path | None]:
    """(image path as written, caption, the JSON file it came from or None) from ``--image``/``--caption``
    or ``--data``/``--index``. Relative paths of a JSON record resolve later, against ``image_root``."""
    if args.image is not None:
        if args.index is not None:
            raise VisError("--index goes with --data, not with --image")
        if args.caption is None:
            raise VisError("--image needs --caption")
        return args.image, args.caption, None
    from data.records import PairRecord, read_records

    # Every record must fit (a bad one raises, naming file, index and key), so indices are the file's.
    records = read_records(args.data, PairRecord, what="--data file")
    if args.index is None:
        raise VisError(f"--data {args.data} needs --index (0 to {len(records) - 1})")
    if not 0 <= args.index < len(records):
        raise VisError(f"--index {args.index} is out of range: {args.data} holds {len(records)} records"
                       + (f" (0 to {len(records) - 1})" if records else ""))
    record = records[args.index]
    caption = args.caption if args.caption is not None else record["caption"]
    if isinstance(caption, list):  # evaluation files hold several captions per image: take the first
        caption = caption[0]
    return record["image"], caption, Path(args.data)


def select_words(words: list[str], wanted: list[str] | None) -> list[int]:
    """Indices of the words to draw: all, or every occurrence of those named in ``wanted`` (case and
    surrounding punctuation ignored: ``mass`` selects ``mass,``)."""
    if not wanted:
        return list(range(len(words)))
    bare = [w.strip(string.punctuation) for w in words]
    lowered = [w.lower().strip(string.punctuation) for w in wanted]
    unknown = [w for w in lowered if w not in bare]
    if unknown:
        raise VisError(f"--tokens {unknown} not in the caption; its words are: {' '.join(words)}")
    return [i for i, w in enumerate(bare) if w in lowered]


def overlay(image, heat, cmap: str):
    """ALBEF's display: (1 - a) * image + a * colormap(heat), with a = heat ** 0.7. Arrays in [0, 1]."""
    import matplotlib
    import numpy as np

    rgb = np.asarray(image, dtype=np.float32) / 255.0
    heat = heat.numpy()
    colour = matplotlib.colormaps[cmap](heat)[..., :3]
    a = heat[..., None] ** 0.7
    # float32 rounding can land a hair above 1, which matplotlib clips with a warning on every panel
    return np.clip((1 - a) * rgb + a * colour, 0.0, 1.0)


def draw_maps(image, result, indices: list[int], blur: float = 0.0, cmap: str = "jet", ncols: int = 6):
    """A figure: the image, the sentence map and the chosen words' maps, titled, with the match probability."""
    from matplotlib.figure import Figure

    from models.gradcam import to_heatmap

    image = image.copy()
    image.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))  # a 4000-pixel figure would make every panel huge
    size = (image.height, image.width)
    panels = [("image", None), ("sentence (mean of words)", result.sentence_map)]
    panels += [(result.words[i], result.word_maps[i]) for i in indices]
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(2.4 * ncols, 2.5 * nrows + 0.9))
    for k, (title, cam) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        shown = image if cam is None else overlay(image, to_heatmap(cam, size, blur), cmap)
        ax.imshow(shown)
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    caption = textwrap.fill(result.caption, 110)
    fig.suptitle(f"ITM match probability {result.match_prob:.3f}   (cross-attention layer {result.layer})\n"
                 f"{caption}", fontsize=10)
    fig.tight_layout()
    return fig


def explain_image(model, image, caption: str, layer: int, max_words: int = 200):
    """Grad-CAM of ``caption`` on a PIL ``image`` (any size; resized and normalised as for evaluation).

    The caption is cleaned as in training (``pre_caption``); one that cleans to nothing is refused.
    """
    from data.captions import pre_caption
    from models.gradcam import explain
    from transform.pipeline import EvalTransform

    text = pre_caption(caption, max_words) if isinstance(caption, str) else ""
    if not text:
        raise VisError(f"caption {caption!r} is empty after cleaning: there is no word to map")
    pixels = EvalTransform(int(model.config.image_size))(image).unsqueeze(0)
    return explain(model, pixels, text, layer)


def check_out(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() not in FORMATS:
        raise VisError(f"--out {path}: the file must end in one of {', '.join(FORMATS)}")
    return out


def maps_main(argv: list[str]) -> int:
    args = maps_parser().parse_args(argv)
    out = check_out(args.out)
    from data.captions import pre_caption
    from data.datasets import resolve_image
    from data.images import load_rgb
    from models.gradcam import check_layer, default_layer
    from utils import trained_model

    # Bad input fails before the (possibly slow) model load wherever the config is not needed.
    import matplotlib

    if args.cmap not in matplotlib.colormaps:
        raise VisError(f"--cmap {args.cmap!r} is not a matplotlib colormap (e.g. jet, viridis, inferno)")
    # A negative or non-finite blur would be drawn as if it were 0.
    if not (math.isfinite(args.blur) and args.blur >= 0):
        raise VisError(f"--blur {args.blur}: the sigma must be a fraction of the image side >= 0 (e.g. 0.02)")
    from data.image_limits import DEFAULT_MAX_PIXELS

    if args.max_image_pixels is not None and not 1 <= args.max_image_pixels <= DEFAULT_MAX_PIXELS:
        raise VisError(f"--max-image-pixels {args.max_image_pixels}: must be in [1, {DEFAULT_MAX_PIXELS}]")
    max_pixels = args.max_image_pixels or DEFAULT_MAX_PIXELS
    image_path, caption, data_file = pick_record(args)
    if not pre_caption(caption, 10**5):
        raise VisError(f"caption {caption!r} is empty after cleaning: there is no word to map")
    image = load_rgb(image_path, max_pixels) if data_file is None else None
    model, config = trained_model(args.checkpoint, args.config, args.options, args.device)
    if data_file is not None:
        image_path = resolve_image(image_path, data_file, config["image_root"])
        image = load_rgb(image_path, max_pixels)
    layer = args.layer if args.layer is not None else default_layer(len(model.text_encoder.encoder.layer))
    try:
        check_layer(model, layer)
    except ValueError as e:
        raise VisError(f"--layer: {e}") from None
    result = explain_image(model, image, caption, layer, config["max_words"])
    fig = draw_maps(image, result, select_words(result.words, args.tokens), args.blur, args.cmap)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(json.dumps({"out": str(out), "image": str(image_path), "layer": layer,
                      "match_prob": round(result.match_prob, 4), "words": len(result.words)}))
    return 0


# -- training curves ----------------------------------------------------------------------------------


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(per-epoch lines, per-step lines) of a ``log.txt``; a line that is not a JSON object is skipped
    with a warning (a run killed while writing leaves half a line)."""
    path = Path(path)
    if not path.is_file():
        raise VisError(f"log file {path} does not exist")
    epochs, steps = [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), (int, float)):
            log.warning(f"{path}:{n}: not a JSON log line with an 'epoch'; skipped")
            continue
        (steps if "step" in row else epochs).append(row)
    if not epochs and not steps:
        raise VisError(f"log file {path} holds no JSON log line")
    return epochs, steps


def curve_keys(rows: list[dict], patterns: list[str] | None) -> list[str]:
    """The numeric keys to plot, in a stable order: the defaults that occur (or every metric when none
    does), or those matching ``patterns`` (fnmatch, e.g. ``val_*``)."""
    present = []
    for row in rows:
        for k, v in row.items():
            if k not in BOOKKEEPING and isinstance(v, (int, float)) and not isinstance(v, bool) and k not in present:
                present.append(k)
    if patterns:
        return [k for k in present if any(fnmatch.fnmatchcase(k, p) for p in patterns)]
    chosen = [k for k in DEFAULT_KEYS if k in present]
    return chosen or present


def run_names(paths: list[str]) -> list[str]:
    """``output/RUN/log.txt`` -> ``RUN``; the whole path where two runs would share a name."""
    names = [Path(p).parent.name or Path(p).stem for p in paths]
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths)]


def draw_curves(runs: dict[str, list[dict]], keys: list[str], x: str, ncols: int = 3):
    """One panel per key; each run a line of its own colour. ``x`` is ``epoch`` or ``global_step``."""
    from matplotlib.figure import Figure

    ncols = min(ncols, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows))
    for k, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for i, (name, rows) in enumerate(runs.items()):
            pts = [(r[x], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and x in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if x == "epoch" else None, markersize=3, color=f"C{i % 10}", label=name)
        ax.set_title(key)
        ax.set_xlabel(x.replace("_", " "))
        ax.grid(alpha=0.3)
        if key.endswith("_lr"):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if len(runs) > 1 and keys:
        fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def curves_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="vis.py curves", description="Losses, learning rate and retrieval "
                                "metrics from log.txt files, several runs overlaid.")
    p.add_argument("logs", nargs="+", help="log.txt of each run (output/RUN/log.txt)")
    p.add_argument("--out", default="curves.png", help="output figure: .png, .pdf, .svg or .jpg")
    p.add_argument("--keys", nargs="+", default=None, metavar="PATTERN",
                   help="keys to plot, shell patterns allowed (default: losses, lr, r_mean and R@1)")
    p.add_argument("--x", choices=("epoch", "step"), default="epoch",
                   help="epoch: the per-epoch lines; step: the per-step lines (log_every_steps) by global step")
    args = p.parse_args(argv)
    out = check_out(args.out)
    runs = {}
    for name, path in zip(run_names(args.logs), args.logs):
        epochs, steps = read_log(path)
        runs[name] = epochs if args.x == "epoch" else steps
        if not runs[name]:
            log.warning(f"{path} has no per-{args.x} lines; it is left out")
    x = "epoch" if args.x == "epoch" else "global_step"
    keys = curve_keys([r for rows in runs.values() for r in rows], args.keys)
    if not keys:
        raise VisError(f"no numeric key to plot (--keys {args.keys}) in the per-{args.x} lines of {args.logs}")
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_curves(runs, keys, x).savefig(out, dpi=120)
    print(json.dumps({"out": str(out), "runs": list(runs), "keys": keys}))
    return 0


def command_parser() -> argparse.ArgumentParser:
    """``vis.py COMMAND ...``: each command parses the rest of its line itself. Without a command the
    line is the ``maps`` command's, as the published ``vis.py --checkpoint ...`` form has it."""
    p = argparse.ArgumentParser(prog="vis.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)  # the command's own parser reads the rest
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["maps", *argv]
    args, rest = command_parser().parse_known_args(argv)
    from utils import run_cli  # after parsing: --help needs no torch

    return run_cli(lambda: COMMANDS[args.command][0](rest), "vis.py")


COMMANDS = {
    "maps": (maps_main, "Grad-CAM maps of a caption on an image (the default command)"),
    "curves": (curves_main, "training curves from log.txt files, several runs overlaid"),
}


if __name__ == "__main__":
    raise SystemExit(main())
