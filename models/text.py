"""A compact BERT-style text transformer that serves as text encoder, image-grounded encoder and decoder.

Parameter names follow BERT and BLIP (``embeddings.word_embeddings``, ``encoder.layer.{i}.attention.self.query``,
``encoder.layer.{i}.crossattention...``, ``cls.predictions...``) so that BERT weights and BLIP checkpoints
load by name. Layers are post-LN as in BERT. Attention runs through ``F.scaled_dot_product_attention``;
an explicit path that keeps the attention probabilities is used only when a caller asks for them
(Grad-CAM visualisation).

:meth:`TextTransformer.forward` is the one training forward, the same on every device. Generation's
key/value cache (:meth:`TextDecoder.forward_cached`) is here too. Shortcuts that give the same numbers
with less work in particular cases (padding skipped on the CPU, evaluation's per-text cache) are in
:mod:`models.text_fast`, called explicitly by the code that wants them.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# Per-layer cross-attention keys and values, each (B, heads, N_image, head_dim).
CrossKV = list[tuple[Tensor, Tensor]]
# One layer's cached self-attention keys and values of the decoder, each (B, heads, P, head_dim).
SelfKV = tuple[Tensor, Tensor]


@dataclass
class TextConfig:
    """Sizes of the text transformer, read from a BERT-style JSON (``med_config``)."""

    vocab_size: int = 30524
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int = 0
    encoder_width: int = 768
    add_cross_attention: bool = True

    @classmethod
    def from_json(cls, path: str | Path) -> "TextConfig":
        """Read a BERT/BLIP config JSON; keys this model has no use for (``type_vocab_size``...) are ignored."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"med_config {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"med_config {path} is not valid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"med_config {path} must hold a JSON object")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


class Embeddings(nn.Module):
    """Word plus absolute position embeddings, LayerNorm and dropout (no token-type table)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        # Persistent, because BLIP checkpoints carry it.
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings).unsqueeze(0))

    def forward(self, input_ids: Tensor, position_ids: Tensor | None = None) -> Tensor:
        """(B, L) token ids -> (B, L, D) at positions 0 .. L-1, or at ``position_ids`` (same shape as the ids,
        or broadcastable to it: see :meth:`positions`)."""
        if position_ids is None:
            position_ids = self.positions(0, input_ids.shape[-1])
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))

    def positions(self, start: int, length: int) -> Tensor:
        """Position ids (1, length) from ``start`` on; a text longer than the table is refused by name."""
        end = start + length
        if end > self.position_embeddings.num_embeddings:
            raise ValueError(f"text of {end} tokens exceeds max_position_embeddings "
                             f"{self.position_embeddings.num_embeddings}")
        return self.position_ids[:, start:end]


class Projections(nn.Module):
    """Query, key and value projections; keys/values may come from another width (image tokens)."""

    def __init__(self, dim: int, kv_dim: int):
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(kv_dim, dim)
        self.value = nn.Linear(kv_dim, dim)


class AddNorm(nn.Module):
    """Dense, dropout, residual, LayerNorm: BERT's post-LN output block."""

    def __init__(self, in_dim: int, dim: int, eps: float, dropout: float):
        super().__init__()
        self.dense = nn.Linear(in_dim, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    """Multi-head attention (self or cross) followed by BERT's add-and-norm."""

    def __init__(self, cfg: TextConfig, kv_dim: int):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.dropout_p = cfg.attention_probs_dropout_prob
        # ``self`` is BERT's name for the projection block; it must stay for weight loading.
        self.self = Projections(cfg.hidden_size, kv_dim)
        self.output = AddNorm(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps, cfg.hidden_dropout_prob)

    def split(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, H, N, dh), one slice per head."""
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def key_value(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, kv_dim) -> keys and values, each (B, H, N, dh)."""
        return self.split(self.self.key(context)), self.split(self.self.value(context))

    def forward(self, x: Tensor, mask: Tensor | None, context: Tensor | None = None,
                kv: tuple[Tensor, Tensor] | None = None, keep_probs: list | None = None) -> Tensor:
        """Attend from ``x`` (B, L, D) to ``context`` (B, N, kv_dim), or to ``x`` itself when no context;
        returns (B, L, D) after the add-and-norm, whose residual is ``x``.

        ``mask`` is a boolean (B, 1, L or 1, N) tensor, True where attention is allowed. ``kv`` gives
        precomputed keys/values (see :meth:`key_value`), one row per row of ``x``. When ``keep_probs`` is a
        list, the attention probabilities (B, H, L, N) are appended to it (see :meth:`attend`).
        """
        q = self.split(self.self.query(x))
        k, v = kv if kv is not None else self.key_value(x if context is None else context)
        return self.output(self.attend(q, k, v, mask, keep_probs), x)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, keep_probs: list | None = None) -> Tensor:
        """Attention of split queries (B, H, L, dh) over keys/values (B, H, N, dh) -> (B, L, D), before the
        output block. With ``keep_probs`` the probabilities are computed explicitly, appended to it and kept
        in the graph (Grad-CAM takes their gradient); otherwise the fused kernel runs."""
        p = self.dropout_p if self.training else 0.0
        if keep_probs is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(-1)
            keep_probs.append(probs)
            out = F.dropout(probs, p, self.training) @ v
        return out.transpose(1, 2).flatten(2)

    # -- inference: one image's keys/values for many rows; the decoder's key/value cache (generate.py) --

    def forward_shared(self, x: Tensor, kv: tuple[Tensor, Tensor]) -> Tensor:
        """:meth:`forward` of every row of ``x`` (B, L, D) over the keys/values of one image (1, H, N, dh),
        unmasked: the rows are folded into the query length, so that the keys/values are neither copied
        per row nor broadcast (which would leave the fused kernels), and the attention is one large
        product. Used where one image meets many texts: beams of a caption, candidate texts in evaluation."""
        k, v = kv
        q = self.split(self.self.query(x))
        b, h, length, d = q.shape
        folded = q.transpose(0, 1).reshape(1, h, b * length, d)
        out = F.scaled_dot_product_attention(folded, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        out = out.reshape(h, b, length, d).transpose(0, 1)  # (B, H, L, dh)
        return self.output(out.transpose(1, 2).flatten(2), x)

    def forward_cached(self, x: Tensor, past: SelfKV | None) -> tuple[Tensor, SelfKV]:
        """Causal self-attention of ``T`` new positions x (B, T, D) over ``past`` keys/values
        (B, H, P, dh) and their own; returns (B, T, D) and the cache grown to (B, H, P + T, dh).

        Each new position sees every cached one and the new ones up to itself, which is what the
        full causal mask gives it, so a step costs O(P) rather than re-running the whole prefix.
        """
        q = self.split(self.self.query(x))
        k, v = self.key_value(x)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        new, total = x.shape[1], k.shape[2]
        mask = None if new == 1 else torch.ones(new, total, dtype=torch.bool, device=x.device).tril(total - new)
        p = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.output(out.transpose(1, 2).flatten(2), x), (k, v)


class Intermediate(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    """Self-attention, optional cross-attention to image tokens, feed-forward; all post-LN."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.attention = Attention(cfg, cfg.hidden_size)
        if cfg.add_cross_attention:
            self.crossattention = Attention(cfg, cfg.encoder_width)
        self.intermediate = Intermediate(cfg)
        self.output = AddNorm(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps, cfg.hidden_dropout_prob)

    def forward(self, x: Tensor, mask: Tensor, image: Tensor | None = None, image_mask: Tensor | None = None,
                kv: tuple[Tensor, Tensor] | None = None, keep_probs: list | None = None,
                first_only: bool = False) -> Tensor:
        """x (B, L, D) -> (B, L, D); with ``first_only`` (B, 1, D), position 0 alone, which still attends to
        every token. ``image`` (B, N, encoder_width) or its keys/values ``kv`` turn cross-attention on."""
        if first_only:
            x = self.attention(x[:, :1], mask, context=x)
        else:
            x = self.attention(x, mask)
        if image is not None or kv is not None:
            x = self.crossattention(x, image_mask, context=image, kv=kv, keep_probs=keep_probs)
        return self.feed_forward(x)

    def feed_forward(self, x: Tensor) -> Tensor:
        """The position-wise feed-forward block with its add-and-norm: (..., D) -> (..., D)."""
        return self.output(self.intermediate(x), x)

    def forward_cached(self, x: Tensor, past: SelfKV | None, image: Tensor | None,
                       kv: tuple[Tensor, Tensor] | None) -> tuple[Tensor, SelfKV]:
        """Decoder layer over new positions with a self-attention cache (see :meth:`Attention.forward_cached`);
        keys/values ``kv`` of batch 1 serve every row (see :meth:`Attention.forward_shared`)."""
        x, past = self.attention.forward_cached(x, past)
        if kv is not None and kv[0].shape[0] == 1 < x.shape[0]:
            x = self.crossattention.forward_shared(x, kv)
        elif image is not None or kv is not None:
            x = self.crossattention(x, None, context=image, kv=kv)
        return self.feed_forward(x), past


def self_attention_mask(attention_mask: Tensor, causal: bool) -> Tensor:
    """(B, L) padding mask -> boolean (B, 1, 1, L), or (B, 1, L, L) when causal: True where a query may look."""
    keep = attention_mask.bool()[:, None, None, :]
    if causal:
        length = attention_mask.shape[1]
        keep = keep & torch.ones(length, length, dtype=torch.bool, device=keep.device).tril()
    return keep


class Encoder(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))


class TextTransformer(nn.Module):
    """BERT-style transformer: ``mode="text"`` (unimodal), ``"multimodal"`` (cross-attends to image tokens).

    With ``causal=True`` self-attention is causal, which makes the same module the LM decoder.
    ``grad_ckpt`` (the config's ``text_grad_ckpt``) recomputes each layer in backward instead of keeping
    its activations, when training with gradients.
    """

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.config = cfg
        self.grad_ckpt = False
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def cross_kv(self, image_embeds: Tensor) -> CrossKV:
        """Keys and values of every layer's cross-attention for (B, N, encoder_width) image tokens.

        Computing them once per image and reusing them for many candidate texts is what makes
        retrieval re-ranking fast: at 384 px these projections dominate the multimodal cost.
        """
        return [layer.crossattention.key_value(image_embeds) for layer in self.encoder.layer]

    def forward(self, input_ids: Tensor, attention_mask: Tensor, image_embeds: Tensor | None = None,
                image_atts: Tensor | None = None, mode: str = "multimodal", causal: bool = False,
                cross_kv: CrossKV | None = None, first_only: bool = False,
                keep_cross_attention: list | None = None) -> Tensor:
        """The last hidden states (B, L, D), or (B, 1, D) for position 0 alone with ``first_only``.

        input_ids, attention_mask: (B, L). ``mode="text"`` is the unimodal encoder; ``"multimodal"``
        cross-attends to image_embeds (B, N, encoder_width), or to their keys/values ``cross_kv`` from
        :meth:`cross_kv` (one row per text), computed once for several passes. image_atts: (B, N), all ones
        when omitted. ``causal`` makes self-attention causal: the LM decoder. ``first_only`` computes only
        position 0 in the last layer, the one position the ITC and ITM heads read (exact: no other
        position's output reaches it). keep_cross_attention: a list that receives each layer's
        cross-attention probabilities (B, H, L, N) (Grad-CAM).
        """
        if mode not in ("text", "multimodal"):
            raise ValueError(f"mode must be 'text' or 'multimodal', not {mode!r}")
        multimodal = mode == "multimodal"
        if multimodal and image_embeds is None and cross_kv is None:
            raise ValueError("multimodal mode needs image_embeds or cross_kv")
        if first_only and causal:
            raise ValueError("first_only is for the encoder's [CLS]/[ENC] output, not for the causal decoder")
        if multimodal and cross_kv is not None and cross_kv[0][0].shape[0] != input_ids.shape[0]:
            raise ValueError(f"cross_kv holds {cross_kv[0][0].shape[0]} rows for {input_ids.shape[0]} texts; one "
                             f"image for many texts is models.text_fast.first_hidden_one_image")
        mask = self_attention_mask(attention_mask, causal)
        image = image_embeds if multimodal and cross_kv is None else None
        image_mask = image_atts.bool()[:, None, None, :] if multimodal and image_atts is not None else None
        layers = self.encoder.layer
        kvs = cross_kv if multimodal and cross_kv is not None else [None] * len(layers)
        # Checkpointing would recompute (and append again) the kept attention maps: never with them.
        ckpt = self.grad_ckpt and self.training and torch.is_grad_enabled() and keep_cross_attention is None
        x = self.embeddings(input_ids)
        for i, layer in enumerate(layers):
            args = (x, mask, image, image_mask, kvs[i], keep_cross_attention, first_only and i == len(layers) - 1)
            if ckpt:  # non-reentrant: dropout masks are replayed, and kv may be shared by several passes
                x = checkpoint(layer, *args, use_reentrant=False)
            else:
                x = layer(*args)
        return x

    def forward_cached(self, input_ids: Tensor, past: list[SelfKV] | None = None, image_embeds: Tensor | None = None,
                       cross_kv: CrossKV | None = None) -> tuple[Tensor, list[SelfKV]]:
        """Causal decoding with a key/value cache: hidden states (B, T, D) of ``T`` new tokens and the cache.

        input_ids: (B, T), the tokens after the ``past`` ones (all of the prompt on the first call, then
        one per step), without padding. past: per layer (keys, values), each (B, H, P, dh), from the
        previous call. image_embeds (B, N, encoder_width) or ``cross_kv`` (from :meth:`cross_kv`; batch 1
        serves every row): every image token is attended to. The result equals the last ``T`` positions
        of ``forward(..., causal=True)`` on the whole sequence with an all-ones mask.
        """
        if image_embeds is None and cross_kv is None:
            raise ValueError("the decoder needs image_embeds or cross_kv")
        past_length = 0 if past is None else past[0][0].shape[2]
        x = self.embeddings(input_ids, self.embeddings.positions(past_length, input_ids.shape[1]))
        grown = []
        for i, layer in enumerate(self.encoder.layer):
            x, kv_i = layer.forward_cached(x, None if past is None else past[i],
                                           image_embeds if cross_kv is None else None,
                                           None if cross_kv is None else cross_kv[i])
            grown.append(kv_i)
        return x, grown


class PredictionHeadTransform(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class LMPredictionHead(nn.Module):
    """Transform, then a vocabulary projection whose weight is tied to the word embeddings."""

    def __init__(self, cfg: TextConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = PredictionHeadTransform(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        self.decoder.weight = word_embeddings.weight
        nn.init.zeros_(self.decoder.bias)
        # BERT stores the bias under both ``bias`` and ``decoder.bias``: one parameter, two names.
        self.bias = self.decoder.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.transform(x))


class LMHeads(nn.Module):
    def __init__(self, cfg: TextConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = LMPredictionHead(cfg, word_embeddings)


class TextDecoder(nn.Module):
    """The causal decoder: ``bert`` (a :class:`TextTransformer`) plus ``cls`` (the tied LM head)."""

    def __init__(self, cfg: TextConfig, shared: TextTransformer | None = None):
        super().__init__()
        self.bert = TextTransformer(cfg)
        if shared is not None:
            share_except_self_attention(shared, self.bert)
        self.cls = LMHeads(cfg, self.bert.embeddings.word_embeddings)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, image_embeds: Tensor,
                image_atts: Tensor | None = None) -> Tensor:
        """Return next-token logits (B, L, V), causal over the text and cross-attending to the image."""
        hidden = self.bert(input_ids, attention_mask, image_embeds, image_atts, mode="multimodal", causal=True)
        return self.cls.predictions(hidden)

    def forward_cached(self, input_ids: Tensor, past: list[SelfKV] | None = None, image_embeds: Tensor | None = None,
                       cross_kv: CrossKV | None = None) -> tuple[Tensor, list[SelfKV]]:
        """Next-token logits (B, T, V) of ``T`` new tokens, and the grown cache (see
        :meth:`TextTransformer.forward_cached`)."""
        hidden, past = self.bert.forward_cached(input_ids, past, image_embeds, cross_kv)
        return self.cls.predictions(hidden), past


def share_except_self_attention(encoder: TextTransformer, decoder: TextTransformer) -> None:
    """Make ``decoder`` use the encoder's modules everywhere except self-attention, as BLIP ties them.

    The embeddings, every cross-attention and every feed-forward block become the same module
    objects, so a state dict lists them under both names (as BLIP's does) and they train together.
    """
    if len(encoder.encoder.layer) != len(decoder.encoder.layer):
        raise ValueError("encoder and decoder must have the same depth to share weights")
    decoder.embeddings = encoder.embeddings
    for enc, dec in zip(encoder.encoder.layer, decoder.encoder.layer):
        dec.crossattention = enc.crossattention
        dec.intermediate = enc.intermediate
        dec.output = enc.output
