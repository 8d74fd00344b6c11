"""Config loading: YAML 1.2 numbers, validation errors naming file and key, overrides, shipped configs."""
from __future__ import annotations

from pathlib import Path

import pytest

from configs import ConfigError, load_config, parse_options
from utils import save_config

ROOT = Path(__file__).resolve().parents[1]
BASE = "train_file: [a.json]\ninit_lr: 3e-4\nmin_lr: 1e-6\nmax_epoch: 2\n"


def base_with(line: str) -> str:
    """BASE with ``line``'s key replaced (YAML refuses duplicate keys)."""
    key = line.split(":")[0]
    kept = [l for l in BASE.splitlines() if not l.startswith(key + ":")]
    return "\n".join(kept + [line]) + "\n"


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_12_numbers_are_floats(tmp_path):
    cfg = load_config(write(tmp_path, BASE), "pretrain")
    assert cfg["init_lr"] == 3e-4 and isinstance(cfg["init_lr"], float)
    assert cfg["min_lr"] == 1e-6
    assert cfg["batch_size"] == 75 and cfg["queue_size"] == 57600  # defaults filled in


def test_unknown_key_gets_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown key 'init_lrr'; did you mean 'init_lr'\?"):
        load_config(write(tmp_path, BASE + "init_lrr: 1\n"), "pretrain")


@pytest.mark.parametrize("line, message", [
    ("batch_size: ten", r"key 'batch_size': expected an integer, got 'ten'"),
    ("batch_size: 0", r"key 'batch_size': 0 is outside the allowed range"),
    ("alpha: 1.5", r"key 'alpha': 1.5 is outside"),
    ("vit_grad_ckpt: 1", r"key 'vit_grad_ckpt': expected true or false"),
    ("precision: fp16", r"key 'precision': expected one of \['fp32', 'bf16'\]"),
    ("vit: huge", r"key 'vit': expected 'base', 'large' or a mapping"),
    ("train_file: 3", r"key 'train_file': expected a file path or a list"),
])
def test_wrong_types_and_ranges_name_file_and_key(tmp_path, line, message):
    with pytest.raises(ConfigError, match=r"run\.yaml.*" + message):
        load_config(write(tmp_path, base_with(line)), "pretrain")


def test_invariants(tmp_path):
    with pytest.raises(ConfigError, match=r"min_lr \(0.1\) is above init_lr"):
        load_config(write(tmp_path, base_with("min_lr: 0.1")), "pretrain")
    with pytest.raises(ConfigError, match="queue_size .* is smaller than the batch"):
        load_config(write(tmp_path, BASE + "queue_size: 8\nbatch_size: 16\n"), "pretrain")
    with pytest.raises(ConfigError, match="vit_ckpt_layer .* exceeds the depth"):
        load_config(write(tmp_path, BASE + "vit_ckpt_layer: 13\n"), "pretrain")


def test_missing_required_key_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="key 'train_file' is required"):
        load_config(write(tmp_path, "init_lr: 1e-4\nmax_epoch: 1\n"), "pretrain")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "init_lr: [1e-4\n"), "pretrain")
    with pytest.raises(ConfigError, match="duplicate key"):
        load_config(write(tmp_path, BASE + "init_lr: 1e-3\n"), "pretrain")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), "pretrain")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", "pretrain")


def test_options_are_parsed_as_yaml(tmp_path):
    opts = ["init_lr=1e-4", "train_file=[x.json,y.json]", "vit_grad_ckpt=true", "vit={width: 8, depth: 1, heads: 2}"]
    assert parse_options(opts) == {"init_lr": 1e-4, "train_file": ["x.json", "y.json"], "vit_grad_ckpt": True,
                                   "vit": {"width": 8, "depth": 1, "heads": 2}}
    cfg = load_config(write(tmp_path, BASE), "pretrain", opts)
    assert cfg["init_lr"] == 1e-4 and cfg["train_file"] == ["x.json", "y.json"]
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_options(["init_lr"])
    with pytest.raises(ConfigError, match=r"\(with --options\): unknown key 'bath_size'; did you mean 'batch_size'"):
        load_config(write(tmp_path, BASE), "pretrain", ["bath_size=3"])


def test_published_capitalisation_finds_the_file(tmp_path):
    write(tmp_path, BASE, "pretrain.yaml")
    assert load_config(tmp_path / "Pretrain.yaml", "pretrain")["max_epoch"] == 2


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, BASE), "pretrain", ["vit={width: 8, depth: 1, heads: 2}"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml", "pretrain") == cfg


@pytest.mark.parametrize("name, task", [
    ("pretrain.yaml", "pretrain"), ("pretrain_blip.yaml", "pretrain"), ("demo_pretrain.yaml", "pretrain"),
    ("retrieval_coco.yaml", "retrieval"), ("retrieval_pubmed.yaml", "retrieval"), ("demo_retrieval.yaml", "retrieval"),
])
def test_shipped_configs_are_valid(name, task):
    cfg = load_config(ROOT / "configs" / name, task)
    assert cfg["init_lr"] > 0


def test_shipped_configs_document_every_key():
    """Each line with a key in the full configs carries a comment (demo configs refer to them)."""
    for name in ("pretrain.yaml", "retrieval_coco.yaml"):
        for line in (ROOT / "configs" / name).read_text().splitlines():
            if line and not line.startswith("#"):
                assert "#" in line, f"{name}: uncommented key line {line!r}"


def test_every_model_key_comes_from_the_schema(tmp_path):
    """The model reads every key it needs from the validated config; none is defaulted on the model side."""
    from models import ModelConfig

    cfg = load_config(write(tmp_path, BASE), "pretrain", ["vit={width: 8, depth: 1, heads: 2}"])
    assert cfg["vit"] == {"width": 8, "depth": 1, "heads": 2, "patch_size": 16}
    assert cfg["negative_all_rank"] is False  # pre-training's ITM negatives come from the local batch
    assert ModelConfig.of(cfg).vit["patch_size"] == 16
    assert load_config(write(tmp_path, BASE + "vit: base\n"), "pretrain")["vit"] == "base"
    with pytest.raises(ConfigError, match="key 'negative_all_rank': only False is allowed"):
        load_config(write(tmp_path, BASE + "negative_all_rank: true\n"), "pretrain")
    partial = {k: v for k, v in cfg.items() if k != "negative_all_rank"}
    with pytest.raises(KeyError, match=r"lacks model keys \['negative_all_rank'\]"):
        ModelConfig.of(partial)
