"""horizontal: a softmax ensemble of the last k epochs of the base run."""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.config import in_range
from bench.protocol import ProtocolParams, protocol_splits, score_on_splits
from bench.method import Method, MethodResult, RunContext, register_method


@dataclass
class HorizontalParams(ProtocolParams):
    k: int = field(default=5, metadata=in_range(1))



@register_method("horizontal")
class Horizontal(Method):
    """Horizontal ensemble (last k epochs): Forget Me Not card section 4, optional baselines."""
    Params = HorizontalParams

    def run(self, ctx: RunContext) -> MethodResult:
        p: HorizontalParams = self.params
        base = ctx.base_run()
        first = max(1, base.epochs - p.k + 1)
        probs = base.probs("test")[first - 1:].mean(0)
        splits = protocol_splits(p.protocol, ctx.data, p.n_splits, ctx.config.dataset.seed)
        metrics = {**score_on_splits(probs, ctx.data.test.y.cpu(), splits),
                   "members": list(range(first, base.epochs + 1)), "protocol": p.protocol}
        return MethodResult(metrics=metrics)
