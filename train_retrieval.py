r"""Fine-tune and evaluate image-text retrieval (BLIP's ITC + ITM, re-ranking evaluation).

    python -m torch.distributed.run --nproc_per_node=8 train_retrieval.py --config ./configs/retrieval_coco.yaml \
        --output_dir output/retrieval_coco [--evaluate]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from data.check import check_eval_images
from data.datasets import DatasetError, RetrievalEvalDataset
from data.files import append_jsonl, atomic_write_json
from data.loader import worker_init
from data.train_data import build_train_loader
from engine import (StepHook, StopRequest, TrainState, build_optimizer, save_checkpoint, start_state, stop_agreed,
                    train_one_epoch, wrap_ddp)
from models import build_model
from models.distributed import is_main
from models.evaluation import evaluate, format_table
from transform import build_transform
from utils import (Preempted, RunLog, add_common_args, barrier, cleanup_distributed, log, log_epoch, run_cli,
                   setup_run)


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
    return {name: evaluate(model, ds, device, config["k_test"], config["batch_size_test"], config["itm_batch_size"],
                           config["num_workers"], bf16=config["precision"] == "bf16",
                           worker_init_fn=worker_init)
            for name, ds in splits.items()}


def flatten(results: dict) -> dict:
    return {f"{split}_{k}": v for split, m in results.items() for k, v in m.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--evaluate", action="store_true", help="only evaluate the `pretrained` checkpoint")
    args = parser.parse_args(argv)
    config, info = setup_run(args, "retrieval", trains=not args.evaluate)
    out = Path(args.output_dir)
    try:
        files = split_files(config)
        model = build_model(config, "retrieval").to(info.device)
        eval_tf = build_transform(config, train=False)
        # Every val/test image header is checked before training: a bad one stops the run, since
        # replacing it would change the metrics.
        splits = {s: RetrievalEvalDataset(files[s], eval_tf, config["image_root"], config["max_words"],
                                          max_pixels=config["max_image_pixels"])
                  for s in ("val", "test")}
        for s, ds in splits.items():
            check_eval_images(ds, f"{s}_file {ds.file}", max_pixels=config["max_image_pixels"])
        if args.evaluate:
            results = evaluate_splits(model, splits, config, info.device)
            if is_main():
                print(format_table(results), flush=True)
                append_jsonl(out / "evaluate.txt", flatten(results))
                atomic_write_json(out / "metrics.json", results, indent=2)
            barrier()
            return 0
        train(model, files["train"], splits, config, info, out, args.resume)
    finally:
        cleanup_distributed(info)
    return 0


def end_of_epoch(model, splits: dict, config: dict, info, out: Path, state: TrainState,
                 best: dict) -> tuple[dict, bool]:
    """Evaluate val and test, keep the best val ``r_mean`` in ``best``, write the epoch's checkpoints."""
    results = evaluate_splits(model, splits, config, info.device)
    improved = results["val"]["r_mean"] > best["best"]
    if improved:
        best.update(best=results["val"]["r_mean"], best_epoch=state.epoch)
    if is_main():
        log.info(f"epoch {state.epoch}\n{format_table(results)}")
        atomic_write_json(out / "metrics.json", {"epoch": state.epoch, **results, **best}, indent=2)
    return {**flatten(results), **best}, improved


def train(model, train_files: list, splits: dict, config: dict, info, out: Path, resume: str | None) -> None:
    loader = build_train_loader(config, train_files, model.tokenizer, info.rank, info.world_size,
                                config["batch_size_train"])
    optimizer = build_optimizer(model, config)
    state, extra = start_state(resume, out, model, optimizer)
    best = {"best": -1.0, "best_epoch": -1, **extra}
    ddp_model = wrap_ddp(model, info)
    run_log = RunLog(out, config["report_to"])
    step_hook = StepHook(out, model, optimizer, config, run_log, get_extra=lambda: dict(best))
    stop = StopRequest().install()
    for epoch in range(state.epoch, config["max_epoch"]):
        state.epoch = epoch
        t0 = time.time()
        stats, bad = train_one_epoch(ddp_model, loader, optimizer, config, state, info.device, step_hook, stop)
        # The epoch's training is on disk before its evaluation: a crash there costs the evaluation only
        # (--resume auto finds every step done and evaluates).
        save_checkpoint([out / "checkpoint_last.pth"], model, optimizer, config, state, dict(best))
        metrics, improved = end_of_epoch(model, splits, config, info, out, state, best)
        log_epoch(run_log, epoch, stats, bad, time.time() - t0, metrics)
        state.epoch_done = True
        paths = [out / "checkpoint_last.pth"] + ([out / "checkpoint_best.pth"] if improved else [])
        save_checkpoint(paths, model, optimizer, config, state, dict(best))
        # A stop asked for during the evaluation is honoured here, with the epoch's checkpoint just written,
        # rather than after one more training step. After the last epoch the run is done: no stop needed.
        if epoch + 1 < config["max_epoch"] and stop_agreed(stop):
            raise Preempted(f"stopped on request after epoch {epoch} and its evaluation; resume with --resume auto")
        state = state.next_epoch()
    run_log.close()
    log.info(f"retrieval fine-tuning finished; best val r_mean {best['best']:.2f} at epoch {best['best_epoch']}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main, "train_retrieval.py"))
