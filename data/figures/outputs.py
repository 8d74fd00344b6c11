"""The files a splitting run (or a merge of shard runs) leaves: records, failures, summary, splits.

Everything is computed from the manifest's figure events in input order, so one process, many
workers and a merge of shards write the same ``subfigures.json``, ``failed.json``, ``summary.json`` and
``train``/``val``/``test.json`` for the same input.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from data.figures.splits import karpathy_splits
from data.files import atomic_write_json
from data.records import FailedFigure, PairRecord, SubFigureRecord, write_records

OUTCOMES = ("matched", "fallback", "failed")


def collect(events: dict[int, dict], unreadable: list[FailedFigure]) -> tuple[list, list, dict]:
    """(sub-figure records, failures, summary) of finished figure events and unreadable input records."""
    results: list[SubFigureRecord] = []
    failures: list[FailedFigure] = list(unreadable)
    outcomes, counts = Counter(), Counter()
    for index in sorted(events):
        event = events[index]
        outcomes[event["outcome"]] += 1
        counts.update(event.get("counts") or {})
        results.extend(event.get("records") or [])
        if event["outcome"] == "failed":
            failures.append(FailedFigure(index=index, record=event.get("record"), reason=event.get("reason", "")))
    failures.sort(key=lambda f: f["index"])
    outcomes["failed"] += len(unreadable)
    summary = {"figures": len(events) + len(unreadable), **{k: outcomes[k] for k in OUTCOMES},
               "subfigures": len(results), **dict(sorted(counts.items()))}
    return results, failures, summary


def write_outputs(out: Path, results: list, failures: list, summary: dict,
                  fractions: tuple[float, float, float] | None, seed: int) -> None:
    """Write the folder's record lists, summary and (with ``fractions``) the article-grouped splits."""
    out = Path(out)
    write_records(out / "subfigures.json", results, SubFigureRecord)
    write_records(out / "failed.json", failures, FailedFigure)
    if fractions is not None:
        for name, rows in karpathy_splits(results, fractions, seed).items():
            write_records(out / f"{name}.json", rows, PairRecord)
    atomic_write_json(out / "summary.json", summary)


def write_output_shards(out: Path, with_splits: bool, shard_size: int) -> list[str]:
    """WebDataset shards of ``subfigures.json`` (for pre-training) and, with splits, of ``train.json``
    (for retrieval fine-tuning), under ``out/shards/<name>/``; returns their ``train_file`` patterns."""
    from data.shards import write_shards

    names = ["subfigures"] + (["train"] if with_splits else [])
    patterns = []
    for name in names:
        info = write_shards([Path(out) / f"{name}.json"], Path(out) / "shards" / name, prefix=name,
                            shard_size=shard_size, replace=True, allow_outside=True)  # whole figures lie in the input
        patterns.append(info["pattern"])
    return patterns
