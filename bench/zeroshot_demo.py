"""Zero-shot classification of the demo set's own labels, printed as JSON beside chance and a constant predictor.

Three tasks on a split of the generated demo set (``python -m data.synthetic.demo``), each with its class
file in ``configs/zeroshot/``:

- ``sequence`` (demo_sequence.yaml): T1, T2, FLAIR or CT, every image;
- ``finding`` (demo_findings.yaml): normal, enhancing mass, cyst, haemorrhage or infarct, on images
  without a lesion or whose lesions are all of one kind;
- ``side`` (demo_side.yaml): left or right, on images whose lesions all lie on one side.

Each is scored from ITC alone and re-ranked by the ITM head over the top 2 classes (``--itm-top-k``; 16
prompts a class, those nearest the image, ``--itm-prompts``), each without and with calibration: every
class's mean cosine over the images of another split (``--calibrate-on``, val by default; its labels unused)
subtracted (``ZeroShotClassifier.calibrate``).
``--lists DIR`` also writes the labelled JSON lists, for ``vis.py classify --images DIR/sequence.json``.

    python -m bench.zeroshot_demo --checkpoint output/demo_pretrain/checkpoint_last.pth --demo datasets/demo
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from configs import read_yaml
from data.captions import pre_caption
from data.image_list import Item, image_batches
from models.metrics import classification_report
from models.zeroshot import ZeroShotClassifier, expand_prompts
from transform.pipeline import EvalTransform
from utils import trained_model

ROOT = Path(__file__).resolve().parents[1]

CLASS_FILES = {"sequence": "demo_sequence.yaml", "finding": "demo_findings.yaml", "side": "demo_side.yaml"}


def label_of(case: dict, task: str) -> str | None:
    """The case's class for ``task``, or None where the task does not apply (mixed kinds or sides)."""
    lesions = case["lesions"]
    if task == "sequence":
        return case["sequence"]
    if task == "finding":
        kinds = {lesion["kind"] for lesion in lesions}
        return "normal" if not lesions else kinds.pop() if len(kinds) == 1 else None
    sides = {lesion["side"] for lesion in lesions}
    return sides.pop() if len(sides) == 1 else None


def demo_items(demo: Path, split: str, task: str) -> list[Item]:
    meta = json.loads((demo / "lesions.json").read_text())
    items = [Item(str(demo / name), label_of(case, task)) for name, case in sorted(meta.items())
             if case["split"] == split]
    return [it for it in items if it.label is not None]


def write_lists(folder: Path, demo: Path, split: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for task in CLASS_FILES:
        records = [{"image": os.path.relpath(it.image, folder), "label": it.label}
                   for it in demo_items(demo, split, task)]
        (folder / f"{task}.json").write_text(json.dumps(records, indent=1))


@torch.no_grad()
def measure(model, config: dict, demo: Path, split: str, itm_top_k: int, itm_prompts: int = 16,
            calibration: str = "val", batch_size: int = 64) -> dict:
    transform = EvalTransform(config["image_size"])
    results = {}
    for task, file in CLASS_FILES.items():
        classes = expand_prompts(read_yaml(ROOT / "configs" / "zeroshot" / file), file)
        items = demo_items(demo, split, task)
        images = torch.cat(list(image_batches(items, transform, batch_size)))
        labels = [list(classes).index(it.label) for it in items]
        row = {}
        clf = ZeroShotClassifier(model, classes, clean=lambda t: pre_caption(t, config["max_words"]),
                                 itm_prompts=itm_prompts)
        reference = torch.cat(list(image_batches(demo_items(demo, calibration, task), transform, batch_size)))
        offsets = clf.calibrate([reference])
        variants = [("itc", 0, None), (f"itc_calibrated_{calibration}", 0, offsets),
                    (f"itm_top{itm_top_k}", itm_top_k, None),
                    (f"itm_top{itm_top_k}_calibrated_{calibration}", itm_top_k, offsets)]
        for name, k, bias in variants:
            clf.itm_top_k, clf.bias = k, bias
            probs = torch.cat([clf.predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
            report = classification_report(labels, probs.cpu().numpy(), clf.names)
            row[name] = {k2: report[k2] for k2 in ("accuracy", "balanced_accuracy", "macro_f1", "auroc_macro_ovr",
                                                   "confusion_matrix")}
            row["baselines"], row["support"] = report["baselines"], report["support"]
        results[task] = {"n": len(items), **row}
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="pre-training or retrieval checkpoint")
    p.add_argument("--demo", required=True, help="demo set folder (python -m data.synthetic.demo --out ...)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--itm-top-k", type=int, default=2)
    p.add_argument("--itm-prompts", type=int, default=16, help="prompts per class the ITM re-scores (0: all)")
    p.add_argument("--calibrate-on", default="val", choices=("train", "val", "test"),
                   help="split whose images (not labels) calibrate the class scores")
    p.add_argument("--lists", default=None, help="also write labelled JSON lists of each task into this folder")
    p.add_argument("--options", nargs="+", default=[], help="config overrides (e.g. tokenizer=datasets/demo/tokenizer)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    demo = Path(args.demo)
    if args.lists:
        write_lists(Path(args.lists), demo, args.split)
    if args.checkpoint is None:
        return 0
    model, config = trained_model(args.checkpoint, None, args.options, args.device)
    print(json.dumps({"checkpoint": args.checkpoint, "split": args.split,
                      **measure(model, config, demo, args.split, args.itm_top_k, args.itm_prompts,
                                                 args.calibrate_on)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
