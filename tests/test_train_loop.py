"""The shared training loop: schedules, alpha ramp, weight-decay groups, the non-finite guard."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import engine
import utils
from configs import validate
from tiny import ListLoader

BASE = {"train_file": ["x.json"], "init_lr": 3e-4, "min_lr": 1e-6, "warmup_lr": 1e-6, "warmup_steps": 100,
        "max_epoch": 20, "print_freq": 1000}


def test_lr_schedule_matches_blip():
    cfg = validate(BASE, "pretrain")
    assert utils.lr_at(cfg, 0, 0) == pytest.approx(1e-6)
    assert utils.lr_at(cfg, 0, 50) == pytest.approx(1e-6 + (3e-4 - 1e-6) * 0.5)
    assert utils.lr_at(cfg, 0, 100) == pytest.approx(3e-4)
    assert utils.lr_at(cfg, 1, 0) == pytest.approx(2.7e-4)
    assert utils.lr_at(cfg, 19, 5) == pytest.approx(3e-4 * 0.9 ** 19)
    cos = validate({**BASE, "schedule": "cosine", "warmup_steps": 0, "min_lr": 0.0, "max_epoch": 6}, "pretrain")
    assert [round(utils.lr_at(cos, e, 0), 12) for e in range(6)] == \
        [round(3e-4 * 0.5 * (1 + math.cos(math.pi * e / 6)), 12) for e in range(6)]


def test_alpha_ramp():
    cfg = validate(BASE, "pretrain")  # two epochs
    assert utils.alpha_at(cfg, 0, 0, 10) == 0.0
    assert utils.alpha_at(cfg, 1, 0, 10) == pytest.approx(0.2)
    assert utils.alpha_at(cfg, 2, 3, 10) == pytest.approx(0.4)


class Toy(nn.Module):
    """A model whose loss can be made non-finite on demand."""

    def __init__(self):
        super().__init__()
        self.w = nn.Linear(2, 2)
        self.norm = nn.LayerNorm(2)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.poison = 0

    def forward(self, images, text, alpha):
        loss = self.norm(self.w(images)).pow(2).mean() + self.temp
        if self.poison:
            self.poison -= 1
            loss = loss * float("nan")
        return {"itc": loss}


def test_no_weight_decay_on_biases_norms_and_temperature():
    cfg = validate(BASE, "pretrain")
    groups = engine.build_optimizer(Toy(), cfg).param_groups
    assert [len(g["params"]) for g in groups] == [1, 4] and groups[1]["weight_decay"] == 0.0
    blip = validate({**BASE, "weight_decay_all": True}, "pretrain")
    assert [len(g["params"]) for g in engine.build_optimizer(Toy(), blip).param_groups] == [5]


def batches(n):
    for _ in range(n):
        yield {"images": torch.randn(3, 2), "input_ids": torch.zeros(3, 4, dtype=torch.long),
               "attention_mask": torch.ones(3, 4, dtype=torch.long), "image_ids": torch.arange(3), "bad": 0}


def test_non_finite_steps_are_skipped_then_stop_the_run():
    cfg = validate({**BASE, "max_nonfinite_steps": 3}, "pretrain")
    model = Toy()
    opt = engine.build_optimizer(model, cfg)
    model.poison = 2  # two bad steps, then good ones
    before = model.w.weight.detach().clone()
    state = engine.TrainState()
    stats, _ = engine.train_one_epoch(model, ListLoader(batches(2)), opt, cfg, state, torch.device("cpu"))
    assert torch.equal(model.w.weight, before) and state.nonfinite == 2 and stats == {}
    engine.train_one_epoch(model, ListLoader(batches(1)), opt, cfg, state, torch.device("cpu"))
    assert not torch.equal(model.w.weight, before) and state.nonfinite == 0
    model.poison = 5
    with pytest.raises(utils.TrainingDataError, match="3 non-finite losses in a row"):
        engine.train_one_epoch(model, ListLoader(batches(5)), opt, cfg, state, torch.device("cpu"))


def test_a_step_reads_nothing_back_until_the_meters_are_read(monkeypatch, caplog):
    """Losses, the finite flag and the skip stay on the device; the host reads them once per progress
    line (here every 3 steps), in one transfer, and the bad-record count once at the end of the epoch. A
    skipped step is still found and named."""
    cfg = validate({**BASE, "print_freq": 3, "log_every_steps": 0, "save_every_steps": 0}, "pretrain")
    model = Toy()
    opt = engine.build_optimizer(model, cfg)
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "cpu"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _name=name, _original=original, **k):
            reads.append(_name)
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    model.poison = 0
    steps = iter(range(100))

    def forward(images, text, alpha, _forward=model.forward):
        out = _forward(images, text, alpha)
        return {"itc": out["itc"] * float("nan")} if next(steps) == 4 else out
    model.forward = forward
    state = engine.TrainState()
    with caplog.at_level("WARNING"):
        stats, _ = engine.train_one_epoch(model, ListLoader(batches(6)), opt, cfg, state, torch.device("cpu"))
    monkeypatch.undo()
    assert reads == ["tolist", "tolist", "item"]  # two progress lines, then the epoch's bad-record count
    assert "non-finite loss at epoch 0 step 4: step skipped (1 in a row)" in caplog.text
    assert opt.state[model.w.weight]["step"].item() == 5 and math.isfinite(stats["loss"])


def test_optimizers_without_a_device_side_skip_still_skip():
    cfg = validate({**BASE, "max_nonfinite_steps": 3}, "pretrain")
    model = Toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.poison = 1
    before = model.w.weight.detach().clone()
    state = engine.TrainState()
    engine.train_one_epoch(model, ListLoader(batches(1)), opt, cfg, state, torch.device("cpu"))
    assert torch.equal(model.w.weight, before) and state.nonfinite == 1


def test_resume_auto_follows_progress_not_file_times(tmp_path):
    """A copied run folder has arbitrary file times: --resume auto must still pick the furthest checkpoint."""
    import os

    model = nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    for name, step in (("checkpoint_00.pth", 50), ("checkpoint_01.pth", 100), ("checkpoint_last.pth", 120)):
        state = engine.TrainState(epoch=step // 50, step=step % 50, global_step=step)
        engine.save_checkpoint([tmp_path / name], model, optimizer, {}, state)
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint_best.pth")  # weights only: passed over
    (tmp_path / "checkpoint_bad.pth").write_bytes(b"not a checkpoint")
    for age, name in enumerate(("checkpoint_last.pth", "checkpoint_01.pth", "checkpoint_00.pth")):
        os.utime(tmp_path / name, ns=(10**18 + age * 10**9, 10**18 + age * 10**9))  # the oldest file is furthest
    assert engine.find_resume("auto", tmp_path) == tmp_path / "checkpoint_last.pth"
    (tmp_path / "checkpoint_last.pth").unlink()
    assert engine.find_resume("auto", tmp_path) == tmp_path / "checkpoint_01.pth"
    assert engine.find_resume("auto", tmp_path / "empty") is None


def read_events(folder):
    """Every scalar TensorBoard holds under ``folder``: {tag: [(step, value), ...]}; skips without tensorboard."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_the_numbers_of_log_txt(tmp_path):
    pytest.importorskip("tensorboard")
    run_log = utils.RunLog(tmp_path, "tensorboard")
    run_log.write({"epoch": 0, "step": 3, "global_step": 3, "train_loss": 2.5})
    run_log.write({"epoch": 0, "train_loss": 2.0, "val_r_mean": 10.0, "bad_records": 0})
    run_log.write({"epoch": 1, "train_loss": 1.5, "val_r_mean": 12.5, "bad_records": 0})
    run_log.close()
    lines = [__import__("json").loads(x) for x in (tmp_path / "log.txt").read_text().splitlines()]
    assert [x.get("train_loss") for x in lines] == [2.5, 2.0, 1.5]
    scalars = read_events(tmp_path / "tensorboard")
    assert scalars["epoch/val_r_mean"] == [(0, 10.0), (1, 12.5)] and scalars["step/train_loss"] == [(3, 2.5)]
    assert utils.RunLog(tmp_path / "none").writer is None  # off by default


