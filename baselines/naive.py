"""naive: a single model, the final checkpoint of the base training run."""
from __future__ import annotations

import torch

from bench.forgetting import history_with_forget_fraction, pack_bits
from bench.method import Method, MethodResult, RunContext, register_method
from bench.protocol import protocol_splits, score_on_splits
from bench.stages import build_model_for
from bench.train import evaluate, predict


@register_method("naive")
class Naive(Method):
    """Single model (Forget Me Not card, section 4 "single model (naive)"): the base run's final weights."""

    def run(self, ctx: RunContext) -> MethodResult:
        base = ctx.base_run()
        artifacts: dict[str, torch.Tensor] = {}
        history = base.history
        if ctx.config.train.record_predictions:
            history, correct = history_with_forget_fraction(base, ctx.data)
            artifacts["correct_bits"] = torch.from_numpy(pack_bits(correct))  # [E, ceil(N/8)] uint8
        for row in history:
            ctx.log(row)
        model = build_model_for(ctx)
        model.load_state_dict(base.final_state())
        bs = ctx.config.train.eval_batch_size
        test = evaluate(model, ctx.data.test, batch_size=bs)
        metrics = {"test_acc": test["acc"], "test_loss": test["loss"], "epochs": len(base.history)}
        if ctx.config.train.record_predictions:
            metrics["forget_fraction_peak"] = max(float(r["forget_fraction"]) for r in history)
        if len(ctx.data.val):
            val = evaluate(model, ctx.data.val, batch_size=bs)
            metrics.update(val_acc=val["acc"], val_loss=val["loss"])
        artifacts["test_logits"] = predict(model, ctx.data.test, batch_size=bs)
        # the same final model on the test halves KF & co. are scored on (like with like in paired comparisons)
        halves = score_on_splits(artifacts["test_logits"].float().softmax(-1).cpu(), ctx.data.test.y.cpu(),
                                 protocol_splits("test_half", ctx.data, 3, ctx.config.dataset.seed))
        metrics.update(test_acc_splits=halves["test_acc_splits"], protocol_halves="test_half")
        if ctx.data.noise_mask.any():
            artifacts["noise_mask"] = ctx.data.noise_mask
        return MethodResult(metrics=metrics, artifacts=artifacts, timings={"base_train_s": base.wall_time_s})
