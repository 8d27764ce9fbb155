"""KNOW's downstream transfer (card sections 5-6): transplant predicted weights into the target model and
fine-tune in two phases (head only, then all)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from bench.config import OptimizerConfig, ScheduleConfig, TrainConfig
from bench.seeding import derive_seed
from bench.train import evaluate, fit
from methods.know.extrapolate import Extrapolator
from methods.know.layout import KINDS, WeightLayout


# ============================================================================ downstream
def head_prefix(model: nn.Module) -> str:
    """Module name of the classifier head: the last nn.Linear in module order."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError("no nn.Linear head found in the model")
    return names[-1]


def transplant(target: nn.Module, source_state: dict[str, torch.Tensor]) -> list[str]:
    """Load `source_state` into `target` except the head (kept as initialised: the new head); returns the
    head keys left untouched."""
    head = head_prefix(target) + "."
    own = target.state_dict()
    head_keys = [k for k in own if k.startswith(head)]
    new = {k: (own[k] if k in head_keys else source_state[k].to(own[k].device, own[k].dtype)) for k in own}
    target.load_state_dict(new)
    return head_keys


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Phase 1 of card section 6: conv/linear layers frozen except the head; norm layers stay trainable."""
    head = head_prefix(model)
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)) and name != head:
            for p in mod.parameters(recurse=False):
                p.requires_grad_(not frozen)


@dataclass
class DownstreamRecipe:
    """Card section 6 (sizes as parameters): phase 1 conv/linear frozen, Adam lr1 constant; phase 2 all
    trainable, Adam lr2 with cosine decay to 0. batch/augment/eval batch come from the run's train block."""
    phase1_epochs: int = 10
    phase2_epochs: int = 100
    lr1: float = 1e-3
    lr2: float = 4e-4
    weight_decay: float = 0.0

    def recipes(self, base):
        common = dict(batch_size=base.batch_size, eval_batch_size=base.eval_batch_size, augment=base.augment,
                      label_smoothing=base.label_smoothing, grad_clip=base.grad_clip, amp=base.amp,
                      channels_last=base.channels_last, checkpoint_every=0, record_predictions=False,
                      keep_checkpoints=False)
        p1 = TrainConfig(epochs=self.phase1_epochs, optimizer=OptimizerConfig(name="adam", lr=self.lr1,
                         weight_decay=self.weight_decay), schedule=ScheduleConfig(name="constant"), **common)
        p2 = TrainConfig(epochs=self.phase2_epochs, optimizer=OptimizerConfig(name="adam", lr=self.lr2,
                         weight_decay=self.weight_decay), schedule=ScheduleConfig(name="cosine"), **common)
        return p1, p2


def finetune_downstream(ctx, model: nn.Module, recipe: DownstreamRecipe, *, seed: int,
                        log: Optional[Any] = None) -> dict[str, float]:
    """Two-phase fine-tuning on the run's dataset (the target task); returns test/val accuracy and loss."""
    p1, p2 = recipe.recipes(ctx.config.train)
    data = ctx.data
    rows: list[dict] = []
    for phase, rec, frozen in (("phase1", p1, True), ("phase2", p2, False)):
        if rec.epochs == 0:
            continue
        set_backbone_frozen(model, frozen)
        fit(model, data.train, rec, seed=derive_seed(seed, f"know/{phase}"), device=ctx.device, val=data.val,
            progress=ctx.progress, desc=f"{phase} s{seed}",
            hooks=[lambda e, phase=phase: rows.append({"phase": phase, "epoch": e.epoch, **e.metrics})])
    set_backbone_frozen(model, False)
    if log is not None:
        for r in rows:
            log(r)
    bs = ctx.config.train.eval_batch_size
    test = evaluate(model, data.test, batch_size=bs)
    out = {"test_acc": test["acc"], "test_loss": test["loss"]}
    if len(data.val):
        val = evaluate(model, data.val, batch_size=bs)
        out.update(val_acc=val["acc"], val_loss=val["loss"])
    return out


def predict_states(layout: WeightLayout, window: dict[str, torch.Tensor], theta0: dict[str, torch.Tensor],
                   extrapolator: Extrapolator, steps: int) -> list[dict[str, torch.Tensor]]:
    """Full state dicts for each of the `steps` predictions (BN and buffers from Θ0)."""
    pred = extrapolator.predict(window, steps)
    return [layout.unflatten({k: pred[k][j] for k in KINDS}, theta0) for j in range(steps)]
