"""Selection protocols: where a method that picks checkpoints reads its validation data, and where it is scored.

`test_half` (Forget Me Not's protocol, card section 1): V = a random half of the test set, scored on the other
half, `n_splits` times; `train_holdout`: V = the split held out from train, scored on the whole test set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from bench.config import SpecError, in_range
from bench.seeding import generator


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
    """Method parameters shared by the checkpoint-selecting methods: the validation protocol."""
    protocol: Literal["test_half", "train_holdout"] = "test_half"
    n_splits: int = field(default=3, metadata=in_range(1))   # test_half: random halves (mean ± std over them)


def score_on_splits(probs_test: torch.Tensor, y_test: torch.Tensor, splits: list[ProtocolSplit]) -> dict:
    """test_acc (mean over the protocol's evaluation halves), its per-split values and test NLL."""
    accs = [accuracy(probs_test[s.eval_idx], y_test[s.eval_idx]) for s in splits]
    nlls = [nll(probs_test[s.eval_idx], y_test[s.eval_idx]) for s in splits]
    return {"test_acc": float(np.mean(accs)), "test_acc_splits": accs, "test_nll": float(np.mean(nlls))}
