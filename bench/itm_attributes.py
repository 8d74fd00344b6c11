"""What does the ITM head tell apart? Measured on the demo set, printed as JSON.

For every image of a split of the generated demo set (``python -m data.demo``) that has lesions, the
ITM match probability of its first caption is compared with that of the same caption with one attribute
of the findings changed (the others kept):

- ``side``: left and right swapped for every lesion;
- ``lobe``: each lesion moved to another lobe (drawn with a fixed seed);
- ``kind``: each lesion made another kind (mass, cyst, haemorrhage, infarct);
- ``sequence``: the scan called another sequence (T1, T2, FLAIR, CT);
- ``none``: the scan's "no focal abnormality" caption.

Each number is the share of images where the true caption scores higher (0.5 = chance). A model that
has only learnt what the sequences look like scores about 1.0 on ``sequence`` and 0.5 on the rest.

    python bench/itm_attributes.py --checkpoint output/demo_pretrain/checkpoint_last.pth --demo data/demo
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from data.demo import KINDS, LOBES, SEQUENCES, captions_for  # noqa: E402
from data.images import load_rgb  # noqa: E402
from models.gradcam import load_itm_model  # noqa: E402
from transform.pipeline import EvalTransform  # noqa: E402


def changed_captions(case: dict, rng: random.Random) -> dict[str, str]:
    """The first caption of ``case`` with one attribute changed, per attribute (case has lesions)."""
    def other(options, current):
        return rng.choice([o for o in options if o != current])

    def with_lesions(change) -> str:
        return captions_for({**case, "lesions": [{**l, **change(l)} for l in case["lesions"]]})[0]

    return {
        "side": with_lesions(lambda l: {"side": "right" if l["side"] == "left" else "left"}),
        "lobe": with_lesions(lambda l: {"lobe": other(LOBES, l["lobe"])}),
        "kind": with_lesions(lambda l: {"kind": other(KINDS, l["kind"])}),
        "sequence": captions_for({**case, "sequence": other(SEQUENCES, case["sequence"])})[0],
        "none": captions_for({**case, "lesions": []})[0],
    }


@torch.no_grad()
def measure(model, demo: Path, split: str, seed: int = 0) -> dict:
    meta = json.loads((demo / "lesions.json").read_text())
    transform = EvalTransform(int(model.config["image_size"]))
    rng = random.Random(seed)
    wins: dict[str, list[bool]] = {}
    for name, case in sorted(meta.items()):
        if case["split"] != split or not case["lesions"]:
            continue
        image_embeds, _ = model.encode_image(transform(load_rgb(demo / name)).unsqueeze(0))
        changed = changed_captions(case, rng)
        batch = model.tokenize([captions_for(case)[0], *changed.values()])
        n = batch["input_ids"].shape[0]
        prob = model.itm_logits(image_embeds.expand(n, -1, -1), batch["input_ids"],
                                batch["attention_mask"]).softmax(dim=-1)[:, 1]
        for attribute, p in zip(changed, prob[1:]):
            wins.setdefault(attribute, []).append(bool(prob[0] > p))
    images = len(next(iter(wins.values()), []))
    return {"images_with_lesions": images,
            "true_caption_preferred": {a: round(sum(w) / len(w), 4) for a, w in wins.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="pre-training or retrieval checkpoint of the demo model")
    p.add_argument("--demo", default="data/demo", help="folder written by python -m data.demo")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--seed", type=int, default=0, help="seed of the replacement lobes, kinds and sequences")
    args = p.parse_args(argv)
    demo = Path(args.demo)
    if not (demo / "lesions.json").is_file():
        print(f"error: {demo / 'lesions.json'} does not exist; run python -m data.demo --out {demo}", file=sys.stderr)
        return 2
    model, _ = load_itm_model(args.checkpoint)
    result = measure(model, demo, args.split, args.seed)
    print(json.dumps({"checkpoint": args.checkpoint, "split": args.split, **result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
