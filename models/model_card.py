"""The model card (``README.md``) written beside an exported model: what it is, what it was trained on and
under which licences, its settings and its last logged metrics, and how to load it."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

# Run-config keys worth stating on a card (paths are left out: they name the trainer's machine).
CARD_KEYS = ("vit", "image_size", "embed_dim", "max_length", "max_words", "queue_size", "momentum", "alpha",
             "batch_size", "batch_size_train", "init_lr", "min_lr", "max_epoch", "weight_decay", "precision",
             "negative_all_rank", "k_test", "hflip", "randaugment")
DATA_KEYS = ("train_file", "val_file", "test_file")


def data_licences(config: dict[str, Any]) -> tuple[list[str], Counter, list[str]]:
    """(data file names, licence counts over their records, files that could not be read).

    Records carry ``license`` when ``scrape.py`` wrote them; other lists count as ``not recorded``.
    """
    names, counts, unread = [], Counter(), []
    for key in DATA_KEYS:
        value = config.get(key)
        for path in ([value] if isinstance(value, str) else value or []):
            names.append(Path(str(path)).name)
            try:
                records = json.loads(Path(str(path)).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                unread.append(Path(str(path)).name)
                continue
            for r in records if isinstance(records, list) else []:
                counts[(r.get("license") or "not recorded") if isinstance(r, dict) else "not recorded"] += 1
    return names, counts, unread


def last_metrics(checkpoint: Path) -> tuple[dict | None, dict | None]:
    """The last line of ``log.txt`` and ``metrics.json`` beside the checkpoint, each when present."""
    log_line, metrics = None, None
    log = checkpoint.parent / "log.txt"
    if log.is_file():
        lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        for line in reversed(lines):
            try:
                log_line = json.loads(line)
                break
            except ValueError:
                continue
    if (checkpoint.parent / "metrics.json").is_file():
        try:
            metrics = json.loads((checkpoint.parent / "metrics.json").read_text(encoding="utf-8"))
        except ValueError:
            metrics = None
    return log_line, metrics


def _table(rows: dict[str, Any]) -> str:
    lines = ["| key | value |", "|---|---|"]
    for k, v in rows.items():
        lines.append(f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |")
    return "\n".join(lines)


def model_card(config: dict[str, Any], checkpoint: Path, task: str, epoch: Any, licence: str | None,
               has_extra: bool) -> str:
    """The card's Markdown text, with a YAML header for the hub."""
    names, counts, unread = data_licences(config)
    log_line, metrics = last_metrics(checkpoint)
    classes = "`BlipForImageTextRetrieval`" + (" and `BlipForConditionalGeneration`" if task == "pretrain" else "")
    found = ", ".join(f"{k}: {v}" for k, v in counts.most_common()) or "none could be read at export time"
    parts = [
        "---", f"license: {licence or 'other'}", "library_name: transformers",
        "tags: [blip, medical-imaging, image-text-retrieval" + (", image-captioning]" if task == "pretrain" else "]"),
        "---", "",
        f"# BLIP {'pre-trained' if task == 'pretrain' else 'retrieval'} model ({checkpoint.name}, epoch {epoch})", "",
        f"A ViT + BERT model trained with BLIP's objectives (ITC, ITM{', LM' if task == 'pretrain' else ''}), "
        f"saved in the layout of transformers' {classes}.", "",
        "## Training data", "",
        f"Files: {', '.join(names) or 'not recorded'}.", "",
        f"Licences of the records: {found}." + (f" Not readable at export: {', '.join(unread)}." if unread else ""),
        "The model's licence must respect those of its data; check each source before reuse.", "",
        "## Settings", "", _table({k: config[k] for k in CARD_KEYS if k in config}), "",
        "## Metrics", "",
        "Last line of `log.txt`:" if log_line else "No `log.txt` beside the checkpoint.", "",
    ]
    if log_line:
        parts += [_table(log_line), ""]
    if metrics:
        parts += ["`metrics.json`:", "", "```json", json.dumps(metrics, indent=1), "```", ""]
    parts += [
        "## Use", "",
        "```python",
        "from transformers import BlipForImageTextRetrieval, BlipProcessor",
        "processor = BlipProcessor.from_pretrained(FOLDER)",
        "model = BlipForImageTextRetrieval.from_pretrained(FOLDER).eval()",
        "inputs = processor(images=image, text=caption, return_tensors='pt')",
        "itc = model(**inputs, use_itm_head=False).itm_score   # cosine similarity",
        "enc = processor.tokenizer.convert_tokens_to_ids('[ENC]')",
        "inputs['input_ids'][:, 0] = enc                        # ITM was trained with [ENC] first",
        "itm = model(**inputs).itm_score.softmax(-1)[:, 1]     # match probability",
        "```", "",
        "Differences from transformers' own BLIP conventions:", "",
        "- ITM: the image-grounded encoder was trained with `[ENC]` in place of `[CLS]`; transformers passes "
        "the ids as given, so set the first id to `[ENC]` as above (BLIP's own `blip_itm` demo does not).",
        "- Texts were cleaned before tokenizing as BLIP's `pre_caption` does (lower case; `.!\"()*#:;~` "
        f"replaced by spaces; at most {config.get('max_words', 'max_words')} words): clean queries the same way.",
        "- Captions: `[DEC]` starts the decoder (the tokenizer's `bos_token`); `[SEP]` ends a caption. Pass the "
        "settings to `generate` (this project's defaults: `num_beams=3, max_length=30, min_length=5`); "
        "transformers' BLIP captioner does not read them from the folder.",
        "- The image tower's LayerNorm epsilon is the one it was trained with (see `config.json`).",
    ]
    if has_extra:
        parts.append("- `blip_extra.safetensors` holds what transformers has no place for (the ITC temperature, "
                     "the feature queues and the momentum encoders), so that training can resume exactly.")
    return "\n".join(parts) + "\n"
