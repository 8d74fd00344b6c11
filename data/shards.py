"""WebDataset tar shards written from JSON lists of image/caption pairs.

    python -m data.shards datasets/pubmed/subfigures/subfigures.json --out datasets/pubmed/shards
    # -> datasets/pubmed/shards/shards-000000.tar ...
    #    train_file: "datasets/pubmed/shards/shards-{000000..000003}.tar"

Each sample is one image/caption pair, as the JSON datasets read it (a record with a list of captions
gives one sample per caption): ``<key>.jpg`` or ``<key>.png`` (JPEG and PNG files byte for byte, any
other image decoded and written as PNG), ``<key>.txt`` (the caption as the record has it; training
cleans it as it cleans JSON captions) and ``<key>.json`` (the record's other keys, plus ``sample``, the
pair's index in the whole list, ``image_index``, the image id that the JSON reader would give it, and
``where``, the record it came from). Keys are the 9-digit sample index.

Shards hold ``--shard-size`` samples (default 10,000) and are written atomically: a shard is written
under a temporary name and renamed when complete, after which ``sizes.json`` (sample counts per shard,
the file open_clip reads) is updated. A killed conversion run again with the same arguments keeps the
finished shards and writes the rest; other arguments on the same folder are refused. Tar headers carry
no clock time, so the same input gives byte-identical shards.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from data.captions import pre_caption
from data.datasets import DatasetError, read_pairs, resolve_image
from data.files import FolderLock, FolderLockedError, atomic_write_json, remove_temp_files, temp_path
from data.images import BadImageError, image_exists, load_rgb
from data.records import BadRecord

log = logging.getLogger(__name__)

SHARD_SIZE = 10_000
SIZES = "sizes.json"
INFO = "shards.json"
KEEP_AS_IS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}


@dataclass
class PairSample:
    """One sample before its image is read: where the image is and what goes beside it."""

    index: int  # position among all the pairs of the input files, in order
    image: Path
    caption: str
    meta: dict


def pair_samples(files: Sequence[str | Path], image_root: str | None,
                 problems: list[str]) -> Iterator[PairSample]:
    """The pairs of ``files`` in the order and with the image ids of :func:`data.datasets.load_pairs`;
    records it would skip (missing image, empty caption, not a pair record) go to ``problems``."""
    ids: dict = {}
    index = 0
    for file in map(Path, files):
        bad: list[BadRecord] = []
        for where, item in read_pairs(file, bad):
            image = resolve_image(item["image"], file, image_root)
            if not image_exists(image):
                problems.append(f"{where}: image file {image} does not exist")
                continue
            key = item.get("image_id", str(image))
            captions = item["caption"] if isinstance(item["caption"], list) else [item["caption"]]
            extra = {k: v for k, v in item.items() if k != "caption"}
            for caption in captions:
                if not pre_caption(caption, 10**9):
                    problems.append(f"{where}: empty caption {caption!r}"[:300])
                    continue
                meta = {**extra, "sample": index, "image_index": ids.setdefault(key, len(ids)), "where": where}
                yield PairSample(index, image, caption, meta)
                index += 1
        problems += [str(b) for b in bad]


def encode_image(path: Path) -> tuple[str, bytes]:
    """(extension, bytes): JPEG and PNG files as they are, other images decoded and written as PNG."""
    ext = KEEP_AS_IS.get(path.suffix.lower()) if path.is_file() else None
    if ext:
        return ext, path.read_bytes()
    buf = io.BytesIO()
    load_rgb(path).save(buf, format="PNG")
    return "png", buf.getvalue()


def shard_name(prefix: str, number: int) -> str:
    return f"{prefix}-{number:06d}.tar"


def brace_pattern(folder: Path, prefix: str, shards: int) -> str:
    """``folder/prefix-{000000..000011}.tar``: what ``train_file`` names the shards with."""
    if shards == 1:
        return str(folder / shard_name(prefix, 0))
    return str(folder / f"{prefix}-{{{0:06d}..{shards - 1:06d}}}.tar")


class ShardWriter:
    """Samples into numbered tar shards of ``shard_size``, each complete before it gets its name."""

    def __init__(self, folder: Path, prefix: str, shard_size: int, identity: dict, replace: bool = False) -> None:
        import webdataset as wds  # only the shard tools need the library

        self._wds = wds
        self.folder, self.prefix, self.shard_size = Path(folder), prefix, shard_size
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in remove_temp_files(self.folder):
            log.info("removed partial shard %s left by an interrupted run", leftover)
        self.sizes = self._resume(identity, replace)
        self.identity = identity
        self._tar = None
        self._tmp: Path | None = None
        self._count = 0
        self._number = -1

    def _resume(self, identity: dict, replace: bool) -> dict[str, int]:
        info_path = self.folder / INFO
        if not info_path.exists():
            return {}
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("identity") != identity and replace:  # shards derived from a list that has changed
            for old in [*self.folder.glob(f"{self.prefix}-*.tar"), self.folder / SIZES, info_path]:
                old.unlink(missing_ok=True)
            return {}
        if info.get("identity") != identity:
            raise ValueError(f"{self.folder} holds shards of other input or settings ({info_path}); "
                             f"choose another --out or remove that folder")
        sizes = json.loads((self.folder / SIZES).read_text(encoding="utf-8")) if (self.folder / SIZES).exists() else {}
        return {name: n for name, n in sizes.items() if (self.folder / name).is_file()}

    def is_written(self, index: int) -> bool:
        """Whether the shard that sample ``index`` goes to was completed by an earlier run (a shard gets
        its name, and its line in ``sizes.json``, only once it is complete)."""
        return shard_name(self.prefix, index // self.shard_size) in self.sizes

    def add(self, sample: dict, index: int) -> None:
        """Append a sample (``__key__``, ``jpg``/``png``, ``txt``, ``json``) as sample ``index``."""
        number = index // self.shard_size
        if number != self._number:
            self._finish()
            self._open(number)
        self._tar.write(sample)
        self._count += 1

    def _open(self, number: int) -> None:
        self._number = number
        self._tmp = temp_path(self.folder / shard_name(self.prefix, number))
        self._tar = self._wds.TarWriter(str(self._tmp), mtime=0)
        self._count = 0

    def _finish(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        final = self.folder / shard_name(self.prefix, self._number)
        with open(self._tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self._tmp, final)
        self.sizes[final.name] = self._count
        atomic_write_json(self.folder / SIZES, dict(sorted(self.sizes.items())))
        self._tar, self._tmp = None, None

    def close(self, total: int, skipped: int) -> dict:
        """Finish the last shard and write ``shards.json``; returns it."""
        self._finish()
        shards = -(-total // self.shard_size)
        info = {"identity": self.identity, "samples": sum(self.sizes.values()), "shards": shards, "skipped": skipped,
                "pattern": brace_pattern(self.folder, self.prefix, shards) if shards else ""}
        atomic_write_json(self.folder / SIZES, dict(sorted(self.sizes.items())))
        atomic_write_json(self.folder / INFO, info)
        return info

    def abort(self) -> None:
        """Drop the shard being written (it is incomplete)."""
        if self._tar is not None:
            try:
                self._tar.close()
            finally:
                self._tmp.unlink(missing_ok=True)
                self._tar, self._tmp = None, None


def write_shards(files: Sequence[str | Path], out: Path, prefix: str = "shards", shard_size: int = SHARD_SIZE,
                 image_root: str | None = None, replace: bool = False) -> dict:
    """Convert the JSON lists ``files`` into shards under ``out``; returns ``shards.json``'s content.

    With ``replace`` the shards of other inputs in ``out`` are deleted first (for shards that a tool
    derives from its own outputs); without it such a folder is refused."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    if not prefix or any(c in prefix for c in "/{}."):
        raise ValueError(f"--prefix must be a plain name without '/', '.', braces, got {prefix!r}")
    identity = {"inputs": [str(Path(f).resolve()) for f in files], "inputs_sha256": [_sha256(f) for f in files],
                "image_root": image_root, "shard_size": shard_size, "prefix": prefix}
    lock = FolderLock(out, "shard conversion")
    for note in lock.acquire():
        log.warning("%s", note)
    try:
        writer = ShardWriter(out, prefix, shard_size, identity, replace)
        problems: list[str] = []
        total = 0
        try:
            for sample in pair_samples(files, image_root, problems):
                total = sample.index + 1
                if writer.is_written(sample.index):
                    continue
                try:
                    ext, data = encode_image(sample.image)
                except BadImageError as err:
                    problems.append(f"{sample.meta['where']}: {err}")
                    continue
                writer.add({"__key__": f"{sample.index:09d}", ext: data, "txt": sample.caption,
                            "json": json.dumps(sample.meta, ensure_ascii=False).encode("utf-8")}, sample.index)
        except BaseException:
            writer.abort()
            raise
        for p in problems[:20]:
            log.warning("skipping %s", p)
        return writer.close(total, len(problems))
    finally:
        lock.release()


def _sha256(path: str | Path) -> str:
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as err:
        raise DatasetError(f"dataset file {path} cannot be read: {err}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write WebDataset tar shards from JSON lists of image/caption "
                                                 "pairs.", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="JSON lists of {image, caption} records")
    parser.add_argument("--out", required=True, help="folder for the shards")
    parser.add_argument("--prefix", default="shards", help="shard names: PREFIX-000000.tar, ... (default shards)")
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE, help="samples per shard (default 10000)")
    parser.add_argument("--image-root", default=None, help="folder that relative image paths resolve against")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        info = write_shards(args.files, Path(args.out), args.prefix, args.shard_size, args.image_root)
    except (DatasetError, ValueError, FolderLockedError) as err:
        print(f"data.shards: error: {err}", file=sys.stderr)
        return 2
    print(f"{info['samples']} samples in {info['shards']} shard(s); {info['skipped']} record(s) skipped")
    print(f"train_file: \"{info['pattern']}\"")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
