"""KNOW prediction (card ../shared/papers/know.md): pretrain on a source task, record a structured-forgetting
trajectory, extrapolate the weights *against* forgetting, replace the head and fine-tune on the target task.

The run's `dataset` is the TARGET task; `method.params.source` gives the SOURCE task as overrides of the run's
dataset config (fields not given are inherited, e.g. `{classes: [0, 1, 2, 3, 4]}` or `{name: cifar100,
classes: null}`). The run's `train` block is the source pretraining recipe (its `epochs` replaced by
`pretrain_epochs`) and supplies batch size / augmentation to every phase. All methods of one configuration
with the same trajectory parameters share one pretraining + trajectory stage per seed.

Methods: know_naive (fine-tune from Θ0), know_x2 / know_x4 / know_x8 (KNOWN, 1 / 2 / 3 recursive steps);
TaskVector and ExpFit live in baselines/ and share `TransferMethod`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from bench.config import DataConfig, RunConfig, in_range, overrides_of, parse, satisfies, to_dict
from bench.data import load_data
from bench.ids import canonical_json
from bench.method import Method, MethodResult, RunContext, Training, register_method
from bench.train import evaluate, init_model
from methods.know.downstream import DownstreamRecipe, finetune_downstream, predict_states, transplant
from methods.know.extrapolate import Extrapolator, KnownExtrapolator
from methods.know.known import load_known
from methods.know.layout import KINDS
from methods.know.trajectory import trajectory_recipes, trajectory_stage


POSITIVE = in_range(0.0, lo_open=True)


@dataclass
class TransferParams:
    """Shared by every KNOW-family method; the first block keys the shared trajectory stage."""
    source: dict[str, Any] = field(default_factory=dict, metadata=overrides_of(DataConfig))  # the source task
    pretrain_epochs: int = field(default=10, metadata=in_range(1))   # Θ0: source pretraining ([open] in the card)
    rate: float = field(default=0.5, metadata=in_range(0.0, 1.0, lo_open=True, hi_open=True))  # r (card §1)
    trajectory_length: int = field(default=5, metadata=in_range(2))  # S snapshots Θ0..Θ_{S-1}
    epochs_per_step: int = field(default=1, metadata=in_range(1))    # epochs on each nested subset (official: 1)
    step_optimizer: Literal["sgd", "adam", "adamw"] = "adam"         # of the forgetting steps (official: Adam)
    step_lr: float = field(default=1e-3, metadata=POSITIVE)          # its lr (official script: 1e-3)
    # downstream (card section 6)
    phase1_epochs: int = field(default=10, metadata=in_range(0))
    phase2_epochs: int = field(default=100, metadata=in_range(0))
    lr1: float = field(default=1e-3, metadata=POSITIVE)
    lr2: float = field(default=4e-4, metadata=POSITIVE)


def source_of(run: RunConfig, p: TransferParams) -> DataConfig:
    """The source task: the run's dataset with `method.params.source`'s fields replaced."""
    return parse(DataConfig, {**to_dict(run.dataset), **p.source}, "method.params.source")


class TransferMethod(Method):
    """Card sections 1, 5, 6: shared trajectory stage, Θ0 or a prediction from it, new head, two-phase fine-tune."""
    Params = TransferParams
    steps = 0                          # extrapolation steps (0 = naive transfer from Θ0)

    def extrapolator(self, ctx: RunContext) -> Optional[Extrapolator]:
        return None

    def window_length(self) -> int:
        return self.params.trajectory_length

    def source_config(self, ctx: RunContext) -> DataConfig:
        return source_of(ctx.config, self.params)

    def trainings(self, run: RunConfig) -> list[Training]:
        """The shared trajectory stage (source pretraining, then S-1 steps on nested subsets r^s |D|) and this
        run's two-phase fine-tuning on the target."""
        p = self.params
        steps = sum(p.epochs_per_step * p.rate ** s for s in range(1, p.trajectory_length))
        traj = {k: getattr(p, k) for k in ("pretrain_epochs", "rate", "trajectory_length", "epochs_per_step",
                                           "step_optimizer", "step_lr")}
        return [Training("source pretraining + trajectory", to_dict(source_of(run, p)), to_dict(run.model),
                         p.pretrain_epochs + steps, run.seed, recipe=canonical_json([to_dict(run.train), traj])),
                Training("target fine-tuning", to_dict(run.dataset), to_dict(run.model),
                         float(p.phase1_epochs + p.phase2_epochs), run.seed,
                         recipe=canonical_json([type(self).__name__, to_dict(p)]))]

    def run(self, ctx: RunContext) -> MethodResult:
        p = self.params
        seed = ctx.config.seed
        train = ctx.config.train
        source = self.source_config(ctx)
        pretrain, step = trajectory_recipes(train, pretrain_epochs=p.pretrain_epochs, step_lr=p.step_lr,
                                            step_optimizer=p.step_optimizer, epochs_per_step=p.epochs_per_step)
        traj = trajectory_stage(ctx, source, ctx.config.model, pretrain, step, rate=p.rate,
                                length=p.trajectory_length, seed=seed)
        theta0 = traj.theta0()
        metrics: dict[str, Any] = {}
        timings = {"pretrain_s": traj.info["pretrain_s"], "trajectory_s": traj.info["trajectory_s"]}
        state = theta0
        ex = self.extrapolator(ctx)
        if ex is not None:
            t0 = time.perf_counter()
            window = traj.window(self.window_length())
            state = predict_states(traj.layout, window, theta0, ex, self.steps)[-1]
            timings["predict_s"] = time.perf_counter() - t0
            metrics.update(ex.info())
            flat0, flat1 = traj.layout.flatten(theta0), traj.layout.flatten(state)
            for k in KINDS:
                if flat0[k].numel():
                    metrics[f"rel_change_{k}"] = float((flat1[k] - flat0[k]).norm() / flat0[k].norm().clamp_min(1e-12))
        # the source-task view (diagnostic): Θ0 vs the predicted weights with the source head
        src = load_data(source, ctx.device)
        src_model = init_model(ctx.config.model, num_classes=src.num_classes, in_chans=src.in_chans,
                               img_size=src.img_size, seed=seed).to(ctx.device)
        src_model.load_state_dict(state)
        metrics["source_test_acc"] = evaluate(src_model, src.test, batch_size=train.eval_batch_size)["acc"]
        del src_model
        # target: same architecture, new head (the run's own init stream), two-phase fine-tuning
        t0 = time.perf_counter()
        d = ctx.data
        model = init_model(ctx.config.model, num_classes=d.num_classes, in_chans=d.in_chans, img_size=d.img_size,
                           seed=seed).to(ctx.device)
        transplant(model, state)
        recipe = DownstreamRecipe(phase1_epochs=p.phase1_epochs, phase2_epochs=p.phase2_epochs, lr1=p.lr1,
                                  lr2=p.lr2)
        metrics.update(finetune_downstream(ctx, model, recipe, seed=seed, log=ctx.log))
        timings["finetune_s"] = time.perf_counter() - t0
        metrics.update(steps=self.steps, scale=(1 / p.rate) ** self.steps,
                       source_subset_sizes=traj.info["subset_sizes"])
        return MethodResult(metrics=metrics, timings=timings)


