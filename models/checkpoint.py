"""Weight loading: BLIP-style checkpoints (path or URL), BERT weights into the text towers, and ViT
(DeiT/timm) weights into the image tower. Every pickle is read with ``torch.load(weights_only=True)``."""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from models.config import ModelSetupError
from models.vit import interpolate_pos_embed

log = logging.getLogger("medvl")

# Queue sizes differ between runs: a queue of another size is dropped (the model keeps its own).
_QUEUE = "queue"
# Tensors with one row per token: their first dimension is the tokenizer's size.
_VOCAB = ("word_embeddings", "predictions.bias", "predictions.decoder")


class CheckpointError(RuntimeError):
    """A checkpoint file or URL that cannot be used: absent from the server, not a checkpoint, unsafe to
    unpickle, or without a state dict. The message names the file or URL."""

    exit_code = 2  # data/errors.py: BAD_INPUT (this package imports no data code)


@dataclass
class LoadReport:
    """What a load did: keys the model lacked, keys the file had spare, and tensors dropped for shape."""

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[str] = field(default_factory=list)


def is_url(value: str) -> bool:
    return urllib.parse.urlparse(str(value)).scheme in ("http", "https")


def cache_dir() -> Path:
    return Path(os.environ.get("MEDVL_CACHE", Path.home() / ".cache" / "medvl"))


def load_state(path: str | Path, mmap: bool = False) -> dict:
    """Load a checkpoint dict with ``weights_only=True`` (no arbitrary code from pickles).

    ``mmap``: map the file instead of reading it, so that looking at a large checkpoint's metadata is cheap.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001  (pickle errors come in many types)
        raise CheckpointError(f"checkpoint {path} could not be loaded safely (weights_only=True): {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    return obj


def cached_path(url: str) -> Path:
    """Where ``url`` is cached: named by a hash of the whole URL (two files called ``ckpt.pth`` on
    different hosts or folders never share an entry), with the URL's own file name kept for readers."""
    name = Path(urllib.parse.urlparse(url).path).name
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip("._") or "checkpoint"
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return cache_dir() / "checkpoints" / f"{digest}-{safe}"


STALE_PART_S = 3600.0  # a live download writes far more often (each read waits at most MEDVL_DOWNLOAD_TIMEOUT)


def _part_path(target: Path) -> Path:
    """Where ``target`` is downloaded to first: hidden, and named by host and pid, so that a leftover
    can be told from a download still under way (the cache may be shared between machines)."""
    return target.with_name(f".{target.name}.part-{socket.gethostname()}-{os.getpid()}")


def _is_stale_part(path: Path, now: float) -> bool:
    """A partial download whose process is dead (on this host), or that nothing wrote to for an hour."""
    try:
        if now - path.stat().st_mtime > STALE_PART_S:
            return True
    except FileNotFoundError:  # finished or removed meanwhile
        return False
    head, _, pid = path.name.rpartition("-")
    if not (pid.isdigit() and head.endswith(f".part-{socket.gethostname()}")):
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        pass
    return False


