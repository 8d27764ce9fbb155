"""What a sweep will train and what it costs: the distinct trainings its runs trigger (shared stages once), what a
results store already has for each cell, and FLOPs converted to device-hours for a named device.

Cost model (said beside every number): a training costs 3 x forward FLOPs per image (forward + backward) x its
train images x epochs, plus one forward over validation and test per epoch (the per-epoch predictions); forward
FLOPs are counted by torch's FlopCounterMode on one image of the dataset's shape. Device throughput is an
assumption printed with the result (dense bf16 peak x a utilisation factor).
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.config import DataConfig, ModelConfig, RunConfig, parse
from bench.data.registry import DATASETS
from bench.ids import canonical_json, run_id
from bench.method import Training, make_method
from bench.models import build_model

# name -> peak dense bf16 (v100: fp16) tensor FLOP/s, from the vendors' datasheets (no sparsity)
DEVICES = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "v100": 125e12, "l4": 121e12}
# An assumption, not a measurement: small-image convnets and ViTs trained with a plain PyTorch loop sustain about
# a tenth of the tensor peak (tiny per-layer matmuls, data movement, per-epoch evaluation). Override it with
# --utilisation after timing one epoch on the device.
UTILISATION = 0.10


@dataclass
class Cell:
    """One (setting, method) of a sweep: which seeds the store has done, failed (with reasons) or lacks."""
    setting: str
    method: str
    seeds: list[int]
    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)

    def status(self) -> str:
        n = len(self.seeds)
        parts = [f"{len(self.done)}/{n} seeds done"]
        if self.failed:
            reasons = sorted(set(self.failed.values()))
            parts.append(f"{len(self.failed)} failed: {'; '.join(r[:60] for r in reasons)}")
        return ", ".join(parts)


def trainings(runs: list[RunConfig]) -> dict[str, tuple[Training, list[RunConfig]]]:
    """Distinct trainings of `runs` (key -> the training and the runs that trigger it), in first-use order."""
    out: dict[str, tuple[Training, list[RunConfig]]] = {}
    for r in runs:
        for t in make_method(r).trainings(r):
            out.setdefault(t.key(), (t, []))[1].append(r)
    return out


def extra_trainings(run: RunConfig) -> list[Training]:
    """Trainings of `run` on another seed than its own (e.g. an ensemble's members): what --dry-run points out."""
    return [t for t in make_method(run).trainings(run) if t.seed != run.seed]


def data_sizes(data: dict[str, Any]) -> tuple[int, int, int, int, int] | None:
    """(train images, val + test images, channels, side, classes) of a dataset config, from its source's fixed
    sizes and the config's class filter, per-class subsets and validation fraction; None when not fixed."""
    cfg = parse(DataConfig, data, "dataset")
    src = DATASETS.get(cfg.name) if cfg.name in DATASETS else None
    if src is None or not src.sizes:
        return None
    n_train, n_test, chans, side, classes = src.sizes
    k = len(cfg.classes) if cfg.classes else classes
    if not n_test:                                         # one split: the test split is carved out of it
        frac = 0.2 if cfg.test_split is None else cfg.test_split
        n_train, n_test = round(n_train * (1 - frac)), round(n_train * frac)
    per_train, per_test = n_train / classes, n_test / classes

    def take(per: float, want: Any) -> float:
        if want is None:
            return per
        return min(per, want) if isinstance(want, int) and not isinstance(want, bool) else per * float(want)
    train = take(per_train, cfg.train_per_class) * k
    test = take(per_test, cfg.test_per_class) * k
    val = round(train * cfg.val_fraction)
    return int(train - val), int(val + test), chans, side, k


@functools.lru_cache(maxsize=64)
def forward_flops(model_json: str, chans: int, side: int, classes: int) -> float:
    """Forward FLOPs of one image through the model (torch's FlopCounterMode)."""
    model = build_model(parse(ModelConfig, json.loads(model_json), "model"), num_classes=classes, in_chans=chans,
                        img_size=side).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, chans, side, side))
    return float(counter.get_total_flops())


def training_flops(t: Training, record_predictions: bool = True) -> float | None:
    """FLOPs of one training (see the module docstring); None when its data or cost is not fixed."""
    if t.flops is not None:
        return t.flops
    sizes = data_sizes(t.dataset)
    if sizes is None or t.epochs <= 0:
        return None
    n_train, n_eval, chans, side, classes = sizes
    try:
        f = forward_flops(canonical_json(t.model), chans, side, classes)
    except Exception:  # a model this machine cannot build (e.g. a missing hf: folder): cost unknown
        return None
    return f * t.epochs * (3 * n_train + (n_eval if record_predictions else 0))


