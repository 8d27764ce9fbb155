"""Shared stages: work several methods read (e.g. one base training run) is computed once per key.

A stage lives in `stages_dir/<name>-<hash of key>/`; a `done` marker is written last. A file lock makes sure two
concurrent runs never both compute it; the second waits and reuses the first's output.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from filelock import FileLock

from bench.config import to_dict
from bench.ids import digest
from bench.store import atomic_torch_save, atomic_write_json, read_jsonl, write_jsonl
from bench.train import CheckpointHook, fit, init_model, predict

DONE = "done"
BASE_STAGE_VERSION = 2


def stage_dir(stages_dir: Path, name: str, key: dict[str, Any]) -> Path:
    return Path(stages_dir) / f"{name}-{digest(key)}"


def shared_stage(stages_dir: Path, name: str, key: dict[str, Any], compute: Callable[[Path], None]) -> Path:
    """Return the stage folder, computing it under a file lock if it is not done yet."""
    sdir = stage_dir(stages_dir, name, key)
    if (sdir / DONE).is_file():
        return sdir
    sdir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(sdir) + ".lock"):
        if not (sdir / DONE).is_file():
            atomic_write_json(sdir / "key.json", key)
            compute(sdir)
            atomic_write_json(sdir / DONE, {"name": name})
    return sdir


@dataclass
class BaseRun:
    """The base training stage's output: final weights, per-epoch history, predictions and checkpoints.

    Epochs are numbered 1..E; epoch E is the final model.
    """
    dir: Path
    history: list[dict]
    wall_time_s: float

    @property
    def epochs(self) -> int:
        return len(self.history)

    def final_state(self) -> dict[str, torch.Tensor]:
        return torch.load(self.dir / "final.pt", map_location="cpu", weights_only=True)

    def state(self, epoch: int) -> dict[str, torch.Tensor]:
        """Weights after `epoch` (needs train.keep_checkpoints)."""
        if epoch == self.epochs:
            return self.final_state()
        path = self.dir / "ckpt" / f"epoch_{epoch:04d}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: set train.keep_checkpoints: true for this method")
        return torch.load(path, map_location="cpu", weights_only=True)

    def probs(self, split: str) -> torch.Tensor:
        """Softmax of every epoch's model on `split` ('val' or 'test'): float32 [E, N, C] (needs record_predictions)."""
        path = self.dir / "preds" / f"{split}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: set train.record_predictions: true for this method")
        return torch.load(path, map_location="cpu", weights_only=True).float()


def base_key(ctx, seed: int | None = None) -> dict[str, Any]:
    c = ctx.config
    return {"version": BASE_STAGE_VERSION, "dataset": to_dict(c.dataset), "model": to_dict(c.model),
            "train": to_dict(c.train), "seed": c.seed if seed is None else seed, "device": str(ctx.device)}


def build_model_for(ctx, seed: int | None = None) -> torch.nn.Module:
    """The run's model, freshly initialised from its own `init` stream, on the run's device."""
    d = ctx.data
    return init_model(ctx.config.model, num_classes=d.num_classes, in_chans=d.in_chans, img_size=d.img_size,
                      seed=ctx.config.seed if seed is None else seed).to(ctx.device)


class PredictionRecorder:
    """Epoch hook: softmax on val and test as float16, one small file per epoch (so a resumed run keeps them)."""

    def __init__(self, folder: Path, splits: dict[str, Any], batch_size: int) -> None:
        self.folder, self.splits, self.batch_size = folder, splits, batch_size

    def __call__(self, end) -> None:
        out = {}
        for name, data in self.splits.items():
            if len(data):
                logits = end.val_logits if name == "val" and end.val_logits is not None else \
                    predict(end.model, data, batch_size=self.batch_size)
                out[name] = logits.softmax(-1).half().cpu()
        atomic_torch_save(self.folder / f"epoch_{end.epoch:04d}.pt", out)

    def consolidate(self, epochs: int) -> None:
        per_epoch = [torch.load(self.folder / f"epoch_{e:04d}.pt", weights_only=True) for e in range(1, epochs + 1)]
        for name in per_epoch[0]:
            atomic_torch_save(self.folder / f"{name}.pt", torch.stack([p[name] for p in per_epoch]))
        for e in range(1, epochs + 1):
            (self.folder / f"epoch_{e:04d}.pt").unlink()


