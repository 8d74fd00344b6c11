"""Retrieval evaluation speed: the fast path against BLIP's per-row loop, in the same run.

Both paths score the same model on the same generated images (2 captions each) and must give identical
metrics. Prints one JSON object per image size with both timings and their ratio.

    python -m bench.retrieval_eval --images 300 --image-sizes 384,224 --k-test 128
    python -m bench.retrieval_eval --size base --images 1000 --image-sizes 384 --k-test 256 --device cuda --bf16

``--size tiny|small|base`` takes the towers of ``bench/common.py`` (base: ViT-B/16 + BERT-base, random
weights) instead of ``--width``/``--vit-depth``/``--text-layers``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.common import SIZES, vit_value, write_text_config
from configs import validate
from data.datasets import RetrievalEvalDataset
from data.synthetic.demo import generate
from models import build_model, load_state
from models.evaluation import (candidate_pairs, encode_images, extract_features, fast_scores, itm_eval,
                               reference_scores)
from transform import build_transform


def text_config(folder: Path, width: int, layers: int, heads: int) -> str:
    path = folder / "med.json"
    path.write_text(json.dumps({"hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": heads,
                                "intermediate_size": 4 * width, "max_position_embeddings": 64}))
    return str(path)


def feats_for_overlap(model, ds, device, batch) -> torch.Tensor:
    f = extract_features(model, ds, device, batch)
    return f.image_feat @ f.text_feat.T


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_config(args, image_size: int, data: Path, folder: Path) -> dict:
    """Small random towers, or the sizes and weights of ``--checkpoint`` (resized to ``image_size``)."""
    if args.checkpoint:
        saved = load_state(args.checkpoint)["config"]
        keep = ("vit", "med_config", "tokenizer", "embed_dim", "max_length", "queue_size")
        return validate({**{k: saved[k] for k in keep}, "image_size": image_size, "init_lr": 1e-4, "max_epoch": 1,
                         "text_encoder": None, "pretrained": args.checkpoint, "k_test": args.k_test,
                         "batch_size_train": 8, "batch_size_test": args.batch, "itm_batch_size": args.itm_batch},
                        "retrieval", "bench config")
    if args.size:
        vit, med = vit_value(args.size), write_text_config(folder, args.size)
    else:
        vit = {"width": args.width, "depth": args.vit_depth, "heads": args.heads, "patch_size": 16}
        med = text_config(folder, args.width, args.text_layers, args.heads)
    return validate({
        "vit": vit, "image_size": image_size, "init_lr": 1e-4, "max_epoch": 1, "tokenizer": str(data / "tokenizer"),
        "text_encoder": None, "med_config": med,
        "max_length": 35, "k_test": args.k_test, "queue_size": 64, "batch_size_train": 8, "embed_dim": 64,
        "batch_size_test": args.batch, "itm_batch_size": args.itm_batch}, "retrieval", "bench config")


def run(args, image_size: int, data: Path, folder: Path, device: torch.device) -> dict:
    config = bench_config(args, image_size, data, folder)
    torch.manual_seed(0)
    model = build_model(config, "retrieval", load_weights=bool(args.checkpoint)).to(device).eval()
    ds = RetrievalEvalDataset(data / "test.json", build_transform(config, train=False), None, 30)

    def reference():
        f = extract_features(model, ds, device, args.batch, split_images=False)
        return reference_scores(model, f.image_embeds, f.image_feat, f.text_ids, f.text_mask, f.text_feat,
                                args.k_test, device)

    def fast():
        f = extract_features(model, ds, device, args.batch)
        return fast_scores(model, f, args.k_test, device, lambda i: encode_images(model, ds, i, device, args.batch)[0],
                           args.itm_batch)

    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
        fast()  # warm-up (allocator, kernels)
        fast_out, fast_s = timed(fast)
        ref_out, ref_s = timed(reference)
    sims = feats_for_overlap(model, ds, device, args.batch)
    ref_m = itm_eval(*ref_out, ds.txt2img, ds.img2txt)
    fast_m = itm_eval(*fast_out, ds.txt2img, ds.img2txt)
    return {"image_size": image_size, "image_tokens": model.visual_encoder.num_patches + 1, "images": len(ds),
            "texts": len(ds.text), "k_test": args.k_test, "checkpoint": args.checkpoint,
            "text_width": model.text_config.hidden_size, "text_layers": model.text_config.num_hidden_layers,
            "pairs_blip": int(min(args.k_test, sims.shape[1]) * sims.shape[0] + min(args.k_test, sims.shape[0]) * sims.shape[1]),
            "pairs_unique": int(len(candidate_pairs(sims, args.k_test)[0])),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "precision": "bf16" if args.bf16 else "fp32", "threads": torch.get_num_threads(),
            "max_score_diff": float(max(abs(a - b).max() for a, b in zip(fast_out, ref_out))),
            "reference_s": round(ref_s, 2), "fast_s": round(fast_s, 2),
            "speedup": round(ref_s / fast_s, 2), "metrics_identical": ref_m == fast_m,
            # Scores differ by float rounding only (max_score_diff); an untrained model's near-ties can
            # then swap places and move a recall by one item.
            "max_metric_diff": max(abs(ref_m[k] - fast_m[k]) for k in ref_m), "r_mean": fast_m["r_mean"],
            "r_mean_reference": ref_m["r_mean"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--image-sizes", default="384,224")
    parser.add_argument("--k-test", type=int, default=128)
    parser.add_argument("--width", type=int, default=128, help="width of both towers")
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--vit-depth", type=int, default=2)
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="images per feature batch")
    parser.add_argument("--itm-batch", type=int, default=256, help="pairs per ITM forward (fast path)")
    parser.add_argument("--checkpoint", default=None,
                        help="a training checkpoint of this project: its model sizes and weights are used")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default=None, choices=sorted(SIZES), help="tower sizes of bench/common.py")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for both paths")
    parser.add_argument("--data", default=None, help="folder for the generated set (python -m data.synthetic.demo "
                        "--out DIR --train 0 --val 0 --test IMAGES --seed 0 draws it beforehand); default: a temporary one")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # generate() skips a folder that already holds this very set (--data: drawn beforehand).
        data = generate(Path(args.data) if args.data else folder / "data", train=0, val=0, test=args.images, seed=0)
        for size in (int(s) for s in args.image_sizes.split(",")):
            print(json.dumps(run(args, size, data, folder, device)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
