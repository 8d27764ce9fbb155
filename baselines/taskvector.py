"""TaskVector transfer baseline for KNOW (card section 5): Θ̂ = Θ0 + λ(Θ0 − Θ1), iterated for more steps."""
from __future__ import annotations

import math
from dataclasses import dataclass

from bench.config import SpecError
from methods.know.extrapolate import TaskVector
from bench.method import register_method
from methods.know.transfer import TransferMethod, TransferParams


@dataclass
class TaskVectorParams(TransferParams):
    lam: float = 1.0       # λ ([open] in the card; 1 = linear continuation)
    steps: int = 1         # 1 = one step beyond Θ0 (×2 at r = 0.5); 2, 3 iterate on the own output (×4, ×8)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.lam) and self.lam > 0):
            raise SpecError("method.params.lam", self.lam, "a number > 0")
        if self.steps < 1:
            raise SpecError("method.params.steps", self.steps, "an integer >= 1")


@register_method("taskvector")
class TaskVectorTransfer(TransferMethod):
    """Card section 5 TaskVector (the S = 2 ablation row): Θ̂ = Θ0 + λ(Θ0 − Θ1), `steps` times, then the section
    6 fine-tuning. Reads only Θ0 and Θ1 of the shared trajectory."""
    Params = TaskVectorParams

    def __init__(self, params) -> None:
        super().__init__(params)
        self.steps = params.steps

    def window_length(self) -> int:
        return 2

    def extrapolator(self, ctx):
        return TaskVector(self.params.lam)
