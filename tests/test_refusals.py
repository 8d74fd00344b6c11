"""The training scripts' refusals, run as a user runs them: each prints one line naming the folder, file or
key and exits with its code from data/errors.py, never a traceback."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from data import errors
from data.files import FolderLock
from tiny import demo_set, tiny_config
from utils import save_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_set(tmp_path_factory.mktemp("data"), train=8, val=2, test=2)


def _config(tmp_path: Path, demo: Path, **overrides) -> Path:
    overrides = {"train_file": [str(demo / "pretrain.json")], **overrides}
    cfg = tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"), **overrides)
    save_config(cfg, tmp_path / "run.yaml")
    return tmp_path / "run.yaml"


def _file_size_limit(max_bytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG, as a full disk's ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def _pretrain(config: Path, out: Path, *extra: str, max_bytes: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "pretrain.py", "--config", str(config), "--output_dir", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                          preexec_fn=_file_size_limit(max_bytes) if max_bytes else None)


def _one_line(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [l for l in proc.stderr.splitlines() if l.startswith("pretrain.py: error:")]
    return line


@pytest.mark.slow
def test_output_folder_refusals(tmp_path, demo):
    config = _config(tmp_path, demo)
    out = tmp_path / "out"
    assert _pretrain(config, out).returncode == 0
    line = _one_line(_pretrain(config, out), errors.OUTPUT_REFUSED)  # a fresh run over a finished folder
    assert "already holds checkpoints" in line and "--resume auto" in line and "--overwrite" in line

    for path in out.glob("checkpoint_*.pth"):
        path.write_bytes(b"not a checkpoint")
    line = _one_line(_pretrain(config, out, "--resume", "auto"), errors.OUTPUT_REFUSED)
    assert "no checkpoint in" in line and "can be resumed from" in line

    lock = FolderLock(tmp_path / "held", "training run")
    lock.acquire()
    try:
        line = _one_line(_pretrain(config, tmp_path / "held"), errors.OUTPUT_REFUSED)
        assert str(os.getpid()) in line
    finally:
        lock.release()


@pytest.mark.slow
def test_a_full_disk_at_save_is_one_line_and_nothing_half_written(tmp_path, demo):
    config = _config(tmp_path, demo)
    out = tmp_path / "out"
    line = _one_line(_pretrain(config, out, max_bytes=200_000), errors.WRITE_FAILED)
    assert "could not write" in line and "checkpoint_00.pth" in line and "--resume auto" in line
    assert not list(out.glob("checkpoint_*.pth")) and not list(out.glob(".tmp-*"))


def test_too_many_bad_records_stop_before_step_one(tmp_path, demo):
    records = json.loads((demo / "pretrain.json").read_text())
    for r in records[:4]:
        r["image"] = "images/absent.png"
    (tmp_path / "bad.json").write_text(json.dumps(records))
    config = _config(tmp_path, demo, train_file=[str(tmp_path / "bad.json")], max_bad_fraction=0.1)
    line = _one_line(_pretrain(config, tmp_path / "out"), errors.BAD_INPUT)
    assert "train_file" in line and "max_bad_fraction" in line and "absent.png" in line
    assert not list((tmp_path / "out").glob("checkpoint_*.pth"))


def test_a_bad_config_key_is_named(tmp_path, demo):
    config = _config(tmp_path, demo)
    line = _one_line(_pretrain(config, tmp_path / "out", "--options", "init_lr=-1"), errors.BAD_INPUT)
    assert "init_lr" in line
