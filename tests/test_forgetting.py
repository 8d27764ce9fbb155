"""The continual-learning forgetting definitions of bench.forgetting on a hand-made accuracy matrix."""
from __future__ import annotations

import pytest
import torch

from bench.forgetting import backward_transfer, forgetting_last, forgetting_max

# R[t, i]: accuracy on task i after training on task t (3 tasks)
R = torch.tensor([[0.90, 0.10, 0.10],
                  [0.60, 0.80, 0.10],
                  [0.70, 0.50, 0.85]])


def test_avalanche_forgetting_is_just_after_minus_final():
    assert forgetting_last(R).tolist() == pytest.approx([0.90 - 0.70, 0.80 - 0.50])


def test_max_based_forgetting_takes_the_best_past_accuracy():
    # task 0: best of R[0,0]=0.9, R[1,0]=0.6 is 0.9 -> 0.9 - 0.7; task 1: R[1,1]=0.8 -> 0.8 - 0.5
    assert forgetting_max(R).tolist() == pytest.approx([0.2, 0.3])
    R2 = R.clone()
    R2[1, 0] = 0.95      # a later, better accuracy on task 0: max-based and just-after definitions now differ
    assert forgetting_max(R2).tolist() == pytest.approx([0.25, 0.3])
    assert forgetting_last(R2).tolist() == pytest.approx([0.2, 0.3])


def test_backward_transfer_is_minus_the_mean_just_after_forgetting():
    assert backward_transfer(R) == pytest.approx(-(0.2 + 0.3) / 2)
    assert backward_transfer(torch.tensor([[0.5]])) == 0.0
