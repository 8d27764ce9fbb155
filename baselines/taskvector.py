"""TaskVector transfer baseline for KNOW (card section 5): Θ̂ = Θ0 + λ(Θ0 − Θ1), iterated for more steps."""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.config import in_range
from bench.method import register_method
from methods.know.extrapolate import TaskVector
from methods.know.transfer import TransferMethod, TransferParams


@dataclass
class TaskVectorParams(TransferParams):
    lam: float = field(default=1.0, metadata=in_range(0.0, lo_open=True))  # λ ([open] in the card; 1 = linear)
    steps: int = field(default=1, metadata=in_range(1))   # 1 = one step beyond Θ0 (×2 at r = 0.5); 2, 3: ×4, ×8


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
