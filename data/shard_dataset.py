"""Training pairs streamed from WebDataset tar shards (written by :mod:`data.shards` or any tool that
writes ``<key>.jpg|png`` + ``<key>.txt`` [+ ``<key>.json``] samples).

``train_file`` entries that name shards (``.tar`` names, brace patterns such as
``shards-{000000..000123}.tar``, ``a.tar::b.tar``, ``pipe:`` commands, ``https://`` URLs) are read here
instead of as JSON lists; the ``webdataset`` library expands the patterns and opens the streams.

An epoch of every process is ``steps = samples // (processes * batch_size)`` batches, the same on every
rank (DDP needs it). The shards are shuffled with ``(seed, epoch)`` and dealt to the ``processes *
loader workers`` readers of the run (with fewer shards than readers every reader reads all shards and
keeps every k-th sample); a reader that runs out of samples before its share of the epoch starts
another pass over its shards. Inside a reader a shuffle buffer (seeded, ``shard_shuffle_buffer`` samples,
default 1000) mixes neighbouring samples. So the order is a fixed function of (shards, seed, epoch, processes,
batch size, loader workers), and a resumed epoch skips exactly the batches the killed run had finished.

Before step one, :func:`data.shard_check.preflight_shards` counts every local shard's samples from its
tar headers (a ``sizes.json`` that disagrees stops the run), and counts truncated shards and samples
without an image or caption against ``max_bad_fraction``. During the epoch, bad samples are handled as
in the JSON datasets: a sample whose image does not decode or whose caption is empty or not UTF-8 is
replaced by the reader's previous good sample and counted in ``bad``; samples lost to a shard that
became unreadable are counted too. The epoch's count is checked against ``max_bad_fraction`` at its
end, as for JSON lists.
"""
from __future__ import annotations

import io
import json
import logging
from itertools import islice
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data.captions import pre_caption
from data.datasets import DatasetError
from data.image_limits import DEFAULT_MAX_PIXELS
from data.images import to_rgb
from data.loader import one_opencv_thread, worker_init
from data.shard_files import IMAGE_KEYS, expand, is_shard_spec, raw_samples

log = logging.getLogger("medvl")

