"""Shortcuts around the text tower (:mod:`models.text`): the same outputs as its plain forward, with less
work in one particular situation each. The tower itself never chooses them; the code that knows the
situation calls them by name:

- :func:`first_hidden`, :func:`predicting_hidden`: training on the CPU, where padded positions are
  skipped (:class:`Packing`). On an accelerator both run the plain forward: finding the unmasked rows
  would make the host wait for the device's queued work.
- :func:`text_states`, :func:`first_hidden_one_image`: evaluation and zero-shot re-ranking, where one
  image meets many texts and one text many images, on every device.

Each is exact: tests/test_speed_paths.py checks values and gradients against the plain forward.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from models.text import CrossKV, Layer, TextTransformer, self_attention_mask


def host_reads(device: torch.device) -> bool:
    """Whether the CPU shortcuts may read masks back to the host to choose rows (packing, the predicting LM
    rows): on the CPU it is free; on an accelerator it would wait for the queued work, so there every
    position is computed instead. (One switch, so that tests run the accelerator's branch on a CPU.)"""
    return device.type == "cpu"


class Packing:
    """The unmasked positions of a (B, L) batch of right-padded texts, as T rows of a packed (T, ...) tensor.

    Why: on the CPU every matrix product costs its full size, and the caption batches of training are
    padded to their longest caption, so the projections, output blocks and feed-forward of the padded
    positions are work whose result no loss reads. Packed, they run on the T real rows; only the attention
    sees the (B, L) layout.

    ``rows`` (T,) are their flat positions in the (B * L) grid, in order; ``grid`` (B * L,) maps every
    grid position to its packed row (a masked position to row 0: any real row serves, it is never seen);
    ``first`` (B,) is the packed row of each text's position 0.
    """

    def __init__(self, attention_mask: Tensor):
        b, length = attention_mask.shape
        flat = attention_mask.reshape(-1).bool()
        self.batch, self.length = b, length
        self.rows = flat.nonzero().squeeze(1)
        self.grid = torch.zeros(b * length, dtype=torch.long, device=flat.device)
        self.grid[self.rows] = torch.arange(self.rows.numel(), device=flat.device)
        self.first = self.grid[torch.arange(b, device=flat.device) * length]

    @staticmethod
    def worth_it(attention_mask: Tensor, min_padding: float = 0.05) -> bool:
        """Whether to pack: where :func:`host_reads` allows it, when at least ``min_padding`` of the positions
        are masked (packing costs a few small copies per layer) and every text's position 0 is unmasked."""
        if not host_reads(attention_mask.device) or attention_mask.dim() != 2 or not attention_mask.numel():
            return False
        mask = attention_mask.bool()
        return bool(mask[:, 0].all()) and int(mask.sum()) <= (1.0 - min_padding) * mask.numel()

    def pad(self, x: Tensor) -> Tensor:
        """(T, D) packed rows -> (B, L, D), masked positions holding copies of row 0."""
        return x.index_select(0, self.grid).view(self.batch, self.length, -1)

    def unpad(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (T, D), the unmasked positions."""
        return x.reshape(self.batch * self.length, -1).index_select(0, self.rows)


def packed_layer(layer: Layer, x: Tensor, pack: Packing, mask: Tensor, kv: tuple[Tensor, Tensor] | None,
                 first_only: bool = False) -> Tensor:
    """:meth:`Layer.forward <models.text.Layer.forward>` on the unmasked tokens alone: x (T, D), the batch's T
    unmasked positions; returns (T, D), or (B, D) for position 0 of each text with ``first_only``.

    The projections, the output blocks and the feed-forward run on the T rows; only the attention itself
    sees the (B, L) layout, its padded positions filled with copies of a real row, which the mask hides
    from every query and whose own outputs are dropped: the unmasked outputs (and their gradients) are
    those of the plain layer.
    """
    att = layer.attention
    q_in = x.index_select(0, pack.first) if first_only else x  # (B or T, D)
    q = att.self.query(q_in)
    q = q[:, None] if first_only else pack.pad(q)
    k, v = pack.pad(att.self.key(x)), pack.pad(att.self.value(x))
    out = att.attend(att.split(q), att.split(k), att.split(v), mask)  # (B, 1 or L, D)
    x = att.output(out[:, 0] if first_only else pack.unpad(out), q_in)
    if kv is not None:
        cross = layer.crossattention
        q = cross.self.query(x)
        q = q[:, None] if first_only else pack.pad(q)
        out = cross.attend(cross.split(q), kv[0], kv[1], None)
        x = cross.output(out[:, 0] if first_only else pack.unpad(out), x)
    return layer.feed_forward(x)


def packed_forward(tower: TextTransformer, input_ids: Tensor, attention_mask: Tensor, pack: Packing,
                   cross_kv: CrossKV | None, causal: bool, first_only: bool) -> Tensor:
    """The tower's forward on the unmasked positions of ``pack``: (T, D), or (B, D) for each text's
    position 0 with ``first_only``. ``cross_kv`` (one row per text) turns cross-attention on."""
    mask = self_attention_mask(attention_mask, causal)
    x = tower.embeddings(input_ids.reshape(-1).index_select(0, pack.rows), pack.rows % pack.length)
    layers = tower.encoder.layer
    ckpt = tower.grad_ckpt and tower.training and torch.is_grad_enabled()
    for i, layer in enumerate(layers):
        args = (layer, x, pack, mask, None if cross_kv is None else cross_kv[i], first_only and i == len(layers) - 1)
        x = checkpoint(packed_layer, *args, use_reentrant=False) if ckpt else packed_layer(*args)
    return x


def _image_kv(tower: TextTransformer, image_embeds: Tensor | None, cross_kv: CrossKV | None) -> CrossKV | None:
    return cross_kv if cross_kv is not None or image_embeds is None else tower.cross_kv(image_embeds)


def first_hidden(tower: TextTransformer, input_ids: Tensor, attention_mask: Tensor,
                 image_embeds: Tensor | None = None, cross_kv: CrossKV | None = None) -> Tensor:
    """(B, D): ``tower(..., first_only=True)[:, 0]``, the [CLS]/[ENC] state that the ITC features and the
    ITM head read; text mode without image, image-grounded with image_embeds (B, N, Dv) or ``cross_kv``.

    Training, every device; on the CPU, when :meth:`Packing.worth_it`, the padded positions are not
    computed (:func:`packed_layer`): the same state and gradients with less work.
    """
    if Packing.worth_it(attention_mask):
        kv = _image_kv(tower, image_embeds, cross_kv)
        return packed_forward(tower, input_ids, attention_mask, Packing(attention_mask), kv, False, True)
    mode = "text" if image_embeds is None and cross_kv is None else "multimodal"
    return tower(input_ids, attention_mask, image_embeds, mode=mode, cross_kv=cross_kv, first_only=True)[:, 0]


def predicting_hidden(tower: TextTransformer, input_ids: Tensor, attention_mask: Tensor, predicting: Tensor,
                      image_embeds: Tensor | None = None, cross_kv: CrossKV | None = None) -> Tensor:
    """(R, D): the causal decoder's states at the R positions where ``predicting`` (B, L) bool is True,
    in row-major order: ``tower(..., causal=True)[predicting]``.

    Why: the LM head (a projection onto the whole vocabulary, forward and backward) is the largest single
    cost of a CPU step, and the padding and each text's last position predict nothing. CPU only: choosing
    the rows reads the mask on the host, which an accelerator would wait for. With enough padding the
    decoder skips the padded positions too (:class:`Packing`). ``predicting`` must lie inside the mask.
    Exact: the same rows of the same states, in value and gradient.
    """
    if bool((predicting & ~attention_mask.bool()).any()):
        raise ValueError("predicting picks masked positions, which are not computed")
    rows = predicting.reshape(-1).nonzero().squeeze(1)
    if Packing.worth_it(attention_mask):
        pack = Packing(attention_mask)
        x = packed_forward(tower, input_ids, attention_mask, pack, _image_kv(tower, image_embeds, cross_kv), True, False)
        return x.index_select(0, pack.grid[rows])
    mode = "text" if image_embeds is None and cross_kv is None else "multimodal"
    x = tower(input_ids, attention_mask, image_embeds, mode=mode, causal=True, cross_kv=cross_kv)
    return x.reshape(-1, x.shape[-1]).index_select(0, rows)


def text_states(tower: TextTransformer, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, L, D): the embeddings and the first layer's self-attention with its add-and-norm, the part of a
    (non-causal) image-grounded pass that never sees the image. Evaluation scores each text against many
    candidate images: this part is computed once per text and given to :func:`first_hidden_one_image`."""
    x = tower.embeddings(input_ids)
    return tower.encoder.layer[0].attention(x, self_attention_mask(attention_mask, False))


def first_hidden_one_image(tower: TextTransformer, cross_kv: CrossKV, attention_mask: Tensor,
                           input_ids: Tensor | None = None, states: Tensor | None = None) -> Tensor:
    """(B, D): :func:`first_hidden` of B texts against one image, whose keys/values ``cross_kv`` (batch 1,
    from ``tower.cross_kv``) serve every text without a copy (:meth:`Attention.forward_shared
    <models.text.Attention.forward_shared>`).

    Why: retrieval re-ranking and zero-shot classification score each image against many candidate
    texts; the image's keys/values are computed once, and the texts share them. Give the texts as
    ``input_ids`` or, in evaluation, as their :func:`text_states` (each text's image-independent start,
    computed once for all its candidate images); attention_mask (B, L) either way. Any device. Exact: the
    same products in another grouping (and with states, eval mode, where no dropout draw is shared).
    """
    if (input_ids is None) == (states is None):
        raise ValueError("give the texts as input_ids or as their text_states, one of the two")
    if states is not None and tower.training:
        raise ValueError("text_states are for evaluation (eval mode): a text's states shared over images "
                         "would share its dropout draws")
    if cross_kv[0][0].shape[0] != 1:
        raise ValueError(f"cross_kv holds {cross_kv[0][0].shape[0]} images; this path shares one")
    mask = self_attention_mask(attention_mask, False)
    layers = tower.encoder.layer
    last = len(layers) - 1
    x = states if states is not None else tower.embeddings(input_ids)
    for i, layer in enumerate(layers):
        if i == 0 and states is not None:
            x = x[:, :1] if i == last else x  # this self-attention is in the states already
        else:
            x = layer.attention(x[:, :1] if i == last else x, mask, context=x)
        x = layer.feed_forward(layer.crossattention.forward_shared(x, cross_kv[i]))
    return x[:, 0]
