"""Forgetting metrics, each definition named and cited: pure tensor functions, no training.

- `forget_fraction` (per epoch, Forget Me Not card section 1): examples right at epoch e and wrong at the end.
- `forgetting_last` (Avalanche's definition): accuracy on a task just after training on it minus final accuracy.
- `forgetting_max` (Chaudhry et al. 2018, "Riemannian Walk", Eq. 9; Mammoth's): best past accuracy minus final.
- `backward_transfer` (Lopez-Paz & Ranzato 2017, GEM, Eq. 3): mean of final minus just-after accuracy.
"""
from __future__ import annotations


import numpy as np
import torch


def forget_fraction(correct: torch.Tensor) -> torch.Tensor:
    """F_e = |{i : correct at epoch e and wrong at the final epoch}| / |V| for each epoch (card section 1).

    `correct` is bool [E, N] (row E-1 is the final model); returns float [E] (the final row is 0 by definition).
    """
    correct = correct.bool()
    return (correct & ~correct[-1]).float().mean(dim=1)


def pack_bits(correct: torch.Tensor) -> np.ndarray:
    """Per-epoch per-example correctness [E, N] as a packed uint8 bit matrix (N/8 bytes per epoch)."""
    return np.packbits(correct.cpu().numpy().astype(bool), axis=1)


def unpack_bits(packed: np.ndarray, n: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(packed, axis=1, count=n).astype(bool))


def softmax_ensemble(logits: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Average of the members' softmax (not of their logits): the ensembles of both papers' tables."""
    stacked = torch.stack(list(logits)) if isinstance(logits, list) else logits
    return stacked.float().softmax(-1).mean(0)


def selection_split(data) -> str:
    """The split forgetting is measured on: the held-out validation split, or the test set when there is none."""
    return "val" if len(data.val) else "test"


def history_with_forget_fraction(base, data) -> tuple[list[dict], torch.Tensor]:
    """The base run's per-epoch history with `forget_fraction` added, and the correctness bit matrix [E, N]."""
    split = selection_split(data)
    y = getattr(data, split).y.cpu()
    correct = base.probs(split).argmax(-1) == y[None]
    frac = forget_fraction(correct)
    rows = [{**row, "forget_fraction": float(f), "forget_split": split} for row, f in zip(base.history, frac)]
    return rows, correct


def forgetting_last(acc: torch.Tensor) -> torch.Tensor:
    """Avalanche's forgetting per task: R[i, i] - R[T-1, i] for tasks i < T-1.

    `acc` is the accuracy matrix R [T, T]: R[t, i] = accuracy on task i after training on task t."""
    acc = torch.as_tensor(acc, dtype=torch.float64)
    t = acc.shape[0]
    return acc.diagonal()[: t - 1] - acc[-1, : t - 1]


def forgetting_max(acc: torch.Tensor) -> torch.Tensor:
    """Chaudhry et al. (2018) Eq. 9: max_{l < T-1} R[l, i] - R[T-1, i] for tasks i < T-1 (best past minus final)."""
    acc = torch.as_tensor(acc, dtype=torch.float64)
    t = acc.shape[0]
    if t < 2:
        return acc.new_zeros(0)
    best = torch.stack([acc[i: t - 1, i].max() for i in range(t - 1)])
    return best - acc[-1, : t - 1]


def backward_transfer(acc: torch.Tensor) -> float:
    """GEM (Lopez-Paz & Ranzato 2017) Eq. 3: mean over i < T-1 of R[T-1, i] - R[i, i] (negative = forgetting)."""
    f = forgetting_last(acc)
    return float(-f.mean()) if f.numel() else 0.0