SHUFFLE_BUFFER = 1000
def batches_of(n: int, workers: int, worker: int) -> int:
    """How many of the batches 0..n-1 fall to ``worker`` when batch ``j`` comes from worker ``j % workers``."""
    return max(0, -(-(n - worker) // workers))


def _shuffled(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """A seeded shuffle buffer of ``size`` items (``size <= 1`` keeps the order)."""
    if size <= 1:
        yield from items
        return
    buffer: list = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            yield buffer.pop(int(rng.integers(len(buffer))))
    while buffer:
        yield buffer.pop(int(rng.integers(len(buffer))))


class ShardPairStream(IterableDataset):
    """Transformed pairs of the shards for one process; see the module docstring."""

    def __init__(self, urls: list[str], sizes: list[int], transform: Callable, max_words: int, seed: int,
                 world_size: int, rank: int, batch_size: int, shuffle_buffer: int = SHUFFLE_BUFFER,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.urls, self.sizes, self.max_pixels = list(urls), list(sizes), max_pixels
        self.transform, self.max_words, self.seed = transform, max_words, seed
        self.world_size, self.rank, self.batch_size = world_size, rank, batch_size
        self.shuffle_buffer = shuffle_buffer
        self.total = sum(sizes)
        self.steps = self.total // (world_size * batch_size)
        self.epoch, self.start = 0, 0
        if self.steps == 0:
            raise DatasetError(f"{self.total} samples in {len(urls)} shard(s) make no full batch of {batch_size} "
                               f"per process on {world_size} process(es); lower the batch size")

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0

    def set_start(self, start: int) -> None:
        """Skip this process's first ``start`` samples of the epoch (a resumed run)."""
        self.start = start

    @property
    def samples_per_epoch(self) -> int:
        return self.steps * self.batch_size

    def __len__(self) -> int:
        return (self.steps - self.start // self.batch_size) * self.batch_size

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        done = self.start // self.batch_size
        own = (worker + done) % workers  # the uninterrupted epoch's worker whose batches this one continues
        first, last = batches_of(done, workers, own), batches_of(self.steps, workers, own)
        slots = self.world_size * workers
        raw = self._reader(self.rank * workers + own, slots)
        yield from self._decoded(islice(raw, first * self.batch_size, last * self.batch_size))

    # --- the raw sample stream of one reader --------------------------------------------------------

    def _reader(self, slot: int, slots: int) -> Iterator[tuple[dict, int, int]]:
        """(sample, pass, samples lost just before it) for reader ``slot``, pass after pass, endlessly."""
        for turn in range(1_000_000):
            rng = np.random.default_rng([self.seed, self.epoch, turn])
            order = [int(i) for i in rng.permutation(len(self.urls))]
            shards = order[slot::slots] if len(order) >= slots else order
            every = 1 if len(order) >= slots else slots
            items = self._pass(shards, slot % every, every, turn)
            buffer_rng = np.random.default_rng([self.seed, self.epoch, turn, slot])
            count = 0
            for item in _shuffled(items, self.shuffle_buffer, buffer_rng):
                count += 1
                yield item
            if count == 0:
                raise DatasetError(f"no readable sample in the shards of reader {slot} "
                                   f"({[self.urls[i] for i in shards][:3]}...); run `python -m data.check`")

    def _pass(self, shards: list[int], keep: int, every: int, turn: int) -> Iterator[tuple[dict, int, int]]:
        """One pass over ``shards``, keeping the samples whose running index is ``keep`` mod ``every``."""
        j, lost = 0, 0
        for i in shards:
            got = 0
            try:
                for sample in raw_samples(self.urls[i]):
                    if j % every == keep:
                        yield sample, turn, lost
                        lost = 0
                    j += 1
                    got += 1
            except Exception as err:  # a truncated or unreadable shard: what it still holds is lost
                log.warning(f"{self.urls[i]}: {type(err).__name__}: {err}; {max(self.sizes[i] - got, 0)} "
                            f"sample(s) after the first {got} are lost")
            else:
                if got < self.sizes[i]:  # tarfile ends a stream cut at a header without an error
                    log.warning(f"{self.urls[i]} ended after {got} of its {self.sizes[i]} samples (truncated?); "
                                f"{self.sizes[i] - got} sample(s) are lost")
            missing = range(j, j + max(self.sizes[i] - got, 0))
            lost += sum(1 for m in missing if m % every == keep)
            j += len(missing)

    # --- decoding -------------------------------------------------------------------------------------

    def _decoded(self, raw: Iterator[tuple[dict, int, int]]) -> Iterator[dict]:
        """Transformed pairs, one per raw sample; a bad one is replaced by the previous good one."""
        last, owed, bad = None, 0, 0
        for sample, turn, lost in raw:
            bad += lost
            item = self._decode(sample, turn)
            if item is None:
                bad += 1
                if last is None:
                    owed += 1  # the first good sample fills this place too
                    continue
                item = last
            for _ in range(owed + 1):
                yield {**item, "bad": bad}
                bad = 0
            owed, last = 0, item
        if owed:
            if last is None:
                raise DatasetError("no readable sample among this reader's share of the shards")
            for _ in range(owed):
                yield {**last, "bad": bad}
                bad = 0

    def _decode(self, sample: dict, turn: int) -> dict | None:
        where = f"{sample.get('__url__')}#{sample.get('__key__')}"
        try:
            img, caption, meta = open_sample(sample, self.max_words, self.max_pixels)
        except ValueError as err:
            log.warning(f"skipping {where}: {err}; using another sample")
            return None
        index = int(meta.get("sample", _key_number(sample)))
        rng = np.random.default_rng([self.seed, self.epoch, index] + ([turn] if turn else []))
        image, caption = self.transform(img, caption, rng)
        return {"image": image, "caption": caption, "image_id": int(meta.get("image_index", index))}


def open_sample(sample: dict, max_words: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str, dict]:
    """(RGB image, cleaned caption, metadata) of one raw sample; ValueError saying what is wrong with it
    (no image, an empty caption, an image that cannot be decoded or has more than ``max_pixels``).
    Unreadable ``.json`` metadata is a warning only: the pair itself is usable."""
    where = f"{sample.get('__url__')}#{sample.get('__key__')}"
    meta = _meta(sample, where)
    ext = next((k for k in IMAGE_KEYS if k in sample), None)
    if ext is None:
        raise ValueError("no image")
    try:
        caption = pre_caption(sample.get("txt", b"").decode("utf-8"), max_words)
    except UnicodeDecodeError as err:
        raise ValueError(f"the caption is not UTF-8 text ({err})") from None
    if not caption:
        raise ValueError("empty caption")
    try:
        with Image.open(io.BytesIO(sample[ext])) as img:
            if img.width * img.height > max_pixels:
                raise ValueError(f"{img.width}x{img.height} pixels, more than max_image_pixels {max_pixels:,}")
            img.load()
            return to_rgb(img), caption, meta
    except Exception as err:  # undecodable, truncated, or too many pixels
        raise ValueError(f"image cannot be decoded ({err})") from err


def _meta(sample: dict, where: str) -> dict:
    if "json" not in sample:
        return {}
    try:
        meta = json.loads(sample["json"])
        return meta if isinstance(meta, dict) else {}
    except ValueError:
        log.warning(f"{where}: unreadable .json metadata; ignored")
        return {}


def _key_number(sample: dict) -> int:
    """A number for a sample without metadata: its key if numeric, else a stable hash of it."""
    key = str(sample.get("__key__", ""))
    if key.isdigit():
        return int(key)
    import hashlib

    return int(hashlib.sha1(f"{sample.get('__url__')}#{key}".encode()).hexdigest()[:15], 16)


class _Position:
    """What ``utils.start_epoch`` asks of a loader's sampler: the epoch, a start, this rank's length."""

    def __init__(self, stream: ShardPairStream) -> None:
        self.stream = stream

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def set_start(self, start: int) -> None:
        self.stream.set_start(start)

    def __len__(self) -> int:
        return self.stream.samples_per_epoch - self.stream.start


class ShardLoader:
    """The training loader of shard input: ``len`` (batches left this epoch), iteration, ``dataset``,
    ``sampler`` and ``batch_size``, as the JSON-list loader has them."""

    def __init__(self, stream: ShardPairStream, batch_size: int, collate: Callable, num_workers: int) -> None:
        self.dataset, self.sampler, self.batch_size = stream, _Position(stream), batch_size
        self.collate, self.num_workers = collate, num_workers
        if num_workers > 0:
            one_opencv_thread()

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def __iter__(self) -> Iterator[dict]:
        loader = DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                            collate_fn=self.collate, drop_last=True, pin_memory=torch.cuda.is_available(),
                            persistent_workers=False, worker_init_fn=worker_init)
        return iter(loader)


def shard_train_loader(config: dict, specs: Sequence[str], transform: Callable, collate: Callable, world_size: int,
                       rank: int, batch_size: int) -> ShardLoader:
    """The shard loader for ``train_file`` entries ``specs`` (all of them shards)."""
    not_shards = [s for s in specs if not is_shard_spec(s)]
    if not_shards:
        raise DatasetError(f"train_file mixes shards and JSON lists ({not_shards[:3]}); convert the JSON lists "
                           f"with `python -m data.shards` or list them in another run")
    from data.shard_check import preflight_shards

    urls = expand(specs)
    sizes = preflight_shards(urls, config["max_bad_fraction"], rank, world_size)
    stream = ShardPairStream(urls, sizes, transform, config["max_words"], config["seed"], world_size, rank, batch_size,
                             shuffle_buffer=config.get("shard_shuffle_buffer", SHUFFLE_BUFFER),
                             max_pixels=config.get("max_image_pixels", DEFAULT_MAX_PIXELS))
    log.info(f"{stream.total} samples in {len(urls)} shard(s), {stream.steps} steps per epoch")
    return ShardLoader(stream, batch_size, collate, config["num_workers"])
