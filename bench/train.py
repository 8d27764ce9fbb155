"""The training engine: optimizer, per-step LR schedule, `fit` with hooks and exact resume, evaluate/predict.

Read top to bottom (airbench style). Design points:
- Data is an `ImageData` on the device (uint8); batches are gathered and augmented with tensor ops.
- Randomness of epoch e (1-based) comes only from (seed, e): order from stream `order/{e}`, augmentation from
  `augment/{e}`, and stochastic layers (dropout, drop-path) from the global RNG re-seeded with `model/{e}`.
  Resuming at epoch k therefore reproduces the uninterrupted run exactly (bit-identical on CPU).
- No host-device sync inside an epoch: losses, accuracies and the first non-finite loss are kept on the
  device and read once at the end of the epoch (the progress bar only shows a loss whose copy has finished).
- CUDA: bf16 autocast when `recipe.amp`, channels_last when `recipe.channels_last`. CPU: plain fp32.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.config import OptimizerConfig, ScheduleConfig, TrainConfig
from bench.data.tensors import ImageData
from bench.models import build_model, init_model  # noqa: F401  (init_model is part of this module's API)
from bench.seeding import derive_seed, generator
from bench.store import atomic_torch_save

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


# ------------------------------------------------------------------------------------------- optimizer
def make_optimizer(model: nn.Module, cfg: OptimizerConfig, *, decay_norm_and_bias: bool = True
                   ) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov), Adam or AdamW over the model's trainable parameters.

    Weight decay applies to ALL parameters by default (the plain `torch.optim.SGD(model.parameters(), ...)` of
    the CIFAR recipes these papers use); `decay_norm_and_bias=False` exempts 1-d parameters (biases, BN/LN
    scales), as timm/ViT recipes do.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        groups: list[dict[str, Any]] = [{"params": params}]
    else:
        groups = [{"params": [p for p in params if p.ndim > 1]},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


# -------------------------------------------------------------------------------------------- schedule
def lr_factor(cfg: ScheduleConfig, step: int, total: int, warmup: int) -> float:
    """Multiplier of the base lr for the batch with 0-based global index `step` out of `total` batches.

    constant/cosine/step: linear warmup (step+1)/warmup over the first `warmup` batches, then
      constant: 1;  cosine: min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * t)) / 2 with t = (step - warmup) /
      (total - warmup);  step: gamma ** (number of milestones m with step >= round(m * total)).
    onecycle: torch's OneCycleLR (cos annealing, div_factor 25, final_div_factor 1e4) as a multiplier of
      max_lr = the optimizer's lr: up from 1/25 over pct_start * total - 1 batches, then down to 1/25e4 at total-1.
      (Momentum is not cycled; warmup_epochs is ignored.)
    """
    if cfg.name == "onecycle":
        start, peak, end = 1 / 25, 1.0, 1 / 25 / 1e4
        up = float(cfg.pct_start * total) - 1
        if step <= up:
            return _cos_interp(start, peak, step / up if up > 0 else 1.0)
        return _cos_interp(peak, end, min(1.0, (step - up) / max(total - 1 - up, 1e-12)))
    if step < warmup:
        return (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "cosine":
        t = min(1.0, (step - warmup) / max(total - warmup, 1))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.name == "step":
        return cfg.gamma ** sum(step >= round(m * total) for m in cfg.milestones)
    raise ValueError(f"unknown schedule {cfg.name!r}")


def _cos_interp(a: float, b: float, t: float) -> float:
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * t))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per batch (call .step() after optimizer.step()); see `lr_factor`."""
    total = max(1, epochs * steps_per_epoch)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step, total, warmup))


# ---------------------------------------------------------------------------------------- hooks, state
@dataclass
class EpochEnd:
    """What a hook sees after each epoch (after validation). Hooks may add keys to `metrics` (floats).

    train_pred: int64 [N] on the device, the predicted class of each training sample (by position in `train`)
    in the minibatch where it was seen this epoch (before that batch's update), e.g. for forgetting events.
    """
    epoch: int                      # 1-based number of finished epochs
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    metrics: dict[str, float]
    train_pred: Optional[torch.Tensor] = field(default=None, repr=False)
    val_logits: Optional[torch.Tensor] = field(default=None, repr=False)  # float32 [N_val, C], this epoch's model


