"""evenly_spaced: a softmax ensemble of k checkpoints evenly spaced over the base run (final included)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.config import in_range
from bench.protocol import ProtocolParams, protocol_splits, score_on_splits
from bench.method import Method, MethodResult, RunContext, register_method


@dataclass
class EvenlySpacedParams(ProtocolParams):
    k: int = field(default=5, metadata=in_range(1))



def evenly_spaced_epochs(epochs: int, k: int) -> list[int]:
    """k distinct epochs (1-based) at E/k, 2E/k, ..., E, rounded (fewer if E < k)."""
    return sorted({int(round(x)) for x in np.linspace(epochs / k, epochs, k)} - {0})


@register_method("evenly_spaced")
class EvenlySpaced(Method):
    """Fixed jumps: Forget Me Not card section 4 (and Table II row "evenly spaced checkpoints")."""
    Params = EvenlySpacedParams

    def run(self, ctx: RunContext) -> MethodResult:
        p: EvenlySpacedParams = self.params
        base = ctx.base_run()
        epochs = evenly_spaced_epochs(base.epochs, p.k)
        probs = base.probs("test")[[e - 1 for e in epochs]].mean(0)
        splits = protocol_splits(p.protocol, ctx.data, p.n_splits, ctx.config.dataset.seed)
        metrics = {**score_on_splits(probs, ctx.data.test.y.cpu(), splits), "members": epochs,
                   "protocol": p.protocol}
        return MethodResult(metrics=metrics)
