"""The BERT WordPiece tokenizer with BLIP's two extra tokens, and the one function that tokenizes text
for the model (training collation, evaluation, visualisation and generation all call it)."""
from __future__ import annotations

import os
from typing import Any, Sequence

from torch import Tensor

from models.config import ModelSetupError
from models.hub import offline_hint, require_hub_name


# transformers answers a hub name it could not fetch with the special tokens alone (no word piece); a
# vocabulary that spells text holds at least its characters and common pieces (bert-base-uncased: 30,517).
MIN_WORD_PIECES = 100


def init_tokenizer(name_or_path: str) -> Any:
    """A BERT WordPiece tokenizer (hub name or local folder) with ``[DEC]`` as bos and ``[ENC]`` added.

    For bert-base-uncased this gives [DEC] = 30522, [ENC] = 30523 and 30524 tokens, as in BLIP.
    The tokenizer gains ``enc_token_id``. A hub name that is neither cached nor reachable, and a
    vocabulary of fewer than ``MIN_WORD_PIECES`` ordinary pieces, raise :class:`ModelSetupError`.
    """
    from transformers import BertTokenizerFast  # imported here: transformers is slow to import

    name = str(name_or_path)
    if not os.path.isdir(name):
        require_hub_name(name, "tokenizer", "vocab.txt")
    try:
        tok = BertTokenizerFast.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise ModelSetupError(f"cannot load tokenizer {name!r}: {e}") from e
    pieces = len(tok) - len(set(tok.all_special_tokens))
    if pieces < MIN_WORD_PIECES:
        hint = ("a folder holding the model's vocab.txt" if os.path.isdir(name)
                else f"a local folder; {offline_hint(name, 'tokenizer')}")
        raise ModelSetupError(f"tokenizer {name!r} has {pieces} word pieces besides its special tokens, not a "
                              f"WordPiece vocabulary: a model would see every word as [UNK]. Point `tokenizer:` "
                              f"at {hint}")
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tok.enc_token_id = tok.convert_tokens_to_ids("[ENC]")
    return tok


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int, offsets: bool = False,
             pad_to_max: bool = False) -> dict[str, Tensor]:
    """Tokenize cleaned texts, truncated to ``max_length`` and padded to the longest of them.

    Padding to the batch's longest text rather than to ``max_length`` (BLIP's way; ``pad_to_max``) is
    exact: padded positions are masked everywhere and never a target, and captions are mostly far
    shorter than the long limits medical configs use. Callers that put batches side by side pad them
    to one width (``models.blip.pad_to``). Returns ``input_ids`` and ``attention_mask`` (B, L) as long
    tensors, L <= max_length, and ``offset_mapping`` (B, L, 2) character spans when ``offsets`` is set
    (visualisation groups word pieces into words).
    """
    enc = tokenizer(list(texts), padding="max_length" if pad_to_max else "longest", truncation=True,
                    max_length=max_length, return_offsets_mapping=offsets, return_tensors="pt")
    out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if offsets:
        out["offset_mapping"] = enc["offset_mapping"]
    return out


class TextTokenizer:
    """``tokenize`` bound to a tokenizer and a length: a picklable callable for DataLoader workers."""

    def __init__(self, tokenizer: Any, max_length: int, pad_to_max: bool = False):
        self.tokenizer, self.max_length, self.pad_to_max = tokenizer, max_length, pad_to_max

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        return tokenize(self.tokenizer, texts, self.max_length, pad_to_max=self.pad_to_max)