def save_weights(folder: Path):
    """Epoch hook: the epoch's weights (CPU copy) to folder/epoch_NNNN.pt."""
    def hook(end) -> None:
        atomic_torch_save(folder / f"epoch_{end.epoch:04d}.pt",
                          {k: v.detach().cpu() for k, v in end.model.state_dict().items()})
    return hook


def history_recorder(path: Path):
    """Epoch hook: append the epoch's metrics as one JSON line to `path`."""
    def hook(end) -> None:
        with open(path, "a") as f:
            f.write(json.dumps({"epoch": end.epoch, **end.metrics}, sort_keys=True) + "\n")
    return hook


def base_stage_hooks(ctx, sdir: Path) -> tuple[list, PredictionRecorder | None]:
    """The base stage's per-epoch bookkeeping: predictions on val/test, epoch weights, the history line."""
    cfg = ctx.config
    hooks: list = []
    recorder = None
    if cfg.train.record_predictions:
        recorder = PredictionRecorder(sdir / "preds", {"val": ctx.data.val, "test": ctx.data.test},
                                      cfg.train.eval_batch_size)
        hooks.append(recorder)
    if cfg.train.keep_checkpoints:
        hooks.append(save_weights(sdir / "ckpt"))
    hooks.append(history_recorder(sdir / "history.jsonl"))
    return hooks, recorder


def finish_base_stage(ctx, sdir: Path, model: torch.nn.Module, recorder: PredictionRecorder | None,
                      timing: dict[str, Any]) -> None:
    """Consolidate the predictions, save the final weights and the timing (the stage's `done` comes after)."""
    epochs = ctx.config.train.epochs
    if recorder is not None:
        recorder.consolidate(epochs)
    atomic_torch_save(sdir / "final.pt", {k: v.detach().cpu() for k, v in model.state_dict().items()})
    atomic_write_json(sdir / "timing.json", timing)
    (sdir / "ckpt" / f"epoch_{epochs:04d}.pt").unlink(missing_ok=True)  # the same weights as final.pt


def base_run(ctx, seed: int | None = None) -> BaseRun:
    """Train (or reuse) the base run of this (dataset, model, recipe, seed); resumable from its last epoch.

    `seed` defaults to the run's seed; another seed reads (or trains) that seed's base run, which is exactly the
    stage a naive run of that seed uses (so independent-ensemble members are shared with naive runs).
    """
    import time

    seed = ctx.config.seed if seed is None else seed

    def compute(sdir: Path) -> None:
        t0 = time.perf_counter()
        cfg = ctx.config
        model = build_model_for(ctx, seed)
        ckpt = sdir / "last.pt"
        resume = torch.load(ckpt, map_location=ctx.device, weights_only=False) if ckpt.is_file() else None
        done_epochs = resume["epoch"] if resume else 0
        history = [h for h in read_jsonl(sdir / "history.jsonl") if h["epoch"] <= done_epochs]
        write_jsonl(sdir / "history.jsonl", history)

        hooks, recorder = base_stage_hooks(ctx, sdir)
        if cfg.train.checkpoint_every:
            hooks.append(CheckpointHook(ckpt, every=cfg.train.checkpoint_every))
        fit(model, ctx.data.train, cfg.train, seed=seed, device=ctx.device, val=ctx.data.val, hooks=hooks,
            resume=resume, progress=ctx.progress, desc=f"{cfg.model.name} s{seed}")
        finish_base_stage(ctx, sdir, model, recorder, {"wall_time_s": time.perf_counter() - t0,  # last attempt
                                                       "resumed_from_epoch": done_epochs})
        ckpt.unlink(missing_ok=True)

    sdir = ctx.stage("base", base_key(ctx, seed), compute)
    timing = json.loads((sdir / "timing.json").read_text())
    return BaseRun(dir=sdir, history=read_jsonl(sdir / "history.jsonl"), wall_time_s=timing["wall_time_s"])
