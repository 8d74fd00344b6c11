"""Run configs: YAML 1.2 loading (``3e-4`` is a float), validation against a schema, and overrides.

``load_config(path, task, options)`` returns a plain dict with BLIP's key names and every default
filled in. Unknown keys are rejected with the closest valid key suggested; wrong types and values out
of range are rejected with the file and key named.
"""
from __future__ import annotations

import difflib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from configs.schema import SCHEMAS, Field


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file and key."""

    exit_code = 2  # data/errors.py: BAD_INPUT (this package imports no data code)


def _yaml() -> YAML:
    y = YAML(typ="safe", pure=True)
    y.default_flow_style = False
    return y


def find_config(path: str | os.PathLike) -> Path:
    """``path`` itself, or a file in the same folder whose name differs only in case.

    The published instructions spell ``./configs/Pretrain.yaml`` while the file is ``pretrain.yaml``.
    """
    path = Path(path)
    if path.is_file():
        return path
    folder = path.parent if path.parent.is_dir() else None
    if folder is not None:
        for candidate in folder.iterdir():
            if candidate.name.lower() == path.name.lower() and candidate.is_file():
                return candidate
    raise ConfigError(f"config file {path} does not exist")


def read_yaml(path: str | os.PathLike) -> dict:
    """Safely read a YAML mapping; an empty file is an empty mapping."""
    try:
        with open(path) as f:
            data = _yaml().load(f)
    except YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, not {type(data).__name__}")
    return data


def parse_options(options: Sequence[str] | None) -> dict[str, Any]:
    """``["init_lr=1e-4", "train_file=[a.json,b.json]"]`` -> values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in options or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--options: {item!r} is not of the form key=value")
        try:
            out[key.strip()] = _yaml().load(io.StringIO(value)) if value.strip() else None
        except YAMLError as e:
            raise ConfigError(f"--options {key}: value {value!r} is not valid YAML: {e}") from None
    return out


def _check_value(field: Field, key: str, value: Any, source: str) -> Any:
    try:
        return field.coerce(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: key '{key}': {e}") from None


def _unknown_key_message(key: str, task: str, source: str) -> str:
    """Suggest the closest key, or say that the key belongs to the other task's config."""
    schema = SCHEMAS[task]
    others = [t for t in SCHEMAS if t != task and key in SCHEMAS[t]]
    if others:
        script = {"pretrain": "pretrain.py", "retrieval": "train_retrieval.py"}[others[0]]
        return (f"{source}: unknown key '{key}': it is a {others[0]} key; is this a {others[0]} config? "
                f"(use it with {script})")
    close = difflib.get_close_matches(str(key), list(schema), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(schema))}"
    return f"{source}: unknown key '{key}'{hint}"


def validate(raw: Mapping, task: str, source: str = "config") -> dict:
    """Check ``raw`` against the schema of ``task``; return it with defaults filled in."""
    schema = SCHEMAS[task]
    unknown = [k for k in raw if k not in schema]
    if unknown:
        raise ConfigError(_unknown_key_message(str(unknown[0]), task, source))
    config = {}
    for key, field in schema.items():
        if key in raw:
            config[key] = _check_value(field, key, raw[key], source)
        elif field.required:
            raise ConfigError(f"{source}: key '{key}' is required ({field.help})")
        else:
            config[key] = field.default
    if config["drop_path_rate"] is None:  # BLIP's create_vit: stochastic depth 0.1 for ViT-L only
        config["drop_path_rate"] = 0.1 if config["vit"] == "large" else 0.0
    _check_invariants(config, task, source)
    return config


def _check_invariants(c: dict, task: str, source: str) -> None:
    problems = []
    if c["min_lr"] > c["init_lr"]:
        problems.append(f"min_lr ({c['min_lr']}) is above init_lr ({c['init_lr']})")
    batch = c["batch_size"] if task == "pretrain" else c["batch_size_train"]
    if c["queue_size"] < batch:
        problems.append(f"queue_size ({c['queue_size']}) is smaller than the batch ({batch})")
    if task == "pretrain" and c["warmup_lr"] > c["init_lr"]:
        problems.append(f"warmup_lr ({c['warmup_lr']}) is above init_lr ({c['init_lr']})")
    if isinstance(c["vit"], str) and c["vit_ckpt_layer"] > {"base": 12, "large": 24}[c["vit"]]:
        problems.append(f"vit_ckpt_layer ({c['vit_ckpt_layer']}) exceeds the depth of ViT-{c['vit']}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def load_config(path: str | os.PathLike, task: str, options: Sequence[str] | Mapping | None = None) -> dict:
    """Read, override (``--options key=value``) and validate a run config for ``pretrain`` or ``retrieval``."""
    if task not in SCHEMAS:
        raise ValueError(f"task must be one of {sorted(SCHEMAS)}")
    path = find_config(path)
    raw = read_yaml(path)
    overrides = dict(options) if isinstance(options, Mapping) else parse_options(options)
    raw.update(overrides)
    source = str(path) + (" (with --options)" if overrides else "")
    return validate(raw, task, source)


def dump_yaml(config: Mapping) -> str:
    """The resolved config as YAML text (block style), as ``config.yaml`` and checkpoints hold it."""
    buf = io.StringIO()
    _yaml().dump(dict(config), buf)
    return buf.getvalue()


def checkpoint_config(stored: Mapping | None, source: str, task: str, config_path: str | os.PathLike | None = None,
                      options: Sequence[str] | None = None) -> dict:
    """The validated run config of a trained checkpoint (``source`` names it in errors): ``config_path``
    if given, else the config stored in it; ``options`` applied. Either task's schema may serve (a
    pre-training config builds the same towers as a retrieval one): ``task``'s first, then the other's."""
    if config_path is None and not isinstance(stored, Mapping):
        raise ConfigError(f"{source} carries no run config (BLIP's own files do not): pass --config")
    errors = []
    for t in (task, "pretrain" if task == "retrieval" else "retrieval"):
        try:
            if config_path is not None:
                return load_config(config_path, t, options)
            return validate({**stored, **parse_options(options)}, t, f"config in {source}")
        except ConfigError as e:
            errors.append(f"as a {t} config: {e}")
    raise ConfigError("; ".join(errors))

