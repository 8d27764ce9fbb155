"""Knowledge Fusion's selection (Forget Me Not card section 2): peak of the forget fraction, members around it,
the mixing weight eps tuned on V, and KF (∞)'s greedy additions. Pure tensor functions on per-epoch softmax."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.forgetting import forget_fraction


def mix(p_members: torch.Tensor, p_final: torch.Tensor, eps: float) -> torch.Tensor:
    """KF mixing (card section 2, step 3): eps * mean softmax of the members + (1 - eps) * softmax of the final."""
    return eps * p_members.mean(dim=0) + (1.0 - eps) * p_final


def tune_eps(p_members: torch.Tensor, p_final: torch.Tensor, y: torch.Tensor,
             grid: torch.Tensor | None = None) -> tuple[float, float]:
    """The eps in `grid` (default 0..1 step 0.01) maximising accuracy on (p, y); ties go to the smallest eps."""
    grid = torch.linspace(0, 1, 101) if grid is None else grid
    mean = p_members.mean(dim=0)
    mixed = grid[:, None, None] * mean[None] + (1 - grid[:, None, None]) * p_final[None]  # [G, N, C]
    acc = (mixed.argmax(-1) == y[None]).float().mean(-1)
    best = int(torch.argmax(acc))  # first maximum = smallest eps
    return float(grid[best]), float(acc[best])


@dataclass
class KFSelection:
    """Which checkpoints (epoch indices into the history, final excluded) KF fuses, and with what eps."""
    peak_epoch: int
    members: list[int]
    eps: float
    val_acc: float
    iterations: int


def kf_select(probs_val: torch.Tensor, y_val: torch.Tensor, *, window: int = 1, iterate: bool = False
              ) -> KFSelection:
    """Knowledge Fusion selection on the validation split only (card section 2).

    `probs_val` is float [E, N, C]: softmax of each epoch's model on V, the last row the final model. A = argmax of
    the forget fraction; members A-w..A+w (final excluded); eps tuned on V. With `iterate` (KF (inf)), repeatedly
    add the checkpoint most accurate on the current ensemble's V errors while V accuracy improves.
    """
    n_epochs = probs_val.shape[0]
    correct = probs_val.argmax(-1) == y_val[None]
    frac = forget_fraction(correct)[:-1]
    peak = int(torch.argmax(frac))
    members = [e for e in range(peak - window, peak + window + 1) if 0 <= e < n_epochs - 1]
    p_final = probs_val[-1]
    eps, acc = tune_eps(probs_val[members], p_final, y_val)
    iterations = 1
    while iterate:
        pred = mix(probs_val[members], p_final, eps).argmax(-1)
        errors = pred != y_val
        candidates = [e for e in range(n_epochs - 1) if e not in members]
        if not candidates or not bool(errors.any()):
            break
        on_errors = correct[candidates][:, errors].float().mean(-1)
        best = candidates[int(torch.argmax(on_errors))]
        new_eps, new_acc = tune_eps(probs_val[members + [best]], p_final, y_val)
        if new_acc <= acc:
            break
        members, eps, acc = sorted(members + [best]), new_eps, new_acc
        iterations += 1
    return KFSelection(peak_epoch=peak, members=members, eps=eps, val_acc=acc, iterations=iterations)
