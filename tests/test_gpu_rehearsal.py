"""What a GPU run does differently, rehearsed on the CPU: bf16 autocast, several ranks through torchrun and
the process group forced at world size 1, gradient checkpointing, shards, and retrieval evaluation, all
end to end; an evaluation that crashes keeps the epoch's training; the process group sees no host sync
per training step and identical queues on every rank; DDP syncs buffers once.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_retrieval
from data.shards import write_shards
from models.checkpoint import load_state
from tiny import demo_set, tiny_config
from utils import save_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.rehearsal

# Gradient checkpointing in both towers, bf16 autocast: what the GPU configs turn on.
GPU_LIKE = {"precision": "bf16", "vit_grad_ckpt": True, "vit_ckpt_layer": 1, "text_grad_ckpt": True}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_set(tmp_path_factory.mktemp("data"), train=16, val=5, test=6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: str, config: Path, out: Path, launch: str, *extra: str) -> subprocess.CompletedProcess:
    """Run a training script with 2 ranks under torchrun, or alone with its process group forced."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = [script, "--config", str(config), "--output_dir", str(out), "--device", "cpu", *extra]
    if launch == "torchrun-2":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
               str(_free_port()), *args]
    else:
        env.update(MEDVL_FORCE_DIST="1", MASTER_PORT=str(_free_port()))
        cmd = [sys.executable, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _epochs(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("launch", ["torchrun-2", "forced-1"])
def test_pretraining_from_shards_then_retrieval_with_evaluation_in_bf16(tmp_path, demo, launch):
    info = write_shards([demo / "pretrain.json"], tmp_path / "shards", shard_size=8)
    tok = str(demo / "tokenizer")
    pre = tiny_config(tmp_path, "pretrain", tok, train_file=[info["pattern"]], batch_size=4, **GPU_LIKE)
    save_config(pre, tmp_path / "pre.yaml")
    proc = _launch("pretrain.py", tmp_path / "pre.yaml", tmp_path / "pre", launch)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{1 if launch == 'forced-1' else 2} process(es) on cpu, process group gloo; precision bf16" in proc.stderr
    (epoch,) = _epochs(tmp_path / "pre")
    assert all(epoch[f"train_{k}"] > 0 for k in ("itc", "itm", "lm"))

    files = dict(train_file=[str(demo / "train.json")], val_file=str(demo / "val.json"),
                 test_file=str(demo / "test.json"))
    ret = tiny_config(tmp_path, "retrieval", tok, pretrained=str(tmp_path / "pre" / "checkpoint_last.pth"),
                      k_test=3, negative_all_rank=True, **files, **GPU_LIKE)
    save_config(ret, tmp_path / "ret.yaml")
    proc = _launch("train_retrieval.py", tmp_path / "ret.yaml", tmp_path / "ret", launch)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (epoch,) = _epochs(tmp_path / "ret")
    assert 0 <= epoch["test_r_mean"] <= 100 and epoch["train_itm"] > 0
    ckpt = load_state(tmp_path / "ret" / "checkpoint_last.pth")
    assert ckpt["state"]["epoch_done"] and ckpt["extra"]["best_epoch"] == 0


@pytest.mark.parametrize("k_test", [0, 3])
def test_retrieval_evaluation_under_bf16_autocast(tmp_path, demo, k_test):
    """bf16 similarities used to meet the fp32 score matrix: 'Index put requires the source and destination
    dtypes match', and with k_test 0 a bf16 tensor's .numpy(). Scores stay fp32, rankings close to fp32."""
    from data.datasets import RetrievalEvalDataset
    from models import build_model
    from models.evaluation import evaluate
    from transform import build_transform

    cfg = tiny_config(tmp_path, "retrieval", str(demo / "tokenizer"), k_test=k_test)
    torch.manual_seed(0)
    model = build_model(cfg, "retrieval", load_weights=False)
    ds = RetrievalEvalDataset(str(demo / "test.json"), build_transform(cfg, train=False), None, cfg["max_words"])
    device = torch.device("cpu")
    bf16 = evaluate(model, ds, device, k_test, batch_size=4, itm_batch_size=8, bf16=True)
    fp32 = evaluate(model, ds, device, k_test, batch_size=4, itm_batch_size=8, bf16=False)
    assert set(bf16) == set(fp32) and all(0 <= v <= 100 for v in bf16.values())
    assert abs(bf16["r_mean"] - fp32["r_mean"]) <= 20  # 6 images: one rank step moves recall by 16.7


def test_a_crash_in_evaluation_keeps_the_epochs_training(tmp_path, demo, monkeypatch):
    """The epoch's checkpoint is written before its evaluation; --resume auto then evaluates it without
    training again, and the epoch is logged once."""
    files = dict(train_file=[str(demo / "train.json")], val_file=str(demo / "val.json"),
                 test_file=str(demo / "test.json"))
    cfg = tiny_config(tmp_path, "retrieval", str(demo / "tokenizer"), k_test=3, **files)
    save_config(cfg, tmp_path / "ret.yaml")
    args = ["--config", str(tmp_path / "ret.yaml"), "--output_dir", str(tmp_path / "out")]
    real = train_retrieval.evaluate

    def crash(*a, **k):
        raise RuntimeError("evaluation died")

    monkeypatch.setattr(train_retrieval, "evaluate", crash)
    with pytest.raises(RuntimeError, match="evaluation died"):
        train_retrieval.main(args)
    ckpt = load_state(tmp_path / "out" / "checkpoint_last.pth")
    steps = ckpt["state"]["step"]
    assert steps == ckpt["state"]["global_step"] > 0 and not ckpt["state"]["epoch_done"]

    calls = []
    monkeypatch.setattr(train_retrieval, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert train_retrieval.main([*args, "--resume", "auto"]) == 0
    assert len(calls) == 2  # val and test, once
    (epoch,) = _epochs(tmp_path / "out")
    ckpt = load_state(tmp_path / "out" / "checkpoint_last.pth")
    assert ckpt["state"]["epoch_done"] and ckpt["state"]["global_step"] == steps  # no step trained again
    assert epoch["epoch"] == 0 and "test_r_mean" in epoch


def test_an_epochs_checkpoint_is_written_once_and_linked(tmp_path, demo):
    import pretrain

    cfg = tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"), train_file=[str(demo / "pretrain.json")],
                      max_epoch=1)
    save_config(cfg, tmp_path / "pre.yaml")
    assert pretrain.main(["--config", str(tmp_path / "pre.yaml"), "--output_dir", str(tmp_path / "out")]) == 0
    first, last = (os.stat(tmp_path / "out" / n) for n in ("checkpoint_00.pth", "checkpoint_last.pth"))
    assert (first.st_ino, first.st_dev) == (last.st_ino, last.st_dev)


def test_without_hard_links_the_second_name_is_a_copy(tmp_path, monkeypatch):
    from data.files import atomic_copy

    (tmp_path / "a.bin").write_bytes(b"weights")

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    atomic_copy(tmp_path / "a.bin", tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == b"weights"
    assert os.stat(tmp_path / "a.bin").st_ino != os.stat(tmp_path / "b.bin").st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]
