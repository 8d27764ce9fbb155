"""Executors run a list of runs: `inline` and `local` (this machine), `slurm`, `submitit-local` and `debug`
(submitit). Importing the package registers all of them in `EXECUTORS`."""
from bench.executors import local, submitit  # noqa: F401  (register the executors)
from bench.executors.base import EXECUTORS, Executor, group_runs, run_group, threads_per_worker

__all__ = ["EXECUTORS", "Executor", "group_runs", "run_group", "threads_per_worker"]
