"""A synthetic brain-imaging set for demos and tests: axial slices with captions, masks and a tokenizer.

Each image is a 2-D axial slice (scalp, skull, brain texture, ventricles) in the look of one sequence
(T1, T2, FLAIR or CT) with zero to two lesions whose kind, side, lobe and size are drawn at random and
written into the captions. Images follow the radiological convention: the patient's left is on the
image's right. Everything is deterministic from the seed.

    python -m data.synthetic.demo --out datasets/demo [--train 800 --val 100 --test 100 --seed 0]
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from data.files import atomic_write_json
from data.records import PairRecord, write_records

log = logging.getLogger("medvl")

SEQUENCES = {  # name in captions, intensities of scalp, skull, brain, CSF
    "T1": ("T1-weighted MRI", 0.85, 0.12, 0.55, 0.12),
    "T2": ("T2-weighted MRI", 0.6, 0.08, 0.42, 0.95),
    "FLAIR": ("FLAIR MRI", 0.6, 0.08, 0.5, 0.08),
    "CT": ("CT", 0.35, 1.0, 0.42, 0.12),
}
# Lesion appearance per sequence: (core intensity, rim intensity or None, surrounding oedema or None).
KINDS = {
    "enhancing mass": {"T1": (0.45, 0.95, None), "T2": (0.75, None, 0.7), "FLAIR": (0.8, None, 0.75),
                       "CT": (0.5, None, 0.3)},
    "cyst": {"T1": (0.12, None, None), "T2": (0.97, None, None), "FLAIR": (0.15, None, None),
             "CT": (0.14, None, None)},
    "haemorrhage": {"T1": (0.9, None, None), "T2": (0.15, None, 0.75), "FLAIR": (0.9, None, 0.75),
                    "CT": (0.85, None, 0.3)},
    "infarct": {"T1": (0.3, None, None), "T2": (0.85, None, None), "FLAIR": (0.9, None, None),
                "CT": (0.25, None, None)},
}
LOBES = {"frontal": (0.33, -0.58), "temporal": (0.62, -0.02), "parietal": (0.4, 0.3), "occipital": (0.24, 0.66)}
SIZES = {"small": (0.13, 0.17), "large": (0.24, 0.30)}


def _ellipse(shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    x, y = xx - cx, yy - cy
    return ((x * c + y * s) / rx) ** 2 + ((-x * s + y * c) / ry) ** 2 <= 1.0


def _texture(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    noise = rng.standard_normal((size, size)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    return noise / (noise.std() + 1e-6)


def _describe(kind: str, seq: str) -> str:
    core = KINDS[kind][seq][0]
    brain = SEQUENCES[seq][3]
    word = ("hyperdense" if core > brain else "hypodense") if seq == "CT" else (
        "hyperintense" if core > brain else "hypointense")
    if kind == "enhancing mass" and seq == "T1":
        return "ring-enhancing mass"
    return f"{word} {kind}" if kind != "enhancing mass" else f"{word} mass"


def draw_case(rng: np.random.Generator, size: int = 160) -> tuple[np.ndarray, np.ndarray, dict]:
    """One slice: (uint8 image (H, W), uint8 lesion mask (H, W), description dict)."""
    seq = str(rng.choice(list(SEQUENCES)))
    _, scalp, skull, brain, csf = SEQUENCES[seq]
    cx, cy = size / 2 + rng.uniform(-4, 4), size / 2 + rng.uniform(-3, 3)
    rx, ry = size * rng.uniform(0.36, 0.40), size * rng.uniform(0.43, 0.47)
    img = np.zeros((size, size), np.float32)
    img[_ellipse(img.shape, cx, cy, rx, ry)] = scalp
    img[_ellipse(img.shape, cx, cy, rx * 0.95, ry * 0.95)] = skull
    inside = _ellipse(img.shape, cx, cy, rx * 0.88, ry * 0.88)
    img[inside] = brain + 0.06 * _texture(rng, size, 2.0)[inside]
    for side in (-1, 1):  # ventricles, slightly asymmetric
        vent = _ellipse(img.shape, cx + side * rx * 0.12, cy - ry * 0.05, rx * 0.07, ry * 0.22, side * 0.35)
        img[vent] = csf
    n = int(rng.choice([0, 1, 1, 2]))
    spots = rng.permutation([(s, l) for s in ("left", "right") for l in LOBES])[:n]
    mask = np.zeros((size, size), np.uint8)
    lesions = []
    for side, lobe in spots:
        kind = str(rng.choice(list(KINDS)))
        size_word = str(rng.choice(list(SIZES)))
        r = rx * 0.88 * rng.uniform(*SIZES[size_word])
        dx, dy = LOBES[lobe]
        sign = 1 if side == "left" else -1  # patient's left is on the image's right
        lx = cx + sign * dx * rx * 0.88 + rng.uniform(-3, 3)
        ly = cy + dy * ry * 0.88 + rng.uniform(-3, 3)
        core_val, rim, oedema = KINDS[kind][seq]
        if oedema is not None:
            img[_ellipse(img.shape, lx, ly, r * 1.6, r * 1.4, rng.uniform(0, 3)) & inside] = oedema
        core = _ellipse(img.shape, lx, ly, r, r * rng.uniform(0.8, 1.0), rng.uniform(0, 3)) & inside
        if rim is not None:
            img[core] = rim
            core_inner = _ellipse(img.shape, lx, ly, r * 0.65, r * 0.6) & inside
            img[core_inner] = core_val
        else:
            img[core] = core_val
        mask[core] = 255
        ys, xs = np.nonzero(core)
        lesions.append({"kind": kind, "side": side, "lobe": lobe, "size": size_word,
                        "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]})
    img = np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1)
    img = cv2.GaussianBlur(img, (0, 0), 0.7)
    return (img * 255).round().astype(np.uint8), mask, {"sequence": seq, "lesions": lesions}


def captions_for(case: dict) -> list[str]:
    """Two phrasings of the same findings."""
    seq = case["sequence"]
    name = SEQUENCES[seq][0]
    parts = [f"a {l['size']} {_describe(l['kind'], seq)} in the {l['side']} {l['lobe']} lobe" for l in case["lesions"]]
    if not parts:
        return [f"Axial {name} of the brain shows no focal abnormality.",
                f"Normal axial {name} slice of the brain without a lesion."]
    findings = " and ".join(parts)
    short = "; ".join(p[2:] if p.startswith("a ") else p for p in parts)
    return [f"Axial {name} shows {findings}.", f"{short[0].upper()}{short[1:]} on axial {name} of the brain."]


def build_tokenizer(captions: list[str], folder: Path, vocab_size: int = 800) -> None:
    """Train a lower-case WordPiece vocabulary on the captions and save a BERT tokenizer folder."""
    from tokenizers import BertWordPieceTokenizer

    from data.captions import pre_caption

    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator([pre_caption(c, 100) for c in captions], vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(folder))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))


def generate(out: str | Path, train: int = 800, val: int = 100, test: int = 100, seed: int = 0,
             size: int = 160) -> Path:
    """Write the demo set under ``out`` (skipped when a complete set with the same settings exists)."""
    out = Path(out)
    settings = {"train": train, "val": val, "test": test, "seed": seed, "size": size, "version": 2}
    done = out / "DONE.json"
    if done.is_file() and json.loads(done.read_text()) == settings:
        log.info(f"demo data in {out} is complete; nothing to do")
        return out
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    rng = np.random.default_rng(seed)
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    counts = {"train": train, "val": val, "test": test}
    meta, all_captions = {}, []
    for split, n in counts.items():
        for _ in range(n):
            name = f"demo_{len(meta):05d}.png"
            img, mask, case = draw_case(rng, size)
            Image.fromarray(img, mode="L").save(out / "images" / name)
            Image.fromarray(mask, mode="L").save(out / "masks" / name)
            caps = captions_for(case)
            meta[f"images/{name}"] = {**case, "mask": f"masks/{name}", "split": split, "captions": caps}
            splits[split].append((f"images/{name}", caps))
            all_captions += caps
    write_records(out / "pretrain.json", [{"image": im, "caption": c} for im, caps in splits["train"] for c in caps],
                  PairRecord)
    write_records(out / "train.json", [{"image": im, "caption": c, "image_id": im} for im, caps in splits["train"]
                                       for c in caps], PairRecord)
    for split in ("val", "test"):
        write_records(out / f"{split}.json", [{"image": im, "caption": caps} for im, caps in splits[split]], PairRecord)
    atomic_write_json(out / "lesions.json", meta)
    build_tokenizer(all_captions, out / "tokenizer")
    atomic_write_json(done, settings)
    log.info(f"wrote {len(meta)} demo images to {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="datasets/demo", help="output folder (default %(default)s)")
    parser.add_argument("--train", type=int, default=800, help="training images")
    parser.add_argument("--val", type=int, default=100, help="validation images")
    parser.add_argument("--test", type=int, default=100, help="test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=160, help="image side in pixels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate(args.out, args.train, args.val, args.test, args.seed, args.size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
