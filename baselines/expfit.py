"""ExpFit transfer baseline for KNOW (card section 5; the harness's reading of an [open] baseline)."""
from __future__ import annotations

from dataclasses import dataclass

from bench.config import SpecError
from methods.know.extrapolate import ExpFit
from bench.method import register_method
from methods.know.transfer import TransferMethod, TransferParams


@dataclass
class ExpFitParams(TransferParams):
    steps: int = 1         # evaluate the fit at s = S, ..., S + steps - 1 and keep the last (×2, ×4, ×8 at r = 0.5)
    q_max: float = 2.0     # largest accepted ratio e^c of the fit; beyond it the scalar falls back to a line

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1:
            raise SpecError("method.params.steps", self.steps, "an integer >= 1")
        if self.trajectory_length < 3:
            raise SpecError("method.params.trajectory_length", self.trajectory_length, "an integer >= 3 for ExpFit")
        if not self.q_max > 0:
            raise SpecError("method.params.q_max", self.q_max, "a number > 0")


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