def remove_stale_parts(folder: Path) -> list[Path]:
    """Delete the partial files that killed downloads left in ``folder``; returns what was removed."""
    now, removed = time.time(), []
    for path in folder.glob(".*.part*"):
        if path.is_file() and _is_stale_part(path, now):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _reply_kind(path: Path) -> str:
    """``zip`` or ``pickle`` for what can be a torch checkpoint (torch's format, or its legacy one), else
    what the downloaded file is: a login, error or redirect page served with status 200 is the usual case."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x80"):  # a pickle's protocol opcode
        return "pickle"
    size = path.stat().st_size
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return f"an HTML page ({size} bytes)"
    return f"{size} bytes starting with {head[:32]!r}"


def download_cached(url: str, deadline_s: float | None = None) -> Path:
    """Download ``url`` once into the cache and return the local file.

    The file enters the cache only after it loads as a checkpoint (``weights_only``, memory-mapped where
    torch's format allows): an HTML page or a truncated download is deleted and reported with the URL,
    never kept. The download must finish within ``deadline_s`` seconds (default
    ``$MEDVL_DOWNLOAD_DEADLINE``, else 3600; see :mod:`models.download`): a server that trickles bytes
    cannot hold a run at its start for good.
    Partial files of killed downloads are removed from the cache folder first.
    """
    target = cached_path(url)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in remove_stale_parts(target.parent):
        log.info(f"removed {leftover}, left by a download that was interrupted")
    tmp = _part_path(target)
    log.info(f"downloading {url} to {target}")
    try:
        _fetch_checkpoint(url, tmp, deadline_s)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _fetch_checkpoint(url: str, tmp: Path, deadline_s: float | None) -> None:
    """Download ``url`` into ``tmp`` and check that it is a checkpoint; each failure says which it was."""
    from models.download import download  # a total deadline, which per-read timeouts are not

    try:
        download(url, tmp, deadline_s)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"could not download a checkpoint from {url}: {e} "
                           f"(offline? download it elsewhere and give its path)") from e
    kind = _reply_kind(tmp)
    if kind not in ("zip", "pickle"):
        raise CheckpointError(f"could not download a checkpoint from {url}: the server returned {kind}, not a "
                           f"checkpoint (a login or error page? check that the URL serves the file itself)")
    try:
        load_state(tmp, mmap=kind == "zip")  # torch maps only its zip format
    except RuntimeError as e:
        raise CheckpointError(f"could not download a checkpoint from {url}: what the server returned does not load "
                           f"as one ({e.__cause__ or e}); a cut or corrupt transfer, or not a weights file") from e


def resolve_checkpoint(path_or_url: str) -> Path:
    if is_url(path_or_url):
        return download_cached(path_or_url)
    path = Path(path_or_url)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path_or_url!r} is neither an existing file nor an http(s) URL")
    return path


def read_state_dict(path_or_url: str) -> dict[str, Tensor]:
    """The ``model`` state dict of a checkpoint file or URL (or the file itself if it is a bare state dict),
    or of a transformers BLIP folder (``save_pretrained``'s layout), under BLIP's names."""
    if not is_url(path_or_url) and Path(path_or_url).is_dir():
        from models.hf_import import load_hf_blip_state_dict  # imports this module

        try:
            return load_hf_blip_state_dict(path_or_url)
        except ValueError as e:
            raise CheckpointError(f"checkpoint {path_or_url}: {e}") from None
    path = resolve_checkpoint(path_or_url)
    ckpt = load_state(path)
    state = ckpt.get("model", ckpt)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} has no state dict of tensors under 'model'")
    return state


def _interpolate_vit(state: dict[str, Tensor], model: nn.Module, prefix: str) -> None:
    key = f"{prefix}pos_embed"
    module = model.get_submodule(prefix.rstrip(".")) if prefix else model
    if key in state and hasattr(module, "pos_embed") and state[key].shape != module.pos_embed.shape:
        before = state[key].shape[1]
        state[key] = interpolate_pos_embed(state[key], module.patch_embed.num_patches)
        log.info(f"{key}: position embeddings resized from {before} to {state[key].shape[1]} tokens")


def _fit_vocabulary(key: str, saved: Tensor, own: Tensor, source: str) -> Tensor | None:
    """``saved`` (a per-token tensor) made to fit ``own``: None if other dimensions differ; the saved rows
    followed by the model's own initial rows when the tokenizer has grown (tokens added at the end keep
    every saved id); a :class:`ModelSetupError` when it has shrunk, since ids then point at other rows."""
    if saved.shape[1:] != own.shape[1:]:
        return None
    if saved.shape[0] > own.shape[0]:
        raise ModelSetupError(
            f"{source} was trained with a vocabulary of {saved.shape[0]} tokens ({key}), but the tokenizer "
            f"gives {own.shape[0]}: token ids would name other rows. Use the tokenizer it was trained with "
            f"(its run config's `tokenizer`), a local folder holding that vocab.txt when offline")
    log.warning(f"{source}: {key} holds {saved.shape[0]} tokens, the tokenizer {own.shape[0]}: the "
                f"{own.shape[0] - saved.shape[0]} added tokens start from the model's initial rows")
    return torch.cat([saved.to(own.dtype), own[saved.shape[0]:].detach().cpu()])


def load_state_dict_checked(model: nn.Module, state: dict[str, Tensor], source: str,
                            min_fraction: float = 0.5) -> LoadReport:
    """Load by name: queues of another size dropped, a grown vocabulary extended, a shrunk one refused, and
    a file of another architecture refused.

    A file that fills fewer than ``min_fraction`` of the model's parameters, or whose shape mismatches
    go beyond queues and vocabulary sizes, is another architecture: the error names the keys.
    """
    own = model.state_dict()
    state = dict(state)
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    serious = []
    for k in mismatched:
        if _QUEUE in k:
            log.warning(f"{source}: dropping {k}: shape {tuple(state[k].shape)} in the file, "
                        f"{tuple(own[k].shape)} in the model")
            del state[k]
            continue
        fitted = _fit_vocabulary(k, state[k], own[k], source) if any(t in k for t in _VOCAB) else None
        if fitted is None:
            serious.append(k)
        else:
            state[k] = fitted
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    filled = params & set(state)
    if serious or len(filled) < min_fraction * len(params):
        missing = sorted(params - set(state))
        unexpected = sorted(set(state) - set(own))
        raise ModelSetupError(
            f"{source} does not match this model's architecture: {len(filled)} of {len(params)} parameters "
            f"found; shape mismatches: {[f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in serious[:10]]}; "
            f"missing e.g. {missing[:10]}; unexpected e.g. {unexpected[:10]}")
    result = model.load_state_dict(state, strict=False)
    return LoadReport(list(result.missing_keys), list(result.unexpected_keys), mismatched)


def load_checkpoint(model: nn.Module, path_or_url: str) -> tuple[nn.Module, LoadReport]:
    """Load a BLIP-style checkpoint (BLIP's released files, retrieval checkpoints, ours) into ``model``.

    Position embeddings are interpolated to the model's grid; tensors whose shapes differ are dropped
    (the model keeps its own); momentum copies absent from the file start from the online weights.
    Returns ``(model, report)`` with ``report.missing_keys`` / ``report.unexpected_keys``.
    """
    state = read_state_dict(path_or_url)
    for prefix in ("visual_encoder.", "visual_encoder_m."):
        if hasattr(model, prefix.rstrip(".")):
            _interpolate_vit(state, model, prefix)
    report = load_state_dict_checked(model, state, f"checkpoint {path_or_url}")
    if any(k.split(".")[0].endswith("_m") for k in report.missing_keys) and hasattr(model, "copy_params"):
        model.copy_params()
    log.info(f"loaded checkpoint {path_or_url}: {len(report.missing_keys)} missing, "
             f"{len(report.unexpected_keys)} unexpected keys")
    return model, report


def load_vit_weights(vit: nn.Module, path_or_url: str) -> LoadReport:
    """Initialise the image tower from a timm/DeiT classification checkpoint (its head is ignored)."""
    state = read_state_dict(path_or_url)
    _interpolate_vit(state, vit, "")
    own = vit.state_dict()
    state = {k: v for k, v in state.items() if k in own}
    return load_state_dict_checked(vit, state, f"ViT weights {path_or_url}")