@register_method("know_naive")
class KnowNaive(TransferMethod):
    """Card section 5 "Naive": fine-tune downstream from Θ0 (with its BatchNorm) with the section 6 recipe."""
    steps = 0


@dataclass
class KnownParams(TransferParams):
    trajectory_length: int = field(default=5, metadata=satisfies(lambda v: v >= 5, "an integer >= 5 (KNOWN reads "
                                                                                    "a window of 5 snapshots)"))
    weights: str = field(default="official", metadata=satisfies(
        lambda v: v == "official" or Path(v).exists(),
        "'official' or an existing .pt checkpoint / folder of KNOWN_{Conv,FC,Bias}.h5"))   # from known_train
    backend: Literal["auto", "kernel", "torch"] = "auto"   # kernel (fused C++ CPU kernel) | torch: same function


class KnowPrediction(TransferMethod):
    """Card sections 2-3 + 6: KNOWN applied recursively `steps` times to the last 5 snapshots."""
    Params = KnownParams

    def window_length(self) -> int:
        return 5

    def extrapolator(self, ctx: RunContext) -> Extrapolator:
        return KnownExtrapolator(load_known(self.params.weights), device=ctx.device, backend=self.params.backend)

@register_method("know_x2")
class KnowX2(KnowPrediction):
    """KNOW ×2 (card sections 2, 3, 6): one KNOWN step beyond Θ0 (×1/r of the data; ×2 at r = 0.5)."""
    steps = 1


@register_method("know_x4")
class KnowX4(KnowPrediction):
    """KNOW ×4 (card sections 2, 3, 6): two recursive KNOWN steps (×1/r² of the data)."""
    steps = 2


@register_method("know_x8")
class KnowX8(KnowPrediction):
    """KNOW ×8 (card sections 2, 3, 6): three recursive KNOWN steps (×1/r³ of the data)."""
    steps = 3


class _Shrink(Extrapolator):
    """Θ0 scaled by a constant (ignores the rest of the window)."""
    min_window = 1

    def __init__(self, factor: float) -> None:
        self.factor = float(factor)

    def predict_kind(self, kind: str, w: torch.Tensor, steps: int) -> torch.Tensor:
        return (w[-1] * self.factor).unsqueeze(0)


@dataclass
class ShrinkParams(TransferParams):
    factor: float = field(default=0.6, metadata=POSITIVE)   # every predicted entry (kernels, biases) times this


@register_method("know_shrink")
class KnowShrink(TransferMethod):
    """A CONTROL, not in the paper: Θ̂ = factor · Θ0 (uniform weight shrinkage), then the card section 6
    fine-tuning. On small nets the official KNOWN's ×2/×4/×8 outputs are ~98% parallel to −Θ0 (a uniform shrink of
    the conv kernels by ~0.79/0.60/0.42), so this separates "extrapolated knowledge" from "smaller weights"."""
    Params = ShrinkParams
    steps = 1

    def window_length(self) -> int:
        return 1

    def extrapolator(self, ctx: RunContext) -> Extrapolator:
        return _Shrink(self.params.factor)
