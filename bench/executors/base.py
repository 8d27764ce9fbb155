"""The executor interface and registry, how runs are grouped, and how many torch threads a worker gets.

Runs that share a base training stage are grouped and executed one after another by the same worker, so the
shared stage is computed once and no worker waits on another's lock.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from bench.config import RunConfig, to_dict
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


def run_group(group: list[RunConfig], out: str, progress: bool) -> list[dict[str, Any]]:
    """Execute one group of runs in order (in whichever process calls it)."""
    return [execute_run(r, out, progress=progress) for r in group]


def threads_per_worker(workers: int, cpus: int | None = None) -> int:
    """Torch threads for each of `workers` processes sharing `cpus` cores (default: this machine's)."""
    return max(1, (cpus or os.cpu_count() or 1) // max(1, workers))

