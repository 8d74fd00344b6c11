r"""Pre-train a BLIP model (ITC + ITM + LM) on JSON lists of image/caption pairs.

    python pretrain.py --config configs/pretrain.yaml --output_dir output/pretrain
    python -m torch.distributed.run --nproc_per_node=8 pretrain.py --config ./configs/Pretrain.yaml \
        --output_dir output/Pretrain
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from data.train_data import build_train_loader
from engine import (StepHook, StopRequest, build_optimizer, save_checkpoint, start_state, train_one_epoch,
                    wrap_ddp)
from models import build_model
from utils import RunLog, add_common_args, cleanup_distributed, log, log_epoch, run_cli, setup_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    args = parser.parse_args(argv)
    config, info = setup_run(args, "pretrain")
    out = Path(args.output_dir)
    try:
        model = build_model(config, "pretrain").to(info.device)
        loader = build_train_loader(config, config["train_file"], model.tokenizer, info.rank, info.world_size,
                                    config["batch_size"])
        optimizer = build_optimizer(model, config)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info(f"{trainable / 1e6:.1f}M trainable parameters")
        state, _ = start_state(args.resume, out, model, optimizer)
        ddp_model = wrap_ddp(model, info)
        run_log = RunLog(out, config["report_to"])
        step_hook = StepHook(out, model, optimizer, config, run_log)
        stop = StopRequest().install()
        for epoch in range(state.epoch, config["max_epoch"]):
            state.epoch = epoch
            t0 = time.time()
            stats, bad = train_one_epoch(ddp_model, loader, optimizer, config, state, info.device, step_hook, stop)
            log_epoch(run_log, epoch, stats, bad, time.time() - t0)
            state.epoch_done = True
            save_checkpoint([out / f"checkpoint_{epoch:02d}.pth", out / "checkpoint_last.pth"], model, optimizer,
                            config, state)
            state = state.next_epoch()
        run_log.close()
        log.info(f"pre-training finished; checkpoints in {out}")
    finally:
        cleanup_distributed(info)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, "pretrain.py"))
