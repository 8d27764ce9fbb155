"""Image-classification cousins of the replay / KL family (context-free card, "Image-classification cousins"):
class-incremental two-task protocol on any image dataset of the harness (e.g. CIFAR-10 (JPEG) classes 0-4 then
5-9). Task A = the `first_classes` (default: the first half), task B = the rest; one 10-way head. The model
after task A is a shared stage (`cl_task_a`, per dataset/model/recipe/seed/split); each arm then trains on task
B with the run's `train` recipe (fresh optimizer and schedule, order streams from derive_seed(seed, "task_b")).
Metrics: acc_a_before, acc_a (task A test accuracy after B), acc_b, acc_all, forgetting_acc = acc_a_before - acc_a.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from bench.config import SpecError, in_range, satisfies, to_dict
from bench.config import RunConfig
from bench.ids import canonical_json
from bench.method import Method, MethodResult, RunContext, Training, register_method
from bench.seeding import derive_seed, generator
from bench.stages import build_model_for
from bench.store import atomic_torch_save, atomic_write_json
from bench.train import evaluate, fit, predict

STAGE_VERSION = 1


@dataclass
class SplitParams:
    first_classes: Optional[list[int]] = field(default=None, metadata=satisfies(      # None: the first half
        lambda fc: bool(fc) and len(set(fc)) == len(fc) and min(fc) >= 0, "null or distinct non-negative class indices"))


@dataclass
class ERParams(SplitParams):
    mem_size: int = field(default=200, metadata=in_range(1))                       # Avalanche ReplayPlugin default
    replay_batch_size: Optional[int] = field(default=None, metadata=in_range(1))   # None: train.batch_size


@dataclass
class LwFParams(SplitParams):
    alpha: float = field(default=1.0, metadata=in_range(0.0))          # Avalanche default 1
    temperature: float = field(default=2.0, metadata=in_range(0.0, lo_open=True))  # Avalanche / Mammoth T 2


def _split(ctx: RunContext, p: SplitParams) -> tuple[list[int], torch.Tensor]:
    C = ctx.data.num_classes
    first = list(range(C // 2)) if p.first_classes is None else list(p.first_classes)
    if not first or len(set(first)) != len(first) or any(not 0 <= c < C for c in first) or len(first) >= C:
        raise SpecError("method.params.first_classes", p.first_classes,
                        f"distinct class indices in [0, {C}) leaving at least one class for task B")
    is_a = torch.zeros(C, dtype=torch.bool)
    is_a[first] = True
    return first, is_a


def _part(data, is_a: torch.Tensor, a: bool):
    mask = is_a.to(data.y.device)[data.y]
    return data.subset(mask if a else ~mask)


class TwoTask(Method):
    """Task A (shared stage), then task B with `loss_fn` from `b_loss`."""
    Params = SplitParams

    def trainings(self, run: RunConfig) -> list[Training]:
        """Task A (a shared stage, about half the classes) and this arm's own task B."""
        own = canonical_json([type(self).__name__, to_dict(self.params), to_dict(run.train)])
        return [Training("task A", to_dict(run.dataset), to_dict(run.model), run.train.epochs / 2, run.seed,
                         recipe=canonical_json([to_dict(run.train), self.params.first_classes])),
                Training("task B", to_dict(run.dataset), to_dict(run.model), run.train.epochs / 2, run.seed,
                         recipe=own)]

    def run(self, ctx: RunContext) -> MethodResult:
        cfg, d = ctx.config, ctx.data
        first, is_a = _split(ctx, self.params)
        key = {"version": STAGE_VERSION, "dataset": to_dict(cfg.dataset), "model": to_dict(cfg.model),
               "train": to_dict(cfg.train), "seed": cfg.seed, "first_classes": first, "device": str(ctx.device)}
        bs = cfg.train.eval_batch_size

        def compute(sdir) -> None:
            t0 = time.perf_counter()
            model = build_model_for(ctx)
            hist = fit(model, _part(d.train, is_a, True), cfg.train, seed=cfg.seed, device=ctx.device,
                       progress=ctx.progress, desc="task A")
            atomic_torch_save(sdir / "final.pt", {k: v.detach().cpu() for k, v in model.state_dict().items()})
            atomic_write_json(sdir / "info.json", {"history": hist, "wall_time_s": time.perf_counter() - t0})
        sdir = ctx.stage("cl_task_a", key, compute)
        state = torch.load(sdir / "final.pt", map_location="cpu", weights_only=True)
        model = build_model_for(ctx)
        model.load_state_dict(state)
        test_a, test_b = _part(d.test, is_a, True), _part(d.test, is_a, False)
        acc_a_before = evaluate(model, test_a, batch_size=bs)["acc"]
        train_b = _part(d.train, is_a, False).to(ctx.device)
        self.ctx, self.is_a, self.first, self.train_b = ctx, is_a, first, train_b
        t0 = time.perf_counter()
        loss_fn = self.b_loss(model, state)
        for row in fit(model, train_b, cfg.train, seed=derive_seed(cfg.seed, "task_b"), device=ctx.device,
                       loss_fn=loss_fn, progress=ctx.progress, desc=f"task B {cfg.method.name}"):
            ctx.log(row)
        acc_a = evaluate(model, test_a, batch_size=bs)["acc"]
        ctx.log({"task_a_classes": first})
        metrics = {"acc_a_before": acc_a_before, "acc_a": acc_a, "acc_b": evaluate(model, test_b, batch_size=bs)["acc"],
                   "acc_all": evaluate(model, d.test, batch_size=bs)["acc"], "forgetting_acc": acc_a_before - acc_a}
        info = json.loads((sdir / "info.json").read_text())
        return MethodResult(metrics=metrics, timings={"task_a_s": info["wall_time_s"],
                                                      "task_b_s": time.perf_counter() - t0})

    def b_loss(self, model, state):
        return None  # plain cross-entropy


