"""What does the ITM head tell apart? Measured on the demo set, printed as JSON.

For every image of a split of the generated demo set (``python -m data.synthetic.demo``) that has lesions, the
ITM match probability of its first caption is compared with that of the same caption with one attribute
of the findings changed (the others kept):

- ``side``: left and right swapped for every lesion;
- ``lobe``: each lesion moved to another lobe (drawn with a fixed seed);
- ``kind``: each lesion made another kind (mass, cyst, haemorrhage, infarct);
- ``sequence``: the scan called another sequence (T1, T2, FLAIR, CT);
- ``none``: the scan's "no focal abnormality" caption.

Each number is the share of images where the true caption scores higher (0.5 = chance). A model that
has only learnt what the sequences look like scores about 1.0 on ``sequence`` and 0.5 on the rest.

``occlusion`` asks whether the match depends on the lesion pixels at all: the lesions (their masks
widened by 2 pixels) are painted over with the median grey of the head, and, as a control, so is the
mirror image of that region in the other hemisphere (lesion pixels left alone). Reported: the median
drop of the true caption's match probability for each, and the share of images where painting the
lesions costs more than painting the control. A model whose match ignores the lesions drops alike.

    python -m bench.itm_attributes --checkpoint output/demo_pretrain/checkpoint_last.pth --demo datasets/demo
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

from data.images import load_rgb
from data.synthetic.demo import captions_for
from bench.probes import changed_captions, painted
from transform.pipeline import EvalTransform
from utils import trained_model


@torch.no_grad()
def measure(model, demo: Path, split: str, seed: int = 0) -> dict:
    meta = json.loads((demo / "lesions.json").read_text())
    transform = EvalTransform(model.config.image_size)
    rng = random.Random(seed)
    wins: dict[str, list[bool]] = {}
    drops: list[tuple[float, float]] = []
    for name, case in sorted(meta.items()):
        if case["split"] != split or not case["lesions"]:
            continue
        image = load_rgb(demo / name)
        lesion = np.asarray(load_rgb(demo / case["mask"]).convert("L")) > 127
        images = torch.stack([transform(im) for im in (image, *painted(np.asarray(image.convert("L")), lesion))])
        image_embeds, _ = model.encode_image(images)  # original, lesions painted, mirror painted
        changed = changed_captions(case, rng)
        batch = model.tokenize([captions_for(case)[0], *changed.values()])
        n = batch["input_ids"].shape[0]
        prob = model.itm_logits(image_embeds[:1].expand(n, -1, -1), batch["input_ids"],
                                batch["attention_mask"]).softmax(dim=-1)[:, 1]
        for attribute, p in zip(changed, prob[1:]):
            wins.setdefault(attribute, []).append(bool(prob[0] > p))
        true = {k: v[:1].expand(3, -1) for k, v in batch.items()}
        occluded = model.itm_logits(image_embeds, true["input_ids"], true["attention_mask"]).softmax(dim=-1)[:, 1]
        drops.append((float(occluded[0] - occluded[1]), float(occluded[0] - occluded[2])))
    images = len(drops)
    d = np.array(drops).reshape(-1, 2)
    return {"images_with_lesions": images,
            "true_caption_preferred": {a: round(sum(w) / len(w), 4) for a, w in wins.items()},
            "occlusion": {"median_drop_lesions": round(float(np.median(d[:, 0])), 4) if images else None,
                          "median_drop_mirror": round(float(np.median(d[:, 1])), 4) if images else None,
                          "lesions_cost_more": round(float((d[:, 0] > d[:, 1]).mean()), 4) if images else None}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="pre-training or retrieval checkpoint of the demo model")
    p.add_argument("--demo", default="datasets/demo", help="folder written by python -m data.synthetic.demo")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--seed", type=int, default=0, help="seed of the replacement lobes, kinds and sequences")
    args = p.parse_args(argv)
    demo = Path(args.demo)
    if not (demo / "lesions.json").is_file():
        print(f"error: {demo / 'lesions.json'} does not exist; run python -m data.synthetic.demo --out {demo}", file=sys.stderr)
        return 2
    model, _ = trained_model(args.checkpoint)
    result = measure(model, demo, args.split, args.seed)
    print(json.dumps({"checkpoint": args.checkpoint, "split": args.split, **result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
