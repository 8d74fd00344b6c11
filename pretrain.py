r"""Pre-train a BLIP model (ITC + ITM + LM) on JSON lists of image/caption pairs.

    python pretrain.py --config configs/pretrain.yaml --output_dir output/pretrain
    python -m torch.distributed.run --nproc_per_node=8 pretrain.py --config ./configs/Pretrain.yaml \
        --output_dir output/Pretrain
"""
from __future__ import annotations

import argparse
from pathlib import Path

from data.datasets import PairDataset, load_pairs, report_problems
from data.loader import Collator, train_loader
from models import build_model
from transform import build_transform
from utils import (TrainState, add_common_args, build_optimizer, cleanup_distributed, gathered_rng_states, log,
                   run_epochs, save_training_checkpoint, setup_run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    args = parser.parse_args(argv)
    config, info = setup_run(args, "pretrain")
    out = Path(args.output_dir)
    try:
        model = build_model(config, "pretrain").to(info.device)
        pairs, problems = load_pairs(config["train_file"], config["image_root"], config["max_words"])
        report_problems(problems, len(pairs) + len(problems), config["max_bad_fraction"], "train_file")
        dataset = PairDataset(pairs, build_transform(config, train=True), seed=config["seed"])
        collate = Collator(model.tokenizer, config["max_length"], config["laterality_negatives"])
        loader = train_loader(dataset, config["batch_size"], collate,
                              info.world_size, info.rank, config["seed"], config["num_workers"])
        if len(loader) == 0:
            raise ValueError(f"{len(pairs)} pairs make no full batch of {config['batch_size']} per process "
                             f"on {info.world_size} process(es); lower batch_size")
        optimizer = build_optimizer(model, config)
        log.info(f"{len(pairs)} pairs, {len(loader)} steps per epoch, "
                 f"{sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.1f}M trainable parameters")

        def end_of_epoch(epoch: int, stats: dict, state: TrainState) -> dict:
            rngs = gathered_rng_states()
            for name in (f"checkpoint_{epoch:02d}.pth", "checkpoint_last.pth"):
                save_training_checkpoint(out / name, model, optimizer, config, state, rng_states=rngs)
            return {}

        run_epochs(model, loader, optimizer, config, info, out, args.resume, end_of_epoch)
        log.info(f"pre-training finished; checkpoints in {out}")
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
