"""How exactly a trained checkpoint travels: transformers' BLIP and ONNX against this project's model, on real
images and captions of a JSON list (e.g. the demo set's test split). Prints JSON.

    python -m bench.share_parity --checkpoint output/demo_pretrain/checkpoint_last.pth \
        --images datasets/demo/test.json --out /tmp/share

Measured, all in fp32 on the CPU: the largest absolute differences of image and text features, ITC
similarities, ITM logits ([ENC] first) and whether greedy captions are identical (transformers loaded from
the exported folder vs this model, the same pixel tensors); the same through each side's own image
preprocessing (BlipProcessor vs ``EvalTransform``); the round trip of the state dict; onnxruntime vs torch
features, and whether the search rankings agree except among ties (scores equal within 1e-5).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from data.captions import pre_caption
from data.images import load_rgb
from models.embed import embed_images, embed_texts, rank
from models.export_hf import compare_with_transformers, export_hf
from models.export_onnx import export_onnx
from models.hf_import import load_hf_blip_state_dict
from models.checkpoint import load_state
from models.onnx_embed import embed_images as onnx_images, embed_texts as onnx_texts, load_onnx_towers
from transform.pipeline import EvalTransform


def _records(path: Path, limit: int) -> list[tuple[Path, str]]:
    rows = json.loads(path.read_text(encoding="utf-8"))[:limit]
    out = []
    for r in rows:
        caption = r["caption"][0] if isinstance(r["caption"], list) else r["caption"]
        out.append((path.parent / r["image"], caption))
    return out


def _non_tie_swaps(queries: torch.Tensor, bank: torch.Tensor, other_q: torch.Tensor, other_b: torch.Tensor) -> int:
    """Positions where the two rankings put different entries whose scores differ by more than 1e-5."""
    _, a = rank(queries, bank, k=bank.shape[0])
    _, b = rank(other_q, other_b, k=bank.shape[0])
    scores = queries @ bank.T
    rows, cols = (a != b).nonzero(as_tuple=True)
    return int(sum(abs(scores[i, a[i, j]] - scores[i, b[i, j]]) > 1e-5 for i, j in zip(rows.tolist(), cols.tolist())))


def _beam_agreement(model, folder: Path, images: torch.Tensor, max_length: int) -> str:
    """How many beam-search captions (3 beams, min length 5) transformers and this model make identical."""
    from transformers import BlipForConditionalGeneration

    from models.generate import generate_ids, prompt_ids

    tok = model.tokenizer
    gen = BlipForConditionalGeneration.from_pretrained(str(folder)).eval()
    theirs = gen.generate(pixel_values=images, num_beams=3, max_length=max_length, min_length=5)
    ours = generate_ids(model.text_decoder, model.encode_image(images)[0], prompt_ids(tok), tok.sep_token_id,
                        tok.pad_token_id, max_length, 5, num_beams=3)
    strip = lambda rows: [[t for t in r if t != tok.pad_token_id] for r in rows.tolist()]  # noqa: E731
    same = sum(a == b for a, b in zip(strip(theirs), strip(ours)))
    return f"{same} of {len(images)}"


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--images", required=True, help="JSON list of {image, caption} records")
    p.add_argument("--out", required=True, help="folder for the exported models (hf/, onnx/)")
    p.add_argument("--limit", type=int, default=100, help="records used")
    p.add_argument("--max-length", dest="max_length", type=int, default=30)
    args = p.parse_args(argv)
    out = Path(args.out)
    hf_dir, model, task = export_hf(args.checkpoint, out / "hf", overwrite=True)
    onnx_dir, onnx_diffs = export_onnx(args.checkpoint, out / "onnx", overwrite=True)
    config = load_state(args.checkpoint)["config"]
    records = _records(Path(args.images), args.limit)
    transform = EvalTransform(int(model.config.image_size))
    pil = [load_rgb(path) for path, _ in records]
    images = torch.stack([transform(im) for im in pil])
    texts = [pre_caption(c, config["max_words"]) for _, c in records]
    report: dict = {"checkpoint": args.checkpoint, "task": task, "images": len(records)}
    report["transformers_same_pixels"] = compare_with_transformers(model, hf_dir, images, texts, args.max_length)
    report["transformers_same_pixels"].pop("captions", None)
    if task == "pretrain":
        report["beam3_captions_identical"] = _beam_agreement(model, hf_dir, images, args.max_length)
    from transformers import BlipProcessor

    hf_pixels = BlipProcessor.from_pretrained(str(hf_dir))(images=pil, return_tensors="pt")["pixel_values"]
    own = model.encode_image(images)[1]
    theirs = model.encode_image(hf_pixels)[1]
    report["preprocessing"] = {"pixels_max_abs_diff": (hf_pixels - images).abs().max().item(),
                               "image_feat_max_abs_diff": (own - theirs).abs().max().item()}
    state = load_state(args.checkpoint)["model"]
    back = load_hf_blip_state_dict(hf_dir)
    report["round_trip_identical"] = set(back) == set(state) and all(torch.equal(back[k], v) for k, v in state.items())
    towers = load_onnx_towers(onnx_dir)
    batches = [images[i:i + 16] for i in range(0, len(images), 16)]
    ti, oi = embed_images(model, batches), onnx_images(towers, batches)
    tt, ot = embed_texts(model, texts, 64), onnx_texts(towers, texts, 64)
    report["onnx"] = {"export_check": onnx_diffs, "image_feat": (ti - oi).abs().max().item(),
                      "text_feat": (tt - ot).abs().max().item(),
                      "text_to_image_non_tie_swaps": _non_tie_swaps(tt, ti, ot, oi),
                      "image_to_text_non_tie_swaps": _non_tie_swaps(ti, tt, oi, ot),
                      "top1_agree": float((rank(tt, ti, 1)[1] == rank(ot, oi, 1)[1]).float().mean())}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
