"""Where the model looks for each word (Grad-CAM of image-text matching), and training curves.

    python vis.py --checkpoint output/Pretrain/checkpoint_59.pth --image brain.png \\
        --caption "axial flair mri shows a mass in the left frontal lobe" --out attention.png
    python vis.py --checkpoint CKPT --data datasets/demo/test.json --index 3 --out attention.pdf
    python vis.py curves output/RUN_A/log.txt output/RUN_B/log.txt --out curves.png
    python vis.py classify|caption|embed|search ...     (vis.py COMMAND --help for each)

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

# The reports (predictions, metrics, captions, index) are replaced atomically, folder created: a killed
# run never leaves half a file. data.files needs the standard library only, so --help stays fast.
from data.files import atomic_write_json

log = logging.getLogger("medvl")

FORMATS = (".png", ".pdf", ".svg", ".jpg")
DISPLAY_SIDE = 512  # pixels of the longer side of each panel's image
# Curves drawn when --keys is not given (those a run logged); BLIP's names for losses and recalls.
DEFAULT_KEYS = ("train_loss", "train_itc", "train_itm", "train_lm", "train_lr", "val_r_mean", "test_r_mean",
                "val_txt_r1", "val_img_r1", "test_txt_r1", "test_img_r1")
BOOKKEEPING = {"epoch", "step", "global_step", "bad_records", "epoch_time_s", "best_epoch"}


class VisError(ValueError):
    """Bad input to vis.py; the message names the file, key or option."""


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


# -- a model from a checkpoint (the maps here, the model-using commands, the bench scripts) ---------------

# Keys a checkpoint must hold for ITM maps and scores to mean anything: a random ITM head or
# cross-attention would still produce numbers, just meaningless ones.
REQUIRED_KEYS = ("itm_head.weight", "text_encoder.encoder.layer.0.crossattention.self.key.weight")


def _config_for(ckpt: dict, checkpoint: str, config_path: str | None, task: str,
                options: list[str] | None) -> dict:
    """The run config: ``config_path`` if given, else the one the checkpoint carries; options applied.

    The file may follow either schema (a pre-training config is fine for a retrieval checkpoint):
    both build the same towers, so the checkpoint's own task is tried first, then the other.
    """
    from configs import ConfigError, load_config, parse_options, validate

    if config_path is None:
        raw = ckpt.get("config")
        if not isinstance(raw, dict):
            raise ValueError(f"checkpoint {checkpoint} carries no 'config' (BLIP's own files do not): pass --config")
        raw = {**raw, **parse_options(options)}
    errors = []
    for t in (task, "pretrain" if task == "retrieval" else "retrieval"):
        try:
            if config_path is not None:
                return load_config(config_path, t, options)
            return validate(raw, t, f"config in {checkpoint}")
        except ConfigError as e:
            errors.append(f"as a {t} config: {e}")
    raise ConfigError("; ".join(errors))


def load_itm_model(checkpoint: str, config_path: str | None = None, options: list[str] | None = None,
                   device: str = "cpu"):
    """Build the model a pre-training or retrieval checkpoint holds, with its ITM head, in eval mode.

    The task follows the checkpoint: ``text_decoder.*`` keys mean pre-training, otherwise retrieval.
    A file without an ITM head and cross-attention (a ViT or BERT file, an optimizer dump) is refused.
    """
    from models import build_model, load_checkpoint, load_state

    ckpt = load_state(checkpoint)
    state = ckpt.get("model", ckpt)
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {checkpoint} holds no model state dict")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint {checkpoint} is not a BLIP pre-training or retrieval checkpoint: it lacks "
                         f"{missing} (the ITM head and the text encoder's cross-attention)")
    task = "pretrain" if any(str(k).startswith("text_decoder.") for k in state) else "retrieval"
    config = _config_for(ckpt, checkpoint, config_path, task, options)
    del ckpt, state  # the file is read again by load_checkpoint; do not hold two copies
    model = build_model(config, task, load_weights=False)
    load_checkpoint(model, str(Path(checkpoint)))
    return model.to(device).eval(), config


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

    # Bad input fails before the (possibly slow) model load wherever the config is not needed.
    import matplotlib

    if args.cmap not in matplotlib.colormaps:
        raise VisError(f"--cmap {args.cmap!r} is not a matplotlib colormap (e.g. jet, viridis, inferno)")
    # A negative or non-finite blur would be drawn as if it were 0.
    if not (math.isfinite(args.blur) and args.blur >= 0):
        raise VisError(f"--blur {args.blur}: the sigma must be a fraction of the image side >= 0 (e.g. 0.02)")
    from data.images import DEFAULT_MAX_PIXELS

    if args.max_image_pixels is not None and not 1 <= args.max_image_pixels <= DEFAULT_MAX_PIXELS:
        raise VisError(f"--max-image-pixels {args.max_image_pixels}: must be in [1, {DEFAULT_MAX_PIXELS}]")
    max_pixels = args.max_image_pixels or DEFAULT_MAX_PIXELS
    image_path, caption, data_file = pick_record(args)
    if not pre_caption(caption, 10**5):
        raise VisError(f"caption {caption!r} is empty after cleaning: there is no word to map")
    image = load_rgb(image_path, max_pixels) if data_file is None else None
    model, config = load_itm_model(args.checkpoint, args.config, args.options, args.device)
    if data_file is not None:
        image_path = resolve_image(image_path, data_file, config["image_root"])
        image = load_rgb(image_path, max_pixels)
    layer = args.layer if args.layer is not None else default_layer(len(model.text_encoder.encoder.layer))
    check_layer(model, layer)
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
    from configs import ConfigError
    from data.datasets import DatasetError
    from data.images import BadImageError

    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["maps", *argv]
    args, rest = command_parser().parse_known_args(argv)
    try:
        return COMMANDS[args.command][0](rest)
    except (VisError, ConfigError, DatasetError, BadImageError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"vis.py: error: {e}", file=sys.stderr)
        return 2


# -- using the model: classify, caption, embed, search ----------------------------------------------------
# Library code: models/zeroshot.py, generate.py, embed.py, metrics.py, caption_metrics.py; inputs:
# data/image_list.py and data/clinical.py. Each command writes its files into --out (a folder).


def _use_parser(command: str, description: str, images_required: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"vis.py {command}", description=description)
    search = command == "search"  # a search defaults to the checkpoint its index was built with
    p.add_argument("--checkpoint", required=not search, help="pre-training or retrieval checkpoint (.pth)")
    p.add_argument("--config", default=None, help="run config YAML (default: the one saved in the checkpoint)")
    p.add_argument("--images", nargs="+", required=images_required, default=[], metavar="SRC",
                   help="image files, folders, JSON lists of {image[, label, caption]} records, DICOM files or "
                        "series folders, NIfTI volumes (vol.nii.gz#axial:42)")
    p.add_argument("--image_root", default=None, help="folder that relative paths of JSON lists resolve against")
    p.add_argument("--slice", default=None, help="DICOM/NIfTI slice: axial:mid (default), axial:N, axial:all, "
                                                 "coronal:..., sagittal:...")
    p.add_argument("--window", default=None, help="CT window: brain (default for CT), subdural, bone or C/W")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="image decoding processes")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--out", required=not search, help="output folder")
    return p


def _use_setup(args: argparse.Namespace, label_key: str = "label"):
    """(items, model, run config, eval transform, device) for a use-the-model command."""
    import torch

    from data.image_list import collect
    from transform.pipeline import EvalTransform

    items = collect(args.images, _choice(args), args.image_root, label_key) if args.images else []
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model, config = load_itm_model(args.checkpoint, args.config, args.options, device)
    return items, model, config, EvalTransform(config["image_size"]), device


def _choice(args: argparse.Namespace) -> str | None:
    """--slice and --window as one clinical choice (``axial:all,window=bone``)."""
    parts = ([args.slice] if args.slice else []) + ([f"window={args.window}"] if args.window else [])
    return ",".join(parts) or None


def _progress(iterable, what: str):
    from tqdm import tqdm

    return tqdm(iterable, desc=what, disable=None)  # shown on a terminal only


def _draw_confusion(matrix: list[list[int]], names: list[str], path: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    m = np.asarray(matrix)
    fig = Figure(figsize=(1.2 + 0.7 * len(names), 1.0 + 0.6 * len(names)))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("label")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def classify_main(argv: list[str]) -> int:
    p = _use_parser("classify", "Zero-shot classification with prompt ensembles (ITC, optionally ITM re-ranked).")
    p.add_argument("--classes", required=True, help="class file, e.g. configs/zeroshot/brain_findings.yaml")
    p.add_argument("--label_key", default="label", help="record key holding the true class in JSON lists")
    p.add_argument("--itm_top_k", type=int, default=0, help="re-rank the top K classes with the ITM head (0: off)")
    p.add_argument("--itm_prompts", type=int, default=16, help="prompts per class the ITM re-scores (0: all)")
    p.add_argument("--calibrate", default=None, metavar="self|SRC",
                   help="centre each class's scores over unlabelled images: those classified (self) or other "
                        "images (a folder, JSON list...); see ZeroShotClassifier.calibrate")
    args = p.parse_args(argv)
    import csv

    import torch

    from configs import read_yaml
    from data.captions import pre_caption
    from data.image_list import image_batches
    from models.metrics import classification_report
    from models.zeroshot import ZeroShotClassifier, expand_prompts

    classes = expand_prompts(read_yaml(args.classes), args.classes)
    items, model, config, transform, _ = _use_setup(args, args.label_key)
    unknown = sorted({it.label for it in items if it.label is not None and it.label not in classes})
    if unknown:
        raise VisError(f"labels {unknown[:5]} are not classes of {args.classes}: {list(classes)}")
    clf = ZeroShotClassifier(model, classes, args.itm_top_k, clean=lambda t: pre_caption(t, config["max_words"]),
                             itm_prompts=args.itm_prompts)
    batches = image_batches(items, transform, args.batch_size, args.workers)
    if args.calibrate:
        from data.image_list import collect

        refs = items if args.calibrate == "self" else collect([args.calibrate], _choice(args), args.image_root)
        clf.calibrate(_progress(image_batches(refs, transform, args.batch_size, args.workers), "calibrating"))
    probs = torch.cat([clf.predict(b).cpu() for b in _progress(batches, "classifying")]).numpy()
    names, out = clf.names, Path(args.out)
    rows = [{"image": it.image, "label": it.label, "predicted": names[int(p.argmax())],
             "probs": {n: round(float(v), 5) for n, v in zip(names, p)}} for it, p in zip(items, probs)]
    atomic_write_json(out / "predictions.json", rows)
    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label", "predicted", *names])
        writer.writerows([r["image"], r["label"] or "", r["predicted"], *(f"{v:.5f}" for v in p)]
                         for r, p in zip(rows, probs))
    for r in rows:
        label = f"\tlabel {r['label']}" if r["label"] else ""
        print(f"{r['image']}\t{r['predicted']}\t{r['probs'][r['predicted']]:.3f}{label}")
    summary = {"out": str(out), "images": len(rows), "classes": names, "calibrate": args.calibrate}
    labelled = [i for i, it in enumerate(items) if it.label is not None]
    if labelled:
        report = classification_report([names.index(items[i].label) for i in labelled], probs[labelled], names)
        atomic_write_json(out / "metrics.json", report)
        _draw_confusion(report["confusion_matrix"], names, out / "confusion.png")
        summary.update({k: report[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "auroc_macro_ovr",
                                               "baselines")})
    print(json.dumps(summary))
    return 0


def caption_main(argv: list[str]) -> int:
    p = _use_parser("caption", "Captions from the pre-trained image-grounded decoder; with reference captions "
                               "(JSON records' 'caption'), BLEU-1..4, ROUGE-L and CIDEr-D.")
    p.add_argument("--prompt", default="", help="text every caption starts with (not part of the output)")
    p.add_argument("--num_beams", type=int, default=3, help="beam search width (1: greedy)")
    p.add_argument("--max_length", type=int, default=30, help="tokens at most, [DEC] and prompt included")
    p.add_argument("--min_length", type=int, default=5, help="tokens at least before [SEP] may end a caption")
    p.add_argument("--top_p", type=float, default=None, help="nucleus sampling with this mass (beams unused)")
    p.add_argument("--repetition_penalty", type=float, default=1.0, help="CTRL's penalty (BLIP samples with 1.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    args = p.parse_args(argv)
    import torch

    from data.image_list import image_batches
    from models.caption_metrics import caption_scores
    from models.generate import generate

    items, model, _, transform, device = _use_setup(args)
    gen = torch.Generator(device=device).manual_seed(args.seed) if args.top_p is not None else None
    captions = []
    for batch in _progress(image_batches(items, transform, args.batch_size, args.workers), "captioning"):
        captions += generate(model, batch.to(device), args.prompt, args.max_length, args.min_length, args.num_beams,
                             args.top_p, repetition_penalty=args.repetition_penalty, generator=gen)
    out = Path(args.out)
    rows = [{"image": it.image, "caption": c, **({"references": it.captions} if it.captions else {})}
            for it, c in zip(items, captions)]
    atomic_write_json(out / "captions.json", rows)
    for r in rows:
        print(f"{r['image']}\t{r['caption']}")
    summary = {"out": str(out), "images": len(rows)}
    if any(it.captions for it in items):
        scores = caption_scores({str(i): c for i, c in enumerate(captions)},
                                {str(i): it.captions for i, it in enumerate(items) if it.captions})
        atomic_write_json(out / "metrics.json", scores)
        summary.update(scores)
    print(json.dumps(summary))
    return 0


def embed_main(argv: list[str]) -> int:
    p = _use_parser("embed", "ITC embeddings of images and texts, for vis.py search: image_embeds.npy, "
                             "text_embeds.npy (float32, L2-normalised rows) and index.json.", images_required=False)
    p.add_argument("--texts", default=None, help="text file, one per line, or JSON list of strings or records")
    args = p.parse_args(argv)
    if not args.images and not args.texts:
        raise VisError("give --images, --texts or both")
    import numpy as np

    from data.captions import pre_caption
    from data.image_list import image_batches, read_texts
    from models.embed import embed_images, embed_texts

    texts = read_texts(args.texts) if args.texts else []
    items, model, config, transform, _ = _use_setup(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index = {"checkpoint": str(Path(args.checkpoint).resolve()), "config": args.config, "options": args.options,
             "images": [it.image for it in items], "texts": texts}
    if items:
        feats = embed_images(model, _progress(image_batches(items, transform, args.batch_size, args.workers),
                                              "embedding images"))
        np.save(out / "image_embeds.npy", feats.numpy())
        index["embed_dim"] = feats.shape[1]
    if texts:
        feats = embed_texts(model, texts, args.batch_size, lambda t: pre_caption(t, config["max_words"]),
                            lambda it: _progress(it, "embedding texts"))
        np.save(out / "text_embeds.npy", feats.numpy())
        index["embed_dim"] = feats.shape[1]
    atomic_write_json(out / "index.json", index)
    print(json.dumps({"out": str(out), "images": len(items), "texts": len(texts), "embed_dim": index["embed_dim"]}))
    return 0


def search_main(argv: list[str]) -> int:
    p = _use_parser("search", "Rank the stored image embeddings of `vis.py embed` for a text query, or the stored "
                              "texts for an image query.", images_required=False)
    p.add_argument("--index", required=True, help="folder written by vis.py embed")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query: ranks the stored images")
    query.add_argument("--image", help="image query (file or clinical reference): ranks the stored texts")
    p.add_argument("--target", choices=("images", "texts"), default=None,
                   help="what to rank (default: images for a text query, texts for an image query)")
    p.add_argument("--k", type=int, default=10, help="results to show")
    args = p.parse_args(argv)
    import numpy as np
    import torch

    from data.captions import pre_caption
    from data.image_list import with_choice
    from data.images import load_rgb
    from models.embed import embed_images, embed_texts, rank

    folder = Path(args.index)
    if not (folder / "index.json").is_file():
        raise VisError(f"--index {folder} holds no index.json: build it with vis.py embed")
    index = json.loads((folder / "index.json").read_text())
    target = args.target or ("images" if args.text is not None else "texts")
    bank_file = folder / ("image_embeds.npy" if target == "images" else "text_embeds.npy")
    if not index.get(target) or not bank_file.is_file():
        raise VisError(f"index {folder} holds no {target} to rank (embed some with vis.py embed --{target})")
    args.checkpoint = args.checkpoint or index["checkpoint"]
    args.config = args.config or index.get("config")
    args.options = args.options or index.get("options") or []
    _, model, config, transform, _ = _use_setup(args)
    if args.text is not None:
        query = embed_texts(model, [args.text], clean=lambda t: pre_caption(t, config["max_words"]))
    else:
        query = embed_images(model, [transform(load_rgb(with_choice(args.image, _choice(args))))[None]])
    scores, order = rank(query, torch.from_numpy(np.load(bank_file)), args.k)
    results = [{"rank": r + 1, "score": round(float(s), 4), target[:-1]: index[target][int(i)]}
               for r, (s, i) in enumerate(zip(scores[0], order[0]))]
    print(json.dumps(results, indent=1))
    return 0


COMMANDS = {
    "maps": (maps_main, "Grad-CAM maps of a caption on an image (the default command)"),
    "curves": (curves_main, "training curves from log.txt files, several runs overlaid"),
    "classify": (classify_main, "zero-shot classification with prompt ensembles (ITC, optional ITM re-ranking)"),
    "caption": (caption_main, "captions from the image-grounded decoder, scored against references"),
    "embed": (embed_main, "image and text embeddings for search (.npy + index.json)"),
    "search": (search_main, "rank stored embeddings for a text or an image"),
}


if __name__ == "__main__":
    raise SystemExit(main())
