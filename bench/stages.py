"""Shared stages: work several methods read (e.g. one base training run) is computed once per key.

A stage lives in `stages_dir/<name>-<hash of key>/`; a `done` marker is written last. A file lock makes sure two
concurrent runs never both compute it; the second waits and reuses the first's output.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from filelock import FileLock

from bench.config import to_dict
from bench.spec import canonical_json
from bench.store import atomic_torch_save, atomic_write_json, read_json, read_jsonl, write_jsonl

DONE = "done"
BASE_STAGE_VERSION = 1


def stage_dir(stages_dir: Path, name: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(canonical_json(key).encode()).hexdigest()[:12]
    return Path(stages_dir) / f"{name}-{digest}"


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
    """The output of the base training stage: final weights and the per-epoch history."""
    dir: Path
    history: list[dict]

    def final_state(self) -> dict[str, torch.Tensor]:
        return torch.load(self.dir / "final.pt", map_location="cpu", weights_only=True)


def base_key(ctx) -> dict[str, Any]:
    c = ctx.config
    return {"version": BASE_STAGE_VERSION, "dataset": to_dict(c.dataset), "model": to_dict(c.model),
            "train": to_dict(c.train), "seed": c.seed, "device": str(ctx.device)}


def build_model_for(ctx) -> torch.nn.Module:
    """The run's model, freshly initialised from its own `init` stream, on the run's device."""
    from bench.train import init_model
    d = ctx.data
    return init_model(ctx.config.model, num_classes=d.num_classes, in_chans=d.in_chans, img_size=d.img_size,
                      seed=ctx.config.seed).to(ctx.device)


def base_run(ctx) -> BaseRun:
    """Train (or reuse) the base run; resumable from its last epoch checkpoint."""
    from bench.train import CheckpointHook, fit

    def compute(sdir: Path) -> None:
        cfg = ctx.config
        model = build_model_for(ctx)
        ckpt = sdir / "last.pt"
        resume = torch.load(ckpt, map_location=ctx.device, weights_only=False) if ckpt.is_file() else None
        done_epochs = resume["epoch"] if resume else 0
        history = [h for h in read_jsonl(sdir / "history.jsonl") if h["epoch"] <= done_epochs]
        write_jsonl(sdir / "history.jsonl", history)

        def record(state) -> None:
            with open(sdir / "history.jsonl", "a") as f:
                f.write(json.dumps({"epoch": state.epoch, **state.metrics}, sort_keys=True) + "\n")

        hooks = [record]
        if cfg.train.checkpoint_every:
            hooks.append(CheckpointHook(ckpt, every=cfg.train.checkpoint_every))
        fit(model, ctx.data.train, cfg.train, seed=cfg.seed, device=ctx.device, val=ctx.data.val, hooks=hooks,
            resume=resume, progress=ctx.progress, desc=f"{cfg.model.name} s{cfg.seed}")
        atomic_torch_save(sdir / "final.pt", {k: v.detach().cpu() for k, v in model.state_dict().items()})
        if ckpt.is_file():
            ckpt.unlink()

    sdir = ctx.stage("base", base_key(ctx), compute)
    return BaseRun(dir=sdir, history=read_jsonl(sdir / "history.jsonl"))
