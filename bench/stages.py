"""Shared stages: work several methods read (e.g. one base training run) is computed once per key.

A stage lives in `stages_dir/<name>-<hash of key>/`; a `done` marker is written last. A file lock makes sure two
concurrent runs never both compute it; the second waits and reuses the first's output.

Stages survive any kill: everything a reader needs is written (atomically) before `done`, and files that are
only needed to resume (per-epoch predictions, `last.pt`) are deleted only after it, so finalising is idempotent.
A stage whose files are unreadable (truncated or empty tensors, invalid JSON, a torn history line, wrong shapes,
fewer epochs than its recipe) is discarded with a `StageDiscarded` warning and recomputed, never an error on
every rerun.
"""
from __future__ import annotations

import json
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from filelock import FileLock

from bench.config import to_dict
from bench.ids import digest
from bench.store import (
    atomic_torch_save,
    atomic_write_json,
    read_json,
    read_jsonl,
    write_jsonl,
)
from bench.train import CheckpointHook, fit, init_model, predict

DONE = "done"
BASE_STAGE_VERSION = 2

Check = Callable[[Path], "str | None"]


class StageDiscarded(UserWarning):
    """A stage folder was unreadable or inconsistent: it is discarded and recomputed."""


class StageCorrupt(RuntimeError):
    """Raised while computing a stage whose leftover files cannot be reused."""


def stage_dir(stages_dir: Path, name: str, key: dict[str, Any]) -> Path:
    return Path(stages_dir) / f"{name}-{digest(key)}"


# ------------------------------------------------------------------------------------------- integrity
def strict_jsonl(path: Path) -> list[dict]:
    """Every line of `path` as a dict; ValueError on a torn or invalid line (OSError when unreadable)."""
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path.name} line {i} is not JSON ({e})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path.name} line {i} is not an object")
        rows.append(row)
    return rows


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be read back (a cheap structural check by suffix), or None."""
    try:
        if path.suffix == ".pt":
            with zipfile.ZipFile(path) as z:  # torch.save's format; the central directory is at the end
                if not z.namelist():
                    return f"{path.name} is empty"
        elif path.suffix == ".json" or path.name == DONE:
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            strict_jsonl(path)
    except FileNotFoundError:
        return None  # removed meanwhile (e.g. a per-epoch file cleaned up after `done`): not part of the stage
    except (OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        return f"{path.parent.name}/{path.name} is unreadable ({type(e).__name__}: {e})"
    return None


def stage_problem(sdir: Path, check: Check | None = None) -> str | None:
    """Why a finished stage folder cannot be used (an unreadable file, or `check`'s reason), or None."""
    for p in sorted(Path(sdir).rglob("*")):
        if p.is_file() and not p.name.startswith("."):  # dot files are temp files of atomic writes
            problem = file_problem(p)
            if problem:
                return problem
    if check is not None:
        try:
            return check(Path(sdir))
        except Exception as e:  # noqa: BLE001 - any failure to read it back means the stage is unusable
            return f"{type(e).__name__}: {e}"
    return None


def stage_ready(sdir: Path, check: Check | None = None) -> bool:
    """True when `sdir` is done and readable; a done but unreadable stage warns (it will be recomputed)."""
    sdir = Path(sdir)
    if not (sdir / DONE).is_file():
        return False
    problem = stage_problem(sdir, check)
    if problem:
        warnings.warn(f"stage {sdir.name} is unusable and will be recomputed: {problem}", StageDiscarded,
                      stacklevel=2)
        return False
    return True


def discard_stage(sdir: Path) -> None:
    """Remove everything in the stage folder (`done` first). Call it under the stage's lock."""
    sdir = Path(sdir)
    (sdir / DONE).unlink(missing_ok=True)
    for p in sdir.iterdir() if sdir.is_dir() else ():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def shared_stage(stages_dir: Path, name: str, key: dict[str, Any], compute: Callable[[Path], None],
                 check: Check | None = None) -> Path:
    """Return the stage folder, computing it under a file lock if it is not done (or not readable) yet.

    check(sdir) -> a reason the finished stage cannot be used, or None; structural checks of every .pt/.json/
    .jsonl file come for free. A done but unusable stage is discarded (with a warning) and recomputed.
    """
    sdir = stage_dir(stages_dir, name, key)
    if stage_ready(sdir, check):
        return sdir
    sdir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(sdir) + ".lock"):
        if (sdir / DONE).is_file() and stage_problem(sdir, check):  # (the warning came from stage_ready)
            discard_stage(sdir)
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

    def names(self) -> list[str]:
        return [name for name, data in self.splits.items() if len(data)]

    def consolidate(self, epochs: int) -> None:
        """Stack the per-epoch files into one file per split (idempotent; the per-epoch files stay until the
        stage is done, see `cleanup_base_stage`). Consolidated files that already hold `epochs` epochs are kept
        when the per-epoch files are gone (a kill after an earlier consolidation)."""
        files = [self.folder / f"epoch_{e:04d}.pt" for e in range(1, epochs + 1)]
        if all(f.is_file() for f in files):
            per_epoch = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
            for name in per_epoch[0]:
                atomic_torch_save(self.folder / f"{name}.pt", torch.stack([p[name] for p in per_epoch]))
            return
        for name in self.names():
            problem = preds_problem(self.folder / f"{name}.pt", epochs)
            if problem:
                missing = next(f.name for f in files if not f.is_file())
                raise StageCorrupt(f"{missing} is missing and {problem}")


