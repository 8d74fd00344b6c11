r"""Pre-resize the images of a JSON list, for when decoding full-size figures bounds training.

    python -m data.resize --in datasets/pmc/captions.json --out datasets/pmc_448 --side 448 [--format jpg]

Every image the list names is decoded once (any format the datasets read, DICOM and NIfTI included),
scaled so that its shorter side is ``--side`` pixels (aspect ratio kept; a smaller image is not enlarged),
and written as RGB under ``OUT/images/``. ``OUT/<the list's file name>`` receives the same records, every
key kept, with ``image`` pointing at the copy (relative to OUT, so the folder can move). Train with the
new list: RandomResizedCrop then works from at most side x (side * aspect) pixels instead of the original.
``--side 448`` keeps twice the 224 px training resolution; retrieval at 384 px wants ``--side 768``.

PNG (the default) is lossless; ``--format jpg`` (quality 95) decodes several times faster. An image that
cannot be read keeps its record pointing at the original and is reported: the datasets skip it as before.
``bench/dataload.py`` tells whether loading bounds a run at all.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from data.datasets import resolve_image
from data.files import read_json_list
from data.files import atomic_write, atomic_write_json
from data.image_limits import BadImageError
from data.images import load_rgb

log = logging.getLogger("medvl")


def resized(img: Image.Image, side: int) -> Image.Image:
    """``img`` scaled so that its shorter side is ``side`` (bicubic); unchanged when already that small."""
    scale = side / min(img.size)
    if scale >= 1.0:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.BICUBIC, reducing_gap=3.0)


def output_name(source: Path, fmt: str) -> str:
    """A name unique per source path (two folders may both hold ``fig1.png``), readable by its stem."""
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:10]
    return f"images/{source.name.split('#')[0].split('.')[0][:60]}_{digest}.{fmt}"


def convert(source: Path, target: Path, side: int, fmt: str) -> str | None:
    """Decode, resize and write one image atomically; the error message when it cannot be read."""
    try:
        img = resized(load_rgb(source), side)
    except BadImageError as e:
        return str(e)
    options = {"quality": 95} if fmt == "jpg" else {"compress_level": 1}  # PNG: fast to write, still lossless
    atomic_write(target, lambda tmp: img.save(tmp, format="JPEG" if fmt == "jpg" else "PNG", **options))
    return None


def _convert_args(job: tuple[Path, Path, int, str]) -> str | None:
    return convert(*job)


def resize_list(in_path: str | Path, out_dir: str | Path, side: int, fmt: str = "png", image_root: str | None = None,
                workers: int = 0) -> tuple[Path, int, list[str]]:
    """Resize every image of the list ``in_path`` into ``out_dir``; returns (new list, images written, problems).

    Images already written by an earlier, interrupted run are kept (the command resumes).
    """
    in_path, out_dir = Path(in_path), Path(out_dir)
    records = read_json_list(in_path, "dataset file")
    names: dict[Path, str] = {}
    for r in records:
        if isinstance(r, dict) and isinstance(r.get("image"), str):
            names.setdefault(resolve_image(r["image"], in_path, image_root), "")
    for source in names:
        names[source] = output_name(source, fmt)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(src, out_dir / name, side, fmt) for src, name in names.items() if not (out_dir / name).is_file()]
    if workers > 0:
        with ProcessPoolExecutor(workers) as pool:
            errors = list(pool.map(_convert_args, jobs, chunksize=8))
    else:
        errors = [_convert_args(job) for job in jobs]
    failed = {job[0]: e for job, e in zip(jobs, errors) if e is not None}
    out = []
    for r in records:
        if isinstance(r, dict) and isinstance(r.get("image"), str):
            source = resolve_image(r["image"], in_path, image_root)
            r = {**r, "image": str(source.resolve()) if source in failed else names[source]}
        out.append(r)
    new_list = out_dir / in_path.name
    atomic_write_json(new_list, out)
    return new_list, len(jobs) - len(failed), list(failed.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in", dest="in_path", required=True, help="JSON list of records with an 'image' key")
    p.add_argument("--out", required=True, help="output folder (images/ and the new list)")
    p.add_argument("--side", type=int, default=448, help="shorter side in pixels after resizing")
    p.add_argument("--format", default="png", choices=("png", "jpg"))
    p.add_argument("--image-root", default=None, help="folder relative image paths resolve against (the list's "
                   "folder by default, as in training)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (0: this one)")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    if args.side < 16:
        p.error("--side must be at least 16")
    try:
        new_list, written, problems = resize_list(args.in_path, args.out, args.side, args.format, args.image_root,
                                                  args.workers)
    except ValueError as e:  # DatasetError: the list itself cannot be read
        print(f"data.resize: error: {e}", file=sys.stderr)
        return 2
    for msg in problems[:20]:
        log.warning(f"kept the original (unreadable): {msg}")
    log.info(f"wrote {written} images and {new_list}; {len(problems)} unreadable kept as they were")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
