"""Tuning studies in a results store, for `forgetbench status`."""
from __future__ import annotations

from pathlib import Path

from bench.store import read_json
from bench.executors.submitit import job_states
from bench.tune.config import STALE, TUNE_DIR
from bench.tune.study import load_optuna, make_storage
from bench.tune.workers import counted


# ------------------------------------------------------------------------------------------------ status
def study_dirs(root: Path) -> list[Path]:
    """Tune folders (with tune.json) at or under `root` (root, root/tune, root/*/tune)."""
    root = Path(root)
    cands = [root, root / TUNE_DIR, *sorted(root.glob(f"*/{TUNE_DIR}"))] if root.is_dir() else []
    seen, out = set(), []
    for c in cands:
        if (c / "tune.json").is_file() and c.resolve() not in seen:
            seen.add(c.resolve())
            out.append(c)
    return out


def tune_status(tdir: Path) -> list[str]:
    info = read_json(Path(tdir) / "tune.json") or {}
    head = f"tune {info.get('spec', '?')}: study {info.get('study')!r} in {info.get('storage')}"
    try:
        optuna = load_optuna()
        storage = make_storage(info["storage"])
        study = optuna.load_study(study_name=info["study"], storage=storage)
        trials = study.get_trials(deepcopy=False)
    except Exception as e:
        return [f"{head}: cannot read the study ({type(e).__name__}: {e})"]
    counts: dict[str, int] = {}
    for t in trials:
        key = "stale" if STALE in t.user_attrs else t.state.name.lower()
        counts[key] = counts.get(key, 0) + 1
    n_trials = (info.get("config") or {}).get("n_trials")
    lines = [f"{head}: {counted(trials)}/{n_trials} trials " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))]
    best = read_json(Path(tdir) / "best.json")
    if best:
        lines.append(f"  best trial {best['best_trial']}: {best['metric']}={best['best_value']:.4f} "
                     f"{best['best_params']}")
    for sub in (read_json(Path(tdir) / "jobs.json") or {}).get("submissions", []):
        states = job_states(sub)
        for j in sub["jobs"]:
            if states.get(j["job_id"]) in ("running", "queued"):
                lines.append(f"  {sub['executor']} worker job {j['job_id']} [{states[j['job_id']]}]\n"
                             f"    log: {j['stdout']}\n    err: {j['stderr']}")
    return lines
