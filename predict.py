r"""Use a trained model: zero-shot classification, captions, embeddings and search.

    python predict.py classify --checkpoint CKPT --classes configs/zeroshot/brain_findings.yaml \
        --images datasets/demo/test.json --out output/classify
    python predict.py caption  --checkpoint CKPT --images scan.dcm brain.png --out output/captions
    python predict.py embed    --checkpoint CKPT --images datasets/demo/images --texts queries.txt --out output/index
    python predict.py search   --index output/index --text "axial flair: a mass in the left frontal lobe"

Inputs (--images): image files, folders, JSON lists of {image[, label, caption]} records, DICOM files or
series folders, NIfTI volumes (vol.nii.gz#axial:42). Each command writes its files into --out (a folder)
and prints one JSON summary line; the library code is in models/ (zeroshot, generate, embed, metrics).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

# Reports are replaced atomically (a killed run never leaves half a file); data.files needs the standard
# library only, so --help stays fast.
from data.files import atomic_write_json

log = logging.getLogger("medvl")


class UsageError(ValueError):
    """A command-line value that cannot be used; the message names the option."""

    exit_code = 2  # data.errors.BAD_INPUT (not imported: --help stays fast)


def parser_for(command: str, description: str, images_required: bool = True) -> argparse.ArgumentParser:
    """The options every command shares (underscore spellings are the earlier published ones)."""
    p = argparse.ArgumentParser(prog=f"predict.py {command}", description=description)
    search = command == "search"  # a search defaults to the checkpoint its index was built with
    onnx = command in ("embed", "search")  # these two can run on ONNX files instead
    p.add_argument("--checkpoint", required=not (search or onnx), help="pre-training or retrieval checkpoint (.pth)")
    if onnx:
        p.add_argument("--onnx", default=None, metavar="FOLDER",
                       help="run on the ONNX towers of `python -m models.export_onnx` instead of a checkpoint")
    p.add_argument("--config", default=None, help="run config YAML (default: the one saved in the checkpoint)")
    p.add_argument("--images", nargs="+", required=images_required, default=[], metavar="SRC",
                   help="image files, folders, JSON lists of {image[, label, caption]} records, DICOM files or "
                        "series folders, NIfTI volumes (vol.nii.gz#axial:42)")
    p.add_argument("--image-root", "--image_root", dest="image_root", default=None,
                   help="folder that relative paths of JSON lists resolve against")
    p.add_argument("--slice", default=None, help="DICOM/NIfTI slice: axial:mid (default), axial:N, axial:all, "
                                                 "coronal:..., sagittal:...")
    p.add_argument("--window", default=None, help="CT window: brain (default for CT), subdural, bone or C/W")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="image decoding processes")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--out", required=not search, help="output folder")
    return p


def positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")


def setup(args: argparse.Namespace, label_key: str = "label"):
    """(items, model, run config, eval transform, device) for a command."""
    import torch

    from transform.pipeline import EvalTransform
    from utils import trained_model

    items = collect_items(args, label_key)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model, config = trained_model(args.checkpoint, args.config, args.options, device)
    return items, model, config, EvalTransform(config["image_size"]), device


def collect_items(args: argparse.Namespace, label_key: str = "label") -> list:
    from data.image_list import collect

    positive(args, "batch_size")
    return collect(args.images, clinical_choice(args), args.image_root, label_key) if args.images else []


def embedder(args: argparse.Namespace):
    """(embedding functions, model, max_words, eval transform) of ``embed`` and ``search``: this project's
    model from --checkpoint (``models.embed``), or the ONNX towers of --onnx (``models.onnx_embed``,
    onnxruntime only), which give the same features within 1e-4."""
    from transform.pipeline import EvalTransform

    if args.onnx:
        from models import onnx_embed

        towers = onnx_embed.load_onnx_towers(args.onnx)
        return onnx_embed, towers, towers.max_words, EvalTransform(towers.image_size)
    if not args.checkpoint:
        raise UsageError("give --checkpoint or --onnx")
    from models import embed as torch_embed

    _, model, config, transform, _ = setup(args)
    return torch_embed, model, config["max_words"], transform


def clinical_choice(args: argparse.Namespace) -> str | None:
    """--slice and --window as one clinical choice (``axial:all,window=bone``)."""
    parts = ([args.slice] if args.slice else []) + ([f"window={args.window}"] if args.window else [])
    return ",".join(parts) or None


def progress(iterable, what: str):
    from tqdm import tqdm

    return tqdm(iterable, desc=what, disable=None)  # shown on a terminal only


def draw_confusion(matrix: list[list[int]], names: list[str], path: Path) -> None:
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


def classify(argv: list[str]) -> int:
    p = parser_for("classify", "Zero-shot classification with prompt ensembles (ITC, optionally ITM re-ranked).")
    p.add_argument("--classes", required=True, help="class file, e.g. configs/zeroshot/brain_findings.yaml")
    p.add_argument("--label-key", "--label_key", dest="label_key", default="label",
                   help="record key holding the true class in JSON lists")
    p.add_argument("--itm-top-k", "--itm_top_k", dest="itm_top_k", type=int, default=0,
                   help="re-rank the top K classes with the ITM head (0: off)")
    p.add_argument("--itm-prompts", "--itm_prompts", dest="itm_prompts", type=int, default=16,
                   help="prompts per class the ITM re-scores (0: all)")
    p.add_argument("--calibrate", default=None, metavar="self|SRC",
                   help="centre each class's scores over unlabelled images: those classified (self) or other "
                        "images (a folder, JSON list...); see ZeroShotClassifier.calibrate")
    args = p.parse_args(argv)
    import torch

    from configs import read_yaml
    from data.captions import pre_caption
    from data.image_list import collect, image_batches
    from models.metrics import classification_report
    from models.zeroshot import ZeroShotClassifier, expand_prompts

    classes = expand_prompts(read_yaml(args.classes), args.classes)
    items, model, config, transform, _ = setup(args, args.label_key)
    unknown = sorted({it.label for it in items if it.label is not None and it.label not in classes})
    if unknown:
        raise UsageError(f"labels {unknown[:5]} are not classes of {args.classes}: {list(classes)}")
    clf = ZeroShotClassifier(model, classes, args.itm_top_k, clean=lambda t: pre_caption(t, config["max_words"]),
                             itm_prompts=args.itm_prompts)
    batches = image_batches(items, transform, args.batch_size, args.workers)
    if args.calibrate:
        refs = items if args.calibrate == "self" else collect([args.calibrate], clinical_choice(args), args.image_root)
        clf.calibrate(progress(image_batches(refs, transform, args.batch_size, args.workers), "calibrating"))
    probs = torch.cat([clf.predict(b).cpu() for b in progress(batches, "classifying")]).numpy()
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
        draw_confusion(report["confusion_matrix"], names, out / "confusion.png")
        summary.update({k: report[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "auroc_macro_ovr",
                                               "baselines")})
    print(json.dumps(summary))
    return 0


def caption(argv: list[str]) -> int:
    p = parser_for("caption", "Captions from the pre-trained image-grounded decoder; with reference captions "
                              "(JSON records' 'caption'), BLEU-1..4, ROUGE-L and CIDEr-D.")
    p.add_argument("--prompt", default="", help="text every caption starts with (not part of the output)")
    p.add_argument("--num-beams", "--num_beams", dest="num_beams", type=int, default=3,
                   help="beam search width (1: greedy)")
    p.add_argument("--max-length", "--max_length", dest="max_length", type=int, default=30,
                   help="tokens at most, [DEC] and prompt included")
    p.add_argument("--min-length", "--min_length", dest="min_length", type=int, default=5,
                   help="tokens at least before [SEP] may end a caption")
    p.add_argument("--top-p", "--top_p", dest="top_p", type=float, default=None,
                   help="nucleus sampling with this mass (beams unused)")
    p.add_argument("--repetition-penalty", "--repetition_penalty", dest="repetition_penalty", type=float,
                   default=1.0, help="CTRL's penalty (BLIP samples with 1.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    p.add_argument("--coco-tokenizer", choices=("python", "java"), default="python",
                   help="tokenizer of the caption metrics: this project's port of pycocoevalcap's PTB tokenizer, or "
                        "pycocoevalcap's Java tokenizer itself (needs Java and pycocoevalcap)")
    args = p.parse_args(argv)
    import torch

    from data.image_list import image_batches
    from models.caption_metrics import caption_scores
    from models.generate import generate

    items, model, _, transform, device = setup(args)
    gen = torch.Generator(device=device).manual_seed(args.seed) if args.top_p is not None else None
    captions = []
    for batch in progress(image_batches(items, transform, args.batch_size, args.workers), "captioning"):
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
                                {str(i): it.captions for i, it in enumerate(items) if it.captions},
                                tokenizer=args.coco_tokenizer)
        atomic_write_json(out / "metrics.json", scores)
        summary.update(scores)
    print(json.dumps(summary))
    return 0


def embed(argv: list[str]) -> int:
    p = parser_for("embed", "ITC embeddings of images and texts, for predict.py search: image_embeds.npy, "
                            "text_embeds.npy (float32, L2-normalised rows) and index.json.", images_required=False)
    p.add_argument("--texts", default=None, help="text file, one per line, or JSON list of strings or records")
    args = p.parse_args(argv)
    if not args.images and not args.texts:
        raise UsageError("give --images, --texts or both")
    import numpy as np

    from data.captions import pre_caption
    from data.image_list import image_batches, read_texts

    texts = read_texts(args.texts) if args.texts else []
    items = collect_items(args)
    backend, model, max_words, transform = embedder(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = {"onnx": str(Path(args.onnx).resolve())} if args.onnx else {
        "checkpoint": str(Path(args.checkpoint).resolve()), "config": args.config, "options": args.options}
    index = {**source, "images": [it.image for it in items], "texts": texts}
    if items:
        feats = backend.embed_images(model, progress(image_batches(items, transform, args.batch_size, args.workers),
                                                     "embedding images"))
        np.save(out / "image_embeds.npy", feats.numpy())
        index["embed_dim"] = feats.shape[1]
    if texts:
        feats = backend.embed_texts(model, texts, args.batch_size, lambda t: pre_caption(t, max_words),
                                    lambda it: progress(it, "embedding texts"))
        np.save(out / "text_embeds.npy", feats.numpy())
        index["embed_dim"] = feats.shape[1]
    atomic_write_json(out / "index.json", index)
    print(json.dumps({"out": str(out), "images": len(items), "texts": len(texts), "embed_dim": index["embed_dim"]}))
    return 0


def read_index(folder: Path) -> dict:
    """``index.json`` of an ``embed`` folder; a missing or broken file is named."""
    from data.files import read_json

    path = folder / "index.json"
    if not path.is_file():
        raise UsageError(f"--index {folder} holds no index.json: build it with predict.py embed")
    index = read_json(path, "index file")
    if not isinstance(index, dict):
        raise UsageError(f"{path} must hold a JSON object, as predict.py embed writes it")
    return index


def search(argv: list[str]) -> int:
    p = parser_for("search", "Rank the stored image embeddings of `predict.py embed` for a text query, or the "
                             "stored texts for an image query.", images_required=False)
    p.add_argument("--index", required=True, help="folder written by predict.py embed")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query: ranks the stored images")
    query.add_argument("--image", help="image query (file or clinical reference): ranks the stored texts")
    p.add_argument("--target", choices=("images", "texts"), default=None,
                   help="what to rank (default: images for a text query, texts for an image query)")
    p.add_argument("--k", type=int, default=10, help="results to show")
    args = p.parse_args(argv)
    positive(args, "k")
    import numpy as np
    import torch

    from data.captions import pre_caption
    from data.image_list import with_choice
    from data.images import load_rgb
    from models.embed import rank

    folder = Path(args.index)
    index = read_index(folder)
    target = args.target or ("images" if args.text is not None else "texts")
    bank_file = folder / ("image_embeds.npy" if target == "images" else "text_embeds.npy")
    if not index.get(target) or not bank_file.is_file():
        raise UsageError(f"index {folder} holds no {target} to rank (embed some with predict.py embed --{target})")
    if not (args.checkpoint or args.onnx):  # the model the index was built with
        args.onnx, args.checkpoint = index.get("onnx"), index.get("checkpoint")
        args.config = args.config or index.get("config")
        args.options = args.options or index.get("options") or []
    backend, model, max_words, transform = embedder(args)
    if args.text is not None:
        query = backend.embed_texts(model, [args.text], clean=lambda t: pre_caption(t, max_words))
    else:
        image = transform(load_rgb(with_choice(args.image, clinical_choice(args))))[None]
        query = backend.embed_images(model, [image])
    scores, order = rank(query, torch.from_numpy(np.load(bank_file)), args.k)
    results = [{"rank": r + 1, "score": round(float(s), 4), target[:-1]: index[target][int(i)]}
               for r, (s, i) in enumerate(zip(scores[0], order[0]))]
    print(json.dumps(results, indent=1))
    return 0


COMMANDS = {
    "classify": (classify, "zero-shot classification with prompt ensembles (ITC, optional ITM re-ranking)"),
    "caption": (caption, "captions from the image-grounded decoder, scored against references"),
    "embed": (embed, "image and text embeddings for search (.npy + index.json)"),
    "search": (search, "rank stored embeddings for a text or an image"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)  # the command's own parser reads the rest
    args, rest = p.parse_known_args(argv)
    from utils import run_cli  # after parsing: --help needs no torch

    return run_cli(lambda: COMMANDS[args.command][0](rest), "predict.py")


if __name__ == "__main__":
    raise SystemExit(main())
