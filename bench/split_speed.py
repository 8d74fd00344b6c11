"""Speed of figure splitting, printed as JSON: figures per second with 1 and 2 worker processes, and
where one process spends its time (panel detection, OCR of panel corners, whole-figure OCR, caption
splitting, crops, the rest).

Sets: the real figures of ../shared/fixtures/ (3 compound figures, 10 MedICaT figures), compound
figures built from real single images (data.synthetic.compound_synth) and rich built figures of a tuning
seed (data.synthetic.compound_rich: larger grids, labels at any corner, distractors). OCR results are not cached
between runs (each run starts with an empty in-memory cache), so every run does the full work.

    python -m bench.split_speed [--fixtures DIR] [--ocr rapidocr|none] [--per-layout N] [--rich-n N]
        [--workers 1,2] [--sets real,built,rich]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import data.figures as figures_pkg
from data.figures import labels, split as split_mod
from data.figures.ocr import CachedOcr, make_ocr
from data.figures.parallel import WorkerSetup, split_many, threads_per_worker
from data.figures.split import SplitOptions
from data.synthetic.compound_rich import build_rich_set
from data.synthetic.compound_synth import LAYOUTS, build, load_tiles

ROOT = Path(__file__).resolve().parents[1]
REAL = ("s41467-018-06211-3_fig1.jpg", "s41467-018-06211-3_fig3.jpg", "s41467-018-06211-3_fig5.jpg")


def real_records(fixtures: Path) -> list[tuple[int, dict]]:
    """The fixtures' real figures as figure records (captions from the MedICaT sample where it has them)."""
    rows = [json.loads(line) for line in (fixtures / "image_caption" / "sample.jsonl").read_text().splitlines()]
    records = [{"image": str(fixtures / "compound_figures" / name), "caption": "(a) Panel. (b) Panel. (c) Panel."}
               for name in REAL]
    records += [{"image": str(fixtures / "image_caption" / f"{r['pdf_hash']}_{r['fig_uri']}"),
                 "caption": r.get("s2orc_caption") or r.get("s2_caption") or "Figure."} for r in rows]
    return list(enumerate(records))


def saved_records(figures: list, folder: Path, prefix: str) -> list[tuple[int, dict]]:
    """Built ``figures`` saved as PNG in ``folder``, as figure records with one sub-caption per panel."""
    records = []
    for k, fig in enumerate(figures):
        path = folder / f"{prefix}_{k}.png"
        fig.image.save(path)
        caption = "MRI of the brain. " + " ".join(f"({x}) View {x.lower()}." for x in fig.labels)
        records.append({"image": str(path), "caption": caption})
    return list(enumerate(records))


def built_records(fixtures: Path, folder: Path, per_layout: int, seed: int = 5) -> list[tuple[int, dict]]:
    tiles, rng = load_tiles(fixtures / "image_caption"), random.Random(seed)
    return saved_records([build(tiles, layout, rng) for layout in LAYOUTS for _ in range(per_layout)], folder, "built")


def rich_records(fixtures: Path, folder: Path, n: int, seed: int = 1) -> list[tuple[int, dict]]:
    """``n`` rich built figures of tuning seed ``seed``."""
    return saved_records(build_rich_set(fixtures / "image_caption", n, seed), folder, f"rich_{seed}")


@contextmanager
def timed(owner, name: str, totals: dict[str, float], key: str):
    """Add the time spent in ``owner.name`` to ``totals[key]`` while the block runs."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def profile(records: list[tuple[int, dict]], ocr_name: str, out: Path) -> dict:
    """Seconds per figure in each stage, one process."""
    totals: dict[str, float] = defaultdict(float)
    ocr = make_ocr(ocr_name, None)
    ocr.prepare()
    setup = WorkerSetup(root=Path("/"), out=out, ocr=ocr_name, cache_dir=None, opts=SplitOptions())
    with timed(figures_pkg, "detect_panel_boxes", totals, "panel_detection"), \
            timed(labels, "_read_corner", totals, "corner_ocr"), \
            timed(CachedOcr, "recognise", totals, "mark_ocr"), \
            timed(CachedOcr, "read", totals, "ocr_read_all"), \
            timed(split_mod, "split_caption", totals, "caption_split"), \
            timed(split_mod, "save_crop", totals, "crops"):
        t0 = time.perf_counter()
        for _ in split_many(records, setup, 1, ocr):
            pass
        total = time.perf_counter() - t0
    n = len(records)
    whole = totals["ocr_read_all"] - totals["corner_ocr"]
    stages = {"panel_detection": totals["panel_detection"], "corner_ocr_marks": totals["mark_ocr"],
              "corner_ocr_windows": totals["corner_ocr"], "whole_figure_ocr": max(whole, 0.0),
              "caption_split": totals["caption_split"], "crops": totals["crops"]}
    stages["other"] = total - sum(stages.values())
    return {"figures": n, "s_per_figure": round(total / n, 3),
            "stages_s_per_figure": {k: round(v / n, 3) for k, v in stages.items()},
            "stages_share": {k: round(v / total, 3) for k, v in stages.items()}}


def throughput(records: list[tuple[int, dict]], ocr_name: str, workers: int, out: Path) -> dict:
    """Figures per second with ``workers`` processes, start-up (spawn, OCR models) included and not."""
    setup = WorkerSetup(root=Path("/"), out=out, ocr=ocr_name, cache_dir=None, opts=SplitOptions(),
                        threads=threads_per_worker(workers))
    ocr = None
    t0 = time.perf_counter()
    if workers == 1:
        ocr = make_ocr(ocr_name, None)
        ocr.prepare()
    first = None
    for _ in split_many(records, setup, workers, ocr):
        first = first or time.perf_counter()
    end = time.perf_counter()
    n = len(records)
    steady = (n - 1) / (end - first) if n > 1 and end > first else None
    return {"workers": workers, "figures": n, "wall_s": round(end - t0, 2), "figures_per_s": round(n / (end - t0), 3),
            "figures_per_s_after_first": round(steady, 3) if steady else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", default=os.environ.get("MEDVL_FIXTURES",
                                                             str(ROOT.parent / "shared" / "fixtures")))
    parser.add_argument("--ocr", default="rapidocr", choices=("rapidocr", "none"))
    parser.add_argument("--per-layout", type=int, default=2, help="built figures per layout")
    parser.add_argument("--rich-n", type=int, default=12, help="rich built figures")
    parser.add_argument("--workers", default="1,2", help="worker counts to time, comma list")
    parser.add_argument("--sets", default="real,built,rich", help="sets to time, comma list of real, built, rich")
    args = parser.parse_args()
    fixtures = Path(args.fixtures)
    report = {"ocr": args.ocr, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        makers = {"real": ("real_fixture_figures", lambda: real_records(fixtures)),
                  "built": ("built_figures", lambda: built_records(fixtures, tmp, args.per_layout)),
                  "rich": ("rich_built_figures", lambda: rich_records(fixtures, tmp, args.rich_n))}
        chosen = args.sets.split(",")
        if set(chosen) - set(makers):
            parser.error(f"unknown sets {sorted(set(chosen) - set(makers))}")
        sets = {makers[k][0]: makers[k][1]() for k in chosen}
        for name, records in sets.items():
            out = tmp / name
            report[name] = {"profile_1_process": profile(records, args.ocr, out),
                            "throughput": [throughput(records, args.ocr, int(w), out) for w in args.workers.split(",")]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
