"""`forgetbench tune SPEC`: local worker processes or submitit jobs (through the submitit executor's submission,
job record and polling) on one study."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.config import SpecError
from bench.executors import EXECUTORS
from bench.executors.base import threads_per_worker
from bench.executors.submitit import append_submission, submission_record
from bench.spec import base_run_dict, check_space, load_spec
from bench.store import atomic_write_json
from bench.tune.config import STALE, TUNE_DIR, TuneConfig, parse_tune
from bench.tune.study import check_optuna_version, load_optuna, make_storage
from bench.tune.workers import TuneWorker, counted, pool_worker, reap_stale, study_lock, write_best


# ------------------------------------------------------------------------------------------------ command
def run_tune(args: argparse.Namespace) -> int:

    warn = check_optuna_version()
    if warn:
        print(f"forgetbench tune: warning: {warn}", file=sys.stderr)
    optuna = load_optuna()
    spec = load_spec(args.spec, args.overrides)
    raw = dict(spec.tune or {})
    for key, attr in (("n_trials", "n_trials"), ("workers", "workers"), ("executor", "executor"),
                      ("storage", "storage")):
        if getattr(args, attr, None) is not None:
            raw[key] = getattr(args, attr)
    out = Path(args.out)
    cfg = parse_tune(raw, spec.name, out)
    detach = bool(getattr(args, "detach", False))
    if detach and cfg.executor == "local":
        raise SpecError("--detach", True, "only with tune.executor slurm or submitit-local")
    base = base_run_dict(spec)
    check_space(cfg, base, spec.name)
    tdir = (out / spec.name / TUNE_DIR).resolve()
    tdir.mkdir(parents=True, exist_ok=True)
    storage = make_storage(cfg.storage)
    study = optuna.create_study(study_name=cfg.study_name, storage=storage, direction=cfg.direction,
                                load_if_exists=True)
    if study.direction.name.lower() != cfg.direction:
        raise SpecError("tune.direction", cfg.direction, f"{study.direction.name.lower()} (the existing study "
                                                         f"{cfg.study_name!r} in {cfg.storage})")
    atomic_write_json(tdir / "tune.json", {"spec": spec.name, "study": cfg.study_name, "storage": cfg.storage,
                                           "config": asdict(cfg), "base_run": base})
    with study_lock(cfg, tdir):
        for n in reap_stale(study, storage):
            print(f"trial {n} was RUNNING with a dead worker: marked FAIL ({STALE}); it will be replaced")
    have = counted(study.get_trials(deepcopy=False))
    if len(spec.runs) > 1:
        print(f"note: the spec has {len(spec.runs)} runs; tuning uses the first as the base run", file=sys.stderr)
    print(f"tune {spec.name}: study {cfg.study_name!r} in {cfg.storage}; {have}/{cfg.n_trials} trials exist; "
          f"{cfg.workers} {cfg.executor} worker(s); {cfg.metric} ({cfg.direction}); sampler {cfg.sampler}; "
          f"pruner {cfg.pruner}", flush=True)
    t0 = time.perf_counter()
    if have < cfg.n_trials:
        n = min(cfg.workers, cfg.n_trials - have)
        if cfg.executor == "local":
            threads = threads_per_worker(n)
            workers = [TuneWorker(cfg, base, spec.name, str(tdir), i, threads) for i in range(n)]
            if n == 1:
                workers[0]()
            else:
                import multiprocessing as mp
                from concurrent.futures import ProcessPoolExecutor
                with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as pool:
                    list(pool.map(pool_worker, workers))
        else:
            if not _submit_workers(cfg, spec, base, tdir, n, detach):
                return 0
    best = write_best(optuna.load_study(study_name=cfg.study_name, storage=storage), cfg, tdir)
    print(f"wall time {time.perf_counter() - t0:.1f} s")
    if best is None:
        print("no completed trial", file=sys.stderr)
        return 1
    print(f"best trial {best['best_trial']}: {cfg.metric}={best['best_value']:.4f} params {best['best_params']}\n"
          f"trials: {best['trials']}\napply with: " + " ".join(f"--set {s}" for s in best["set"]) +
          f"\nwritten: {tdir / 'best.json'}")
    return 0


def _submit_workers(cfg: TuneConfig, spec: Any, base: dict, tdir: Path, n: int, detach: bool) -> bool:
    """Workers as jobs through the submitit executor (`slurm`: one array; `submitit-local`), recorded in
    TUNE_DIR/jobs.json like a sweep's jobs; True when they finished (waited), False when detached."""
    executor = EXECUTORS.get(cfg.executor)(workers=n, resources=spec.resources)
    folder = tdir / "_submitit"
    threads = executor.res.cpus if cfg.executor == "slurm" else threads_per_worker(n)
    payloads = [_CheckpointableWorker(cfg, base, spec.name, str(tdir), i, threads) for i in range(n)]
    jobs = executor.submit(executor.make_executor(folder, job_name=f"fb-tune-{spec.name}"), payloads)
    record = submission_record(cfg.executor, jobs, [[f"tune worker {i}"] for i in range(n)], folder)
    append_submission(tdir, record)
    print(f"submitted {n} tune worker job(s): {', '.join(j['job_id'] for j in record['jobs'])}; logs in {folder}",
          flush=True)
    if detach:
        print(f"detached: follow with `forgetbench status {tdir.parent}`", flush=True)
        return False
    executor.wait_ended(record)
    return True


try:
    from submitit.helpers import Checkpointable as _Checkpointable

    class _CheckpointableWorker(TuneWorker, _Checkpointable):
        """TuneWorker as a submitit Checkpointable (requeued on preemption / time limit)."""
except ImportError:  # pragma: no cover - the slurm extra is missing
    _CheckpointableWorker = TuneWorker  # type: ignore[misc]
