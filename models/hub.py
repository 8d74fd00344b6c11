"""Hugging Face hub names in the config (``tokenizer``, ``text_encoder``): found in the local cache, or the
hub is reachable, or the run stops at once with what to do.

Without this check, a hub name on a machine without network either retries for minutes per process
(huggingface_hub's back-off) or, under ``HF_HUB_OFFLINE=1``, gives transformers' fallback tokenizer of
five special tokens, with which a run trains on ``[UNK]``.
"""
from __future__ import annotations

import os
import socket
import urllib.parse

from models.config import ModelSetupError

PROBE_TIMEOUT_S = 5.0


def offline_hint(name: str, key: str) -> str:
    """What to do when hub name ``name`` (config key ``key``) cannot be used here."""
    save = ("BertTokenizerFast.from_pretrained" if key == "tokenizer" else "BertModel.from_pretrained")
    return (f"set `{key}:` in the config (or --options {key}=FOLDER) to a local folder, e.g. one written on a "
            f"machine with network by `python -c \"from transformers import {save.split('.')[0]}; "
            f"{save}('{name}').save_pretrained('{name.replace('/', '_')}')\"`, or run once with network "
            f"to fill the Hugging Face cache")


def hub_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub endpoint (``HF_ENDPOINT``, else huggingface.co) opens in time."""
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def require_hub_name(name: str, key: str, cached_file: str) -> None:
    """Check that hub name ``name`` of config key ``key`` can be loaded: ``cached_file`` (e.g. vocab.txt)
    of its repository is in the local cache, or the hub answers. Else raise at once, saying what to do."""
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(name, cached_file)
    except ValueError:  # not a valid repository id (and not an existing folder either)
        raise ModelSetupError(f"`{key}: {name}`: no such folder ({os.path.abspath(name)}), and not a hub "
                              f"name (a name or owner/name)") from None
    if isinstance(hit, str):
        return
    if _offline():
        raise ModelSetupError(f"`{key}: {name}` is a hub name, HF_HUB_OFFLINE is set and it is not in the "
                              f"Hugging Face cache; {offline_hint(name, key)}")
    if not hub_reachable():
        raise ModelSetupError(f"`{key}: {name}` is a hub name that is not in the Hugging Face cache, and the hub "
                              f"cannot be reached (no network?); {offline_hint(name, key)}")
