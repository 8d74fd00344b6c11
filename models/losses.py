"""BLIP's objectives as pure functions of features and logits.

Nothing here holds state or talks to other processes; the models gather what is needed and call these.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of -sum(targets * log_softmax(logits)). logits, targets: (B, K); rows of targets sum to 1."""
    return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()


def positive_targets(ids: Tensor, ids_all: Tensor) -> Tensor:
    """Targets that spread equal mass over every key with the same id as the query.

    ids: (B,) ids of the queries; ids_all: (K,) ids of the keys (-100 marks keys with no id, which never
    match). Returns (B, K) rows summing to 1. A query must match at least one key (itself).
    """
    pos = (ids[:, None] == ids_all[None, :]).float()
    return pos / pos.sum(dim=1, keepdim=True)


def distilled_targets(sim_m: Tensor, hard_targets: Tensor, alpha: float) -> Tensor:
    """Momentum distillation: alpha * softmax(momentum similarities) + (1 - alpha) * hard targets. (B, K)."""
    return alpha * F.softmax(sim_m, dim=1) + (1.0 - alpha) * hard_targets


def itc_loss(sim_i2t: Tensor, sim_t2i: Tensor, targets_i2t: Tensor, targets_t2i: Tensor) -> Tensor:
    """Image-text contrastive loss: the mean of both directions' soft cross-entropies.

    sim_i2t: (B, K) image queries against text keys, already divided by the temperature; sim_t2i likewise.
    """
    return (soft_cross_entropy(sim_i2t, targets_i2t) + soft_cross_entropy(sim_t2i, targets_t2i)) / 2


def same_text(ids: Tensor, ids_keys: Tensor) -> Tensor:
    """(B, K) bool: True where query caption i and key caption j are the same token sequence.

    ids: (B, L) and ids_keys: (K, L) token ids padded to the same length. Two images described by the
    same words (``Axial CT shows no focal abnormality.``) are no negatives of each other: drawing one as
    the other's ITM negative teaches the head to call a correct pair a mismatch.
    """
    return (ids[:, None, :] == ids_keys[None, :, :]).all(dim=-1)


def negative_weights(sim: Tensor, same: Tensor, eps: float = 0.0) -> Tensor:
    """Sampling weights for hard negatives: softmax(sim) (+ eps), zero wherever ``same`` is True.

    sim: (B, K) similarities divided by the temperature; same: (B, K) bool, True for pairs of the same
    image (or caption), which must never be drawn as negatives. BLIP's pre-training adds eps=1e-4 so that
    every other item keeps a chance; its retrieval fine-tuning does not.

    A row whose valid weights all underflow to 0 falls back to uniform over its valid candidates. A row
    with no valid candidate at all (see :func:`has_negative`) gets uniform weights over every column, only
    so that sampling does not fail: the caller must drop that row's pair from the ITM loss. Written
    without a data-dependent branch, so that it never waits for the device.
    """
    weights = F.softmax(sim.float(), dim=1) + eps
    weights = weights.masked_fill(same, 0.0)
    valid = (~same).float()
    fallback = torch.where(valid.sum(dim=1, keepdim=True) > 0, valid, torch.ones_like(valid))
    return torch.where(weights.sum(dim=1, keepdim=True) > 0, weights, fallback)


def has_negative(same: Tensor) -> Tensor:
    """(B,) bool: True where row i has at least one valid negative (some column not ``same``)."""
    return (~same).any(dim=1)


def sample_negatives(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one index per row in proportion to ``weights`` (B, K). Returns (B,) long."""
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def itm_loss(logits: Tensor, labels: Tensor, keep: Tensor | None = None) -> Tensor:
    """Image-text matching: cross-entropy of (N, 2) logits against (N,) labels (1 = match).

    ``keep`` (N,) bool leaves out pairs that must not count (a "negative" that is the positive itself):
    the mean runs over the kept pairs only (0 when none is kept), without a host-device sync.
    """
    if keep is None:
        return F.cross_entropy(logits, labels)
    per_pair = F.cross_entropy(logits, labels, reduction="none")
    keep = keep.to(per_pair.dtype)
    return (per_pair * keep).sum() / keep.sum().clamp(min=1.0)


def itm_keep(has_neg_t2i: Tensor, has_neg_i2t: Tensor, num_extra: int = 0) -> Tensor:
    """Which of BLIP's ITM pairs count: (3B + S,) bool in the order of :func:`itm_labels`.

    The B positives always count; the (text i, negative image) pair counts when text i had a valid
    negative image (``has_neg_t2i`` (B,)), the (negative text, image i) pair when image i had a valid
    negative text (``has_neg_i2t`` (B,)); the ``num_extra`` left/right-swap negatives always count.
    """
    pos = torch.ones_like(has_neg_t2i)
    extra = torch.ones(num_extra, dtype=torch.bool, device=has_neg_t2i.device)
    return torch.cat([pos, has_neg_t2i, has_neg_i2t, extra])


def itm_labels(num_pos: int, num_neg: int, device: torch.device | None = None) -> Tensor:
    """Labels [1] * num_pos + [0] * num_neg, as BLIP orders its ITM pairs."""
    return torch.cat([torch.ones(num_pos, dtype=torch.long, device=device),
                      torch.zeros(num_neg, dtype=torch.long, device=device)])


def lm_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.1) -> Tensor:
    """Next-token loss: logits (B, L, V) predict labels shifted by one; -100 labels are ignored.

    Mean over all kept targets, with label smoothing 0.1 as in BLIP.
    """
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    targets = labels[:, 1:].reshape(-1)
    return F.cross_entropy(shifted, targets, ignore_index=-100, label_smoothing=label_smoothing)
