"""Runs under real faults: a locked or occupied output folder, kills at an epoch boundary, SIGTERM,
full disks, corrupt checkpoints, frozen ranks, bad config values, and bit-exact resume under
``deterministic: true`` with loader workers and threads."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pretrain
import train_retrieval
import engine
import utils
from data import errors
from configs import ConfigError, validate
from data.files import FolderLock, FolderLockedError
from tiny import demo_set, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_set(tmp_path_factory.mktemp("data"))


def write_config(tmp_path: Path, demo: Path, **overrides) -> Path:
    overrides.setdefault("train_file", [str(demo / "pretrain.json")])
    cfg = tiny_config(tmp_path, "pretrain", str(demo / "tokenizer"), **overrides)
    path = tmp_path / "tiny.yaml"
    utils.save_config(cfg, path)
    return path


def env(**extra: str) -> dict:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}
    e.pop("RANK", None)
    return e


def start(args: list[str], new_session: bool = False, **env_extra: str) -> subprocess.Popen:
    """``new_session``: the run leads a process group of its own (with its loader workers), as a job step
    under SLURM or a rank under torchrun does, so that ``os.killpg`` reaches the whole run and no more."""
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env(**env_extra), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=new_session)


def read_until(run: subprocess.Popen, text: str, timeout: float = 240) -> str:
    """The run's output up to the first line that holds ``text`` (all of it if the run ends first)."""
    seen = ""
    deadline = time.time() + timeout
    while time.time() < deadline and text not in seen:
        line = run.stdout.readline()
        if not line:
            break
        seen += line
    return seen


