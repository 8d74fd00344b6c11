"""Does data loading bound training? Images/s through the training loader (decode, RandomResizedCrop,
flip, RandAugment, tokenization, collation) with 0, 2, 4 and 8 workers, on figures of real size.

Sets, each printed as JSON lines (one per set and worker count):

- ``fixtures``: the real PMC figures of ../shared/fixtures (image_caption/ and compound_figures/,
  about 500-1,700 px; SOURCES.md there), skipped with a note when that folder is absent;
- ``generated``: brain slices rendered at random sizes of 500-2,000 px, PNG and JPEG;
- ``generated_448``: the same PNGs after ``python -m data.resize --side 448`` (what to do when loading
  is the bottleneck).

Compare the images/s with the training step's (``bench/train_step.py``): when a step consumes images
faster than the loader with the workers you can spare makes them, pre-resize.

    python -m bench.dataload [--workers 0,2,4,8] [--batches 40] [--batch 16] [--images 48]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import tokenizer_folder
from configs import validate
from data.datasets import PairDataset, load_pairs
from data.loader import Collator
from data.resize import resize_list
from data.synthetic.demo import captions_for, draw_case
from models import init_tokenizer
from models.tokenizer import TextTokenizer
from transform import build_transform

FIXTURES = Path(os.environ.get("MEDVL_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))


def fixture_list(out: Path) -> Path | None:
    """A pair list of the fixtures' real figures (each with a stand-in caption), or None when absent."""
    figures = sorted((FIXTURES / "image_caption").glob("*.png")) + sorted((FIXTURES / "compound_figures").glob("*.jpg"))
    if not figures:
        return None
    path = out / "fixtures.json"
    path.write_text(json.dumps([{"image": str(f), "caption": "axial mri shows a mass in the left frontal lobe"}
                                for f in figures]))
    return path


def generated_list(out: Path, n: int, fmt: str, seed: int = 0) -> Path:
    """``n`` demo brain slices upsampled to random sizes of 500-2,000 px (with film grain, so they do not
    compress better than real scans), saved as ``fmt``."""
    rng = np.random.default_rng(seed)
    (out / fmt).mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        img, _, case = draw_case(rng, 160)
        w, h = (int(x) for x in rng.integers(500, 2001, size=2))
        big = np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC), dtype=np.float32)
        big = np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8)
        name = out / fmt / f"{i:04d}.{fmt}"
        Image.fromarray(np.stack([big] * 3, axis=-1)).save(name, **({"quality": 95} if fmt == "jpg" else {}))
        records.append({"image": str(name), "caption": captions_for(case)[0]})
    path = out / f"generated_{fmt}.json"
    path.write_text(json.dumps(records))
    return path


def loader_rate(list_path: Path, config: dict, tokenizer, workers: int, batch: int, batches: int) -> dict:
    """Images/s of the training loader over ``batches`` batches, worker start-up included (the time to
    the first batch is reported too). Workers prefetch two batches each, so ``batches`` must be several
    times the worker count for the rate to be the steady one."""
    from torch.utils.data import DataLoader, RandomSampler

    pairs, problems = load_pairs([list_path], None, config["max_words"])
    dataset = PairDataset(pairs, build_transform(config, train=True), seed=0)
    collate = Collator(TextTokenizer(tokenizer, config["max_length"]), config["laterality_negatives"])
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch * batches)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate)
    t0 = time.perf_counter()
    it = iter(loader)
    n = len(next(it)["images"])
    first = time.perf_counter() - t0
    n += sum(len(b["images"]) for b in it)
    elapsed = time.perf_counter() - t0
    sizes = [Image.open(p.image).size for p in pairs[:50]]
    return {"workers": workers, "images_per_s": round(n / elapsed, 2), "first_batch_s": round(first, 2),
            "images_timed": n, "files": len(pairs), "unreadable": len(problems),
            "median_pixels": int(np.median([w * h for w, h in sizes])), "max_side": max(max(s) for s in sizes)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="0,2,4,8")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=40, help="batches per run (several times the workers)")
    p.add_argument("--images", type=int, default=48, help="generated images per format")
    p.add_argument("--image-size", type=int, default=224, help="training resolution")
    args = p.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        folder, _ = tokenizer_folder(out)
        tokenizer = init_tokenizer(folder)
        config = validate({"train_file": ["unused.json"], "init_lr": 1e-4, "max_epoch": 1, "tokenizer": folder,
                           "image_size": args.image_size, "max_length": 30}, "pretrain", "bench config")
        sets = {"fixtures": fixture_list(out), "generated_png": generated_list(out, args.images, "png"),
                "generated_jpg": generated_list(out, args.images, "jpg", seed=1)}
        sets["generated_png_resized_448"] = resize_list(sets["generated_png"], out / "r448", 448)[0]
        for name, path in sets.items():
            if path is None:
                print(json.dumps({"set": name, "skipped": f"no figures under {FIXTURES} (SOURCES.md there says "
                                                          f"what they are); set MEDVL_FIXTURES to the folder"}))
                continue
            for w in workers:
                print(json.dumps({"set": name, "cpus": os.cpu_count(), "batch": args.batch,
                                  **loader_rate(path, config, tokenizer, w, args.batch, args.batches)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
