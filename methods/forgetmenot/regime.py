"""Regime diagnostics for Forget Me Not's claims, from the per-epoch logs of the runs (metrics.jsonl): does the
base training locally overfit (card §1: validation accuracy peaks and then falls while examples are forgotten)?
KF can only recover what was forgotten; in a run without local overfitting it has nothing to recover."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd

from bench.store import METRICS, read_jsonl

MIN_DROP = 0.005     # best − final validation accuracy (fraction) above which a run counts as locally overfitting


def curve_stats(rows: list[dict]) -> dict | None:
    """Best-val epoch, last epoch, best − final val accuracy, forget-fraction peak and its value one epoch
    before the end, from one run's per-epoch base-run history (None when it has none: e.g. a student's log)."""
    ep = [r for r in rows if "epoch" in r and r.get("val_acc") is not None and "forget_fraction" in r]  # base runs
    if len(ep) < 2:
        return None
    val = np.array([r["val_acc"] for r in ep], dtype=float)
    ff = np.array([r.get("forget_fraction", np.nan) for r in ep], dtype=float)
    best = int(np.argmax(val))
    return {"best_epoch": int(ep[best]["epoch"]), "last_epoch": int(ep[-1]["epoch"]),
            "drop": float(val[best] - val[-1]), "ff_peak": float(ff[:-1].max()), "ff_late": float(ff[-2])}


def _run_stats(path: str) -> dict | None:
    """curve_stats of one run's log, read once per file version (every claim of a setting asks for the same runs)."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return None
    return _cached_stats(path, mtime)


@functools.lru_cache(maxsize=8192)
def _cached_stats(path: str, mtime: int) -> dict | None:
    return curve_stats(read_jsonl(Path(path)))


def regime(name: str, runs: pd.DataFrame) -> str:
    """A one-line diagnostic of the setting of `runs` (their run_dir's metrics.jsonl)."""
    if name != "local_overfitting" or "run_dir" not in runs:
        return ""
    seen, stats = set(), []
    for d, seed in zip(runs["run_dir"], runs["seed"]):
        if not d or seed in seen:
            continue
        s = _run_stats(str(Path(d) / METRICS))
        if s:
            seen.add(seed)
            stats.append(s)
    if not stats:
        return "no per-epoch validation logs: regime unknown"
    drop = np.mean([s["drop"] for s in stats])
    best = np.median([s["best_epoch"] for s in stats])
    last = stats[0]["last_epoch"]
    peak = float(np.mean([s["ff_peak"] for s in stats]))
    late = float(np.mean([s["ff_late"] for s in stats]))
    where = (f"val acc best at epoch {best:g}/{last} ({drop * 100:.1f} pt above the end); forget fraction "
             f"peak {peak * 100:.1f}%, {late * 100:.1f}% one epoch before the end (n={len(stats)})")
    if drop >= MIN_DROP:
        return "local overfitting: " + where
    return "no local overfitting: KF has nothing to recover (" + where + ")"
