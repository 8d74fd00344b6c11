r"""Fine-tune and evaluate image-text retrieval (BLIP's ITC + ITM, re-ranking evaluation).

    python -m torch.distributed.run --nproc_per_node=8 train_retrieval.py --config ./configs/retrieval_coco.yaml \
        --output_dir output/retrieval_coco [--evaluate]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from data.datasets import DatasetError, PairDataset, RetrievalEvalDataset, load_pairs, report_problems
from data.loader import Collator, train_loader
from models import build_model
from models.evaluation import evaluate, format_table
from transform import build_transform
from utils import (TrainState, add_common_args, append_jsonl, barrier, build_optimizer, cleanup_distributed,
                   gathered_rng_states, is_main, log, run_epochs, save_training_checkpoint, setup_run)


def split_files(config: dict) -> dict:
    """train/val/test files: explicit keys, else BLIP's ann_root/<dataset>_karpathy_<split>.json."""
    def default(split: str) -> str:
        if not config["ann_root"]:
            raise DatasetError(f"no {split}_file in the config and no ann_root to find "
                               f"{config['dataset']}_karpathy_{split}.json in")
        return str(Path(config["ann_root"]) / f"{config['dataset']}_karpathy_{split}.json")

    return {"train": config["train_file"] or [default("train")], "val": config["val_file"] or default("val"),
            "test": config["test_file"] or default("test")}


def evaluate_splits(model, splits: dict, config: dict, device) -> dict:
    return {name: evaluate(model, ds, config, device) for name, ds in splits.items()}


def flatten(results: dict) -> dict:
    return {f"{split}_{k}": v for split, m in results.items() for k, v in m.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--evaluate", action="store_true", help="only evaluate the `pretrained` checkpoint")
    args = parser.parse_args(argv)
    config, info = setup_run(args, "retrieval")
    out = Path(args.output_dir)
    try:
        files = split_files(config)
        model = build_model(config, "retrieval").to(info.device)
        eval_tf = build_transform(config, train=False)
        splits = {s: RetrievalEvalDataset(files[s], eval_tf, config["image_root"], config["max_words"])
                  for s in ("val", "test")}
        if args.evaluate:
            results = evaluate_splits(model, splits, config, info.device)
            if is_main():
                print(format_table(results), flush=True)
                append_jsonl(out / "evaluate.txt", flatten(results))
                (out / "metrics.json").write_text(json.dumps(results, indent=2))
            barrier()
            return 0
        train(model, files["train"], splits, config, info, out, args.resume)
    finally:
        cleanup_distributed()
    return 0


def train(model, train_files: list, splits: dict, config: dict, info, out: Path, resume: str | None) -> None:
    pairs, problems = load_pairs(train_files, config["image_root"], config["max_words"])
    report_problems(problems, len(pairs) + len(problems), config["max_bad_fraction"], "train_file")
    dataset = PairDataset(pairs, build_transform(config, train=True), seed=config["seed"])
    collate = Collator(model.tokenizer, config["max_length"], config["laterality_negatives"])
    loader = train_loader(dataset, config["batch_size_train"], collate,
                          info.world_size, info.rank, config["seed"], config["num_workers"])
    if len(loader) == 0:
        raise ValueError(f"{len(pairs)} pairs make no full batch of {config['batch_size_train']} per process")
    optimizer = build_optimizer(model, config)
    best = {"best": -1.0, "best_epoch": -1}

    def end_of_epoch(epoch: int, stats: dict, state: TrainState) -> dict:
        results = evaluate_splits(model, splits, config, info.device)
        improved = results["val"]["r_mean"] > best["best"]
        if improved:
            best.update(best=results["val"]["r_mean"], best_epoch=epoch)
        rngs = gathered_rng_states()
        extra = {"extra": dict(best)}
        if improved:
            save_training_checkpoint(out / "checkpoint_best.pth", model, optimizer, config, state, extra, rngs)
        save_training_checkpoint(out / "checkpoint_last.pth", model, optimizer, config, state, extra, rngs)
        if is_main():
            log.info(f"epoch {epoch}\n{format_table(results)}")
            (out / "metrics.json").write_text(json.dumps({"epoch": epoch, **results, **best}, indent=2))
        model.train()
        return {**flatten(results), **best}

    run_epochs(model, loader, optimizer, config, info, out, resume, end_of_epoch, extra_state=best)
    log.info(f"retrieval fine-tuning finished; best val r_mean {best['best']:.2f} at epoch {best['best_epoch']}")


if __name__ == "__main__":
    raise SystemExit(main())
