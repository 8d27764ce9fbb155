"""Batched training of K same-architecture models in one vectorised pass (torch.func), and the `batched-base` stage.

`batched_fit` is `bench.train.fit` for K members at once: the members' weights and buffers are stacked
(`torch.func.stack_module_state`), one step runs `vmap(functional_call)` over the stacked weights and a stacked
batch [K, B, ...], and the per-member losses are summed before `backward()` (members share no parameters, so each
member's gradient is exactly its own loss's gradient). Each member keeps ITS OWN seed's streams, as in `fit`:
init from `init_model(..., seed=s)` (the caller builds the models), data order `generator(s, "order/{e}")` and
augmentation `generator(s, "augment/{e}")`, so member s sees the same batches, in the same order, that
`fit(..., seed=s)` would. The optimizer is `bench.train.make_optimizer` applied to the stacked tensors and the
per-batch schedule is `bench.train.make_scheduler`: SGD (momentum, nesterov, weight decay), Adam and AdamW are
element-wise, so a stacked update equals K separate updates. `grad_clip` is applied per member (each member's own
global norm, the formula of `clip_grad_norm_`). The result matches sequential `fit` up to float rounding (vmap
runs the convolutions as grouped/batched kernels; differences of ~1e-7 per step grow slowly with training).

BatchNorm: running statistics are stacked buffers passed into vmap, so BatchNorm's in-place running-stat update
writes each member's own slice (checked against sequential training in tests/test_ensemble.py). Limitations,
reported by `batching_blocker` (callers then train sequentially): stochastic layers (dropout / drop-path with
p > 0: fit reseeds the global RNG per member, which vmap cannot reproduce) and BatchNorm with momentum=None.
Also: no custom loss_fn, no resume (an interrupted batched stage is retrained from scratch), channels_last is
not applied (layout only), and every member must have the same training-set size (true: same dataset config).

The `batched-base` stage (`batched_base_runs`): one folder per member seed, keyed like `bench.stages.base_key`
plus `batched: true`, in the format `base_run` writes (history.jsonl, final.pt, timing.json, preds/, ckpt/,
key.json, `done` last), read back as `bench.stages.BaseRun`. These members are NOT shared with naive runs (the
`base` stage): a naive run's numbers must not depend on whether a batched ensemble happened to run first, and
batched weights equal sequential ones only up to rounding. For the same reason a batched member's last bits may
depend on which other members it was trained with (which members were missing when the stage was computed).
History rows have the keys `fit` writes; `epoch_time_s` is the batched epoch's wall time divided by K (each
member's amortised share); timing.json has `wall_time_s` (amortised share), `batched_wall_time_s` (the whole
pass) and `batched_seeds` (the members trained together).
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn
from torch.func import functional_call, stack_module_state
from tqdm.auto import tqdm

from bench.config import TrainConfig
from bench.data.tensors import ImageData
from bench.seeding import generator
from bench.stages import (
    DONE,
    BaseRun,
    base_key,
    base_stage_check,
    base_stage_hooks,
    build_model_for,
    cleanup_base_stage,
    discard_stage,
    finish_base_stage,
    load_base_run,
    stage_dir,
    stage_problem,
    stage_ready,
)
from bench.store import atomic_write_json, write_jsonl
from bench.train import EpochEnd, Hook, NonFiniteLoss, evaluate, make_optimizer, make_scheduler

BATCHED_STAGE = "batched-base"


class BatchingUnsupported(RuntimeError):
    """The models cannot be trained in one vmapped pass with results equal to sequential `fit`."""


def batching_blocker(model: nn.Module) -> str | None:
    """Why `model` cannot be trained by `batched_fit` (None when it can)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return f"{name or 'model'}: dropout p={m.p} (per-member RNG streams cannot be reproduced under vmap)"
        if float(getattr(m, "drop_prob", 0.0) or 0.0) > 0:
            return f"{name or 'model'}: drop-path p={m.drop_prob} (per-member RNG streams cannot be reproduced)"
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None and m.track_running_stats:
            return f"{name or 'model'}: BatchNorm with momentum=None (cumulative average needs a Python scalar)"
    return None


class _Stacked(nn.Module):
    """Holds the stacked parameters so `make_optimizer` builds exactly the optimizer `fit` would."""

    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.names = list(params)
        for i, t in enumerate(params.values()):
            self.register_parameter(f"p{i}", nn.Parameter(t.detach(), requires_grad=t.requires_grad))

    def stacked(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, f"p{i}") for i, n in enumerate(self.names)}