Hook = Callable[[EpochEnd], None]


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int) -> dict[str, Any]:
    """A snapshot (CPU copies) of everything `fit(resume=...)` needs to continue after `epoch` finished epochs."""
    def cpu(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return obj.detach().to("cpu", copy=True)
        if isinstance(obj, dict):
            return {k: cpu(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(cpu(v) for v in obj)
        return obj
    return {"epoch": int(epoch), "model": cpu(model.state_dict()), "optimizer": cpu(optimizer.state_dict()),
            "scheduler": cpu(scheduler.state_dict())}


class CheckpointHook:
    """Saves `training_state` to `path` every `every` epochs, atomically (temp file in the folder + os.replace).

    Place it after hooks whose work should be finished before the checkpoint is written.
    """

    def __init__(self, path: str | Path, every: int = 1) -> None:
        self.path, self.every = Path(path), int(every)

    def __call__(self, end: EpochEnd) -> None:
        if self.every > 0 and end.epoch % self.every == 0:
            atomic_torch_save(self.path, training_state(end.model, end.optimizer, end.scheduler, end.epoch))


# ------------------------------------------------------------------------------------------------- fit
def fit(model: nn.Module, train: ImageData, recipe: TrainConfig, *, seed: int, device: str | torch.device,
        val: ImageData | None = None, hooks: Iterable[Hook] = (), resume: dict | None = None,
        loss_fn: LossFn | None = None, progress: bool = True, desc: str = "train") -> list[dict]:
    """Train `model` in place on `train` with `recipe`; return one history dict per epoch run here.

    History keys: epoch, train_loss, train_acc, [val_loss, val_acc when val is non-empty], lr (of the epoch's
    last batch), epoch_time_s (training batches only, synced), plus whatever hooks add to `metrics`.
    resume: a `training_state(...)` dict; training continues after its epoch (history covers new epochs only).
    loss_fn(logits, y, idx) -> scalar loss replaces cross-entropy with `recipe.label_smoothing`; idx are the
    samples' positions in `train`. Every sample is seen once per epoch (the last batch may be smaller).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    amp = cuda and recipe.amp
    channels_last = cuda and recipe.channels_last
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    train = train.to(device)
    val = val.to(device) if val is not None and len(val) else None
    hooks = list(hooks)
    if loss_fn is None:
        smoothing = recipe.label_smoothing

        def loss_fn(logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)

    n, bs = len(train), recipe.batch_size
    if n == 0:
        raise ValueError("fit: the training set is empty")
    steps_per_epoch = math.ceil(n / bs)
    optimizer = make_optimizer(model, recipe.optimizer)
    scheduler = make_scheduler(optimizer, recipe.schedule, recipe.epochs, steps_per_epoch)
    start_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start_epoch = int(resume["epoch"])
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext

    history: list[dict] = []
    for epoch in range(start_epoch + 1, recipe.epochs + 1):
        # ---- one epoch: device-side accumulators, no .item() until the end
        torch.manual_seed(derive_seed(seed, f"model/{epoch}"))  # dropout/drop-path: a function of (seed, epoch)
        order_gen = generator(seed, f"order/{epoch}")
        aug_gen = generator(seed, f"augment/{epoch}")
        step_loss = torch.zeros(steps_per_epoch, device=device)   # mean loss of each batch
        correct = torch.zeros((), dtype=torch.int64, device=device)
        train_pred = torch.empty(n, dtype=torch.int64, device=device)
        bar = tqdm(total=steps_per_epoch, desc=f"{desc} {epoch}/{recipe.epochs}", leave=False,
                   disable=not progress, dynamic_ncols=True)
        ticker = _LossTicker(bar, device) if progress else None
        model.train()
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        for step, (x, y, idx) in enumerate(train.batches(bs, shuffle=True, generator=order_gen,
                                                         augment=recipe.augment, aug_generator=aug_gen,
                                                         channels_last=channels_last)):
            with autocast():
                logits = model(x)
            loss = loss_fn(logits, y, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, recipe.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            # bookkeeping, all on the device
            pred = logits.detach().argmax(1)
            step_loss[step] = loss.detach()
            correct += (pred == y).sum()
            train_pred[idx] = pred
            if ticker is not None:
                ticker(step, step_loss)
        sizes = torch.full((steps_per_epoch,), float(bs), device=device)
        sizes[-1] = n - bs * (steps_per_epoch - 1)
        train_loss, train_correct = torch.stack([(step_loss * sizes).sum() / n, correct.float()]).tolist()  # 1 sync
        epoch_time = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            bad = int((~torch.isfinite(step_loss)).nonzero()[0])
            raise NonFiniteLoss(f"epoch {epoch}, step {bad + 1}/{steps_per_epoch}: loss = {step_loss[bad].item()}")

        metrics: dict[str, float] = {"train_loss": train_loss, "train_acc": train_correct / n}
        val_logits = None
        if val is not None:  # logits once: the metrics below and hooks (e.g. prediction recorders) share them
            val_logits = predict(model, val, batch_size=recipe.eval_batch_size, amp=amp, channels_last=channels_last)
            res = torch.stack([F.cross_entropy(val_logits, val.y).double(),
                               (val_logits.argmax(1) == val.y).double().mean()]).tolist()
            metrics.update(val_loss=res[0], val_acc=res[1])
        metrics.update(lr=lr, epoch_time_s=epoch_time)
        bar.set_postfix({k: round(v, 4) for k, v in metrics.items() if k != "lr"}, refresh=False)
        bar.close()
        end = EpochEnd(epoch=epoch, model=model, optimizer=optimizer, scheduler=scheduler, metrics=metrics,
                       train_pred=train_pred, val_logits=val_logits)
        for hook in hooks:
            hook(end)
        history.append({"epoch": epoch, **metrics})
    return history


class _LossTicker:
    """Shows the latest batch loss on the progress bar without stalling the device: a non-blocking copy is
    started every few batches and shown only once it has finished (on CPU copies are immediate)."""

    def __init__(self, bar: Any, device: torch.device, every: int = 10) -> None:
        self.bar, self.every = bar, every
        self.cuda = device.type == "cuda"
        self.buf = torch.zeros((), pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.pending = False

    def __call__(self, step: int, step_loss: torch.Tensor) -> None:
        self.bar.update(1)
        if step % self.every:
            return
        if self.pending and (self.event is None or self.event.query()):
            self.bar.set_postfix(loss=f"{float(self.buf):.4f}", refresh=False)
            self.pending = False
        if not self.pending:
            self.buf.copy_(step_loss[step], non_blocking=self.cuda)
            if self.event is not None:
                self.event.record()
            self.pending = True


# -------------------------------------------------------------------------------------- evaluate/predict
@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _logits(model: nn.Module, data: ImageData, batch_size: int, amp: bool, channels_last: bool):
    """(logits float32, y) per batch, computed on the model's device."""
    dev = next(model.parameters()).device
    data = data.to(dev)
    cuda = dev.type == "cuda"
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (cuda and amp) else contextlib.nullcontext
    for x, y, _ in data.batches(batch_size, channels_last=cuda and channels_last):
        with ctx():
            out = model(x)
        yield out.float(), y


def evaluate(model: nn.Module, data: ImageData, *, batch_size: int = 1024, amp: bool = False,
             channels_last: bool = False) -> dict[str, float]:
    """{"loss": mean cross-entropy, "acc": accuracy} of `model` on `data` (NaN for empty data); eval mode,
    inference mode, training mode restored. amp/channels_last apply on CUDA only."""
    if len(data) == 0:
        return {"loss": float("nan"), "acc": float("nan")}
    with _eval_mode(model):
        dev = next(model.parameters()).device
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        for logits, y in _logits(model, data, batch_size, amp, channels_last):
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        loss, acc = torch.stack([loss_sum / len(data), correct.double() / len(data)]).tolist()
    return {"loss": loss, "acc": acc}


def predict(model: nn.Module, data: ImageData, *, batch_size: int = 1024, amp: bool = False,
            channels_last: bool = False) -> torch.Tensor:
    """float32 logits [N, num_classes] on the data's device, in data order (eval + inference mode)."""
    with _eval_mode(model):
        parts = [logits for logits, _ in _logits(model, data, batch_size, amp, channels_last)]
    if not parts:
        return torch.empty(0, 0, device=data.device)
    return torch.cat(parts).to(data.device)


@torch.no_grad()
def recompute_bn(model: nn.Module, data: ImageData, *, batch_size: int = 1024) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) on `data`."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the batches below
    was_training = model.training
    model.train()
    for x, _, _ in data.batches(batch_size):
        model(x)
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    model.train(was_training)


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform average of floating-point entries; integer buffers (e.g. num_batches_tracked) from the last state."""
    out = {}
    for k, v in states[-1].items():
        out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
    return out