def preds_problem(path: Path, epochs: int) -> str | None:
    """Why `path` is not a consolidated [epochs, N, C] prediction tensor, or None."""
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        t = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001
        return f"{path.name} is unreadable ({type(e).__name__}: {e})"
    if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[0] != epochs or not t.is_floating_point():
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        return f"{path.name} is not [{epochs} epochs, N, C] predictions (got {shape})"
    return None


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
    """Consolidate the predictions, save the final weights and the timing (the stage's `done` comes after; the
    per-epoch files only needed to resume are removed after `done` by `cleanup_base_stage`)."""
    epochs = ctx.config.train.epochs
    if recorder is not None:
        recorder.consolidate(epochs)
    atomic_torch_save(sdir / "final.pt", {k: v.detach().cpu() for k, v in model.state_dict().items()})
    atomic_write_json(sdir / "timing.json", timing)


def cleanup_base_stage(sdir: Path, epochs: int) -> None:
    """After `done`: drop per-epoch prediction files, the resume checkpoint and the last epoch's weights (the
    same as final.pt). Idempotent; safe to call on every read of a done stage."""
    if not (sdir / DONE).is_file():
        return
    for p in (sdir / "preds").glob("epoch_*.pt"):
        p.unlink(missing_ok=True)
    (sdir / "last.pt").unlink(missing_ok=True)
    (sdir / "ckpt" / f"epoch_{epochs:04d}.pt").unlink(missing_ok=True)


