"""ExpFit transfer baseline for KNOW (card section 5; the harness's reading of an [open] baseline)."""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.config import in_range, satisfies
from bench.method import register_method
from methods.know.extrapolate import ExpFit
from methods.know.transfer import TransferMethod, TransferParams


@dataclass
class ExpFitParams(TransferParams):
    trajectory_length: int = field(default=5, metadata=satisfies(lambda v: v >= 3, "an integer >= 3 for ExpFit"))
    steps: int = field(default=1, metadata=in_range(1))   # the fit at s = S .. S + steps - 1, last kept (×2/×4/×8)
    q_max: float = field(default=2.0, metadata=in_range(0.0, lo_open=True))  # largest e^c accepted, else a line


@register_method("expfit")
class ExpFitTransfer(TransferMethod):
    """Card section 5 ExpFit, NOT specified by the paper: per scalar w(s) = a + b·exp(c·s) fitted on s = 0..S-1
    (most forgotten -> Θ0) in closed form (methods.know.extrapolate.ExpFit), evaluated at s = S - 1 + steps; linear fallback
    where degenerate. Then the section 6 fine-tuning."""
    Params = ExpFitParams

    def __init__(self, params) -> None:
        super().__init__(params)
        self.steps = params.steps

    def extrapolator(self, ctx):
        return ExpFit(q_max=self.params.q_max)
