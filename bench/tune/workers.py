"""Tuning workers: identity (host, pid, SLURM job), stale-trial reaping, the ask/tell loop and the best trial."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from bench.store import atomic_write_json
from bench.slurm import ACTIVE_STATES, available, scontrol_job
from bench.tune.config import STALE, TuneConfig
from bench.tune.objective import objective
from bench.tune.study import load_optuna, make_pruner, make_sampler, make_storage


# ------------------------------------------------------------------------------------------------ workers
def _proc_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    ident: dict[str, Any] = {"host": socket.gethostname(), "pid": pid, "start": _proc_start(pid)}
    if os.environ.get("SLURM_JOB_ID"):
        ident["slurm_job"] = os.environ["SLURM_JOB_ID"]
        ident["slurm_restart"] = os.environ.get("SLURM_RESTART_COUNT", "0")
    return ident


def worker_alive(w: dict[str, Any]) -> bool | None:
    """True / False when known, None when this machine cannot tell (another host, no SLURM)."""
    if w.get("host") == socket.gethostname() and w.get("pid"):
        start = _proc_start(int(w["pid"]))
        if start is None:
            return False
        try:
            if Path(f"/proc/{w['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        except OSError:
            return False
        return w.get("start") in (None, start)
    if w.get("slurm_job"):
        if not available():
            return None
        info = scontrol_job(str(w["slurm_job"]))
        if not info or info.get("JobState") not in ACTIVE_STATES:
            return False
        return info.get("Restarts", "0") == str(w.get("slurm_restart", "0"))
    return None


def reap_stale(study: Any, storage: Any) -> list[int]:
    """Mark RUNNING trials of dead workers FAIL (user attr `stale`); return their numbers."""
    optuna = load_optuna()
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        w = t.user_attrs.get("worker")
        if isinstance(w, dict) and worker_alive(w) is False:
            storage.set_trial_user_attr(t._trial_id, STALE, f"worker {w.get('host')}:{w.get('pid')} died")
            try:
                storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            except Exception:  # finished meanwhile
                continue
            reaped.append(t.number)
    return reaped


def counted(trials: list[Any]) -> int:
    """Trials that count towards n_trials: all but those failed with a dead worker (they are replaced)."""
    return sum(1 for t in trials if STALE not in t.user_attrs)


def study_lock(cfg: TuneConfig, tdir: Path):
    from filelock import FileLock
    return FileLock(str(tdir / f"{cfg.study_name}.ask.lock"))


class TuneWorker:
    """One worker of a study: ask (under a lock, up to n_trials) -> train -> tell, until the study is full.

    Picklable (for process pools and submitit); on SLURM it is checkpointable: a preempted worker marks its
    running trial failed-stale (it is replaced) and is requeued.
    """

    def __init__(self, cfg: TuneConfig, base: dict[str, Any], spec_name: str, tdir: str, index: int,
                 threads: int | None = None) -> None:
        self.cfg, self.base, self.spec_name, self.tdir, self.index = cfg, base, spec_name, str(tdir), index
        self.threads = threads
        self._storage: Any = None
        self._trial_id: int | None = None

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_storage"], d["_trial_id"] = None, None
        return d

    def __call__(self) -> dict[str, int]:
        import torch
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return self._loop()
        finally:
            torch.set_num_threads(before)  # one local worker runs in the caller's process

    def _loop(self) -> dict[str, int]:
        optuna = load_optuna()
        cfg, tdir = self.cfg, Path(self.tdir)
        self._storage = storage = make_storage(cfg.storage)
        study = optuna.load_study(study_name=cfg.study_name, storage=storage, sampler=make_sampler(cfg, self.index),
                                  pruner=make_pruner(cfg))
        TS = optuna.trial.TrialState
        me = worker_identity()
        done = {"complete": 0, "pruned": 0, "failed": 0}
        while True:
            with study_lock(cfg, tdir):
                for n in reap_stale(study, storage):
                    _say(f"worker {self.index}: trial {n} was RUNNING with a dead worker: marked FAIL ({STALE})")
                if counted(study.get_trials(deepcopy=False)) >= cfg.n_trials:
                    break
                trial = study.ask()
                trial.set_user_attr("worker", me)
                self._trial_id = trial._trial_id
            t0 = time.perf_counter()
            try:
                value = objective(trial, cfg, self.base, self.spec_name)
            except optuna.TrialPruned as e:
                study.tell(trial, state=TS.PRUNED)
                done["pruned"] += 1
                _say(f"worker {self.index}: trial {trial.number} {e} {trial.params}")
            except Exception as e:  # recorded, not fatal to the study
                trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}")
                study.tell(trial, state=TS.FAIL)
                done["failed"] += 1
                _say(f"worker {self.index}: trial {trial.number} failed: {type(e).__name__}: {e}")
            else:
                study.tell(trial, value)
                done["complete"] += 1
                _say(f"worker {self.index}: trial {trial.number} {cfg.metric}={value:.4f} {trial.params} "
                     f"({time.perf_counter() - t0:.1f} s)")
            self._trial_id = None
        write_best(study, cfg, tdir)
        return done

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """SLURM preemption / time limit: fail the running trial as stale (it is replaced), requeue the worker."""
        from submitit.helpers import DelayedSubmission
        if self._storage is not None and self._trial_id is not None:
            optuna = load_optuna()
            try:
                self._storage.set_trial_user_attr(self._trial_id, STALE, "worker preempted")
                self._storage.set_trial_state_values(self._trial_id, optuna.trial.TrialState.FAIL)
            except Exception:
                pass
        return DelayedSubmission(self, *args, **kwargs)


def _say(msg: str) -> None:
    print(f"[tune {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pool_worker(worker: TuneWorker) -> dict[str, int]:
    return worker()


def write_best(study: Any, cfg: TuneConfig, tdir: Path) -> dict[str, Any] | None:
    optuna = load_optuna()
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        key = "stale" if STALE in t.user_attrs else t.state.name.lower()
        counts[key] = counts.get(key, 0) + 1
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return None
    best = study.best_trial
    out = {"study": cfg.study_name, "storage": cfg.storage, "metric": cfg.metric, "direction": cfg.direction,
           "best_value": best.value, "best_trial": best.number, "best_params": best.params,
           "set": [f"{k}={json.dumps(v)}" for k, v in best.params.items()], "trials": counts,
           "run_id": best.user_attrs.get("run_id")}
    atomic_write_json(Path(tdir) / "best.json", out)
    return out
