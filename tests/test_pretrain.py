"""pretrain.py end to end: one process, two processes under torchrun (gloo), kill and resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pretrain
from utils import save_config
from tiny import demo_set, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_set(tmp_path_factory.mktemp("data"))


def write_config(tmp_path, demo, **overrides) -> Path:
    overrides.setdefault("train_file", [str(demo / "pretrain.json")])
    cfg = tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"), **overrides)
    path = tmp_path / "tiny.yaml"
    save_config(cfg, path)
    return path


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]


def env() -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    e.pop("RANK", None)
    return e


def test_one_process_run_writes_config_log_and_checkpoints(tmp_path, demo):
    cfg = write_config(tmp_path, demo, max_epoch=2, log_every_steps=3)
    out = tmp_path / "out"
    assert pretrain.main(["--config", str(cfg), "--output_dir", str(out), "--options", "init_lr=2e-3"]) == 0
    lines = read_log(out)
    epochs = [l for l in lines if "step" not in l]
    assert [l["epoch"] for l in epochs] == [0, 1]
    assert any("step" in l for l in lines)  # per-step lines too
    for l in epochs:
        assert isinstance(l["train_itc"], float) and isinstance(l["train_lm"], float) and l["bad_records"] == 0
    ckpt = torch.load(out / "checkpoint_01.pth", weights_only=True)
    assert {"model", "optimizer", "config", "epoch", "state", "rng"} <= set(ckpt)
    assert ckpt["config"]["init_lr"] == 2e-3 and ckpt["epoch"] == 1
    assert "text_decoder.cls.predictions.decoder.weight" in ckpt["model"]
    assert (out / "config.yaml").read_text().count("init_lr: 0.002") == 1
    assert (out / "checkpoint_00.pth").is_file() and (out / "checkpoint_last.pth").is_file()


def test_loss_falls_on_the_demo_set(tmp_path, demo):
    cfg = write_config(tmp_path, demo, max_epoch=4, init_lr=2e-3, warmup_steps=0, min_scale=0.8, randaugment=False)
    out = tmp_path / "out"
    pretrain.main(["--config", str(cfg), "--output_dir", str(out)])
    lines = read_log(out)
    total, lm = [l["train_loss"] for l in lines], [l["train_lm"] for l in lines]
    assert total[-1] < 0.9 * total[0] and lm[-1] < 0.85 * lm[0], lines


def run_cli(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_torchrun_two_processes_gloo(tmp_path, demo):
    cfg = write_config(tmp_path, demo, max_epoch=1)
    out = tmp_path / "out"
    proc = run_cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "pretrain.py",
                    "--config", str(cfg), "--output_dir", str(out)])
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert "2 process(es)" in output
    (line,) = read_log(out)
    assert line["epoch"] == 0 and line["train_itm"] > 0
    ckpt = torch.load(out / "checkpoint_last.pth", weights_only=True)
    assert len(ckpt["rng"]) == 2  # every rank's RNG state, for an exact resume
    # 16 images x 2 captions, batch 4 per process: 4 steps, each enqueuing 8 gathered features.
    assert ckpt["model"]["queue_ptr"].item() == (4 * 8) % 12


def final_weights(out: Path) -> dict:
    return torch.load(out / "checkpoint_last.pth", weights_only=True)["model"]


def test_killed_run_resumes_to_identical_weights(tmp_path, demo):
    cfg = write_config(tmp_path, demo, max_epoch=2, save_every_steps=1)
    args = ["pretrain.py", "--config", str(cfg)]
    ref = tmp_path / "ref"
    done = run_cli(args + ["--output_dir", str(ref)])
    assert done.wait(timeout=300) == 0, done.stdout.read()[-3000:]

    out = tmp_path / "killed"
    victim = run_cli(args + ["--output_dir", str(out)])
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:  # kill in the middle of epoch 0
        last = out / "checkpoint_last.pth"
        if last.is_file() and torch.load(last, weights_only=True)["state"]["global_step"] >= 3:
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    state = torch.load(out / "checkpoint_last.pth", weights_only=True)["state"]
    assert state["epoch"] == 0 and 3 <= state["step"] < 8
    resumed = run_cli(args + ["--output_dir", str(out), "--resume", "auto"])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-3000:]
    assert "resumed from" in output
    a, b = final_weights(ref), final_weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after kill and resume"


def test_bad_records_are_counted_and_too_many_stop_the_run(tmp_path, demo):
    """Records whose image header is unusable are left out before step one (the pre-flight check);
    those that fail only when decoded (a truncated JPEG) are replaced during the epoch and counted."""
    from data.datasets import DatasetError

    records = [{**r, "image": str(demo / r["image"])} for r in json.loads((demo / "pretrain.json").read_text())]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG garbage")
    jpeg = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size * 3 // 4])  # a sound header, pixels cut off
    records += [{"image": str(broken), "caption": "broken"}] * 3 + [{"image": str(jpeg), "caption": "cut"}] * 8
    data = tmp_path / "mixed.json"
    data.write_text(json.dumps(records))
    cfg = write_config(tmp_path, demo, train_file=[str(data)], max_bad_fraction=0.5)
    out = tmp_path / "ok"
    assert pretrain.main(["--config", str(cfg), "--output_dir", str(out)]) == 0
    (line,) = read_log(out)
    assert line["bad_records"] >= 1  # the truncated JPEG: replaced by other samples and counted
    cfg = write_config(tmp_path, demo, train_file=[str(data)], max_bad_fraction=0.0)
    with pytest.raises(DatasetError, match="max_bad_fraction"):  # the pre-flight check, before step one
        pretrain.main(["--config", str(cfg), "--output_dir", str(tmp_path / "strict")])


def test_freeze_vit_trains_everything_but_the_image_towers(tmp_path, demo):
    from models import build_model

    config = tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"))
    start = build_model(config, "pretrain").state_dict()
    torch.save({"model": start}, tmp_path / "start.pth")
    cfg = write_config(tmp_path, demo, max_epoch=1, freeze_vit=True, warmup_steps=0,
                       pretrained=str(tmp_path / "start.pth"))
    out = tmp_path / "out"
    assert pretrain.main(["--config", str(cfg), "--output_dir", str(out)]) == 0
    trained = torch.load(out / "checkpoint_00.pth", weights_only=True)["model"]
    vit = [k for k in start if k.startswith(("visual_encoder.", "visual_encoder_m."))]
    assert vit and all(torch.equal(start[k], trained[k]) for k in vit)
    for k in ("itm_head.weight", "vision_proj.weight", "text_encoder.encoder.layer.0.crossattention.self.key.weight"):
        assert not torch.equal(start[k], trained[k]), k
