"""Loss functions on hand-made inputs whose answers are known."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models import losses


def test_soft_cross_entropy_with_one_hot_equals_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    targets = torch.tensor([0, 2])
    got = losses.soft_cross_entropy(logits, F.one_hot(targets, 3).float())
    assert torch.allclose(got, F.cross_entropy(logits, targets))


def test_itc_loss_of_two_uniform_rows_is_log_k():
    sim = torch.zeros(2, 4)
    targets = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    assert math.isclose(losses.itc_loss(sim, sim, targets, targets).item(), math.log(4), rel_tol=1e-6)


def test_positive_targets_spread_over_same_image():
    got = losses.positive_targets(torch.tensor([7, 8, 7]), torch.tensor([7, 8, 7, -100, 7]))
    expected = torch.tensor([[1 / 3, 0, 1 / 3, 0, 1 / 3], [0, 1, 0, 0, 0], [1 / 3, 0, 1 / 3, 0, 1 / 3]])
    assert torch.allclose(got, expected)


def test_distilled_targets_mix():
    sim_m = torch.tensor([[0.0, 0.0]])
    hard = torch.tensor([[1.0, 0.0]])
    assert torch.allclose(losses.distilled_targets(sim_m, hard, 0.4), torch.tensor([[0.8, 0.2]]))


def test_negatives_never_same_image():
    sim = torch.tensor([[9.0, 9.0, 0.0, -3.0], [9.0, 9.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 9.0]])
    ids = torch.tensor([0, 0, 1, 2])
    same = ids[:, None] == ids[None, :]
    w = losses.negative_weights(sim, same, eps=1e-4)
    assert (w[same] == 0).all() and (w[~same] > 0).all()
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        picks = losses.sample_negatives(w, g)
        assert not same[torch.arange(4), picks].any()


def test_negative_weights_fall_back_when_every_item_is_the_same_image():
    same = torch.ones(2, 2, dtype=torch.bool)
    w = losses.negative_weights(torch.zeros(2, 2), same)
    assert torch.equal(w, torch.ones(2, 2))  # nothing valid: uniform rather than a multinomial crash


def test_itm_loss_and_labels():
    labels = losses.itm_labels(2, 4)
    assert labels.tolist() == [1, 1, 0, 0, 0, 0]
    logits = torch.zeros(6, 2)
    assert math.isclose(losses.itm_loss(logits, labels).item(), math.log(2), rel_tol=1e-6)


def test_lm_loss_shifts_ignores_padding_and_smooths():
    vocab = 5
    labels = torch.tensor([[9, 2, 3, -100]])  # position 0 ([DEC]) is never a target
    logits = torch.full((1, 4, vocab), -1e4)
    logits[0, 0, 2] = 1e4  # predicts token 1 (=2) from position 0
    logits[0, 1, 3] = 1e4
    plain = losses.lm_loss(logits, labels, label_smoothing=0.0)
    assert plain.item() < 1e-3
    smoothed = losses.lm_loss(logits, labels, label_smoothing=0.1)
    # Smoothing puts 0.1/5 mass on each of the 4 wrong classes, each with log-prob about -2e4.
    assert math.isclose(smoothed.item(), 0.1 / vocab * 4 * 2e4, rel_tol=1e-3)


def test_same_caption_of_another_image_is_never_a_negative():
    ids = torch.tensor([[101, 7, 8, 0], [101, 7, 8, 0], [101, 7, 9, 0]])
    assert losses.same_text(ids, ids).tolist() == [[True, True, False], [True, True, False],
                                                  [False, False, True]]
    image_ids = torch.tensor([0, 1, 2])  # three images; the first two have the same caption
    same = (image_ids[:, None] == image_ids[None, :]) | losses.same_text(ids, ids)
    w = losses.negative_weights(torch.zeros(3, 3), same, eps=1e-4)
    assert w[0, 1] == 0 and w[1, 0] == 0 and w[0, 2] > 0 and w[2, 0] > 0 and w[2, 1] > 0
