"""KNOWN meta-training (card section 4) on structured-forgetting trajectories of small nets on small data."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from bench.config import DataConfig, in_range, overrides_of, parse, satisfies, to_dict
from bench.config import RunConfig
from bench.ids import canonical_json
from bench.method import Method, MethodResult, RunContext, Training, register_method
from bench.seeding import derive_seed, generator
from methods.know.known import KnownNet, known_samples, load_known, train_known
from methods.know.layout import KINDS
from methods.know.trajectory import trajectory_recipes, trajectory_stage


@dataclass
class KnownTrainParams:
    pretrain_epochs: int = field(default=3, metadata=in_range(1))   # Θ0 of every trial, on that trial's source
    trials: int = field(default=3, metadata=in_range(1))   # trajectories per source: own (r, lr) draw, own net seed
    rate_range: list[float] = field(default_factory=lambda: [0.3, 0.9], metadata=satisfies(   # r ~ U(lo, hi)
        lambda v: len(v) == 2 and 0 < v[0] <= v[1] < 1, "[lo, hi] with 0 < lo <= hi < 1 (r ~ U(lo, hi); lo = hi "
                                                        "fixes r)"))
    step_lr_range: list[float] = field(default_factory=lambda: [1e-5, 4e-3], metadata=satisfies(  # lr ~ U(lo, hi)
        lambda v: len(v) == 2 and 0 < v[0] <= v[1], "[lo, hi] with 0 < lo <= hi (lr ~ U(lo, hi); lo = hi fixes lr)"))
    sources: list[dict[str, Any]] = field(default_factory=lambda: [{}], metadata={  # overrides of the run's dataset
        **satisfies(bool, "a non-empty list of mappings of dataset fields (overrides of the run's dataset; {} = "
                          "the run's dataset)"), **overrides_of(DataConfig)})
    trajectory_length: int = field(default=7, metadata=satisfies(lambda v: v >= 6, "an integer >= 6 (5 inputs + "
                                                                                   "1 target)"))  # official: 7
    meta_epochs: int = field(default=5, metadata=in_range(1))
    meta_min_steps: int = field(default=0, metadata=in_range(0))  # at least this many Adam steps per kind
    meta_lr: float = field(default=1e-3, metadata=in_range(0.0, lo_open=True))
    meta_batch: int = field(default=4096, metadata=in_range(1))
    holdout: float = field(default=0.2, metadata=in_range(0.0, 1.0, hi_open=True))  # scalars held out to score
    init: Literal["keras", "official"] = "keras"   # keras (fresh init) | official (fine-tune the released weights)


@dataclass(frozen=True)
class Trial:
    """One trajectory to collect: source index, trial index, forgetting rate r, step lr and the net's seed."""
    source: int
    trial: int
    rate: float
    step_lr: float
    seed: int


def draw_trials(seed: int, n_sources: int, trials: int, rate_range: list[float],
                step_lr_range: list[float]) -> list[Trial]:
    """Per (source, trial): r ~ U(rate_range), lr ~ U(step_lr_range), both uniform as in the official sample
    collection script (not log-uniform, although lr spans 2.6 decades), from the stream `known/trial/{i}/{t}` of
    the run seed; the net's seed (init, data order, subsets) from its own derived stream."""
    out = []
    for i in range(n_sources):
        for t in range(trials):
            u = torch.rand(2, generator=generator(seed, f"known/trial/{i}/{t}"), dtype=torch.float64).tolist()
            rate = rate_range[0] + (rate_range[1] - rate_range[0]) * u[0]
            lr = step_lr_range[0] + (step_lr_range[1] - step_lr_range[0]) * u[1]
            out.append(Trial(i, t, float(rate), float(lr), derive_seed(seed, f"known/trial/{i}/{t}/net") % 2 ** 31))
    return out


