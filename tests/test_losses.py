"""Distillation loss equals a hand-computed value on a 2-class toy."""
from __future__ import annotations

import math

import torch

from bench.losses import distillation_loss


def test_distillation_loss_matches_hand_computed_two_class_value() -> None:
    z = torch.tensor([[2.0, 0.0]])          # student logits
    t = torch.tensor([[0.25, 0.75]])        # teacher probabilities at temperature T
    y = torch.tensor([0])
    T, alpha = 2.0, 0.9
    # student at T: softmax([1, 0]) = [e/(e+1), 1/(e+1)]
    ps = [math.e / (math.e + 1), 1 / (math.e + 1)]
    kl = 0.25 * math.log(0.25 / ps[0]) + 0.75 * math.log(0.75 / ps[1])
    ce = -math.log(math.exp(2) / (math.exp(2) + 1))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    got = distillation_loss(z, t, y, temperature=T, alpha=alpha)
    assert abs(got.item() - expected) < 1e-6


def test_distillation_loss_is_cross_entropy_when_alpha_is_zero() -> None:
    z = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 1, 0])
    t = torch.softmax(torch.randn(5, 3), -1)
    got = distillation_loss(z, t, y, temperature=4.0, alpha=0.0)
    assert torch.allclose(got, torch.nn.functional.cross_entropy(z, y))