def _clip_per_member(params: list[torch.Tensor], max_norm: float) -> None:
    """`clip_grad_norm_(member params, max_norm)` for every member at once (dim 0 of each stacked tensor)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    k = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), 2, dim=1) for g in grads])  # [P, K]
    total = torch.linalg.vector_norm(norms, 2, dim=0)                                              # [K]
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(k, *([1] * (g.dim() - 1))).to(g.dtype))


def _write_back(models: Sequence[nn.Module], params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]) -> None:
    """Copy member k's slice of the stacked weights and buffers into models[k] (in place)."""
    with torch.no_grad():
        for k, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][k])
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name][k])


def batched_fit(models: Sequence[nn.Module], train: ImageData, recipe: TrainConfig, *, seeds: Sequence[int],
                device: str | torch.device, val: ImageData | None = None,
                hooks: Sequence[Sequence[Hook]] | None = None, progress: bool = True,
                desc: str = "batched") -> list[list[dict]]:
    """Train `models[k]` in place as `fit(models[k], train, recipe, seed=seeds[k], val=val, hooks=hooks[k])` would,
    all K in one vmapped pass; return each member's history (the keys `fit` writes).

    Hooks see an `EpochEnd` whose `model` is the member's own module (weights copied back after each epoch) and
    whose optimizer/scheduler are the SHARED stacked ones (do not pass CheckpointHook). Raises
    BatchingUnsupported when `batching_blocker` objects or the models differ in structure.
    """
    k = len(models)
    if k != len(seeds):
        raise ValueError(f"batched_fit: {k} models but {len(seeds)} seeds")
    if k == 0:
        return []
    hooks = [list(h) for h in hooks] if hooks is not None else [[] for _ in range(k)]
    if len(hooks) != k:
        raise ValueError(f"batched_fit: hooks must be one list per member ({k}); got {len(hooks)}")
    for m in models:
        reason = batching_blocker(m)
        if reason:
            raise BatchingUnsupported(reason)
    shapes = [{n: tuple(t.shape) for n, t in m.state_dict().items()} for m in models]
    if any(s != shapes[0] for s in shapes[1:]):
        raise BatchingUnsupported("the members do not share one architecture (state_dict keys/shapes differ)")

    device = torch.device(device)
    amp = device.type == "cuda" and recipe.amp
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    for m in models:
        m.to(device).train()
    train = train.to(device)
    val = val.to(device) if val is not None and len(val) else None
    n, bs = len(train), recipe.batch_size
    if n == 0:
        raise ValueError("batched_fit: the training set is empty")
    steps_per_epoch = math.ceil(n / bs)

    params0, buffers = stack_module_state(list(models))
    holder = _Stacked(params0)
    params = holder.stacked()
    skeleton = copy.deepcopy(models[0]).to("meta")
    optimizer = make_optimizer(holder, recipe.optimizer)
    scheduler = make_scheduler(optimizer, recipe.schedule, recipe.epochs, steps_per_epoch)
    trainable = [p for p in holder.parameters() if p.requires_grad]
    smoothing = recipe.label_smoothing

    def member_loss(p, b, x, y):
        with autocast():
            logits = functional_call(skeleton, (p, b), (x,))
        return F.cross_entropy(logits.float(), y, label_smoothing=smoothing), logits

    forward = torch.vmap(member_loss)

    histories: list[list[dict]] = [[] for _ in range(k)]
    for epoch in range(1, recipe.epochs + 1):
        streams = [train.batches(bs, shuffle=True, generator=generator(s, f"order/{epoch}"),
                                 augment=recipe.augment, aug_generator=generator(s, f"augment/{epoch}"))
                   for s in seeds]
        step_loss = torch.zeros(k, steps_per_epoch, device=device)
        correct = torch.zeros(k, dtype=torch.int64, device=device)
        train_pred = torch.empty(k, n, dtype=torch.int64, device=device)
        rows = torch.arange(k, device=device)[:, None]
        bar = tqdm(total=steps_per_epoch, desc=f"{desc} {epoch}/{recipe.epochs}", leave=False,
                   disable=not progress, dynamic_ncols=True)
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        for step, batch in enumerate(zip(*streams)):
            x = torch.stack([b[0] for b in batch])
            y = torch.stack([b[1] for b in batch])
            idx = torch.stack([b[2] for b in batch])
            losses, logits = forward(params, buffers, x, y)                 # [K], [K, B, C]
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            if recipe.grad_clip is not None:
                _clip_per_member(trainable, recipe.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            pred = logits.detach().argmax(-1)
            step_loss[:, step] = losses.detach()
            correct += (pred == y).sum(1)
            train_pred[rows, idx] = pred
            bar.update(1)
        sizes = torch.full((steps_per_epoch,), float(bs), device=device)
        sizes[-1] = n - bs * (steps_per_epoch - 1)
        train_loss = ((step_loss * sizes).sum(1) / n).tolist()
        train_correct = correct.tolist()
        epoch_time = time.perf_counter() - t0
        bar.close()
        for j, s in enumerate(seeds):
            if not math.isfinite(train_loss[j]):
                bad = int((~torch.isfinite(step_loss[j])).nonzero()[0])
                raise NonFiniteLoss(f"member seed {s}, epoch {epoch}, step {bad + 1}/{steps_per_epoch}: "
                                    f"loss = {step_loss[j, bad].item()}")
        _write_back(models, params, buffers)
        for j, model in enumerate(models):
            metrics: dict[str, float] = {"train_loss": train_loss[j], "train_acc": train_correct[j] / n}
            if val is not None:
                res = evaluate(model, val, batch_size=recipe.eval_batch_size, amp=amp)
                metrics.update(val_loss=res["loss"], val_acc=res["acc"])
            metrics.update(lr=lr, epoch_time_s=epoch_time / k)
            end = EpochEnd(epoch=epoch, model=model, optimizer=optimizer, scheduler=scheduler, metrics=metrics,
                           train_pred=train_pred[j])
            for hook in hooks[j]:
                hook(end)
            histories[j].append({"epoch": epoch, **metrics})
    return histories


# ------------------------------------------------------------------------------------------------ stage
def batched_key(ctx, seed: int) -> dict:
    """The `batched-base` stage key of member `seed`: the base stage's key plus `batched: true`."""
    return {**base_key(ctx, seed), "batched": True}


def batched_base_runs(ctx, seeds: Sequence[int]) -> list[BaseRun]:
    """The `batched-base` stages of `seeds` (this run's dataset, model and recipe): those already done are read
    from disk, the missing ones are trained together in ONE `batched_fit` pass (under the stages' file locks,
    taken in seed order). Raises BatchingUnsupported (nothing written) when the model cannot be batched."""
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    dirs = {s: stage_dir(ctx.stages_dir, BATCHED_STAGE, batched_key(ctx, s)) for s in seeds}
    check = base_stage_check(ctx)
    missing = sorted(s for s in seeds if not stage_ready(dirs[s], check))  # unreadable ones are recomputed
    if missing:
        reason = batching_blocker(build_model_for(ctx, missing[0]))
        if reason:
            raise BatchingUnsupported(reason)
        with contextlib.ExitStack() as locks:
            for s in missing:
                dirs[s].mkdir(parents=True, exist_ok=True)
                locks.enter_context(FileLock(str(dirs[s]) + ".lock"))
            for s in missing:
                if (dirs[s] / DONE).is_file() and stage_problem(dirs[s], check):
                    discard_stage(dirs[s])
            still = [s for s in missing if not (dirs[s] / DONE).is_file()]
            if still:
                _compute(ctx, still, [dirs[s] for s in still])
    for s in seeds:
        cleanup_base_stage(dirs[s], ctx.config.train.epochs)
    return [load_base_run(dirs[s]) for s in seeds]


def _compute(ctx, seeds: list[int], sdirs: list[Path]) -> None:
    """Train `seeds` in one batched pass and write each member's stage folder as `base_run` would."""
    t0 = time.perf_counter()
    cfg = ctx.config
    models = [build_model_for(ctx, s) for s in seeds]
    hooks, recorders = [], []
    for s, sdir in zip(seeds, sdirs):
        atomic_write_json(sdir / "key.json", batched_key(ctx, s))
        write_jsonl(sdir / "history.jsonl", [])
        member, recorder = base_stage_hooks(ctx, sdir)
        hooks.append(member)
        recorders.append(recorder)
    batched_fit(models, ctx.data.train, cfg.train, seeds=seeds, device=ctx.device, val=ctx.data.val, hooks=hooks,
                progress=ctx.progress, desc=f"{cfg.model.name} s{','.join(map(str, seeds))} batched")
    total = time.perf_counter() - t0
    for model, recorder, sdir in zip(models, recorders, sdirs):
        finish_base_stage(ctx, sdir, model, recorder, {"wall_time_s": total / len(seeds), "batched_wall_time_s": total,
                                                       "batched_seeds": seeds, "resumed_from_epoch": 0})
    for s, sdir in zip(seeds, sdirs):
        atomic_write_json(sdir / DONE, {"name": BATCHED_STAGE})
