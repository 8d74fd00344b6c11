"""Speed of figure splitting, printed as JSON: figures per second with 1 and 2 worker processes, and
where one process spends its time (panel detection, OCR of panel corners, whole-figure OCR, caption
splitting, crops, the rest).

Sets: the real figures of ../shared/fixtures/ (3 compound figures, 10 MedICaT figures), compound
figures built from real single images (bench.compound_synth), rich built figures of a tuning
seed (bench.compound_rich: larger grids, labels at any corner, distractors) and ``pmc``: the
first ``--pmc-n`` tuning figures of the real compound-figure gold with their captions (bench.real_figures;
needs its sources folder). OCR results are not cached between runs (each run starts with an empty
in-memory cache), so every run does the full work. ``--baseline`` also times, in the same run and
figure by figure, the splitting that read letters from the image alone (before captions steered them).

    python -m bench.split_speed [--fixtures DIR] [--ocr rapidocr|none] [--per-layout N] [--rich-n N]
        [--workers 1,2] [--sets real,built,rich,pmc] [--pmc-n N] [--baseline]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from pathlib import Path

import data.figures as figures_pkg
from data.figures import labels, split as split_mod
from data.figures.ocr import CachedOcr, make_ocr
from data.figures.parallel import WorkerSetup, split_many, threads_per_worker
from data.figures.split import SplitOptions
from bench.compound_rich import build_rich_set
from bench.compound_synth import LAYOUTS, build, load_tiles

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


def pmc_records(n: int) -> list[tuple[int, dict]]:
    """The first ``n`` tuning figures of the real compound-figure gold, with their captions."""
    from bench.figure_gold import load_sources, read_figures, sources_dir

    items = load_sources(read_figures(part="tuning")[:n], sources_dir())
    return list(enumerate({"image": str(path), "caption": caption} for _, path, caption in items))


@contextmanager
def image_only_letters():
    """Split as before captions steered the letters: every figure's letters read from the image alone."""
    original = split_mod.caption_letters
    split_mod.caption_letters = lambda caption: None
    try:
        yield
    finally:
        split_mod.caption_letters = original


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


def _must_split(records: list[tuple[int, dict]], index: int, result) -> None:
    """Stop at a figure that failed (an image not found): its near-zero time would pass for speed."""
    if result.outcome == "failed":
        raise SystemExit(f"split_speed: {dict(records)[index]['image']}: {result.reason}")


def profile(records: list[tuple[int, dict]], ocr_name: str, out: Path) -> dict:
    """Seconds per figure in each stage, one process."""
    totals: dict[str, float] = defaultdict(float)
    ocr = make_ocr(ocr_name, None)
    ocr.prepare()
    setup = WorkerSetup(root=Path("/"), out=out, ocr=ocr_name, cache_dir=None, opts=SplitOptions())
    with timed(figures_pkg, "without_crosshairs", totals, "panel_detection"), \
            timed(figures_pkg, "boxes_without_crosshairs", totals, "panel_detection"), \
            timed(labels, "_read_corner", totals, "corner_ocr"), \
            timed(CachedOcr, "recognise", totals, "mark_ocr"), \
            timed(CachedOcr, "read", totals, "ocr_read_all"), \
            timed(split_mod, "split_caption", totals, "caption_split"), \
            timed(split_mod, "save_crop", totals, "crops"):
        t0 = time.perf_counter()
        for index, result in split_many(records, setup, 1, ocr):
            _must_split(records, index, result)
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


def paired_profiles(records: list[tuple[int, dict]], ocr_name: str, out: Path) -> dict:
    """Seconds per figure with the caption's letters and with letters from the image alone, each figure
    split both ways one right after the other (fresh OCR each time), so that a load that changes during
    the run weighs on both alike."""
    sums = {"caption_letters": defaultdict(float), "image_only_letters": defaultdict(float)}
    for k, record in enumerate(records):
        for mode, stages in sums.items():
            with image_only_letters() if mode == "image_only_letters" else nullcontext():
                result = profile([record], ocr_name, out / f"{mode}_{k}")
            stages["total"] += result["s_per_figure"]
            for stage, seconds in result["stages_s_per_figure"].items():
                stages[stage] += seconds
    n = max(len(records), 1)
    report = {mode: {k: round(v / n, 3) for k, v in stages.items()} for mode, stages in sums.items()}
    report["ratio_caption_to_image_only"] = round(sums["caption_letters"]["total"]
                                                  / max(sums["image_only_letters"]["total"], 1e-9), 3)
    return report


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
    for index, result in split_many(records, setup, workers, ocr):
        _must_split(records, index, result)
        first = first or time.perf_counter()
    end = time.perf_counter()
    n = len(records)
    steady = (n - 1) / (end - first) if n > 1 and end > first else None
    return {"workers": workers, "figures": n, "wall_s": round(end - t0, 2), "figures_per_s": round(n / (end - t0), 3),
            "figures_per_s_after_first": round(steady, 3) if steady else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", default=os.environ.get("MEDVL_FIXTURES",
                                                             str(ROOT.parent / "shared" / "fixtures")))
    parser.add_argument("--ocr", default="rapidocr", choices=("rapidocr", "none"))
    parser.add_argument("--per-layout", type=int, default=2, help="built figures per layout")
    parser.add_argument("--rich-n", type=int, default=12, help="rich built figures")
    parser.add_argument("--workers", default="1,2", help="worker counts to time, comma list")
    parser.add_argument("--sets", default="real,built,rich", help="sets to time, comma list of real, built, rich, pmc")
    parser.add_argument("--pmc-n", type=int, default=12, help="real PMC figures of the gold's tuning part")
    parser.add_argument("--baseline", action="store_true",
                        help="also profile the image-only letter reading, in the same run")
    args = parser.parse_args(argv)
    fixtures = Path(args.fixtures).resolve()  # the records' image paths are read from the root folder
    report = {"ocr": args.ocr, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        makers = {"real": ("real_fixture_figures", lambda: real_records(fixtures)),
                  "built": ("built_figures", lambda: built_records(fixtures, tmp, args.per_layout)),
                  "rich": ("rich_built_figures", lambda: rich_records(fixtures, tmp, args.rich_n)),
                  "pmc": ("real_pmc_figures", lambda: pmc_records(args.pmc_n))}
        chosen = args.sets.split(",")
        if set(chosen) - set(makers):
            parser.error(f"unknown sets {sorted(set(chosen) - set(makers))}")
        sets = {makers[k][0]: makers[k][1]() for k in chosen}
        for name, records in sets.items():
            out = tmp / name
            report[name] = {"profile_1_process": profile(records, args.ocr, out),
                            "throughput": [throughput(records, args.ocr, int(w), out) for w in args.workers.split(",")]}
            if args.baseline:
                report[name]["paired_with_image_only_letters"] = paired_profiles(records, args.ocr, out / "paired")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
