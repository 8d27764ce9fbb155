"""The methods interface: one file per method in `baselines/` or `methods/`, registered by name.

A method receives a RunContext (resolved config, data, device, shared stages) and returns a MethodResult
(final metrics plus optional tensor artifacts such as test logits).
"""
from __future__ import annotations

import functools
import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from bench.config import DataConfig, RunConfig, parse, to_dict
from bench.registry import Registry
from bench.spec import canonical_json
from bench.store import METRICS


@dataclass
class NoParams:
    """A method without parameters."""


@dataclass
class MethodResult:
    metrics: dict[str, Any]                                    # deterministic numbers (same spec + seed -> same)
    artifacts: dict[str, torch.Tensor] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)    # wall times of the method's parts, in seconds


class Method:
    """Base class: subclasses set `Params` (a dataclass) and implement `run`."""
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any) -> None:
        self.params = params

    def run(self, ctx: "RunContext") -> MethodResult:  # pragma: no cover - interface
        raise NotImplementedError


METHODS: Registry[type[Method]] = Registry("method")
register_method = METHODS.register
METHOD_PACKAGES = ("baselines", "methods")


@functools.lru_cache(maxsize=1)
def load_methods() -> None:
    """Import every module of the method packages so their @register_method decorators run."""
    for pkg_name in METHOD_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg_name}.{info.name}")


@dataclass
class RunContext:
    """What a method sees of the engine for one run."""
    config: RunConfig
    run_dir: Path
    stages_dir: Path
    device: torch.device
    progress: bool = True

    @functools.cached_property
    def data(self):  # -> bench.data.Splits
        return _cached_splits(canonical_json(to_dict(self.config.dataset)), str(self.device))

    def log(self, row: dict[str, Any]) -> None:
        """Append one line (e.g. one epoch's metrics) to the run's metrics.jsonl."""
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(row, sort_keys=True, default=float) + "\n")

    def stage(self, name: str, key: dict[str, Any], compute: Callable[[Path], None]) -> Path:
        """A shared stage, computed once per key by whichever run gets there first (see bench.stages)."""
        from bench.stages import shared_stage
        return shared_stage(self.stages_dir, name, key, compute)

    def base_run(self):  # -> bench.stages.BaseRun
        """The base training run of this (dataset, model, recipe, seed), shared by every method that reads it."""
        from bench.stages import base_run
        return base_run(self)


@functools.lru_cache(maxsize=2)
def _cached_splits(data_json: str, device: str):
    """Loaded splits (image: bench.data.Splits; text corpora: bench.text_data.TextSplits), shared by the runs of
    one process that use the same dataset config and device."""
    from bench.data import load_splits
    from bench.text_data import TEXT_DATASETS, load_text_splits
    cfg = parse(DataConfig, json.loads(data_json), "dataset")
    if cfg.name in TEXT_DATASETS:
        return load_text_splits(cfg)
    return load_splits(cfg, device=torch.device(device))
