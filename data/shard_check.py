"""The pre-flight check of WebDataset shards: their samples counted from the tar headers, before step one.

A training run on shards reads their sample counts to size its epoch. ``sizes.json`` (open_clip's file)
says how many samples each shard holds, but a stale or edited one would silently drop data (an
under-count) or re-read the same samples for a longer epoch (an over-count), and a truncated tar, a
0-byte shard or a sample without its image would only show up at the end of the epoch. So, before the
first step, :func:`preflight_shards` reads the tar headers of every local shard (no image data: the
members' names, sizes and the end-of-archive block, cheap even for large shards), in threads and split
over the ranks of a distributed run, and

- counts each shard's samples as webdataset groups them; a ``sizes.json`` entry that disagrees with a
  complete tar stops the run (exit 2) naming the file, the shard and both counts;
- finds shards that are not whole (a 0-byte file, not a tar, cut short: no end-of-archive block) and
  counts the samples lost (from ``sizes.json``, or at least one) as bad;
- counts samples without an image or without a ``.txt`` caption as bad;
- stops the run when the bad samples are more than ``max_bad_fraction`` of all, with the list.

Remote shards (``https://``, ``pipe:``) cannot be read cheaply; their counts come from ``sizes.json``.
Pixels and caption bytes are not read here: an undecodable image or a caption that is not UTF-8 is found
when it is loaded (and replaced and counted there), or by ``python -m data.check``, which decodes all.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import tarfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from data.datasets import DatasetError
from data.shard_files import IMAGE_KEYS, local_path, shard_sizes

log = logging.getLogger("medvl")

DEFAULT_WORKERS = 16  # threads reading headers: file-system latency, not CPU
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skipped metadata members
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's key/extension split (base_plus_ext)


@dataclass
class ShardScan:
    """What the headers of one shard say."""

    url: str
    samples: int = 0  # whole samples a reader gets from the tar
    claimed: int | None = None  # its sizes.json entry
    fault: str = ""  # why the tar is not whole ("" when it is)
    bad: list[str] = field(default_factory=list)  # "url#key: reason" per sample without image or caption

    @property
    def lost(self) -> int:
        """Samples the shard should hold but does not (a cut or unreadable tar): from its sizes.json
        count, or one when that is unknown."""
        if not self.fault:
            return 0
        return max(self.claimed - self.samples, 0) if self.claimed is not None else 1

    @property
    def mismatch(self) -> str:
        """A sizes.json entry that the tar contradicts ("" when it agrees or there is none)."""
        if self.claimed is None or self.claimed == self.samples or (self.fault and self.claimed > self.samples):
            return ""
        whole = "a complete tar" if not self.fault else "a tar cut short"
        return (f"sizes.json says {self.url} holds {self.claimed} samples, but it is {whole} with {self.samples}; "
                f"the file is stale or was edited: correct it or delete it (counts are then read from the tars)")


def _grouped(names: list[str]) -> list[tuple[str, list[str]]]:
    """(key, extensions) of each sample, grouped as webdataset groups consecutive members."""
    samples: list[tuple[str, list[str]]] = []
    for name in names:
        m = _KEY.match(name)
        if m is None:
            continue
        key, ext = m.group(1), m.group(2).lower()
        if samples and samples[-1][0] == key:
            samples[-1][1].append(ext)
        else:
            samples.append((key, [ext]))
    return samples


def _end_block(tar: tarfile.TarFile) -> str:
    """"" when a zero block (end of archive) follows the last member, else why the tar is cut short."""
    tar.fileobj.seek(tar.offset)
    block = tar.fileobj.read(tarfile.BLOCKSIZE)
    if len(block) == tarfile.BLOCKSIZE and not block.strip(b"\0"):
        return ""
    return "cut short (no end-of-archive block after its last member)"


def tar_samples(path: Path) -> tuple[list[tuple[str, list[str]]], str]:
    """(key, extensions) of every whole sample of a local tar, from its headers, and "" or its fault.

    A member whose data runs past the end of the file, and the sample it belongs to, are not counted."""
    try:
        if path.stat().st_size == 0:
            return [], "an empty file (0 bytes)"
    except OSError as err:
        return [], f"cannot be read: {err}"
    names: list[str] = []
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isreg() and not _META.match(member.name):
                    names.append(member.name)
            # A tar cut at a header boundary ends quietly; readers then get its samples up to the cut.
            return _grouped(names), _end_block(tar)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        fault = f"unreadable after {len(names)} members ({type(err).__name__}: {err})"
    # Cut inside a member's data: a stream reader hands a sample on when the next one starts, so the
    # sample being read at the cut is lost. (Where the cut falls within a block, a reader may get one
    # sample more or less than counted here; it counts a shortfall as lost samples.)
    return _grouped(names)[:-1], fault


def _claims(urls: Sequence[str]) -> dict[str, int]:
    """sizes.json entries of the local shards' folders, by URL; a broken sizes.json is an error naming it."""
    tables: dict[Path, dict] = {}
    claims = {}
    for url in urls:
        path = local_path(url)
        if path is None:
            continue
        sizes = path.parent / "sizes.json"
        if sizes not in tables:
            try:
                tables[sizes] = json.loads(sizes.read_text(encoding="utf-8")) if sizes.is_file() else {}
            except (OSError, ValueError) as err:
                raise DatasetError(f"{sizes} cannot be read: {err}; correct it or delete it") from None
            if not isinstance(tables[sizes], dict):
                raise DatasetError(f"{sizes} must hold an object of shard name -> sample count")
        value = tables[sizes].get(path.name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise DatasetError(f"{sizes}: the count of {path.name} must be a whole number, not {value!r}")
            claims[url] = value
    return claims


def scan_shard(url: str, claimed: int | None = None) -> ShardScan:
    """The header scan of one local shard."""
    samples, fault = tar_samples(local_path(url))
    scan = ShardScan(url, len(samples), claimed, fault)
    for key, exts in samples:
        if not any(e in IMAGE_KEYS for e in exts):
            scan.bad.append(f"{url}#{key}: no image (members: {', '.join(exts)})")
        elif "txt" not in exts:
            scan.bad.append(f"{url}#{key}: no .txt caption (members: {', '.join(exts)})")
    return scan


def scan_shards(urls: Sequence[str], rank: int = 0, world_size: int = 1, workers: int = DEFAULT_WORKERS,
                progress: bool | None = None) -> list[ShardScan]:
    """Header scans of the local shards among ``urls``, in their order. With ``world_size`` > 1 and a
    process group up, this rank scans every ``world_size``-th from ``rank`` and the ranks exchange their
    scans, so that every rank returns all of them; without a process group it scans them all."""
    import torch.distributed as dist

    claims = _claims(urls)
    local = [u for u in urls if local_path(u) is not None]
    shared = world_size > 1 and dist.is_available() and dist.is_initialized()
    mine = local[rank::world_size] if shared else local
    show = sys.stderr.isatty() if progress is None else progress
    t0 = time.monotonic()
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(mine), desc="checking shard headers", unit="shard", disable=not show) as bar:
        scans = []
        for scan in pool.map(lambda u: scan_shard(u, claims.get(u)), mine):
            scans.append(scan)
            bar.update(1)
    if shared:
        found: list = [None] * dist.get_world_size()
        dist.all_gather_object(found, scans)
        scans = [s for part in found for s in part]
    log.info(f"checked the headers of {len(mine)} shard(s) in {time.monotonic() - t0:.1f} s"
             + (f" (rank {rank} of {world_size})" if shared else ""))
    order = {u: i for i, u in enumerate(urls)}
    return sorted(scans, key=lambda s: order[s.url])