@register_method("known_train")
class KnownTrain(Method):
    """Card section 4: ℓ1 on the residual along the reversed trajectory, Adam(meta_lr), one KNOWN per kind (conv,
    fc, bias) on the pooled windows of `trials` trajectories per source, r and lr drawn per trial as in the official
    collection script. Differs from the paper in scale: a few trajectories of ONE small net architecture (the run's
    model) on a few small sources (a few MB of float32 kernels and biases), not ~50 GB from many nets
    (CNN/ResNet/DenseNet/ShuffleNet/MobileNetV2); epochs, batch and split are [open] in the card (parameters here).
    A source is the run's dataset with that entry's fields replaced (unset ones, e.g. `classes`, are the run's).
    Writes `known.pt` ({conv, fc, bias: state_dict}) into the run folder, usable as `know_x*: {weights: <path>}`.
    Kinds without weights in the net keep their initialisation."""
    Params = KnownTrainParams

    def trainings(self, run: RunConfig) -> list[Training]:
        """One pretraining + trajectory per (source, trial), each with its own draw and seed (run-specific)."""
        p = self.params
        steps = (p.trajectory_length - 1) * 0.6   # mean of r^s over the drawn r ~ U(0.3, 0.9): an estimate
        base = to_dict(run.dataset)
        return [Training(f"trajectory (source {i}, trial {t})", {**base, **src}, to_dict(run.model),
                         p.pretrain_epochs + steps, run.seed, recipe=canonical_json([i, t, to_dict(p)]))
                for i, src in enumerate(p.sources) for t in range(p.trials)]

    def run(self, ctx: RunContext) -> MethodResult:
        p: KnownTrainParams = self.params
        train = ctx.config.train
        seed = ctx.config.seed
        base = to_dict(ctx.config.dataset)
        sources = [parse(DataConfig, {**base, **src}, f"method.params.sources[{i}]")
                   for i, src in enumerate(p.sources)]
        draws = draw_trials(seed, len(sources), p.trials, p.rate_range, p.step_lr_range)

        t0 = time.perf_counter()
        kept: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {k: [] for k in KINDS}
        held: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {k: [] for k in KINDS}
        trials, pre_s, traj_s = [], 0.0, 0.0
        for d in draws:
            pretrain, step = trajectory_recipes(train, pretrain_epochs=p.pretrain_epochs, step_lr=d.step_lr)
            # a cached shared stage keyed by (source, model, recipes, r, length, seed): reruns load it
            traj = trajectory_stage(ctx, sources[d.source], ctx.config.model, pretrain, step, rate=d.rate,
                                    length=p.trajectory_length, seed=d.seed)
            pre_s += traj.info["pretrain_s"]
            traj_s += traj.info["trajectory_s"]
            snaps = traj.snapshots()
            trials.append({"source": d.source, "dataset": sources[d.source].name, "trial": d.trial,
                           "rate": d.rate, "step_lr": d.step_lr, "seed": d.seed,
                           "subset_sizes": traj.info["subset_sizes"],
                           "scalars": {k: int(snaps[k].shape[1]) for k in KINDS}})
            for kind in KINDS:
                s = snaps[kind]
                P = s.shape[1]
                if P == 0:
                    continue
                # hold out whole scalars (all their windows) of every trajectory to score generalisation
                perm = torch.randperm(P, generator=generator(seed, f"known/holdout/{d.source}/{d.trial}/{kind}"))
                n_hold = int(round(p.holdout * P))
                kept[kind].append(known_samples(s[:, perm[n_hold:]]))
                if n_hold:
                    held[kind].append(known_samples(s[:, perm[:n_hold]]))
        t_traj = time.perf_counter() - t0

        t0 = time.perf_counter()
        official = load_known("official") if p.init == "official" else None
        ref = _official_or_none()   # a separate copy (train_known updates `official` in place)
        nets: dict[str, KnownNet] = {}
        metrics: dict[str, Any] = {"trial_draws": trials, "n_trajectories": len(trials)}
        for kind in KINDS:
            if not kept[kind]:
                nets[kind] = official[kind] if official else KnownNet()
                continue
            x = torch.cat([xy[0] for xy in kept[kind]])
            y = torch.cat([xy[1] for xy in kept[kind]])
            metrics[f"n_train_samples_{kind}"] = int(x.shape[0])
            steps_per_epoch = -(-x.shape[0] // p.meta_batch)
            metrics[f"meta_epochs_{kind}"] = epochs = max(p.meta_epochs, -(-p.meta_min_steps // steps_per_epoch))
            nets[kind] = train_known(x, y, epochs=epochs, lr=p.meta_lr, batch_size=p.meta_batch,
                                     seed=seed, init=official[kind] if official else None,
                                     log=lambda row, kind=kind: ctx.log({"kind": kind, **row}))
            if held[kind]:
                xh = torch.cat([xy[0] for xy in held[kind]])
                yh = torch.cat([xy[1] for xy in held[kind]])
                metrics[f"n_heldout_samples_{kind}"] = int(xh.shape[0])
                with torch.no_grad():
                    metrics[f"heldout_l1_{kind}"] = float((nets[kind].residual(xh) - yh).abs().mean())
                metrics[f"heldout_l1_zero_{kind}"] = float(yh.abs().mean())           # predict "no change"
                if ref is not None:                                                      # released weights
                    metrics[f"heldout_l1_official_{kind}"] = float((ref[kind].residual(xh) - yh).abs().mean())
                metrics[f"heldout_l1_last_step_{kind}"] = float((yh - (xh[:, -1] - xh[:, -2])).abs().mean())
        torch.save({k: net.state_dict() for k, net in nets.items()}, ctx.run_dir / "known.pt")
        metrics["checkpoint"] = str(ctx.run_dir / "known.pt")
        return MethodResult(metrics=metrics, timings={"meta_train_s": time.perf_counter() - t0,
                                                      "collect_wall_s": t_traj,   # ~0 when cached
                                                      "pretrain_s": pre_s, "trajectory_s": traj_s})


def _official_or_none() -> dict[str, KnownNet] | None:
    try:
        return load_known("official")
    except (FileNotFoundError, ImportError, OSError):
        return None
