"""No network, an empty Hugging Face cache: every config that names a hub model stops at once with what to do
(exit 2, one line), the demo configs still run, and a tokenizer that does not fit the weights is refused."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from configs import load_config
from models import BlipRetrieval, init_tokenizer, load_checkpoint
from models.config import ModelSetupError
from models.hub import require_hub_name
from tiny import demo_set, minilm_folder, tiny_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.rehearsal
SCRIPTS = {"pretrain": "pretrain.py", "retrieval": "train_retrieval.py"}


def _hub_configs() -> list[tuple[str, str]]:
    """(config file, task) of every shipped config that names a hub model rather than a folder."""
    found = []
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        task = "retrieval" if "retrieval" in path.name else "pretrain"
        config = load_config(path, task)
        if any(config[k] and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", config[k]) and not (ROOT / config[k]).is_dir()
               for k in ("tokenizer", "text_encoder")):
            found.append((path.name, task))
    return found


def _offline_env(tmp_path: Path, **extra: str) -> dict:
    return dict(os.environ, HF_HOME=str(tmp_path / "empty_hf"), PYTHONPATH=str(ROOT), **extra)


def test_the_shipped_gpu_configs_name_hub_models():
    assert {name for name, _ in _hub_configs()} >= {"pretrain.yaml", "pretrain_blip.yaml", "retrieval_coco.yaml"}


@pytest.mark.slow
@pytest.mark.parametrize("name,task", _hub_configs())
def test_every_hub_config_stops_at_once_offline(tmp_path, name, task):
    proc = subprocess.run([sys.executable, SCRIPTS[task], "--config", f"configs/{name}", "--output_dir",
                           str(tmp_path / "out"), "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                          env=_offline_env(tmp_path, HF_HUB_OFFLINE="1"), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [l for l in proc.stderr.splitlines() if "error:" in l]
    assert "`tokenizer: bert-base-uncased` is a hub name, HF_HUB_OFFLINE is set" in line
    assert "save_pretrained" in line and "Traceback" not in proc.stderr


def test_an_unreachable_hub_is_named_without_retrying(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE and no network: the hub is probed once (here a closed local port) instead of
    huggingface_hub retrying for minutes per process."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelSetupError, match="cannot be reached .*text_encoder:"):
        require_hub_name("bert-base-uncased", "text_encoder", "config.json")


def test_transformers_offline_fallback_tokenizer_is_refused(tmp_path, monkeypatch):
    """What transformers returns for a hub name it could not fetch (the special tokens alone) is refused,
    also when it comes from a folder."""
    folder = tmp_path / "five_tokens"
    folder.mkdir()
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    with pytest.raises(ModelSetupError, match="0 word pieces besides its special tokens"):
        init_tokenizer(str(folder))
    assert len(init_tokenizer(minilm_folder())) == 30524  # a real vocabulary passes


@pytest.mark.slow
def test_the_demo_runs_offline_with_an_empty_cache(tmp_path):
    demo = demo_set(tmp_path, train=8, val=2, test=2)
    opts = [f"train_file=[{demo / 'pretrain.json'}]", f"tokenizer={demo / 'tokenizer'}", "max_epoch=1",
            "num_workers=0", "batch_size=4", "vit={width: 32, depth: 1, heads: 2}", "image_size=32"]
    proc = subprocess.run([sys.executable, "pretrain.py", "--config", "configs/demo_pretrain.yaml", "--output_dir",
                           str(tmp_path / "out"), "--device", "cpu", "--options", *opts], cwd=ROOT, capture_output=True,
                          text=True, env=_offline_env(tmp_path, HF_HUB_OFFLINE="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "checkpoint_last.pth").is_file()


def _saved_with_vocabulary(tmp_path: Path, tokenizer, extra_tokens: int) -> Path:
    """A retrieval checkpoint whose per-token tensors have ``extra_tokens`` more rows than ``tokenizer``."""
    cfg = tiny_config(tmp_path, "retrieval", minilm_folder())
    model = BlipRetrieval(cfg, tokenizer)
    state = model.state_dict()
    for key in [k for k in state if "word_embeddings" in k]:
        rows = state[key]
        state[key] = torch.cat([rows, torch.randn(extra_tokens, rows.shape[1])]) if extra_tokens > 0 else rows[:extra_tokens]
    path = tmp_path / f"vocab{extra_tokens:+d}.pth"
    torch.save({"model": state}, path)
    return path


def test_a_checkpoint_of_a_larger_vocabulary_is_refused(tmp_path):
    tokenizer = init_tokenizer(minilm_folder())
    path = _saved_with_vocabulary(tmp_path, tokenizer, extra_tokens=3)
    cfg = tiny_config(tmp_path, "retrieval", minilm_folder())
    with pytest.raises(ModelSetupError, match="vocabulary of 30527 tokens .* the tokenizer gives 30524"):
        load_checkpoint(BlipRetrieval(cfg, tokenizer), str(path))


def test_a_checkpoint_of_a_smaller_vocabulary_keeps_its_rows(tmp_path):
    """Tokens added at the end (a grown tokenizer) keep every saved id: the saved rows load, the new
    rows keep the model's initialisation."""
    tokenizer = init_tokenizer(minilm_folder())
    path = _saved_with_vocabulary(tmp_path, tokenizer, extra_tokens=-2)
    saved = torch.load(path, weights_only=True)["model"]["text_encoder.embeddings.word_embeddings.weight"]
    model = BlipRetrieval(tiny_config(tmp_path, "retrieval", minilm_folder()), tokenizer)
    initial = model.text_encoder.embeddings.word_embeddings.weight.detach().clone()
    load_checkpoint(model, str(path))
    rows = model.text_encoder.embeddings.word_embeddings.weight.detach()
    assert torch.equal(rows[:30522], saved) and torch.equal(rows[30522:], initial[30522:])
