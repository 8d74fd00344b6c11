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


class _QueueITC(torch.autograd.Function):
    """:func:`itc_loss` of the similarities against [this batch's momentum features | the queue], without
    building the concatenated (E, B+Q) keys, and with the gradient computed in the forward.

    Autograd would save the keys for backward; the queue is overwritten in place by the enqueue that
    follows the loss, so the keys would have to be a copy of the whole queue (two copies of E x Q floats per
    step). The keys are constants and the loss's gradient with respect to the similarities is known in
    closed form (``softmax(s) * sum(t) - t``, as log_softmax's backward computes it), so the gradients of
    the online features and of the temperature are computed here, while the queue is intact, and backward
    only scales them by the incoming gradient.
    """

    @staticmethod
    def forward(ctx, image_feat, text_feat, temp, image_feat_m, text_feat_m, image_queue, text_queue, hard, alpha,
                with_grad):
        bs = image_feat.shape[0]
        loss, sims, grads, grad_temp = 0.0, [], [], 0.0
        for query, query_m, key_m, queue in ((image_feat, image_feat_m, text_feat_m, text_queue),
                                             (text_feat, text_feat_m, image_feat_m, image_queue)):
            # The online and the momentum queries in one product per key block: each key is read once.
            both = torch.cat([query, query_m.to(query.dtype)])  # (2B, E)
            s = torch.cat([both @ key_m.T.to(both.dtype), both @ queue.to(both.dtype)], dim=1) / temp  # (2B, B+Q)
            targets = distilled_targets(s[bs:], hard, alpha)
            s = s[:bs]
            log_p = F.log_softmax(s, dim=1)
            loss = loss + (-(log_p * targets).sum(dim=1).mean()) / 2
            sims.append(s)
            if with_grad:
                g = (log_p.exp() * targets.sum(dim=1, keepdim=True) - targets) * (0.5 / bs)  # d loss / d s
                grad = (g[:, :bs].to(key_m.dtype) @ key_m + g[:, bs:].to(queue.dtype) @ queue.T) / temp
                grads.append(grad.to(query.dtype))
                grad_temp = grad_temp - (g * s).sum() / temp  # s = raw / temp
        if with_grad:
            ctx.save_for_backward(grads[0], grads[1], torch.as_tensor(grad_temp).to(temp.dtype).reshape(temp.shape))
        ctx.mark_non_differentiable(*sims)
        return loss, sims[0], sims[1]

    @staticmethod
    def backward(ctx, grad_loss, _grad_sim_i2t, _grad_sim_t2i):
        grad_image, grad_text, grad_temp = ctx.saved_tensors
        return (grad_image * grad_loss, grad_text * grad_loss, grad_temp * grad_loss) + (None,) * 7


def queue_itc_loss(image_feat: Tensor, text_feat: Tensor, temp: Tensor, image_feat_m: Tensor, text_feat_m: Tensor,
                   image_queue: Tensor, text_queue: Tensor, hard_targets: Tensor,
                   alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """BLIP's ITC loss with momentum distillation against this batch's momentum features and the queues.

    image_feat, text_feat (B, E) online features (differentiable); temp the temperature (differentiable);
    image_feat_m, text_feat_m (B, E) momentum features; image_queue, text_queue (E, Q); hard_targets
    (B, B+Q) (:func:`positive_targets`). Equals ``itc_loss(q @ keys / temp, ..., distilled_targets(q_m @ keys
    / temp, hard, alpha), ...)`` with keys = [feat_m.T | queue] for both directions, in value and in gradient.
    Returns the loss and the online similarities sim_i2t, sim_t2i (B, B+Q) (no gradient flows through them).
    The queues may be written in place as soon as this returns (see :class:`_QueueITC`).
    """
    with_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (image_feat, text_feat, temp))
    return _QueueITC.apply(image_feat, text_feat, temp, image_feat_m, text_feat_m, image_queue, text_queue,
                           hard_targets, alpha, with_grad)


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


def lm_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.1, shifted: bool = False) -> Tensor:
    """Next-token loss: logits (B, L, V) predict labels shifted by one; -100 labels are ignored.

    Mean over all kept targets, with label smoothing 0.1 as in BLIP. ``shifted``: the logits (B, L-1, V)
    of positions 0..L-2 and the labels (B, L-1) of positions 1..L-1 are given already (the last position,
    which predicts nothing, need not meet the head).
    """
    if not shifted:
        logits, labels = logits[:, :-1], labels[:, 1:]
    shifted_logits = logits.reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(shifted_logits, labels.reshape(-1), ignore_index=-100, label_smoothing=label_smoothing)


def lm_predicting(labels: Tensor) -> Tensor:
    """(B, L) bool: the positions whose next label is a target (not -100); the last position never is."""
    return F.pad(labels[:, 1:] != -100, (0, 1), value=False)


def lm_loss_selected(logits: Tensor, labels: Tensor, predicting: Tensor, label_smoothing: float = 0.1) -> Tensor:
    """:func:`lm_loss` from the logits (R, V) of the R ``predicting`` positions (:func:`lm_predicting`) alone,
    in row-major order: the same targets, the same mean over them, the same smoothing, with the head over
    the vocabulary run on R rows instead of B * L."""
    targets = labels[:, 1:][predicting[:, :-1]]
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
