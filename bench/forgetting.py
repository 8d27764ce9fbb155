"""Forgetting primitives on per-epoch predictions: forget fraction, softmax ensembles, Knowledge Fusion selection.

Shared by the Forget Me Not methods (KF, distilled KF, checkpoint baselines); pure tensor functions, no training.
"""
from __future__ import annotations

from dataclasses import dataclass

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


# ------------------------------------------------------------------------------- validation protocols
@dataclass
class ProtocolSplit:
    """Where selection reads (`sel_split` rows `sel_idx`) and where the result is scored (test rows `eval_idx`)."""
    sel_split: str
    sel_idx: torch.Tensor
    eval_idx: torch.Tensor


PROTOCOLS = ("test_half", "train_holdout")


def protocol_splits(protocol: str, data, n_splits: int, seed: int) -> list[ProtocolSplit]:
    """`test_half` (the paper's): V = a random half of the test set, scored on the other half, `n_splits` times;
    `train_holdout`: V = the validation split held out from train, scored on the whole test set."""
    from bench.config import SpecError
    from bench.seeding import generator
    n_test = len(data.test)
    if protocol == "test_half":
        out = []
        for k in range(n_splits):
            perm = torch.randperm(n_test, generator=generator(seed, f"test_half/{k}"))
            out.append(ProtocolSplit("test", perm[: n_test // 2].sort().values, perm[n_test // 2:].sort().values))
        return out
    if protocol == "train_holdout":
        if not len(data.val):
            raise SpecError("method.params.protocol", protocol,
                            "test_half, or train_holdout with dataset.val_fraction > 0")
        return [ProtocolSplit("val", torch.arange(len(data.val)), torch.arange(n_test))]
    raise SpecError("method.params.protocol", protocol, ", ".join(PROTOCOLS))


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    return float((probs.argmax(-1) == y).float().mean())


def nll(probs: torch.Tensor, y: torch.Tensor) -> float:
    return float(-probs.gather(-1, y[:, None]).clamp_min(1e-12).log().mean())


@dataclass
class ProtocolParams:
    """Method parameters shared by the Forget Me Not methods: the validation protocol (card section 1)."""
    protocol: str = "test_half"   # test_half | train_holdout
    n_splits: int = 3             # test_half: random halves (mean ± std over them)

    def __post_init__(self) -> None:
        from bench.config import SpecError
        if self.protocol not in PROTOCOLS:
            raise SpecError("method.params.protocol", self.protocol, ", ".join(PROTOCOLS))
        if self.n_splits < 1:
            raise SpecError("method.params.n_splits", self.n_splits, "an integer >= 1")


def score_on_splits(probs_test: torch.Tensor, y_test: torch.Tensor, splits: list[ProtocolSplit]) -> dict:
    """test_acc (mean over the protocol's evaluation halves), its per-split values and test NLL."""
    accs = [accuracy(probs_test[s.eval_idx], y_test[s.eval_idx]) for s in splits]
    nlls = [nll(probs_test[s.eval_idx], y_test[s.eval_idx]) for s in splits]
    return {"test_acc": float(np.mean(accs)), "test_acc_splits": accs, "test_nll": float(np.mean(nlls))}