def cells(runs: list[RunConfig], store_runs: pd.DataFrame) -> list[Cell]:
    """Every (setting, method) of `runs` with what `store_runs` (load_results rows) has for its seeds."""
    status = {}
    if not store_runs.empty:
        for rid, st, reason in zip(store_runs["run_id"], store_runs["status"], store_runs.get("reason", [None] * len(store_runs))):
            status[rid] = (st, reason)
    out: dict[tuple[str, str], Cell] = {}
    for r in runs:
        setting = (f"{r.dataset.name}, {r.model.name}, noise {r.dataset.noise.kind}"
                   f"{'' if r.dataset.noise.kind == 'none' else ' ' + format(r.dataset.noise.rate, 'g')}")
        c = out.setdefault((setting, f"{r.method.name} {r.method.params or ''}".strip()),
                           Cell(setting, r.method.name, []))
        c.seeds.append(r.seed)
        st, reason = status.get(run_id(r), (None, None))
        if st == "done":
            c.done.append(r.seed)
        elif st == "failed":
            c.failed[r.seed] = str(reason or "failed")
    return list(out.values())


def cost_table(runs: list[RunConfig], store_runs: pd.DataFrame, device: str,
               util: float = UTILISATION) -> tuple[pd.DataFrame, str]:
    """Per training kind: count, FLOPs and device-hours of the trainings whose runs are not all done."""
    peak = DEVICES[device]
    done = set(store_runs.loc[store_runs["status"] == "done", "run_id"]) if not store_runs.empty else set()
    rows: dict[str, dict[str, Any]] = {}
    unknown = 0
    for t, rs in trainings(runs).values():
        if all(run_id(r) in done for r in rs):
            continue
        f = training_flops(t, rs[0].train.record_predictions)
        row = rows.setdefault(t.what, {"training": t.what, "count": 0, "PFLOP": 0.0, "unknown cost": 0})
        row["count"] += 1
        if f is None:
            row["unknown cost"] += 1
            unknown += 1
        else:
            row["PFLOP"] += f / 1e15
    df = pd.DataFrame(list(rows.values()))
    if not df.empty:
        df[f"{device} hours"] = df["PFLOP"] * 1e15 / (peak * util) / 3600
    note = (f"assumed {device}: {peak / 1e12:g} TFLOP/s dense tensor peak x {util:.0%} utilisation (an assumption;"
            f" --utilisation) = "
            f"{peak * util / 1e12:g} TFLOP/s sustained; 3 x forward FLOPs per training image, 1 x per val/test "
            f"image per epoch" + (f"; {unknown} trainings of unknown cost (step-based or data size not fixed)"
                                  if unknown else ""))
    return df, note


def total_hours(df: pd.DataFrame, device: str) -> float:
    return float(df[f"{device} hours"].sum()) if not df.empty else 0.0


def fmt_hours(h: float) -> str:
    """'1.9 hours', or minutes below a tenth of an hour."""
    return f"{h:.1f} hours" if h >= 0.1 or h == 0 else f"{h * 60:.1f} minutes"


def table_runs(runs: list[RunConfig], reference: pd.DataFrame, aliases: dict[str, str]) -> list[RunConfig]:
    """The runs that fill a published cell of `reference` (rows of a paper's reference.csv): same dataset, one of
    the row's models ('a|b'), same noise, and the row's method (a paper row reached through an alias, e.g.
    KNOW's 'naive' = know_naive, matches the aliased method)."""
    row_of = {m: row for m, row in aliases.items()}
    keep = []
    for r in runs:
        method = row_of.get(r.method.name, r.method.name)
        for _, ref in reference.iterrows():
            if ref["method"] != method or ref["dataset"] != r.dataset.name:
                continue
            if r.model.name not in str(ref["model"]).split("|"):
                continue
            if str(ref["noise_kind"] or "none") != r.dataset.noise.kind:
                continue
            if ref["noise_rate"] not in ("", None) and not math.isclose(float(ref["noise_rate"]), r.dataset.noise.rate):
                continue
            keep.append(r)
            break
    return keep