def test_other_ranks_write_neither_log_nor_tensorboard(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setattr(utils, "is_main", lambda: False)
    run_log = utils.RunLog(tmp_path, "tensorboard")
    run_log.write({"epoch": 0, "train_loss": 2.0})
    run_log.close()
    assert list(tmp_path.iterdir()) == []


def test_a_pretraining_run_logs_the_keys_of_log_txt_to_tensorboard(tmp_path):
    import json

    import pretrain
    from tiny import demo_set, tiny_config

    pytest.importorskip("tensorboard")
    demo = demo_set(tmp_path / "data", train=4, val=1, test=1)
    config = tmp_path / "tiny.yaml"
    utils.save_config(tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"),
                                  train_file=[str(demo / "pretrain.json")], log_every_steps=2), config)
    out = tmp_path / "out"
    assert pretrain.main(["--config", str(config), "--output_dir", str(out), "--options", "report_to=tensorboard"]) == 0
    expected: dict[str, list] = {}
    for line in (out / "log.txt").read_text().splitlines():
        record = json.loads(line)
        per_step = "global_step" in record
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "step"):
                x = record["global_step"] if per_step else record["epoch"]
                expected.setdefault(f"{'step' if per_step else 'epoch'}/{key}", []).append((x, value))
    scalars = read_events(out / "tensorboard")
    assert any(tag.startswith("step/") for tag in expected) and "epoch/train_loss" in expected
    assert set(scalars) == set(expected)
    for tag, points in expected.items():  # event files store float32
        assert [s for s, _ in scalars[tag]] == [s for s, _ in points], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag
