"""The executor interface and registry, how runs are grouped, and how many torch threads a run gets.

Runs that share a base training stage are grouped and executed one after another by the same worker, so the
shared stage is computed once and no worker waits on another's lock.

Threads: CPU float results depend on torch's intra-op thread count (it splits reductions), so every executor runs
every run with the same, recorded count: `FORGETBENCH_THREADS` (default 1), never "cores // workers". The same
run therefore gives the same numbers under inline, local, submitit-local and slurm on one machine (the count is
in result.json under device.torch_threads). Set FORGETBENCH_THREADS=N for fewer, faster runs; results then
match other runs made with N.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Protocol

from bench.config import RunConfig, SpecError, to_dict
from bench.ids import canonical_json
from bench.registry import Registry
from bench.runner import execute_run


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


DEFAULT_THREADS = 1
THREADS_ENV = "FORGETBENCH_THREADS"


def run_threads() -> int:
    """Torch intra-op threads of every run: $FORGETBENCH_THREADS (an integer >= 1), default 1."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return DEFAULT_THREADS
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= 1024:
        raise SpecError(THREADS_ENV, raw, "an integer in [1, 1024]: torch threads per run")
    return n


@contextlib.contextmanager
def pinned_threads(threads: int | None = None) -> Iterator[int]:
    """torch.set_num_threads(threads or run_threads()) for the block, restored after (the inline and debug
    executors run in the caller's process)."""
    import torch
    n = threads or run_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def run_group(group: list[RunConfig], out: str, progress: bool, threads: int | None = None) -> list[dict[str, Any]]:
    """Execute one group of runs in order (in whichever process calls it), with the pinned thread count."""
    with pinned_threads(threads):
        return [execute_run(r, out, progress=progress) for r in group]


def threads_per_worker(workers: int, cpus: int | None = None) -> int:
    """Threads for each of `workers` processes sharing `cpus` cores (default: this machine's). Used for tuning
    workers; runs use `run_threads()` so that their numbers do not depend on the executor."""
    return max(1, (cpus or os.cpu_count() or 1) // max(1, workers))

