"""WebDataset tar shards written from JSON lists of image/caption pairs.

    python -m data.shards datasets/pubmed/subfigures/subfigures.json --out datasets/pubmed/shards
    # -> datasets/pubmed/shards/shards-000000.tar ...
    #    train_file: "datasets/pubmed/shards/shards-{000000..000003}.tar"

The inputs are JSON lists or datasets in their published layouts (``csv:pairs.csv``, ``roco:DIR``, ...:
see :mod:`data.adapters`). Each sample is one image/caption pair, as the JSON datasets read it (a record
with a list of captions gives one sample per caption): ``<key>.jpg`` or ``<key>.png`` (JPEG and PNG files
byte for byte, named by their real format; any other image decoded and written as PNG), ``<key>.txt``
(the caption as the record has it; training cleans it as it cleans JSON captions) and ``<key>.json`` (the
record's other keys, plus ``sample``, the pair's index in the whole list, ``image_index``, the image id
that the JSON reader would give it, and ``where``, the record it came from). Keys are the 9-digit sample
index.

A shard holds only images that decode (every image is decoded once, within ``--max-image-pixels``), and
only images inside the folder of their list (or ``--image-root``): an image path that leaves it (an
absolute path elsewhere, ``../``) is a skipped record, named, unless ``--allow-outside`` says the list's
paths are trusted. Shards are meant to be copied and shared; a list must not be able to pull arbitrary
files of this machine into them.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from data import adapters
from data.captions import pre_caption
from data.datasets import DatasetError, read_pairs, resolve_image
from data.errors import is_write_failure, run_command
from data.files import FolderLock, atomic_write_json, remove_temp_files, temp_path
from data.image_limits import DEFAULT_MAX_PIXELS, BadImageError
from data.images import image_exists, load_rgb, open_image, parse_pixel_limit, to_rgb
from data.records import BadRecord

log = logging.getLogger(__name__)

SHARD_SIZE = 10_000
SIZES = "sizes.json"
INFO = "shards.json"
KEEP_AS_IS = {"JPEG": "jpg", "PNG": "png"}  # PIL format -> extension of files kept byte for byte


@dataclass
class PairSample:
    """One sample before its image is read: where the image is and what goes beside it."""

    index: int  # position among all the pairs of the input files, in order
    image: Path
    caption: str
    meta: dict


def outside(image: Path, file: Path, image_root: str | None) -> str:
    """Why ``image`` of the JSON list ``file`` may not go into a shard (it leaves the list's folder, or
    ``image_root``), or "" (:func:`data.adapters.outside_reason`)."""
    root = adapters.lexical(Path(image_root) if image_root else file.parent)
    return adapters.outside_reason(str(image), [root], "pass --allow-outside if this list's paths are meant to "
                                                        "point elsewhere")


def pair_samples(files: Sequence[str | Path], image_root: str | None, problems: list[str],
                 allow_outside: bool = False) -> Iterator[PairSample]:
    """The pairs of ``files`` in the order and with the image ids of :func:`data.datasets.load_pairs`;
    records it would skip (missing image, empty caption, not a pair record), and records of a JSON list
    whose image leaves its folder (unless ``allow_outside``), go to ``problems``."""
    ids: dict = {}
    index = 0
    for file in files:
        spec = adapters.is_adapter_spec(file)  # a layout checks its own paths (data.adapters)
        file = file if spec else Path(file)
        bad: list[BadRecord] = []
        for where, item in read_pairs(file, bad):
            image = resolve_image(item["image"], Path(file), image_root)
            reason = "" if spec or allow_outside else outside(image, file, image_root)
            if reason:
                problems.append(f"{where}: {reason}")
                continue
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


def encode_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, bytes]:
    """(extension, bytes) of an image that decodes: JPEG and PNG files byte for byte, under the extension
    of their real format; other images (and DICOM/NIfTI references) decoded and written as PNG.
    :class:`BadImageError` for anything that does not decode within ``max_pixels``."""
    from data import clinical

    buf = io.BytesIO()
    if clinical.is_clinical(path):
        load_rgb(path, max_pixels).save(buf, format="PNG")
        return "png", buf.getvalue()
    data = path.read_bytes() if path.is_file() else b""
    with open_image(io.BytesIO(data) if data else path, max_pixels, name=path) as img:
        img.load()  # every pixel: a truncated file or a text file named .png fails here
        if img.format in KEEP_AS_IS:
            return KEEP_AS_IS[img.format], data
        to_rgb(img).save(buf, format="PNG")
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
        """Finish the last shard and write ``shards.json``; returns it. A shard whose every sample was
        skipped is written empty, so that the brace pattern names only files that exist."""
        self._finish()
        shards = -(-total // self.shard_size)
        for number in range(shards):
            if shard_name(self.prefix, number) not in self.sizes:
                self._open(number)
                self._finish()
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
            except OSError:  # a full disk fails the close too; the file is removed either way
                pass
            finally:
                self._tmp.unlink(missing_ok=True)
                self._tar, self._tmp = None, None


def write_shards(files: Sequence[str | Path], out: Path, prefix: str = "shards", shard_size: int = SHARD_SIZE,
                 image_root: str | None = None, replace: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                 allow_outside: bool = False) -> dict:
    """Convert the JSON lists or dataset specs ``files`` into shards under ``out``; returns ``shards.json``'s
    content.

    With ``replace`` the shards of other inputs in ``out`` are deleted first (for shards that a tool
    derives from its own outputs); without it such a folder is refused. ``allow_outside`` lets images of
    JSON lists lie outside the list's folder (a tool's own outputs, or lists you trust)."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    if not prefix or any(c in prefix for c in "/{}."):
        raise ValueError(f"--prefix must be a plain name without '/', '.', braces, got {prefix!r}")
    identity = {"inputs": [_input_name(f) for f in files], "inputs_sha256": [_sha256(f) for f in files],
                "image_root": image_root, "shard_size": shard_size, "prefix": prefix}
    # settings added later join the identity only when changed, so folders written before still resume
    identity.update({k: v for k, v in (("max_pixels", max_pixels), ("allow_outside", allow_outside))
                     if v != {"max_pixels": DEFAULT_MAX_PIXELS, "allow_outside": False}[k]})
    lock = FolderLock(out, "shard conversion")
    for note in lock.acquire():
        log.warning("%s", note)
    try:
        writer = ShardWriter(out, prefix, shard_size, identity, replace)
        problems: list[str] = []
        total = 0
        try:
            for sample in pair_samples(files, image_root, problems, allow_outside):
                total = sample.index + 1
                if writer.is_written(sample.index):
                    continue
                try:
                    ext, data = encode_image(sample.image, max_pixels)
                except BadImageError as err:
                    problems.append(f"{sample.meta['where']}: {err}")
                    continue
                writer.add({"__key__": f"{sample.index:09d}", ext: data, "txt": sample.caption,
                            "json": json.dumps(sample.meta, ensure_ascii=False).encode("utf-8")}, sample.index)
            for p in problems[:20]:
                log.warning("skipping %s", p)
            return writer.close(total, len(problems))
        except BaseException as err:
            writer.abort()  # the shard being written is incomplete; finished ones stay for a rerun
            if is_write_failure(err) and not getattr(err, "filename", None):  # tarfile's errors name no file
                raise OSError(err.errno, err.strerror, str(out)) from err
            raise
    finally:
        lock.release()


