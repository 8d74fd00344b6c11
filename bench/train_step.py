"""Speed and memory of one full pre-training step: forward (image tower, text tower, momentum towers),
the three losses (ITC, ITM, LM), backward, optimizer step, momentum update and enqueue.

Prints one JSON line per run: images/s (the median of the timed steps after warm-up), peak memory
(CUDA max allocated, or the process's peak RSS on CPU), the median step time and a per-part
breakdown (milliseconds of one extra step timed part by part, the device synchronised at each
boundary). Images are random tensors: data loading is measured by ``bench/dataload.py``.

``--baseline`` runs the straightforward step too (``bench/reference.py``: BLIP's way of computing the
same math, BLIP's per-tensor AdamW, captions padded to ``max_length``) in the same process, the two
paths' timed steps alternated so that a shared machine's load hits both alike; then each path alone
in a fresh process for its peak memory; and adds a summary line with the ratios.

``--sweep`` measures several variants (``fast:bf16``, ``fast:bf16:ckpt``, ``fast:fp32``, ``plain:bf16``...)
on one built model, one after the other, with MFU from torch's FLOP counter (bench/gpu_check.sh uses it).

``--compile`` compiles the three towers in place (``nn.Module.compile(dynamic=True)``, state-dict keys
unchanged). Traced with the eager backend they give no graph break (one graph per call pattern, no
recompilation across caption lengths); compiling the whole forward breaks at the tokenizer's special-
token lookups and at ``torch.multinomial``. Inductor's CPU code generation did not finish within 25
minutes on the shared 2-core machine, so no compiled timing is reported yet (bench/README.md).

    python -m bench.train_step --size tiny --batch 8 --baseline
    python -m bench.train_step --size base --batch 2 --baseline --steps 3 --warmup 1
    python -m bench.train_step --size base --batch 64 --device cuda --sweep
    python -m bench.train_step --size base --batch 32 --precision bf16 --device cuda --compile
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

from bench.common import (PartTimer, SIZES, bench_captions, current_rss_mb, peak_memory_mb, synchronize,
                          tokenizer_folder, vit_value, write_text_config)
from configs import validate
from models import build_model, init_tokenizer, text_fast
from bench.reference import PlainPretrain, plain_optimizer


def run_config(args, folder: Path, tokenizer: str) -> dict:
    """A validated pre-training config of the requested size (random weights, BLIP's queue and lengths)."""
    return validate({
        "vit": vit_value(args.size), "image_size": SIZES[args.size]["image_size"], "tokenizer": tokenizer,
        "text_encoder": None, "med_config": write_text_config(folder, args.size), "max_length": args.max_length,
        "queue_size": args.queue_size, "batch_size": args.batch, "train_file": ["unused.json"], "init_lr": 1e-4,
        "max_epoch": 1, "vit_grad_ckpt": args.grad_ckpt, "vit_ckpt_layer": args.grad_ckpt * SIZES[args.size]["vit"][1],
        "text_grad_ckpt": args.grad_ckpt or args.text_grad_ckpt, "precision": args.precision}, "pretrain",
        "bench config")


def build(args, path: str, config: dict, tok, device: torch.device):
    """(model, optimizer) of the path: the project's (fused AdamW as engine.build_optimizer) or the plain one."""
    from engine import build_optimizer  # the training app's optimizer, exactly as pretrain.py builds it

    torch.manual_seed(0)
    if path == "plain":
        model = PlainPretrain(config, tok).to(device)
        return model, plain_optimizer(model, config["init_lr"], config["weight_decay"])
    model = build_model(config, "pretrain", tok, load_weights=False).to(device)
    if args.compile:
        for tower in (model.visual_encoder, model.text_encoder, model.text_decoder.bert):
            tower.compile(dynamic=True)  # in place: state-dict keys stay BLIP's
    return model, build_optimizer(model, config)


def batches(model, captions: list[str], batch: int, device: torch.device) -> list[dict]:
    """Tokenized caption batches (as the collate function makes them), with distinct image ids."""
    out = []
    for s in range(0, len(captions) - batch + 1, batch):
        tok = model.tokenize(captions[s:s + batch], device)
        tok["image_ids"] = torch.arange(s, s + batch, device=device)
        out.append(tok)
    return out


def step(model, optimizer, images, batch, precision: str, device: torch.device, timer: PartTimer | None = None):
    """One training step; returns the loss tensor (never read here: reading it would synchronise)."""
    part = timer.part if timer is not None else (lambda label: nullcontext())
    with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
        losses = model(images, batch, alpha=0.4)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    with part("backward"):
        loss.backward()
    with part("optimizer"):
        optimizer.step()
    return loss


def instrument(model, timer: PartTimer) -> None:
    """Time the parts the issue names, by wrapping them on this instance."""
    timer.wrap(model.visual_encoder, "forward", "image_tower")
    timer.wrap(model, "encode_text", "text_tower")
    timer.wrap(model, "text_features", "text_tower")
    timer.wrap(model, "momentum_update", "momentum_update")
    timer.wrap(model, "momentum_features", "momentum_towers")
    timer.wrap(model, "enqueue", "enqueue")
    timer.wrap(model, "itc_step", "itc")
    timer.wrap(model.text_encoder, "cross_kv", "cross_kv")
    timer.wrap(model, "itm_loss_inputs", "itm")
    timer.wrap(model.text_decoder.bert, "forward", "lm")  # the plain path calls it through text_decoder
    timer.wrap(text_fast, "predicting_hidden", "lm")  # the fast path's decoder on the CPU
    timer.wrap(model.text_decoder.cls.predictions, "forward", "lm_head")


def count_syncs(model, optimizer, images, batch, precision: str, device: torch.device) -> int | None:
    """Host-device synchronisations in one step (CUDA only: torch's sync debug mode warns at each)."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(model, optimizer, images, batch, precision, device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def prepare(args, path: str) -> dict:
    """Model, optimizer, images and caption batches of one path, warmed up."""
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder, what = tokenizer_folder(Path(tmp))
        config = run_config(args, Path(tmp), folder)
        tok = init_tokenizer(folder)
        model, optimizer = build(args, path, config, tok, device)
    model.train()
    size = config["image_size"]
    images = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    data = batches(model, bench_captions(args.batch * 8, seed=2), args.batch, device)
    run = {"path": path, "model": model, "optimizer": optimizer, "images": images, "data": data, "times": [],
           "tokenizer": what, "device": device}
    run["rss_before_mb"] = current_rss_mb()
    for i in range(args.warmup):
        timed_step(args, run, i, record=False)
    return run


def timed_step(args, run: dict, i: int, record: bool = True, precision: str | None = None) -> None:
    device = run["device"]
    synchronize(device)
    t0 = time.perf_counter()
    run["loss"] = step(run["model"], run["optimizer"], run["images"], run["data"][i % len(run["data"])],
                       precision or args.precision, device)
    synchronize(device)
    if record:
        run["times"].append(time.perf_counter() - t0)


def finish(args, run: dict) -> dict:
    """The JSON record of a path: speed, memory, syncs and the per-part breakdown."""
    device, model, optimizer, data = run["device"], run["model"], run["optimizer"], run["data"]
    peak = peak_memory_mb(device)
    syncs = count_syncs(model, optimizer, run["images"], data[0], args.precision, device)
    timer = PartTimer(device)
    instrument(model, timer)
    timer.enabled = True
    try:
        step(model, optimizer, run["images"], data[0], args.precision, device, timer)
    finally:
        timer.unwrap()
    median = statistics.median(run["times"])
    return {"path": run["path"], "size": args.size, "batch": args.batch, "precision": args.precision,
            "grad_ckpt": args.grad_ckpt, "text_grad_ckpt": args.grad_ckpt or args.text_grad_ckpt,
            "compile": args.compile and run["path"] == "fast",
            "device": device_name(device), "threads": torch.get_num_threads(), "max_length": args.max_length,
            "text_width_mean": round(statistics.mean(b["input_ids"].shape[1] for b in data), 1),
            "tokenizer": run["tokenizer"], "images_per_s": round(args.batch / median, 3),
            "step_s_median": round(median, 4), "step_s_all": [round(t, 4) for t in run["times"]],
            "peak_memory_mb": round(peak, 1), "rss_before_first_step_mb": round(run["rss_before_mb"], 1),
            "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss",
            "host_syncs_per_step": syncs, "breakdown_ms": timer.report(), "last_loss": run["loss"].item()}


def run_path(args) -> dict:
    """One path alone in this process (its peak memory is its own)."""
    run = prepare(args, args.path)
    if run["device"].type == "cuda":
        torch.cuda.reset_peak_memory_stats(run["device"])
    for i in range(args.steps):
        timed_step(args, run, i)
    return finish(args, run)


def set_grad_ckpt(model, on: bool) -> None:
    """Gradient checkpointing of every ViT block and every text layer, switched on a built model."""
    vit = model.visual_encoder
    vit.grad_ckpt, vit.ckpt_from = on, 0 if on else len(vit.blocks)
    model.text_encoder.grad_ckpt = model.text_decoder.bert.grad_ckpt = on


def as_plain(args, fast: dict) -> dict:
    """The plain path on the fast path's model (one base model less to build and to hold): the same
    modules under :class:`PlainPretrain`'s methods, BLIP's optimizer, captions padded to max_length."""
    model = fast["model"]
    plain = PlainPretrain.__new__(PlainPretrain)
    plain.__dict__ = model.__dict__  # the same parameters, buffers and submodules
    optimizer = plain_optimizer(plain, fast["optimizer"].defaults["lr"], args_weight_decay(fast["optimizer"]))
    data = batches(plain, bench_captions(args.batch * 8, seed=2), args.batch, fast["device"])
    run = {**fast, "path": "plain", "model": plain, "optimizer": optimizer, "data": data, "times": []}
    for i in range(args.warmup):
        timed_step(args, run, i, record=False)
    return run


def args_weight_decay(optimizer) -> float:
    return max(g["weight_decay"] for g in optimizer.param_groups)


def step_flops(run: dict, precision: str) -> int:
    """FLOPs of one fast step as torch counts them (matrix products and attention, forward and
    backward; no recomputation: count with checkpointing off)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(run["model"], run["optimizer"], run["images"], run["data"][0], precision, run["device"])
    return counter.get_total_flops()


def sweep(args) -> int:
    """Several variants on the same built models, one after the other (for a GPU of one's own): each
    ``path:precision[:ckpt]`` gets its warm-up, timed steps and peak memory (reset before it; the
    models' own memory is in every peak alike); MFU = counted FLOPs per step / step time / peak."""
    variants = [v.split(":") for v in args.variants.split(",")]
    runs = {"fast": prepare(args, "fast")}
    if any(v[0] == "plain" for v in variants):
        runs["plain"] = as_plain(args, runs["fast"])
    flops = step_flops(runs["fast"], "bf16") if "fast" in runs else None
    for path, precision, *rest in variants:
        run, ckpt = runs[path], rest == ["ckpt"]
        set_grad_ckpt(run["model"], ckpt)
        run["times"] = []
        if run["device"].type == "cuda":
            torch.cuda.reset_peak_memory_stats(run["device"])
        for i in range(args.warmup + args.steps):
            timed_step(args, run, i, record=i >= args.warmup, precision=precision)
        median = statistics.median(run["times"])
        record = {"variant": f"{path}:{precision}" + (":ckpt" if ckpt else ""), "size": args.size, "batch": args.batch,
                  "device": device_name(run["device"]), "images_per_s": round(args.batch / median, 2),
                  "step_s_median": round(median, 4), "peak_memory_mb": round(peak_memory_mb(run["device"]), 1),
                  "host_syncs_per_step": count_syncs(run["model"], run["optimizer"], run["images"], run["data"][0],
                                                     precision, run["device"])}
        if flops:
            record["model_gflop_per_step"] = round(flops / 1e9, 1)
            record["achieved_tflop_s"] = round(flops / median / 1e12, 3)
            record["mfu_vs_bf16_dense_peak"] = round(flops / median / (args.peak_tflops * 1e12), 4)
        print(json.dumps(record), flush=True)
    return 0


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def child_command(args, path: str) -> list[str]:
    argv = [sys.executable, "-m", "bench.train_step", "--path", path, "--size", args.size, "--batch", str(args.batch),
            "--precision", args.precision, "--steps", "1", "--warmup", "1",
            "--device", args.device, "--max-length", str(args.max_length), "--queue-size", str(args.queue_size),
            "--threads", str(args.threads)]
    return (argv + ["--grad-ckpt"] * args.grad_ckpt + ["--text-grad-ckpt"] * args.text_grad_ckpt
            + ["--compile"] * (args.compile and path == "fast"))


def interleaved(args) -> dict[str, dict]:
    """Both paths in this process on one model (see :func:`as_plain`), their timed steps alternated, so
    that a shared machine's load changes hit both alike (peak memory is then the process's)."""
    fast = prepare(args, "fast")
    runs = {"plain": as_plain(args, fast), "fast": fast}
    for i in range(args.steps):
        for run in runs.values():
            timed_step(args, run, i)
    return {path: finish(args, run) for path, run in runs.items()}


def memory_of(args, path: str) -> float | None:
    """Peak memory of ``path`` run alone in a fresh process (one warm-up step, one timed step)."""
    done = subprocess.run(child_command(args, path), capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_memory_mb"]


def side_by_side(args) -> int:
    """Peak memory from one fresh process per path (run first, one at a time, so that no two base
    models are held at once), speed from :func:`interleaved`; then the ratios."""
    mem = {p: memory_of(args, p) for p in ("plain", "fast")} if args.memory else {"plain": None, "fast": None}
    results = interleaved(args)
    for r in results.values():
        print(json.dumps(r), flush=True)
    ips = {p: r["images_per_s"] for p, r in results.items()}
    ratio = round(mem["fast"] / mem["plain"], 3) if mem["fast"] and mem["plain"] else None
    print(json.dumps({"summary": True, "size": args.size, "batch": args.batch, "precision": args.precision,
                      "grad_ckpt": args.grad_ckpt, "steps": args.steps, "images_per_s_plain": ips["plain"],
                      "images_per_s_fast": ips["fast"], "speedup": round(ips["fast"] / ips["plain"], 3),
                      "peak_memory_mb_plain_alone": mem["plain"], "peak_memory_mb_fast_alone": mem["fast"],
                      "memory_ratio": ratio}), flush=True)
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny", choices=sorted(SIZES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--grad-ckpt", action="store_true", help="checkpoint every ViT block and every text layer")
    p.add_argument("--text-grad-ckpt", action="store_true", help="checkpoint every text layer (text_grad_ckpt) only")
    p.add_argument("--compile", action="store_true", help="torch.compile the towers (fast path only)")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-length", type=int, default=30, help="text length limit (BLIP: 30; configs/pretrain.yaml: 200)")
    p.add_argument("--queue-size", type=int, default=57600)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--path", default="fast", choices=("fast", "plain"), help="which step to run (one process)")
    p.add_argument("--baseline", action="store_true", help="run the plain and the fast path side by side")
    p.add_argument("--sweep", action="store_true", help="run --variants on the same built models (GPU)")
    p.add_argument("--variants", default="fast:bf16,fast:bf16:ckpt,fast:fp32,plain:bf16",
                   help="with --sweep: path:precision[:ckpt], comma-separated")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="the card's dense bf16 peak for MFU (H100/H200 SXM: 989)")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="with --baseline: skip the two fresh processes that measure each path's peak memory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sweep:
        return sweep(args)
    if args.baseline:
        return side_by_side(args)
    print(json.dumps(run_path(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
