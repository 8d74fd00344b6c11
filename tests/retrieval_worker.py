"""Computes retrieval scores with the fast path and with BLIP's reference loop in one process group.

    PYTHONPATH=. python -m torch.distributed.run --standalone --nproc_per_node=N tests/retrieval_worker.py \
        CONFIG.yaml TEST.json OUT.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from configs import load_config
from data.datasets import RetrievalEvalDataset
from models import build_model
from models.distributed import get_rank, get_world_size
from models.evaluation import encode_images, extract_features, fast_scores, itm_eval, reference_scores
from transform import build_transform
from utils import cleanup_distributed, init_distributed


def run(config_path: str, test_file: str, out: str | None = None) -> dict:
    info = init_distributed("cpu")
    config = load_config(config_path, "retrieval")
    torch.manual_seed(0)  # the same random weights on every rank
    model = build_model(config, "retrieval", load_weights=False).eval()
    ds = RetrievalEvalDataset(test_file, build_transform(config, train=False), None, config["max_words"])
    device = info.device
    full = extract_features(model, ds, device, 4, split_images=False)
    ref = reference_scores(model, full.image_embeds, full.image_feat, full.text_ids, full.text_mask, full.text_feat,
                           config["k_test"], device)
    feats = extract_features(model, ds, device, 4)
    fast = fast_scores(model, feats, config["k_test"], device,
                       lambda idx: encode_images(model, ds, idx, device, 4)[0], batch_size=5)
    result = {
        "world": get_world_size(), "sims": (full.image_feat @ full.text_feat.T).tolist(),
        "ref": [m.tolist() for m in ref], "fast": [m.tolist() for m in fast],
        "ref_metrics": itm_eval(*ref, ds.txt2img, ds.img2txt), "fast_metrics": itm_eval(*fast, ds.txt2img, ds.img2txt),
    }
    if out and get_rank() == 0:
        Path(out).write_text(json.dumps(result))
    cleanup_distributed()
    return result


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], sys.argv[3])