def _listed(lines: list[str], limit: int = 10) -> str:
    more = f"; ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


def preflight_shards(urls: Sequence[str], max_bad_fraction: float, rank: int = 0, world_size: int = 1,
                     workers: int = DEFAULT_WORKERS, progress: bool | None = None) -> list[int]:
    """The samples a reader gets from each of ``urls`` (local shards: counted from their tar headers;
    remote ones: from ``sizes.json``), after checking them; see the module docstring.

    Raises :class:`DatasetError` (exit 2) on a ``sizes.json`` that a tar contradicts, on no sample at all,
    and on more bad samples than ``max_bad_fraction`` of all."""
    scans = {s.url: s for s in scan_shards(urls, rank, world_size, workers, progress)}
    wrong = [s.mismatch for s in scans.values() if s.mismatch]
    if wrong:
        raise DatasetError(f"{len(wrong)} shard(s) disagree with sizes.json: {_listed(wrong, 5)}")
    remote = [u for u in urls if u not in scans]
    if remote:
        log.warning(f"{len(remote)} remote shard(s) are not checked before training; their counts come "
                    f"from sizes.json")
    remote_sizes = dict(zip(remote, shard_sizes(remote))) if remote else {}
    problems = [f"{s.url}: {s.fault}; {s.lost} sample(s) lost" for s in scans.values() if s.fault]
    problems += [line for s in scans.values() for line in s.bad]
    bad = sum(s.lost + len(s.bad) for s in scans.values())
    total = sum(s.samples + s.lost for s in scans.values()) + sum(remote_sizes.values())
    for line in problems[:20]:
        log.warning(line)
    if total == 0:
        raise DatasetError(f"the shards hold no sample: {_listed(problems, 5) or ', '.join(urls[:5])}")
    if bad > max_bad_fraction * total:
        raise DatasetError(f"train_file shards: {bad} of {total} samples are bad ({bad / total:.1%} > "
                           f"max_bad_fraction {max_bad_fraction:.1%}): {_listed(problems)}. Run "
                           f"`python -m data.check` on the shards for the full list")
    if bad:
        log.warning(f"{bad} of {total} shard samples are bad: lost ones are left out of the epoch, the others "
                    f"replaced and counted when they are read")
    return [scans[u].samples if u in scans else remote_sizes[u] for u in urls]