def base_stage_check(ctx) -> Check:
    """The base stage is usable when its history holds epochs 1..E, final.pt is a state dict, timing.json has
    the wall time, and (per the recipe) the predictions are [E, N, C] and the epoch checkpoints exist."""
    train = ctx.config.train
    epochs = train.epochs

    def check(sdir: Path) -> str | None:
        got = [h.get("epoch") for h in strict_jsonl(sdir / "history.jsonl")]
        if got != list(range(1, epochs + 1)):
            return f"history.jsonl holds epochs {_span(got)}, the recipe has {epochs}"
        final = torch.load(sdir / "final.pt", map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(final, dict) or not final or not all(isinstance(v, torch.Tensor) for v in final.values()):
            return "final.pt is not a state dict"
        timing = read_json(sdir / "timing.json")
        if not isinstance(timing, dict) or not isinstance(timing.get("wall_time_s"), (int, float)):
            return "timing.json has no wall_time_s"
        if train.record_predictions:
            classes = set()
            for split in ("val", "test"):
                path = sdir / "preds" / f"{split}.pt"
                if split == "val" and not path.is_file():
                    continue  # no validation split
                problem = preds_problem(path, epochs)
                if problem:
                    return f"preds/{problem}"
                t = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                classes.add(t.shape[2])
                data = ctx.__dict__.get("data")  # compare sizes only when the run has loaded its data anyway
                split_data = getattr(data, split, None) if data is not None else None
                if split_data is not None and len(split_data) != t.shape[1]:
                    return f"preds/{split}.pt has {t.shape[1]} samples, the {split} split {len(split_data)}"
            if len(classes) > 1:
                return f"preds/val.pt and preds/test.pt disagree on the number of classes {sorted(classes)}"
        if train.keep_checkpoints:
            for e in range(1, epochs):
                if not (sdir / "ckpt" / f"epoch_{e:04d}.pt").is_file():
                    return f"ckpt/epoch_{e:04d}.pt is missing"
        return None
    return check


def _span(epochs: list) -> str:
    return f"{epochs[0]}..{epochs[-1]} ({len(epochs)} lines)" if epochs else "none"


def _resume_state(ctx, sdir: Path) -> dict[str, Any] | None:
    """The base stage's resumable state: `last.pt` (loaded with weights_only) when it, the history lines, the
    per-epoch predictions and checkpoints up to its epoch are all readable; otherwise the folder is cleared
    (with a warning) and training starts over. None when there is nothing to resume."""
    train = ctx.config.train
    ckpt = sdir / "last.pt"
    if not ckpt.is_file():
        return None
    try:
        resume = torch.load(ckpt, map_location=ctx.device, weights_only=True)
        if not isinstance(resume, dict) or not {"epoch", "model", "optimizer", "scheduler"} <= set(resume):
            raise StageCorrupt("last.pt is not a training state")
        k = resume["epoch"]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= train.epochs:
            raise StageCorrupt(f"last.pt holds epoch {k!r}, the recipe has {train.epochs}")
        got = [h.get("epoch") for h in read_jsonl(sdir / "history.jsonl") if isinstance(h, dict)][:k]
        if got != list(range(1, k + 1)):
            raise StageCorrupt(f"history.jsonl holds epochs {_span(got)}, last.pt epoch {k}")
        if train.record_predictions:
            files = [sdir / "preds" / f"epoch_{e:04d}.pt" for e in range(1, k + 1)]
            problems = [file_problem(f) if f.is_file() else f"{f.name} is missing" for f in files]
            if any(problems):  # fine only after a full consolidation (killed before `done`)
                names = [n for n in ("val", "test") if len(getattr(ctx.data, n))]
                consolidated = [preds_problem(sdir / "preds" / f"{n}.pt", k) for n in names]
                if k < train.epochs or any(consolidated):
                    raise StageCorrupt(next(p for p in problems if p))
        if train.keep_checkpoints:
            for e in range(1, k + 1):
                f = sdir / "ckpt" / f"epoch_{e:04d}.pt"
                problem = file_problem(f) if f.is_file() else f"ckpt/{f.name} is missing"
                if problem:
                    raise StageCorrupt(problem)
        return resume
    except Exception as e:  # noqa: BLE001 - whatever is wrong with the leftovers, start over
        warnings.warn(f"stage {sdir.name}: cannot resume ({type(e).__name__}: {e}); training from scratch",
                      StageDiscarded, stacklevel=2)
        discard_stage(sdir)
        return None


def base_run(ctx, seed: int | None = None) -> BaseRun:
    """Train (or reuse) the base run of this (dataset, model, recipe, seed); resumable from its last epoch.

    `seed` defaults to the run's seed; another seed reads (or trains) that seed's base run, which is exactly the
    stage a naive run of that seed uses (so independent-ensemble members are shared with naive runs).
    """
    import time

    seed = ctx.config.seed if seed is None else seed
    key = base_key(ctx, seed)

    def compute(sdir: Path) -> None:
        try:
            train(sdir, _resume_state(ctx, sdir))
        except StageCorrupt as e:  # leftovers that looked resumable but were not: once more from scratch
            warnings.warn(f"stage {sdir.name}: {e}; training from scratch", StageDiscarded, stacklevel=2)
            discard_stage(sdir)
            train(sdir, None)

    def train(sdir: Path, resume: dict[str, Any] | None) -> None:
        t0 = time.perf_counter()
        cfg = ctx.config
        model = build_model_for(ctx, seed)
        atomic_write_json(sdir / "key.json", key)  # (again: the folder may have been cleared)
        done_epochs = resume["epoch"] if resume else 0
        history = [h for h in read_jsonl(sdir / "history.jsonl") if h["epoch"] <= done_epochs]
        write_jsonl(sdir / "history.jsonl", history)

        hooks, recorder = base_stage_hooks(ctx, sdir)
        if cfg.train.checkpoint_every:
            hooks.append(CheckpointHook(sdir / "last.pt", every=cfg.train.checkpoint_every))
        fit(model, ctx.data.train, cfg.train, seed=seed, device=ctx.device, val=ctx.data.val, hooks=hooks,
            resume=resume, progress=ctx.progress, desc=f"{cfg.model.name} s{seed}")
        finish_base_stage(ctx, sdir, model, recorder, {"wall_time_s": time.perf_counter() - t0,  # last attempt
                                                       "resumed_from_epoch": done_epochs})

    sdir = ctx.stage("base", key, compute, check=base_stage_check(ctx))
    cleanup_base_stage(sdir, ctx.config.train.epochs)
    return load_base_run(sdir)


def load_base_run(sdir: Path) -> BaseRun:
    """A done base(-like) stage folder as a BaseRun."""
    timing = json.loads((sdir / "timing.json").read_text())
    return BaseRun(dir=sdir, history=strict_jsonl(sdir / "history.jsonl"), wall_time_s=timing["wall_time_s"])