def _input_name(spec: str | Path) -> str:
    return str(spec) if adapters.is_adapter_spec(spec) and not Path(spec).is_file() else str(Path(spec).resolve())


def _sha256(spec: str | Path) -> str:
    """The hash of an input's content: a JSON list, or every file of a dataset spec."""
    import hashlib

    paths = adapters.source_files(str(spec)) if adapters.is_adapter_spec(spec) else [Path(spec)]
    digest = hashlib.sha256()
    try:
        for path in paths:
            digest.update(hashlib.sha256(path.read_bytes()).digest() if len(paths) > 1 else path.read_bytes())
    except OSError as err:
        raise DatasetError(f"dataset file {spec} cannot be read: {err}") from None
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="JSON lists of {image, caption} records, or dataset specs "
                                                 "(csv:FILE, roco:DIR, rocov2:FILE, pmc-oa:FILE, medicat:FILE)")
    parser.add_argument("--out", required=True, help="folder for the shards")
    parser.add_argument("--prefix", default="shards", help="shard names: PREFIX-000000.tar, ... (default shards)")
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE, help="samples per shard (default 10000)")
    parser.add_argument("--image-root", default=None, help="folder that relative image paths resolve against")
    parser.add_argument("--max-image-pixels", type=parse_pixel_limit, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="images with more pixels are skipped records (default %(default)s)")
    parser.add_argument("--allow-outside", action="store_true",
                        help="let images of JSON lists lie outside the list's folder (or --image-root)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def run() -> int:
        info = write_shards(args.files, Path(args.out), args.prefix, args.shard_size, args.image_root,
                            max_pixels=args.max_image_pixels, allow_outside=args.allow_outside)
        print(f"{info['samples']} samples in {info['shards']} shard(s); {info['skipped']} record(s) skipped")
        if not info["samples"]:
            raise DatasetError(f"no sample was written: every record of {args.files} was skipped (see above)"
                               if info["skipped"] else f"{args.files} hold no record")
        print(f"train_file: \"{info['pattern']}\"")
        return 0

    return run_command(run, "data.shards", bad_input=(ValueError,))


if __name__ == "__main__":
    raise SystemExit(main())
