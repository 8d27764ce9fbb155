"""Executors on this machine: `inline` (this process) and `local` (a pool of spawned worker processes)."""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench.config import RunConfig
from bench.executors.base import EXECUTORS, group_runs, run_group, run_threads


@EXECUTORS.register("inline")
class InlineExecutor:
    """Runs everything in this process, one after another (easiest to debug)."""

    def __init__(self, workers: int = 1, **_: Any) -> None:
        pass

    def run(self, runs: list[RunConfig], out: Path, *, progress: bool = True) -> list[dict[str, Any]]:
        results = []
        threads = run_threads()
        with tqdm(total=len(runs), desc="runs", unit="run", disable=not progress, position=0) as bar:
            for group in group_runs(runs):
                for r in group:
                    results.extend(run_group([r], str(out), progress, threads))
                    bar.update(1)
                    bar.set_postfix(failed=sum(x["status"] == "failed" for x in results))
        return results


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


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
        with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool, \
                tqdm(total=len(runs), desc=f"runs ({self.workers} workers)", unit="run", disable=not progress) as bar:
            futures = {pool.submit(run_group, g, str(out), False, threads): g for g in groups}
            for fut in as_completed(futures):
                res = fut.result()
                results.extend(res)
                bar.update(len(res))
                bar.set_postfix(failed=sum(x["status"] == "failed" for x in results))
        return results