@pytest.fixture
def own_signal_handlers():
    """In-process runs install their StopRequest over pytest's handlers: put those back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


# -- the output folder ----------------------------------------------------------------------------------


def test_a_folder_held_by_a_live_process_is_refused_and_a_dead_owner_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom data.files import FolderLock\n"
                               f"FolderLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=f"in use by another run \\(process {holder.pid} on "):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = FolderLock(tmp_path)
    notes = lock.acquire()  # the holder died without releasing: its lock is stale
    assert notes and f"process {holder.pid}" in notes[0] and "no longer running" in notes[0]
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_a_fresh_run_never_overwrites_another_runs_checkpoints(tmp_path, demo):
    cfg = write_config(tmp_path, demo, max_epoch=1)
    out = tmp_path / "out"
    assert pretrain.main(["--config", str(cfg), "--output_dir", str(out)]) == 0
    before = (out / "checkpoint_00.pth").read_bytes()
    with pytest.raises(RuntimeError, match="already holds checkpoints.*--resume auto.*--overwrite"):
        pretrain.main(["--config", str(cfg), "--output_dir", str(out)])
    assert (out / "checkpoint_00.pth").read_bytes() == before
    assert not (out / ".lock").exists()  # the refused run let go of the folder
    (out / ".tmp-checkpoint_last.pth.abc.pth").write_bytes(b"half a checkpoint")  # a killed save's leftover
    assert pretrain.main(["--config", str(cfg), "--output_dir", str(out), "--overwrite"]) == 0
    assert not list(out.glob(".tmp-*"))


def test_two_runs_started_at_once_in_one_folder_do_not_both_run(tmp_path, demo):
    cfg = write_config(tmp_path, demo, max_epoch=2)
    out = tmp_path / "out"
    runs = [start(["pretrain.py", "--config", str(cfg), "--output_dir", str(out)]) for _ in range(2)]
    results = [(r.wait(timeout=300), r.stdout.read()) for r in runs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    refused = next(text for code, text in results if code != 0)
    assert "in use by another training run" in refused or "already holds checkpoints" in refused
    epochs = [json.loads(line)["epoch"] for line in (out / "log.txt").read_text().splitlines()]
    assert epochs == [0, 1]  # one run's log, not two interleaved


# -- resume ---------------------------------------------------------------------------------------------


def test_resume_auto_refuses_a_folder_whose_only_checkpoint_is_corrupt(tmp_path):
    (tmp_path / "checkpoint_last.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RuntimeError, match="no checkpoint .* can be resumed from \\(checkpoint_last.pth"):
        engine.find_resume("auto", tmp_path)


def test_a_kill_after_the_last_step_of_an_epoch_still_finishes_that_epoch(tmp_path, demo):
    """The state a kill leaves between the epoch's last step checkpoint and its end-of-epoch work."""
    cfg = write_config(tmp_path, demo, max_epoch=1, save_every_steps=1)
    out = tmp_path / "out"
    assert pretrain.main(["--config", str(cfg), "--output_dir", str(out)]) == 0
    ckpt = torch.load(out / "checkpoint_last.pth", weights_only=True)
    steps = ckpt["state"]["step"]
    ckpt["state"]["epoch_done"] = False  # the last step's checkpoint, before the epoch's own work
    torch.save(ckpt, out / "checkpoint_last.pth")
    expected = json.loads((out / "log.txt").read_text())
    (out / "checkpoint_00.pth").unlink()
    (out / "log.txt").unlink()
    assert pretrain.main(["--config", str(cfg), "--output_dir", str(out), "--resume", "auto"]) == 0
    assert (out / "checkpoint_00.pth").is_file()
    (line,) = [json.loads(x) for x in (out / "log.txt").read_text().splitlines()]
    assert line["epoch"] == 0 and torch.load(out / "checkpoint_00.pth", weights_only=True)["state"]["step"] == steps
    # the epoch's means come from the meters saved with the step checkpoint: the same as the first time
    assert line["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-12)


def test_sigterm_writes_a_checkpoint_at_the_next_step_and_exits_75(tmp_path, demo):
    cfg = write_config(tmp_path, demo, max_epoch=20, print_freq=1)
    out = tmp_path / "out"
    run = start(["pretrain.py", "--config", str(cfg), "--output_dir", str(out)])
    seen = read_until(run, "epoch 0 [2/")
    run.send_signal(signal.SIGTERM)
    output = seen + run.communicate(timeout=120)[0]
    assert run.returncode == errors.PREEMPTED, output[-3000:]
    assert "received SIGTERM" in output and "resume with --resume auto" in output
    state = torch.load(out / "checkpoint_last.pth", weights_only=True)["state"]
    assert state["global_step"] >= 2 and not state["epoch_done"]
    resumed = start(["pretrain.py", "--config", str(cfg), "--output_dir", str(out), "--resume", "auto",
                     "--options", "max_epoch=1"])
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()[-3000:]
    assert (out / "checkpoint_00.pth").is_file()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_to_the_whole_process_group_with_loader_workers_checkpoints_and_exits_75(tmp_path, demo, sig):
    """What SLURM does (SIGTERM to every process of the job step) and Ctrl-C does (SIGINT to the foreground
    process group): the loader workers get the signal too, and leave the stop to the main process."""
    cfg = write_config(tmp_path, demo, max_epoch=20, print_freq=1, num_workers=2)
    out = tmp_path / "out"
    run = start(["pretrain.py", "--config", str(cfg), "--output_dir", str(out)], new_session=True)
    seen = read_until(run, "epoch 0 [2/")
    os.killpg(run.pid, sig)
    output = seen + run.communicate(timeout=120)[0]
    assert run.returncode == errors.PREEMPTED, output[-3000:]
    assert output.count(f"received {sig.name}") == 1, output[-3000:]  # the main process's alone
    assert "Traceback" not in output and "resume with --resume auto" in output
    state = torch.load(out / "checkpoint_last.pth", weights_only=True)["state"]
    assert state["global_step"] >= 2 and not state["epoch_done"]
    if sig == signal.SIGTERM:  # the checkpoint is the same either way: one resume shows it continues
        resumed = start(["pretrain.py", "--config", str(cfg), "--output_dir", str(out), "--resume", "auto",
                         "--options", "max_epoch=1"])
        output = resumed.communicate(timeout=300)[0]
        assert resumed.returncode == 0, output[-3000:]
        assert f"at epoch 0, step {state['step']}" in output
        assert (out / "checkpoint_00.pth").is_file()


def test_a_second_sigint_stops_at_once_and_sigterm_is_asked_once(own_signal_handlers):
    stop = engine.StopRequest().install()
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGTERM)  # SLURM may signal again: still one request, at the step boundary
    assert stop.requested and stop.signal == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C after a first request: the user wants out now
        signal.raise_signal(signal.SIGINT)
    first_ctrl_c = engine.StopRequest().install()
    signal.raise_signal(signal.SIGINT)
    assert first_ctrl_c.signal == signal.SIGINT  # a first Ctrl-C is a request like SIGTERM


