"""KNOW's structured-forgetting trajectory stage (card section 1): pretrain on the source task, then fine-tune on
nested prefix subsets, recording the weights after each step."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from bench.config import OptimizerConfig, ScheduleConfig, TrainConfig, to_dict
from bench.data import load_data
from bench.seeding import derive_seed, generator
from bench.store import atomic_torch_save, atomic_write_json
from bench.train import fit, init_model
from methods.know.layout import KINDS, WeightLayout

# ============================================================================ trajectory stage
TRAJECTORY_STAGE_VERSION = 1


@dataclass
class Trajectory:
    """Output of the trajectory stage: Θ0 (full state, with BN) and the snapshots Θ0..Θ_{S-1} by kind."""
    dir: Path
    layout: WeightLayout
    info: dict[str, Any]

    def theta0(self) -> dict[str, torch.Tensor]:
        return torch.load(self.dir / "theta0.pt", map_location="cpu", weights_only=True)

    def snapshots(self) -> dict[str, torch.Tensor]:
        """{kind: [S, P]} in recording order: row 0 = Θ0 (full data), row S-1 = the most forgotten."""
        return torch.load(self.dir / "trajectory.pt", map_location="cpu", weights_only=True)

    def window(self, length: Optional[int] = None) -> dict[str, torch.Tensor]:
        """{kind: [L, P]} most forgotten first, Θ0 last (the extrapolators' orientation); L defaults to S."""
        snaps = self.snapshots()
        return {k: v[:length].flip(0) if length else v.flip(0) for k, v in snaps.items()}


def nested_subsets(n: int, rate: float, steps: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Card section 1: prefix subsets of one shuffle, |D_s| = round(n * rate^s) for s = 1..steps (at least 1)."""
    perm = torch.randperm(n, generator=gen)
    return [perm[:max(1, round(n * rate ** s))] for s in range(1, steps + 1)]


def trajectory_recipes(train, *, pretrain_epochs: int, step_lr: float, step_optimizer: str = "adam",
                       epochs_per_step: int = 1):
    """Card section 1: (pretrain, step) TrainConfigs for `trajectory_stage`: the run's `train` block lasting
    `pretrain_epochs`, and a constant-lr step recipe (no weight decay) with the run's batch, augmentation and
    precision; neither records predictions nor keeps checkpoints."""
    from dataclasses import replace

    pretrain = replace(train, epochs=pretrain_epochs, record_predictions=False, keep_checkpoints=False)
    step = TrainConfig(epochs=epochs_per_step, batch_size=train.batch_size, eval_batch_size=train.eval_batch_size,
                       optimizer=OptimizerConfig(name=step_optimizer, lr=step_lr, weight_decay=0.0),
                       schedule=ScheduleConfig(name="constant"), augment=replace(train.augment), amp=train.amp,
                       channels_last=train.channels_last, checkpoint_every=0, record_predictions=False,
                       keep_checkpoints=False)
    return pretrain, step


def trajectory_stage(ctx, source, model_cfg, pretrain, step_recipe, *, rate: float, length: int,
                     seed: int) -> Trajectory:
    """Shared stage (card section 1): pretrain on the source task (`pretrain` recipe) -> Θ0, then fine-tune
    sequentially on nested prefix subsets D1 ⊃ D2 ... (|D_s| = r^s |D0|) with `step_recipe` (fresh optimizer per
    step), recording Θ0..Θ_{length-1} (conv/linear kernels and biases; BN kept aside in theta0.pt).

    `source` is a DataConfig; the stage is keyed by (source, model, both recipes, rate, length, seed, device)."""

    key = {"version": TRAJECTORY_STAGE_VERSION, "source": to_dict(source), "model": to_dict(model_cfg),
           "pretrain": to_dict(pretrain), "step": to_dict(step_recipe), "rate": rate, "length": length,
           "seed": seed, "device": str(ctx.device)}

    def load_source():
        return load_data(source, ctx.device)

    def build():
        d = load_source()
        return init_model(model_cfg, num_classes=d.num_classes, in_chans=d.in_chans, img_size=d.img_size,
                          seed=seed).to(ctx.device)

    def compute(sdir: Path) -> None:
        t0 = time.perf_counter()
        d = load_source()
        model = build()
        layout = WeightLayout.of(model)
        history: list[dict] = []
        fit(model, d.train, pretrain, seed=seed, device=ctx.device, val=d.val, progress=ctx.progress,
            desc=f"know pretrain s{seed}", hooks=[lambda e: history.append({"phase": "pretrain", "epoch": e.epoch,
                                                                             **e.metrics})])
        t_pre = time.perf_counter() - t0
        state0 = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        atomic_torch_save(sdir / "theta0.pt", state0)
        snaps = [layout.flatten(state0)]
        subsets = nested_subsets(len(d.train), rate, length - 1, generator(seed, "know/subsets"))
        for s, idx in enumerate(subsets, start=1):
            fit(model, d.train.subset(idx.to(d.train.device)), step_recipe,
                seed=derive_seed(seed, f"know/step{s}"), device=ctx.device, val=d.val, progress=ctx.progress,
                desc=f"know forget {s}/{length - 1} s{seed}",
                hooks=[lambda e, s=s, n=len(idx): history.append({"phase": f"forget{s}", "n_train": n,
                                                                 "epoch": e.epoch, **e.metrics})])
            snaps.append(layout.flatten(model.state_dict()))
        traj = {k: torch.stack([sn[k] for sn in snaps]) for k in KINDS}
        atomic_torch_save(sdir / "trajectory.pt", traj)
        atomic_write_json(sdir / "info.json", {
            "history": history, "subset_sizes": [len(d.train)] + [len(i) for i in subsets],
            "sizes": layout.sizes(), "pretrain_s": t_pre, "trajectory_s": time.perf_counter() - t0 - t_pre,
            "source_meta": d.meta})

    sdir = ctx.stage("know_trajectory", key, compute)
    info = json.loads((sdir / "info.json").read_text())
    return Trajectory(dir=sdir, layout=WeightLayout.of(build()), info=info)
