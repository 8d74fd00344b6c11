"""``split_figures.py merge``: the output folders of ``--shard 0/N`` ... ``--shard N-1/N`` made into one.

The merged folder is what one process would have written for the whole input: the shards' figure
events are put back in input order, crops are hard-linked (copied where links cannot be made) into
the merged ``images/`` under the same names, whole-figure paths are made relative to the merged
folder, and ``subfigures.json``, ``failed.json``, ``summary.json`` and, with ``--splits``, the
article-grouped retrieval splits are written once over the whole. Every shard must be complete and
all must come from the same input and options; a missing, repeated or unfinished shard is refused
with its name.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from data.figures.outputs import collect, write_output_shards, write_outputs
from data.figures.store import read_folder
from data.files import FolderLock, atomic_write_bytes, atomic_write_json, read_json_list, temp_path
from data.manifest import identity_differences
from data.errors import BadInput

log = logging.getLogger(__name__)


class MergeError(BadInput):
    """Shard folders that cannot be merged; the message names the folder."""


def _load_shard(folder: Path) -> tuple[dict, dict[int, dict], list[dict]]:
    """(identity, figure events, unreadable-record failures) of one finished shard folder."""
    identity, events, complete = read_folder(folder)
    if identity is None:
        raise MergeError(f"{folder} holds no split_figures.py run (no split_manifest.jsonl)")
    if not complete:
        raise MergeError(f"{folder}: its run has not finished; rerun the same split_figures.py command there")
    try:
        failed = read_json_list(folder / "failed.json", "failure list")
    except ValueError as err:
        raise MergeError(str(err)) from None
    unreadable = [f for f in failed if isinstance(f, dict) and f.get("index") not in events]
    return identity, events, unreadable


def _check_shards(folders: list[Path], identities: list[dict]) -> int:
    """The shard count N, after checking that the folders are shards 0..N-1 of one run, once each."""
    base = identities[0]
    for folder, identity in zip(folders[1:], identities[1:]):
        diffs = identity_differences(identity, base, ignore=("shard",))
        if diffs:
            raise MergeError(f"{folder} and {folders[0]} come from different runs ({'; '.join(diffs)})")
    shards = [i.get("shard") for i in identities]
    if shards == [None]:
        return 1
    if None in shards:
        raise MergeError(f"{folders[shards.index(None)]} was not run with --shard; merge shard folders only")
    total = {int(s.split("/")[1]) for s in shards}
    if len(total) != 1:
        raise MergeError(f"the folders were split into different shard counts: {sorted(shards)}")
    n = total.pop()
    seen: dict[str, Path] = {}
    for folder, shard in zip(folders, shards):
        if shard in seen:
            raise MergeError(f"shard {shard} is given twice: {seen[shard]} and {folder}")
        seen[shard] = folder
    missing = [f"{i}/{n}" for i in range(n) if f"{i}/{n}" not in seen]
    if missing:
        raise MergeError(f"shard(s) {', '.join(missing)} missing: give the output folders of all {n} shards")
    return n


def _place(src: Path, dst: Path) -> None:
    """``dst`` becomes the same file as ``src``: a hard link where possible, else an atomic copy."""
    if dst.exists() and (os.path.samefile(src, dst) or dst.read_bytes() == src.read_bytes()):
        return
    tmp = temp_path(dst)
    tmp.unlink()
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write_bytes(dst, src.read_bytes())


def _rehome(records: list[dict], folder: Path, out: Path, crop_dir: str) -> tuple[list[dict], list[tuple[Path, Path]]]:
    """Records of ``folder`` made valid in ``out`` (other paths made relative to it), and the crops to
    place there as (source, destination); nothing is written here."""
    crops = (folder / crop_dir).resolve()
    moved, placements = [], []
    for record in records:
        src = (folder / record["image"]).resolve()
        if crops in src.parents:
            placements.append((src, out / src.relative_to(folder.resolve())))
            moved.append(record)
        else:
            moved.append({**record, "image": Path(os.path.relpath(src, out.resolve())).as_posix()})
    return moved, placements


def _missing_crops(placements: list[tuple[Path, Path]]) -> list[str]:
    return [str(src) for src, _ in placements if not src.is_file()]


def merge_folders(folders: list[Path], out: Path, fractions: tuple[float, float, float] | None,
                  seed: int, shard_size: int | None = None) -> dict:
    """Merge the shard folders into ``out`` (see the module docstring); returns the merged summary."""
    folders = [Path(f) for f in folders]
    out = Path(out)
    if any(out.resolve() == f.resolve() for f in folders):
        raise MergeError(f"--out {out} is one of the shard folders; merge into a new folder")
    loaded = [_load_shard(f) for f in folders]
    identities = [identity for identity, _, _ in loaded]
    n = _check_shards(folders, identities)
    # Everything is read and checked before anything is written: a missing crop refuses the merge
    # instead of leaving a half-merged folder.
    events, unreadable, placements = {}, [], []
    for folder, (identity, shard_events, shard_bad) in zip(folders, loaded):
        for index, event in shard_events.items():
            records, crops = _rehome(event.get("records") or [], folder, out, identity.get("crop_dir") or "images")
            events[index] = {**event, "records": records}
            placements += crops
        unreadable += shard_bad
    missing = _missing_crops(placements)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise MergeError(f"{len(missing)} crop(s) that the shard folders' manifests list are missing "
                         f"({', '.join(missing[:5])}{more}): restore them, or split that shard again into a new "
                         f"folder, then merge again; nothing was written")
    lock = FolderLock(out, "split_figures.py merge")
    for note in lock.acquire():
        log.warning("%s", note)
    try:
        for src, dst in placements:
            dst.parent.mkdir(parents=True, exist_ok=True)
            _place(src, dst)
        results, failures, summary = collect(events, unreadable)
        write_outputs(out, results, failures, summary, fractions, seed)
        if shard_size:
            for pattern in write_output_shards(out, fractions is not None, shard_size):
                log.info("shards: %s", pattern)
        base = {k: v for k, v in identities[0].items() if k != "shard"}
        atomic_write_json(out / "merged_from.json", {"shards": n, "folders": [str(f) for f in folders],
                                                     "identity": base})
        log.info("merged %d shard(s) into %s: %d figures, %d sub-figures", n, out, summary["figures"],
                 summary["subfigures"])
        return summary
    finally:
        lock.release()
