"""Executors run a list of runs: `inline` (this process) and `local` (a pool of worker processes) here;
`slurm`, `submitit-local` and `debug` (submitit) in `bench.submit`, registered at the end of this module.

Runs that share a base training stage are grouped and executed one after another by the same worker, so the
shared stage is computed once and no worker waits on another's lock.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from bench.config import RunConfig, to_dict
from bench.registry import Registry
from bench.spec import canonical_json


class Executor(Protocol):
    def run(self, runs: list[RunConfig], out: Path, *, progress: bool = True) -> list[dict[str, Any]]: ...


EXECUTORS: Registry[type] = Registry("executor")


def group_runs(runs: list[RunConfig]) -> list[list[RunConfig]]:
    """Runs grouped by what their base stage depends on (everything but the method), in spec order."""
    groups: dict[str, list[RunConfig]] = {}
    for r in runs:
        d = to_dict(r)
        d.pop("method")
        groups.setdefault(canonical_json(d), []).append(r)
    return list(groups.values())


def run_group(group: list[RunConfig], out: str, progress: bool) -> list[dict[str, Any]]:
    from bench.runner import execute_run
    return [execute_run(r, out, progress=progress) for r in group]


@EXECUTORS.register("inline")
class InlineExecutor:
    """Runs everything in this process, one after another (easiest to debug)."""

    def __init__(self, workers: int = 1, **_: Any) -> None:
        pass

    def run(self, runs: list[RunConfig], out: Path, *, progress: bool = True) -> list[dict[str, Any]]:
        results = []
        with tqdm(total=len(runs), desc="runs", unit="run", disable=not progress, position=0) as bar:
            for group in group_runs(runs):
                for r in group:
                    results.extend(run_group([r], str(out), progress))
                    bar.update(1)
                    bar.set_postfix(failed=sum(x["status"] == "failed" for x in results))
        return results


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


@EXECUTORS.register("local")
class LocalExecutor:
    """A pool of N worker processes (spawned); each gets cpu_count // N torch threads."""

    def __init__(self, workers: int = 2, **_: Any) -> None:
        if workers < 1:
            raise ValueError(f"--workers: got {workers}; allowed: an integer >= 1")
        self.workers = workers

    def run(self, runs: list[RunConfig], out: Path, *, progress: bool = True) -> list[dict[str, Any]]:
        groups = group_runs(runs)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        results: list[dict[str, Any]] = []
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool, \
                tqdm(total=len(runs), desc=f"runs ({self.workers} workers)", unit="run", disable=not progress) as bar:
            futures = {pool.submit(run_group, g, str(out), False): g for g in groups}
            for fut in as_completed(futures):
                res = fut.result()
                results.extend(res)
                bar.update(len(res))
                bar.set_postfix(failed=sum(x["status"] == "failed" for x in results))
        return results


import bench.submit  # noqa: E402,F401  (registers slurm, submitit-local, debug; imports submitit lazily-safe)
