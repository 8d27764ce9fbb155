"""Executors on this machine: `inline` (this process) and `local` (a pool of spawned worker processes).

Ctrl-C (SIGINT) or SIGTERM on a `local` sweep stops it cleanly: no further run starts, the workers are
terminated and joined, the pool is shut down (no leaked semaphores), one line says how many runs finished, and
the command exits 130 (SIGINT) or 143 (SIGTERM); `inline` exits the same way. Unfinished runs keep their `running.json` and show as
interrupted in `forgetbench status`; rerunning the same command resumes them (finished runs are skipped).
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from bench.config import RunConfig
from bench.executors.base import EXECUTORS, group_runs, run_group, run_threads
from bench.ids import run_id
from bench.store import RESULT, read_json, run_dir


@EXECUTORS.register("inline")
class InlineExecutor:
    """Runs everything in this process, one after another (easiest to debug)."""

    def __init__(self, workers: int = 1, **_: Any) -> None:
        pass

    def run(self, runs: list[RunConfig], out: Path, *, progress: bool = True) -> list[dict[str, Any]]:
        results = []
        threads = run_threads()
        signame = None
        with _sigterm_raises():
            try:
                with tqdm(total=len(runs), desc="runs", unit="run", disable=not progress, position=0) as bar:
                    for group in group_runs(runs):
                        for r in group:
                            results.extend(run_group([r], str(out), progress, threads))
                            bar.update(1)
                            bar.set_postfix(failed=sum(x["status"] == "failed" for x in results))
            except KeyboardInterrupt:
                signame = "SIGINT"
            except _Terminated:
                signame = "SIGTERM"
        if signame:
            print(f"\n{interrupted_message(signame, runs, out)}", file=sys.stderr, flush=True)
            raise SweepInterrupted(130 if signame == "SIGINT" else 143)
        return results


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    # tqdm would create a multiprocessing lock (a named semaphore) in the worker; a worker terminated in the
    # middle of a run could not release it ("leaked semaphore objects"): a thread lock does here
    tqdm.set_lock(threading.RLock())
    # Ctrl-C reaches the whole process group: the parent alone handles it (and terminates the workers), so
    # the workers print no tracebacks; SIGTERM keeps its default (exit at once: stages and results are kill-safe)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class SweepInterrupted(SystemExit):
    """A sweep stopped by SIGINT (exit code 130) or SIGTERM (143) after its workers were stopped."""


class _Terminated(BaseException):
    """SIGTERM in the parent, raised where it waits for the workers."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated()
    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl-C / SIGTERM while the workers are being stopped does not break the clean-up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _stop_workers(pool: ProcessPoolExecutor, futures: Any) -> None:
    """Terminate the workers (SIGTERM, then SIGKILL after 10 s) and join them. The pool's manager thread then
    sees them gone, fails the pending futures (BrokenProcessPool: nothing else starts) and exits, and the
    caller's shutdown(wait=True) releases the pool's queues. (Cancelling the futures here would crash that
    thread on Python 3.11, and a shutdown without waiting leaves the queues to the interpreter's exit: both
    end in 'leaked semaphore objects'.)"""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


def interrupted_message(signame: str, runs: list[RunConfig], out: Path) -> str:
    """One line: how many of `runs` have a final result now, and that rerunning resumes the others."""
    finished = 0
    for r in runs:
        res = read_json(run_dir(Path(out), r.spec, run_id(r)) / RESULT)
        finished += isinstance(res, dict) and res.get("status") in ("done", "failed")
    return (f"interrupted ({signame}): {finished} of {len(runs)} runs finished; the runs in progress were "
            f"stopped (`forgetbench status` shows them as interrupted): rerun the same command to resume "
            f"(finished runs are skipped)")


@EXECUTORS.register("local")
class LocalExecutor:
    """A pool of N worker processes (spawned); each run gets run_threads() torch threads (FORGETBENCH_THREADS,
    default 1), the same as under every other executor, so the numbers do not depend on N."""

    def __init__(self, workers: int = 2, **_: Any) -> None:
        if workers < 1:
            raise ValueError(f"--workers: got {workers}; allowed: an integer >= 1")
        self.workers = workers

    def run(self, runs: list[RunConfig], out: Path, *, progress: bool = True) -> list[dict[str, Any]]:
        groups = group_runs(runs)
        threads = run_threads()
        results: list[dict[str, Any]] = []
        ctx = mp.get_context("spawn")
        signame = None
        with _sigterm_raises():
            pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,))
            futures: dict[Any, Any] = {}
            try:
                with tqdm(total=len(runs), desc=f"runs ({self.workers} workers)", unit="run",
                          disable=not progress) as bar:
                    futures = {pool.submit(run_group, g, str(out), False, threads): g for g in groups}
                    for fut in as_completed(futures):
                        res = fut.result()
                        results.extend(res)
                        bar.update(len(res))
                        bar.set_postfix(failed=sum(x["status"] == "failed" for x in results))
            except KeyboardInterrupt:
                signame = "SIGINT"
            except _Terminated:
                signame = "SIGTERM"
            finally:
                with _signals_ignored():
                    if signame or sys.exc_info()[0] is not None:
                        _stop_workers(pool, futures)
                    pool.shutdown(wait=True, cancel_futures=True)
        if signame:
            print(f"\n{interrupted_message(signame, runs, out)}", file=sys.stderr, flush=True)
            raise SweepInterrupted(130 if signame == "SIGINT" else 143)
        return results

