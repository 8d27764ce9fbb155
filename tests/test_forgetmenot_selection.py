"""Forget fraction, softmax ensembles and KF selection on hand-made cases."""
from __future__ import annotations

import torch

from bench.forgetting import forget_fraction, pack_bits, softmax_ensemble, unpack_bits

from methods.forgetmenot.selection import kf_select, tune_eps


def test_forget_fraction_on_a_four_epoch_history() -> None:
    # 5 validation examples, 4 epochs; the last row is the final model.
    correct = torch.tensor([
        [1, 0, 1, 1, 0],   # epoch 1: ex0 and ex2 are correct here and wrong at the end -> 2/5
        [1, 1, 1, 0, 0],   # epoch 2: ex0, ex2 -> 2/5 (ex1 correct here and at the end: not forgotten)
        [0, 1, 1, 1, 0],   # epoch 3: ex2 -> 1/5
        [0, 1, 0, 1, 1],   # final
    ], dtype=torch.bool)
    assert torch.allclose(forget_fraction(correct), torch.tensor([0.4, 0.4, 0.2, 0.0]))


def test_forget_fraction_divides_by_all_of_v_not_by_the_correct_ones() -> None:
    correct = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert forget_fraction(correct)[0].item() == 0.25


def test_bit_matrix_round_trips() -> None:
    c = torch.rand(7, 13) > 0.5
    packed = pack_bits(c)
    assert packed.shape == (7, 2)
    assert torch.equal(unpack_bits(packed, 13), c)


def test_ensemble_averages_softmax_not_logits() -> None:
    a = torch.tensor([[10.0, 0.0]])
    b = torch.tensor([[0.0, 1.0]])
    p = softmax_ensemble([a, b])
    expected = (a.softmax(-1) + b.softmax(-1)) / 2
    assert torch.allclose(p, expected)
    assert not torch.allclose(p, ((a + b) / 2).softmax(-1))


def one_hot(labels: list[int], c: int = 3, conf: float = 0.8) -> torch.Tensor:
    p = torch.full((len(labels), c), (1 - conf) / (c - 1))
    p[torch.arange(len(labels)), torch.tensor(labels)] = conf
    return p


def test_tune_eps_picks_smallest_eps_reaching_best_accuracy() -> None:
    y = torch.tensor([0, 1])
    members = one_hot([0, 1])[None]
    final = one_hot([1, 1], conf=0.6)
    eps, acc = tune_eps(members, final, y)
    assert acc == 1.0
    # example 0: eps*0.8 + (1-eps)*0.2 > eps*0.1 + (1-eps)*0.6  <=> eps > 0.3636: first grid point 0.37
    assert abs(eps - 0.37) < 1e-6


def test_kf_selects_the_forget_peak_and_its_window() -> None:
    # 6 epochs on 4 examples; true labels 0..3 style. Epoch 2 (0-based) knows what the final model forgot.
    y = torch.tensor([0, 1, 2, 0])
    preds = [
        [1, 1, 1, 1],  # e0: 1 correct (ex1)
        [0, 1, 1, 1],  # e1: ex0 correct, forgotten at final
        [0, 1, 2, 0],  # e2: all correct: ex0, ex2, ex3 forgotten at final -> peak
        [0, 1, 1, 1],  # e3
        [1, 1, 1, 1],  # e4
        [1, 1, 1, 1],  # final: only ex1 correct
    ]
    probs = torch.stack([one_hot(p) for p in preds])
    sel = kf_select(probs, y, window=1)
    assert sel.peak_epoch == 2 and sel.members == [1, 2, 3]
    assert sel.val_acc >= 0.25  # never below the final model's accuracy (eps = 0 is in the grid)
    sel0 = kf_select(probs, y, window=0)
    assert sel0.members == [2] and sel0.val_acc == 1.0 and sel0.eps > 0.5


def probs_of(labels: list[int], confs: list[float], c: int = 3) -> torch.Tensor:
    p = torch.empty(len(labels), c)
    for i, (lab, conf) in enumerate(zip(labels, confs)):
        p[i] = (1 - conf) / (c - 1)
        p[i, lab] = conf
    return p


def test_kf_infinity_adds_the_checkpoint_that_fixes_remaining_errors() -> None:
    y = torch.tensor([0, 1, 2, 2, 2])
    probs = torch.stack([
        probs_of([0, 1, 2, 2, 1], [.9, .9, .9, .9, .4]),   # e0: forgets 3 (ex0, ex2, ex3): the peak (first max)
        probs_of([0, 1, 2, 1, 2], [.9, .9, .9, .5, .98]),  # e1: the only one right on ex4, confidently
        probs_of([1, 1, 1, 1, 1], [.6] * 5),               # e2
        probs_of([1, 1, 1, 1, 1], [.6] * 5),               # final: only ex1 right
    ])
    one = kf_select(probs, y, window=0)
    assert one.members == [0] and abs(one.val_acc - 0.8) < 1e-6
    inf = kf_select(probs, y, window=0, iterate=True)
    # eps > 0.571 makes every example right with members {e0, e1} (hand-computed): accuracy 1.0 after 2 iterations
    assert inf.members == [0, 1] and inf.val_acc == 1.0 and inf.iterations == 2 and inf.eps > 0.571


def test_early_stopping_picks_the_epoch_most_accurate_on_v_and_the_earliest_on_ties():
    from baselines.early_stopping import best_epoch
    y = torch.tensor([0, 1, 1])
    p0, p1 = [0.9, 0.1], [0.1, 0.9]                 # predicts class 0 / class 1
    probs = torch.tensor([[p0, p1, p1],              # epoch 1: 3/3 right
                          [p0, p0, p1],              # epoch 2: 2/3
                          [p0, p1, p1]])             # epoch 3: 3/3 (ties with epoch 1)
    assert best_epoch(probs, y) == 0                 # the earliest of the tied best
    assert best_epoch(probs[1:], y) == 1             # without epoch 1: epoch 3
