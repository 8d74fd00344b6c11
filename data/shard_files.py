"""Where WebDataset shards are and what they hold: shard specs (brace patterns, lists, ``pipe:`` and
http(s) URLs) expanded to URLs, the local file behind a URL, the raw samples of a shard, and sample counts
from the ``sizes.json`` beside the shards."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Iterator, Sequence

from data.datasets import DatasetError

log = logging.getLogger("medvl")

IMAGE_KEYS = ("jpg", "jpeg", "png", "tif", "tiff", "webp", "bmp", "gif")
_SHARD = re.compile(r"\.(tar|tgz|tar\.gz)(\s*$|::|\?)")


def is_shard_spec(spec: str) -> bool:
    """Whether a ``train_file`` entry names WebDataset shards rather than a JSON list."""
    return spec.startswith("pipe:") or bool(_SHARD.search(spec)) or ("{" in spec and ".tar" in spec)


def local_path(url: str) -> Path | None:
    """The file a URL names on this machine, or None for ``pipe:`` and remote URLs."""
    if url.startswith("file:"):
        return Path(url[5:])
    return None if url.startswith("pipe:") or "://" in url else Path(url)


def expand(specs: Sequence[str]) -> list[str]:
    """Every shard URL of the specs, in order; a local shard that does not exist is an error naming it."""
    from webdataset.shardlists import expand_urls

    urls = []
    for spec in specs:
        for url in expand_urls(spec):
            path = local_path(url)
            if path is not None and not path.is_file():
                raise DatasetError(f"shard {url} (from train_file {spec!r}) does not exist")
            urls.append(url)
    if not urls:
        raise DatasetError(f"train_file {list(specs)} names no shard")
    return urls


def raw_samples(url: str) -> Iterator[dict]:
    """The samples of one shard as webdataset groups them (``__key__``, ``__url__``, one entry per file)."""
    import webdataset as wds
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    stream = wds.gopen(url)
    try:
        files = ({**f, "__url__": url} for f in tar_file_iterator(stream))
        yield from group_by_keys(files)
    finally:
        stream.close()


def _sizes_file(url: str) -> dict:
    """The ``sizes.json`` beside a shard ({} when there is none or it cannot be read)."""
    import webdataset as wds

    folder = url.rsplit("/", 1)[0] if "/" in url else "."
    try:
        path = local_path(url)
        if path is not None:
            sizes = path.parent / "sizes.json"
            return json.loads(sizes.read_text(encoding="utf-8")) if sizes.is_file() else {}
        if url.startswith(("http://", "https://")):
            with wds.gopen(f"{folder}/sizes.json") as fh:
                return json.loads(fh.read())
    except (OSError, ValueError) as err:
        log.warning(f"cannot read the sizes.json beside {url}: {err}")
    return {}


def shard_sizes(urls: Sequence[str]) -> list[int]:
    """Samples per shard: from ``sizes.json`` beside the shards, else by reading the shard once."""
    cache: dict[str, dict] = {}
    sizes = []
    for url in urls:
        folder = url.rsplit("/", 1)[0] if "/" in url else "."
        table = cache.setdefault(folder, _sizes_file(url))
        name = url.rsplit("/", 1)[-1]
        if name in table:
            sizes.append(int(table[name]))
            continue
        log.warning(f"{url}: no sizes.json entry; counting its samples (write sizes.json to skip this)")
        try:
            sizes.append(sum(1 for _ in raw_samples(url)))
        except Exception as err:  # an unreadable shard holds nothing usable
            log.warning(f"{url}: cannot be read ({err}); counted as empty")
            sizes.append(0)
    return sizes
