"""KNOWN meta-training (card section 4) from structured-forgetting trajectories of a small net on the run's data."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from bench.config import AugmentConfig, DataConfig, OptimizerConfig, ScheduleConfig, SpecError, TrainConfig, \
    parse, to_dict
from bench.know import KINDS, KnownNet, known_samples, load_known, train_known, trajectory_stage
from bench.method import Method, MethodResult, RunContext, register_method
from bench.seeding import generator


@dataclass
class KnownTrainParams:
    pretrain_epochs: int = 3        # Θ0 on the run's dataset
    rate: float = 0.5               # official collection: r ~ U(0.3, 0.9) per trial; here one fixed r
    trajectory_length: int = 7      # snapshots; >= 6 (official: 7 sessions)
    step_lr: float = 1e-3
    meta_epochs: int = 5
    meta_lr: float = 1e-3
    meta_batch: int = 4096
    holdout: float = 0.2            # fraction of scalars held out to score the trained KNOWN
    init: str = "keras"             # keras (fresh init) | official (fine-tune the released weights)

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> None:
            raise SpecError(f"method.params.{name}", getattr(self, name), allowed)
        if self.pretrain_epochs < 1:
            bad("pretrain_epochs", "an integer >= 1")
        if not 0 < self.rate < 1:
            bad("rate", "a number in (0, 1)")
        if self.trajectory_length < 6:
            bad("trajectory_length", "an integer >= 6 (5 inputs + 1 target)")
        if self.meta_epochs < 1:
            bad("meta_epochs", "an integer >= 1")
        if not self.meta_lr > 0:
            bad("meta_lr", "a number > 0")
        if self.meta_batch < 1:
            bad("meta_batch", "an integer >= 1")
        if not 0 <= self.holdout < 1:
            bad("holdout", "a number in [0, 1)")
        if self.init not in ("keras", "official"):
            bad("init", "'keras' or 'official'")


@register_method("known_train")
class KnownTrain(Method):
    """Card section 4, NOT the paper's scale: ℓ1 on the residual along the reversed trajectory, Adam; trajectories
    of ONE small net (the run's model and dataset, fixed r) instead of ~50 GB from many nets. Writes
    `known.pt` ({conv, fc, bias: state_dict}) into the run folder, usable as `know_x*: {weights: <path>}`.
    Kinds without weights in the net keep their initialisation."""
    Params = KnownTrainParams

    def run(self, ctx: RunContext) -> MethodResult:
        p: KnownTrainParams = self.params
        train = ctx.config.train
        pretrain = TrainConfig(**{**{k: getattr(train, k) for k in to_dict(train)}, "epochs": p.pretrain_epochs,
                                  "record_predictions": False, "keep_checkpoints": False})
        step = TrainConfig(epochs=1, batch_size=train.batch_size, eval_batch_size=train.eval_batch_size,
                           optimizer=OptimizerConfig(name="adam", lr=p.step_lr, weight_decay=0.0),
                           schedule=ScheduleConfig(name="constant"), augment=AugmentConfig(**to_dict(train.augment)),
                           checkpoint_every=0, record_predictions=False, keep_checkpoints=False)
        source = parse(DataConfig, to_dict(ctx.config.dataset), "dataset")
        traj = trajectory_stage(ctx, source, ctx.config.model, pretrain, step, rate=p.rate,
                                length=p.trajectory_length, seed=ctx.config.seed)
        snaps = traj.snapshots()
        t0 = time.perf_counter()
        official = load_known("official") if p.init == "official" else None
        ref = _official_or_none()   # a separate copy (train_known updates `official` in place)
        nets, metrics = {}, {}
        for kind in KINDS:
            s = snaps[kind]
            if s.shape[1] == 0:
                nets[kind] = official[kind] if official else KnownNet()
                continue
            # hold out whole scalars (all their windows) to score generalisation
            P = s.shape[1]
            perm = torch.randperm(P, generator=generator(ctx.config.seed, f"known/holdout/{kind}"))
            n_hold = int(round(p.holdout * P))
            held, kept = perm[:n_hold], perm[n_hold:]
            x, y = known_samples(s[:, kept])
            nets[kind] = train_known(x, y, epochs=p.meta_epochs, lr=p.meta_lr, batch_size=p.meta_batch,
                                     seed=ctx.config.seed, init=official[kind] if official else None,
                                     log=lambda row, kind=kind: ctx.log({"kind": kind, **row}))
            if n_hold:
                xh, yh = known_samples(s[:, held])
                with torch.no_grad():
                    metrics[f"heldout_l1_{kind}"] = float((nets[kind].residual(xh) - yh).abs().mean())
                metrics[f"heldout_l1_zero_{kind}"] = float(yh.abs().mean())           # predict "no change"
                if ref is not None:                                                      # released weights
                    metrics[f"heldout_l1_official_{kind}"] = float((ref[kind].residual(xh) - yh).abs().mean())
                metrics[f"heldout_l1_last_step_{kind}"] = float((yh - (xh[:, -1] - xh[:, -2])).abs().mean())
        torch.save({k: net.state_dict() for k, net in nets.items()}, ctx.run_dir / "known.pt")
        metrics["checkpoint"] = str(ctx.run_dir / "known.pt")
        return MethodResult(metrics=metrics, timings={"meta_train_s": time.perf_counter() - t0,
                                                      "trajectory_s": traj.info["trajectory_s"]})


def _official_or_none():
    try:
        return load_known("official")
    except (FileNotFoundError, ImportError, OSError):
        return None
