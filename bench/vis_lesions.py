"""Do the Grad-CAM maps point at the lesions? Measured on the demo set's lesion masks, printed as JSON.

For every image of a split of the generated demo set (``python -m data.synthetic.demo``) that has lesions, the
map of its first caption (which names every lesion) is upsampled to the image and compared with the
lesion mask the generator saved:

- ``mean_inside`` / ``mean_outside``: mean map value (each map scaled to [0, 1]) inside the lesions and
  everywhere else; ``mean_outside_head``: outside the lesions but inside the head, a harder control,
  since a map can be low on the black background without knowing where the lesion is;
- ``frac_inside_gt_outside`` / ``frac_inside_gt_head``: share of images whose inside mean is higher;
- ``median_ratio``: median over images of inside / outside mean;
- ``pointing``: share of images whose map maximum lies on a lesion.

Three maps per image: ``sentence`` (mean over the caption's word tokens, what vis.py shows first),
``finding`` (mean of the maps of the words naming a lesion kind: mass, cyst, haemorrhage, infarct) and
``location`` (mean of the maps of the words placing it: left, right and the lobe names).
Controls: ``--random-init`` measures the same architecture with random weights; ``--other-caption``
maps each image with the caption of the next image in the list (other lesions, other places).

``token_locality`` asks whether the ViT's output tokens still describe their own patch, which the maps
assume: every third patch of the first 6 images is painted flat (the image mean plus one, in normalised
units) and the share of the resulting change of the output tokens (L2 norms) that falls on that patch's
own token is averaged. 1.0: each token sees only its patch; 1/N (N patches): it forgets its patch.

    python -m bench.vis_lesions --checkpoint output/demo_pretrain/checkpoint_last.pth --demo datasets/demo
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from data.images import load_rgb
from bench.probes import head_mask
from models import build_model
from models.gradcam import patch_token_locality, to_heatmap
from transform.pipeline import EvalTransform
from utils import trained_model
from vis import explain_image

WORD_GROUPS = {"finding": {"mass", "cyst", "haemorrhage", "infarct"},
               "location": {"left", "right", "frontal", "temporal", "parietal", "occipital"}}


def cases(demo: Path, split: str) -> list[tuple[Path, Path, str]]:
    """(image, lesion mask, first caption) of every image of ``split`` with at least one lesion."""
    meta = json.loads((demo / "lesions.json").read_text())
    return [(demo / name, demo / m["mask"], m["captions"][0]) for name, m in sorted(meta.items())
            if m["split"] == split and m["lesions"]]


def score(heat: np.ndarray, lesion: np.ndarray, head: np.ndarray) -> dict:
    """Inside/outside means and whether the maximum falls on a lesion, for one (H, W) map in [0, 1]."""
    rest_of_head = head & ~lesion
    return {"inside": float(heat[lesion].mean()), "outside": float(heat[~lesion].mean()),
            "outside_head": float(heat[rest_of_head].mean()) if rest_of_head.any() else float("nan"),
            "hit": bool(lesion.flat[int(heat.argmax())])}


def summarise(rows: list[dict]) -> dict:
    inside = np.array([r["inside"] for r in rows])
    outside = np.array([r["outside"] for r in rows])
    head = np.array([r["outside_head"] for r in rows])
    return {"mean_inside": round(float(inside.mean()), 4), "mean_outside": round(float(outside.mean()), 4),
            "mean_outside_head": round(float(np.nanmean(head)), 4),
            "frac_inside_gt_outside": round(float((inside > outside).mean()), 4),
            "frac_inside_gt_head": round(float((inside > head).mean()), 4),
            "median_ratio": round(float(np.median(inside / np.maximum(outside, 1e-9))), 3),
            "pointing": round(float(np.mean([r["hit"] for r in rows])), 4)}


@torch.no_grad()
def token_locality(model, images: list[Path], stride: int = 3) -> float:
    """Mean share of the change of the ViT's patch tokens that falls on the token of the painted patch."""
    transform = EvalTransform(model.config.image_size)
    shares = [s for path in images for s in patch_token_locality(model, transform(load_rgb(path)), stride)]
    return round(float(np.mean(shares)), 4)


def measure(model, items: list[tuple[Path, Path, str]], layer: int, max_words: int) -> dict:
    rows: dict[str, list[dict]] = {"sentence": [], **{name: [] for name in WORD_GROUPS}}
    for image_path, mask_path, caption in items:
        image = load_rgb(image_path)
        gray = np.asarray(image.convert("L"))
        lesion = np.asarray(load_rgb(mask_path).convert("L")) > 127
        head = head_mask(gray)
        result = explain_image(model, image, caption, layer, max_words)
        size = (image.height, image.width)
        rows["sentence"].append(score(to_heatmap(result.sentence_map, size).numpy(), lesion, head))
        for name, group in WORD_GROUPS.items():
            picked = [i for i, w in enumerate(result.words) if w in group]
            if picked:
                cam = result.word_maps[picked].mean(dim=0)
                rows[name].append(score(to_heatmap(cam, size).numpy(), lesion, head))
    return {name: {"images": len(r), **summarise(r)} for name, r in rows.items() if r}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="pre-training or retrieval checkpoint of the demo model")
    p.add_argument("--config", default=None, help="run config (default: the one saved in the checkpoint)")
    p.add_argument("--demo", default="datasets/demo", help="folder written by python -m data.synthetic.demo")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--layers", type=int, nargs="+", default=None, help="layers to measure (default: all but the last, whose word maps are zero)")
    p.add_argument("--random-init", action="store_true", help="same architecture, random weights (control)")
    p.add_argument("--other-caption", action="store_true",
                   help="map each image with the next image's caption (control: does the map follow the text?)")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    args = p.parse_args(argv)
    demo = Path(args.demo)
    if not (demo / "lesions.json").is_file():
        print(f"error: {demo / 'lesions.json'} does not exist; run python -m data.synthetic.demo --out {demo}", file=sys.stderr)
        return 2
    items = cases(demo, args.split)
    if args.other_caption:
        items = [(image, mask, items[(i + 1) % len(items)][2]) for i, (image, mask, _) in enumerate(items)]
    model, config = trained_model(args.checkpoint, args.config, args.options)
    if args.random_init:
        torch.manual_seed(0)
        task = "pretrain" if hasattr(model, "text_decoder") else "retrieval"
        model = build_model(config, task, model.tokenizer, load_weights=False).eval()
    n_layers = len(model.text_encoder.encoder.layer)
    t0 = time.time()
    results = {str(layer): measure(model, items, layer, config["max_words"])
               for layer in (args.layers if args.layers is not None else range(n_layers - 1))}
    print(json.dumps({"checkpoint": args.checkpoint, "random_init": args.random_init,
                      "other_caption": args.other_caption, "split": args.split,
                      "images_with_lesions": len(items), "text_layers": n_layers, "layers": results,
                      "token_locality": token_locality(model, [image for image, _, _ in items[:6]]),
                      "seconds": round(time.time() - t0, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
