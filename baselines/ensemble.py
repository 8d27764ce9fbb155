"""ensemble: Forget Me Not card, section 4 "independent ensemble": K independently seeded runs, softmax-averaged.

Members of the run with seed s are the base runs of seeds s, s+1, ..., s+k-1 (same dataset, model and recipe).
With `batched: false` (default) they are exactly the `base` stages the `naive` runs of those seeds use: the
ensemble row of seed s REUSES the naive runs of seeds s..s+k-1 of the same sweep and never retrains them (a stage
already computed is read from disk; a missing one is trained once, under the stage's lock, and then serves both).
Note that rows of neighbouring seeds share members (seed 0 with k=5 uses 0..4, seed 1 uses 1..5), so the rows of
one sweep are not independent draws.

With `batched: true` the missing members are trained together in one vmapped pass (`bench.batched`) and kept in
their own `batched-base` stages, NOT shared with naive runs (equal to sequential training up to float rounding;
see bench/batched.py). Models that cannot be batched (dropout / drop-path, BatchNorm momentum=None) fall back to
the ordinary `base` stages; the metric `batched` says which path was taken (1 or 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bench.config import in_range
from bench.forgetting import softmax_ensemble
from bench.protocol import protocol_splits, score_on_splits
from bench.config import RunConfig
from bench.method import Method, MethodResult, RunContext, Training, base_training, register_method
from bench.stages import base_run, build_model_for
from bench.train import predict
from bench.batched import BatchingUnsupported, batched_base_runs


def member_seeds(seed: int, k: int) -> list[int]:
    """The seeds of the K members of the ensemble run with seed `seed`: seed, seed+1, ..., seed+k-1."""
    return [seed + i for i in range(k)]


def ensemble_scores(probs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy and NLL (-log of the averaged probability of the true class, floored at 1e-12) of probs [N, C]."""
    y = y.to(probs.device)
    acc = (probs.argmax(-1) == y).double().mean()
    nll = -probs.gather(-1, y[:, None]).clamp_min(1e-12).double().log().mean()
    return {"acc": float(acc), "loss": float(nll)}


@register_method("ensemble")
class Ensemble(Method):
    """Independent ensemble (Forget Me Not card, section 4): softmax average of K independently seeded base runs."""

    @dataclass
    class Params:
        k: int = field(default=5, metadata=in_range(1))   # members: base runs of seeds seed..seed+k-1
        batched: bool = False    # train missing members in one vmapped pass, in the separate `batched-base` stage

    def trainings(self, run: RunConfig) -> list[Training]:
        """Every member's base run: an ensemble of seed s trains seeds s..s+k-1 (shared with those naive runs)."""
        return [base_training(run, s) for s in member_seeds(run.seed, self.params.k)]

    def run(self, ctx: RunContext) -> MethodResult:
        seeds = member_seeds(ctx.config.seed, self.params.k)
        batched = False
        if self.params.batched:
            try:
                bases, batched = batched_base_runs(ctx, seeds), True
            except BatchingUnsupported:
                bases = [base_run(ctx, s) for s in seeds]
        else:
            bases = [base_run(ctx, s) for s in seeds]

        bs = ctx.config.train.eval_batch_size
        splits = {"test": ctx.data.test}
        if len(ctx.data.val):
            splits["val"] = ctx.data.val
        logits: dict[str, list[torch.Tensor]] = {name: [] for name in splits}
        for s, base in zip(seeds, bases):
            model = build_model_for(ctx, s)
            model.load_state_dict(base.final_state())
            for name, data in splits.items():
                logits[name].append(predict(model, data, batch_size=bs))

        y_test = ctx.data.test.y
        probs = softmax_ensemble(logits["test"])
        test = ensemble_scores(probs, y_test)
        member_acc = [float((lg.argmax(-1) == y_test.to(lg.device)).double().mean()) for lg in logits["test"]]
        metrics = {"test_acc": test["acc"], "test_loss": test["loss"], "k": self.params.k,
                   "member_test_acc_mean": sum(member_acc) / len(member_acc), "batched": int(batched)}
        halves = score_on_splits(probs.cpu(), y_test.cpu(),
                                 protocol_splits("test_half", ctx.data, 3, ctx.config.dataset.seed))
        metrics.update(test_acc_splits=halves["test_acc_splits"], protocol_halves="test_half")
        if "val" in splits:
            val = ensemble_scores(softmax_ensemble(logits["val"]), ctx.data.val.y)
            metrics.update(val_acc=val["acc"], val_loss=val["loss"])
        for i, (s, base, acc) in enumerate(zip(seeds, bases, member_acc)):
            ctx.log({"member": i, "member_seed": s, "member_test_acc": acc, "stage": base.dir.name})
        return MethodResult(metrics=metrics, artifacts={"test_probs": probs.cpu()},
                            timings={"members_train_s": sum(b.wall_time_s for b in bases)})