@register_method("seq_ft")
class SeqFT(TwoTask):
    """Sequential fine-tuning on task B (card, "Image-classification cousins": the no-protection reference)."""


@register_method("er_replay")
class ERReplay(TwoTask):
    """Experience replay (card, "Image-classification cousins": Avalanche ReplayPlugin / Mammoth er): buffer =
    uniform random mem_size task-A training images (what reservoir sampling over task A yields in distribution);
    loss = cross-entropy over batch + replay batch together. Not faithful in one point: the replay batch has its
    own forward pass (BatchNorm statistics are not shared with the current batch as in a joint forward)."""
    Params = ERParams

    def b_loss(self, model, state):
        p, ctx = self.params, self.ctx
        train_a = _part(ctx.data.train, self.is_a, True).to(ctx.device)
        pick = torch.randperm(len(train_a), generator=generator(ctx.config.seed, "er/buffer"))[:p.mem_size]
        buf = train_a.subset(pick)
        scale, shift = buf.normalization()
        rbs = min(p.replay_batch_size or ctx.config.train.batch_size, len(buf))
        g = generator(ctx.config.seed, "er/draws")

        def loss_fn(logits, y, idx):
            i = torch.randperm(len(buf), generator=g)[:rbs].to(buf.x.device)
            lr = model(buf.x[i].float() * scale + shift)
            return F.cross_entropy(torch.cat([logits.float(), lr.float()]), torch.cat([y, buf.y[i]]))
        return loss_fn


@register_method("lwf")
class LwF(TwoTask):
    """Learning without Forgetting (card, "Image-classification cousins"): CE + alpha * T² * KL(softmax(old/T) ‖
    softmax(new/T)) over the task-A output units. Not faithful in one point: the KL uses the un-augmented task-B
    images (old logits precomputed once; one extra forward of the new model), not the augmented batch."""
    Params = LwFParams

    def b_loss(self, model, state):
        p, ctx = self.params, self.ctx
        old = build_model_for(ctx)
        old.load_state_dict(state)
        tb = self.train_b
        old_logits = predict(old, tb, batch_size=ctx.config.train.eval_batch_size)[:, self.first]
        scale, shift = tb.normalization()
        T = p.temperature

        def loss_fn(logits, y, idx):
            new = model(tb.x[idx].float() * scale + shift)[:, self.first].float()
            kl = F.kl_div(F.log_softmax(new / T, -1), F.log_softmax(old_logits[idx] / T, -1), log_target=True,
                          reduction="batchmean")
            return F.cross_entropy(logits.float(), y) + p.alpha * T * T * kl
        return loss_fn
