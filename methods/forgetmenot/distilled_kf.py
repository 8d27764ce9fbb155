"""distilled_kf: a student of the same architecture trained from scratch with the KF ensemble as teacher."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from bench.config import in_range
from bench.protocol import ProtocolParams, accuracy, protocol_splits
from methods.forgetmenot.selection import kf_select
from bench.losses import distillation_loss
from bench.config import RunConfig, to_dict
from bench.ids import canonical_json
from bench.method import Method, MethodResult, RunContext, Training, base_training, register_method
from bench.seeding import derive_seed
from bench.stages import build_model_for
from bench.train import fit, predict


@dataclass
class DistilledKFParams(ProtocolParams):
    window: int = field(default=1, metadata=in_range(0))
    iterate: bool = False           # teacher = KF (i); true: KF (inf)   [open in the card]
    temperature: float = field(default=4.0, metadata=in_range(0.0, lo_open=True))   # T [open in the card: 4]
    alpha: float = field(default=0.9, metadata=in_range(0.0, 1.0))   # weight of the KD term [open: default 0.9]
    epochs: Optional[int] = field(default=None, metadata=in_range(1))   # student epochs; None = the base recipe's
    n_splits: int = field(default=1, metadata=in_range(1))   # one teacher (selected on split 0's V), scored on split 0's other half



@register_method("distilled_kf")
class DistilledKF(Method):
    """Forget Me Not card section 3: student from scratch, loss alpha*T^2*KL(teacher_T || student_T) +
    (1-alpha)*CE on the given (possibly noisy) labels. The teacher's train-set outputs are computed once, from the
    selected checkpoints, on UN-augmented training images (the student sees augmented ones)."""
    Params = DistilledKFParams

    def trainings(self, run: RunConfig) -> list[Training]:
        """The base run (the teacher's checkpoints) and this run's own student."""
        epochs = run.train.epochs if self.params.epochs is None else self.params.epochs
        return [base_training(run), Training("student", to_dict(run.dataset), to_dict(run.model), float(epochs),
                                             run.seed, recipe=canonical_json(to_dict(self.params)))]

    def run(self, ctx: RunContext) -> MethodResult:
        p: DistilledKFParams = self.params
        cfg, data = ctx.config, ctx.data
        base = ctx.base_run()
        s = protocol_splits(p.protocol, data, p.n_splits, cfg.dataset.seed)[0]
        y_sel = (data.val.y if s.sel_split == "val" else data.test.y).cpu()[s.sel_idx]
        sel = kf_select(base.probs(s.sel_split)[:, s.sel_idx], y_sel, window=p.window, iterate=p.iterate)

        t0 = time.perf_counter()
        teacher = self.teacher_probs(ctx, base, [e + 1 for e in sel.members], sel.eps, p.temperature)
        t_teacher = time.perf_counter() - t0

        t0 = time.perf_counter()
        student_seed = derive_seed(cfg.seed, "student")
        student = build_model_for(ctx, seed=student_seed)
        recipe = dataclasses.replace(cfg.train, epochs=p.epochs or cfg.train.epochs)

        def loss_fn(logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return distillation_loss(logits, teacher[idx], y, temperature=p.temperature, alpha=p.alpha)

        history = fit(student, data.train, recipe, seed=student_seed, device=ctx.device, val=data.val,
                      loss_fn=loss_fn, progress=ctx.progress, desc="student")
        for row in history:
            ctx.log({**row, "stage": "student"})
        t_student = time.perf_counter() - t0

        bs = cfg.train.eval_batch_size
        y_test = data.test.y.cpu()
        p_student = predict(student, data.test, batch_size=bs).softmax(-1).cpu()
        p_test = base.probs("test")
        p_kf = sel.eps * p_test[sel.members].mean(0) + (1 - sel.eps) * p_test[-1]
        ev = s.eval_idx
        metrics = {"test_acc": accuracy(p_student[ev], y_test[ev]),
                   "teacher_test_acc": accuracy(p_kf[ev], y_test[ev]),
                   "naive_test_acc": accuracy(p_test[-1][ev], y_test[ev]),
                   "teacher_train_acc_noisy_labels": accuracy(teacher.cpu(), data.train.y.cpu()),
                   "members": [e + 1 for e in sel.members], "eps": sel.eps, "protocol": p.protocol}
        return MethodResult(metrics=metrics, timings={"base_train_s": base.wall_time_s, "teacher_s": t_teacher,
                                                      "student_train_s": t_student})

    @staticmethod
    def teacher_probs(ctx: RunContext, base, member_epochs: list[int], eps: float, temperature: float
                      ) -> torch.Tensor:
        """eps * mean_m softmax(z_m / T) + (1 - eps) * softmax(z_final / T) on the training set, one model in memory."""
        model = build_model_for(ctx)
        bs = ctx.config.train.eval_batch_size

        def probs_of(state: dict) -> torch.Tensor:
            model.load_state_dict(state)
            return (predict(model, ctx.data.train, batch_size=bs) / temperature).softmax(-1)

        final = probs_of(base.final_state())
        if not member_epochs or eps == 0.0:
            return final
        members = sum(probs_of(base.state(e)) for e in member_epochs) / len(member_epochs)
        return eps * members + (1 - eps) * final