@pytest.mark.slow
def test_deterministic_kill_and_resume_is_bit_exact_with_workers_and_threads(tmp_path, demo):
    cfg = write_config(tmp_path, demo, max_epoch=2, save_every_steps=1, num_workers=2, deterministic=True)
    args = ["pretrain.py", "--config", str(cfg)]
    threads = {"OMP_NUM_THREADS": "2"}
    ref = start(args + ["--output_dir", str(tmp_path / "ref")], **threads)
    assert ref.wait(timeout=300) == 0, ref.stdout.read()[-3000:]
    out = tmp_path / "killed"
    victim = start(args + ["--output_dir", str(out)], **threads)
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        last = out / "checkpoint_last.pth"
        try:
            if last.is_file() and torch.load(last, weights_only=True)["state"]["global_step"] >= 3:
                victim.send_signal(signal.SIGKILL)
                break
        except RuntimeError:  # caught between the rename and the read
            pass
        time.sleep(0.05)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resumed = start(args + ["--output_dir", str(out), "--resume", "auto"], **threads)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()[-3000:]
    a = torch.load(tmp_path / "ref" / "checkpoint_last.pth", weights_only=True)["model"]
    b = torch.load(out / "checkpoint_last.pth", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after kill and resume"


# A training script run with ``torch.save`` patched: the ``KILL_AT_SAVE``-th checkpoint write puts half
# of the file on disk (fsync'd, as a real kill leaves it) and the process dies with 137, as under SIGKILL.
_KILLED_SAVE = r"""
import io, os, runpy, sys
import torch
real_save, count = torch.save, [0]
def save(obj, f, *args, **kwargs):
    name = os.path.basename(str(f))
    if isinstance(f, (str, os.PathLike)) and "checkpoint_" in name:
        count[0] += 1
        if count[0] == int(os.environ["KILL_AT_SAVE"]):
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            with open(f, "wb") as fh:
                fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            print(f"killed while writing {name}", flush=True)
            os._exit(137)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("kill_at", [2, 3], ids=["second-epoch", "third-epoch"])
def test_a_kill_in_the_middle_of_a_checkpoint_write_leaves_only_loadable_checkpoints(tmp_path, demo, kill_at):
    """Each epoch writes checkpoint_NN once and links checkpoint_last to it: a kill in the middle of a write
    leaves the earlier checkpoints, checkpoint_last among them, whole."""
    cfg = write_config(tmp_path, demo, max_epoch=3)
    out = tmp_path / "out"
    hook = tmp_path / "killed_save.py"
    hook.write_text(_KILLED_SAVE)
    args = ["pretrain.py", "--config", str(cfg), "--output_dir", str(out)]
    victim = start([str(hook), *args], KILL_AT_SAVE=str(kill_at))
    output = victim.communicate(timeout=300)[0]
    assert victim.returncode == 137 and "killed while writing" in output, output[-3000:]
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1 and os.path.getsize(out / leftovers[0]) > 0  # the half-written file
    names = sorted(p.name for p in out.glob("checkpoint_*.pth"))
    assert names == (["checkpoint_00.pth", "checkpoint_last.pth"] if kill_at == 2 else
                     ["checkpoint_00.pth", "checkpoint_01.pth", "checkpoint_last.pth"])
    for name in names:
        assert "state" in torch.load(out / name, weights_only=True), name
    steps = {name: engine._global_step(out / name) for name in names}
    assert None not in steps.values()
    assert steps[engine.find_resume("auto", out).name] == max(steps.values())  # (linked names are the same file)
    resumed = start(args + ["--resume", "auto"])
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert f"removed {out / leftovers[0]}" in output
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]
    final = sorted(p.name for p in out.glob("checkpoint_*.pth"))
    assert final == ["checkpoint_00.pth", "checkpoint_01.pth", "checkpoint_02.pth", "checkpoint_last.pth"]
    last = torch.load(out / "checkpoint_last.pth", weights_only=True)["state"]
    assert last["epoch"] == 2 and last["epoch_done"]
    assert last["global_step"] == torch.load(out / "checkpoint_02.pth", weights_only=True)["state"]["global_step"]


# -- disks, ranks, config values ------------------------------------------------------------------------


def test_a_failed_save_leaves_no_temporary_file_and_says_why(tmp_path, monkeypatch):
    def full_disk(obj, path):
        Path(path).write_bytes(b"x" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1000 vs 998")

    (tmp_path / "checkpoint_last.pth").write_bytes(b"the previous checkpoint")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="could not write .*checkpoint_last.pth .*MB free on its disk; is it full"):
        engine.save_atomic({"a": 1}, tmp_path / "checkpoint_last.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pth"]
    assert (tmp_path / "checkpoint_last.pth").read_bytes() == b"the previous checkpoint"


def _frozen_peer(rank: int, init_file: str, results: str) -> None:
    import datetime

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=3))
    if rank == 1:
        time.sleep(8)  # frozen: never joins the collective
        os._exit(0)
    t0 = time.time()
    try:
        dist.all_reduce(torch.ones(1))
        message = "no error"
    except RuntimeError as e:
        message = str(e)
    Path(results).write_text(json.dumps({"seconds": time.time() - t0, "message": message}))
    # A process group broken by a timeout can abort in its C++ destructor at interpreter exit
    # ("terminate called without an active exception") while its peer still sleeps; what is measured
    # here is the timeout and its message, written above, so both ranks leave without destructors.
    os._exit(0)


def test_a_frozen_rank_stops_its_peers_after_the_configured_timeout(tmp_path):
    mp.spawn(_frozen_peer, args=(str(tmp_path / "init"), str(tmp_path / "r.json")), nprocs=2, join=True)
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["seconds"] < 7.5 and out["message"] != "no error"
    assert "timed out" in out["message"].lower() or "timeout" in out["message"].lower()  # what run_cli names
    assert validate({"train_file": ["a"], "init_lr": 1e-4, "max_epoch": 1}, "pretrain")["dist_timeout_s"] == 1800


def _frozen_rank_of_a_run(rank: int, port: int, cfg: str, out: str, results: str) -> None:
    """A rank set up as a training script is (``setup_run``: the config's ``dist_timeout_s``, then
    ``init_distributed``); rank 1 then freezes, rank 0 runs a collective under ``run_cli``."""
    import argparse
    import logging

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    parser = argparse.ArgumentParser()
    utils.add_common_args(parser)
    args = parser.parse_args(["--config", cfg, "--output_dir", out, "--device", "cpu",
                              "--options", "dist_timeout_s=2"])
    _, info = utils.setup_run(args, "pretrain")
    if rank == 1:
        time.sleep(7)  # frozen: never joins the collective
        os._exit(0)
    logged: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: logged.append(record.getMessage())
    utils.log.addHandler(handler)
    t0 = time.time()
    try:
        utils.run_cli(lambda: dist.all_reduce(torch.ones(1)) or 0, "pretrain.py")
        message = "no error"
    except RuntimeError as e:
        message = str(e)
    Path(results).write_text(json.dumps({"seconds": time.time() - t0, "message": message, "logged": logged}))
    os._exit(0)  # a group broken by a timeout can abort in its destructor: see _frozen_peer


def test_the_configured_dist_timeout_stops_a_collective_and_the_log_names_the_key(tmp_path, demo):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(tmp_path, demo)
    mp.spawn(_frozen_rank_of_a_run, args=(port, str(cfg), str(tmp_path / "out"), str(tmp_path / "r.json")),
             nprocs=2, join=True)
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["message"] != "no error" and out["seconds"] < 5.5, out  # 2 s asked, not the default 1800
    assert len(out["logged"]) == 1 and "dist_timeout_s" in out["logged"][0], out
    assert "pretrain.py: a collective waited longer than dist_timeout_s" in out["logged"][0]


@pytest.mark.parametrize("key, value", [("max_bad_fraction", float("nan")), ("alpha", float("nan")),
                                        ("init_lr", float("nan")), ("momentum", float("nan")),
                                        ("init_lr", float("inf")), ("drop_path_rate", float("nan"))])
def test_nan_and_inf_never_pass_a_range_check(key, value):
    with pytest.raises(ConfigError, match=f"key '{key}': expected a finite number"):
        validate({"train_file": ["a"], "init_lr": 1e-4, "max_epoch": 1, key: value}, "pretrain")


def test_bad_vit_sizes_and_devices_are_named(tmp_path, demo):
    base = {"train_file": ["a"], "init_lr": 1e-4, "max_epoch": 1}
    with pytest.raises(ConfigError, match=r"vit\.width: expected an integer in \[8, 8192\], got 0"):
        validate({**base, "vit": {"width": 0, "depth": 2, "heads": 2}}, "pretrain")
    with pytest.raises(ConfigError, match=r"vit\.width 50 is not divisible by vit\.heads 3"):
        validate({**base, "vit": {"width": 50, "depth": 2, "heads": 3}}, "pretrain")
    with pytest.raises(SystemExit):
        pretrain.main(["--config", str(write_config(tmp_path, demo)), "--output_dir", str(tmp_path / "o"),
                       "--device", "tpu"])


def test_config_errors_print_one_line_and_exit_2(tmp_path, demo):
    cfg = tmp_path / "retrieval_like.yaml"
    cfg.write_text((ROOT / "configs" / "demo_retrieval.yaml").read_text())
    run = start(["pretrain.py", "--config", str(cfg), "--output_dir", str(tmp_path / "o")])
    output = run.communicate(timeout=120)[0]
    assert run.returncode == 2
    assert "Traceback" not in output
    assert "pretrain.py: error:" in output and "is this a retrieval config? (use it with train_retrieval.py)" in output


def test_vit_large_defaults_to_stochastic_depth_as_blip():
    base = {"train_file": ["a"], "init_lr": 1e-4, "max_epoch": 1}
    assert validate({**base, "vit": "large"}, "pretrain")["drop_path_rate"] == 0.1
    assert validate({**base, "vit": "base"}, "pretrain")["drop_path_rate"] == 0.0
    assert validate({**base, "vit": "large", "drop_path_rate": 0.0}, "pretrain")["drop_path_rate"] == 0.0


@pytest.mark.slow
def test_retrieval_killed_in_training_or_evaluation_resumes_bit_exact(tmp_path):
    """Retrieval fine-tuning killed after a step checkpoint, and one left at the boundary of epoch 0 (trained,
    but not yet evaluated nor checkpointed), both resume to the weights, best score and metrics of an
    unbroken run."""
    demo = demo_set(tmp_path / "data", train=12, val=5, test=7)
    files = dict(train_file=[str(demo / "train.json")], val_file=str(demo / "val.json"),
                 test_file=str(demo / "test.json"))
    cfg = tiny_config(tmp_path, "retrieval", str(demo / "tokenizer"), max_epoch=2, save_every_steps=1,
                      deterministic=True, **files)
    utils.save_config(cfg, tmp_path / "r.yaml")
    args = ["train_retrieval.py", "--config", str(tmp_path / "r.yaml")]
    ref = start(args + ["--output_dir", str(tmp_path / "ref")])
    assert ref.wait(timeout=300) == 0, ref.stdout.read()[-3000:]
    out = tmp_path / "killed"
    victim = start(args + ["--output_dir", str(out)])
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        try:
            last = out / "checkpoint_last.pth"
            if last.is_file() and torch.load(last, weights_only=True)["state"]["global_step"] >= 2:
                victim.send_signal(signal.SIGKILL)
                break
        except RuntimeError:
            pass
        time.sleep(0.05)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resumed = start(args + ["--output_dir", str(out), "--resume", "auto"])
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()[-3000:]

    # The state a kill at the epoch boundary leaves: epoch 0 trained, its evaluation and checkpoints not done.
    edge = tmp_path / "edge"
    one = start(args + ["--output_dir", str(edge), "--options", "max_epoch=1"])
    assert one.wait(timeout=300) == 0, one.stdout.read()[-3000:]
    ckpt = torch.load(edge / "checkpoint_last.pth", weights_only=True)
    ckpt["state"]["epoch_done"] = False
    ckpt["extra"] = {"best": -1.0, "best_epoch": -1}  # as the last step's checkpoint holds it, before evaluation
    torch.save(ckpt, edge / "checkpoint_last.pth")
    for name in ("checkpoint_best.pth", "metrics.json", "log.txt"):
        (edge / name).unlink()
    again = start(args + ["--output_dir", str(edge), "--resume", "auto"])
    assert again.wait(timeout=300) == 0, again.stdout.read()[-3000:]
    assert (edge / "checkpoint_best.pth").is_file()

    a = torch.load(tmp_path / "ref" / "checkpoint_last.pth", weights_only=True)
    ref_log = [json.loads(x) for x in (tmp_path / "ref" / "log.txt").read_text().splitlines()]
    b = torch.load(out / "checkpoint_last.pth", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"{k} differs after kill and resume"
    assert a["extra"] == b["extra"]  # the best val r_mean and its epoch
    logs = {f.name: [json.loads(x) for x in (f / "log.txt").read_text().splitlines()] for f in (out, edge)}
    assert all([r["epoch"] for r in rows] == [0, 1] for rows in logs.values())  # every epoch logged once
    assert [r["val_r_mean"] for r in logs["killed"]] == [r["val_r_mean"] for r in ref_log]
    # The edited checkpoint's RNG state is the one after evaluation, not the one a real kill leaves, so
    # only epoch 0 (re-evaluated from the same weights) can be compared exactly there.
    assert logs["edge"][0]["val_r_mean"] == ref_log[0]["val_r_mean"]


def test_a_stop_asked_during_retrieval_evaluation_is_honoured_when_it_ends(tmp_path, monkeypatch,
                                                                           own_signal_handlers):
    """SIGTERM while epoch 0 is evaluated: the evaluation finishes, the epoch's checkpoints are written, and
    the run exits 75 there, without another training step; ``--resume auto`` goes on with epoch 1."""
    demo = demo_set(tmp_path / "data", train=8, val=4, test=4)
    cfg = tiny_config(tmp_path, "retrieval", str(demo / "tokenizer"), max_epoch=2,
                      train_file=[str(demo / "train.json")], val_file=str(demo / "val.json"),
                      test_file=str(demo / "test.json"))
    utils.save_config(cfg, tmp_path / "r.yaml")
    args = ["--config", str(tmp_path / "r.yaml"), "--output_dir", str(tmp_path / "out")]
    evaluate_splits, evaluated = train_retrieval.evaluate_splits, []

    def signalled_during_the_first(*a, **kw):
        if not evaluated:
            signal.raise_signal(signal.SIGTERM)  # handled at once: the request stands before evaluation starts
        evaluated.append(1)
        return evaluate_splits(*a, **kw)

    monkeypatch.setattr(train_retrieval, "evaluate_splits", signalled_during_the_first)
    assert utils.run_cli(lambda: train_retrieval.main(args), "train_retrieval.py") == errors.PREEMPTED
    ckpt = torch.load(tmp_path / "out" / "checkpoint_last.pth", weights_only=True)
    assert ckpt["state"]["epoch"] == 0 and ckpt["state"]["epoch_done"]  # not a step into epoch 1
    assert ckpt["extra"]["best_epoch"] == 0 and (tmp_path / "out" / "checkpoint_best.pth").is_file()
    assert train_retrieval.main(args + ["--resume", "auto"]) == 0
    assert evaluated == [1, 1]  # epoch 0 once, then epoch 1 in the resumed run
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "out" / "log.txt").read_text().splitlines()]
    assert epochs == [0, 1]
