"""The methods interface: one file per method in `baselines/` or `methods/`, registered by name.

A method receives a RunContext (resolved config, data, device, shared stages) and returns a MethodResult
(final metrics plus optional tensor artifacts such as test logits).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from bench.config import RunConfig, parse, to_dict
from bench.data import load_data
from bench.ids import canonical_json
from bench.plugins import load_plugins
from bench.registry import Registry
from bench.stages import BaseRun, base_run, shared_stage
from bench.store import METRICS


@dataclass
class NoParams:
    """A method without parameters."""


@dataclass
class MethodResult:
    metrics: dict[str, Any]                                    # deterministic numbers (same spec + seed -> same)
    artifacts: dict[str, torch.Tensor] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)    # wall times of the method's parts, in seconds


@dataclass(frozen=True)
class Training:
    """One training a run triggers. Runs that trigger equal trainings share them (a stage computed once), so a
    sweep's cost is that of its distinct trainings; `--dry-run` and `forgetbench plan` list them."""
    what: str                          # e.g. "base", "student", "source pretraining + trajectory"
    dataset: dict[str, Any]            # the DataConfig it trains on (resolved dict)
    model: dict[str, Any]              # the ModelConfig
    epochs: float                      # passes over that dataset's train split
    seed: int
    recipe: str = ""                   # what else makes it distinct (hash of the recipe; '' = the run's train)
    flops: float | None = None         # when known directly (e.g. a token-based language-model training)

    def key(self) -> str:
        return canonical_json([self.what, self.dataset, self.model, self.epochs, self.seed, self.recipe])


class Method:
    """Base class: subclasses set `Params` (a dataclass) and implement `run`."""
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any) -> None:
        self.params = params

    def trainings(self, run: RunConfig) -> list[Training]:
        """The trainings `run` triggers; default: the shared base run of its (dataset, model, recipe, seed)."""
        return [base_training(run)]

    def run(self, ctx: "RunContext") -> MethodResult:  # pragma: no cover - interface
        raise NotImplementedError


def base_training(run: RunConfig, seed: int | None = None, what: str = "base") -> Training:
    """The shared base training run of `run` (or of another seed of the same setting)."""
    return Training(what, to_dict(run.dataset), to_dict(run.model), float(run.train.epochs),
                    run.seed if seed is None else seed, recipe=canonical_json(to_dict(run.train)))


METHODS: Registry[type[Method]] = Registry("method")
register_method = METHODS.register


def make_method(run: RunConfig) -> Method:
    """The run's method, its Params parsed from the run config (the plugins imported first)."""
    load_plugins()
    cls = METHODS.get(run.method.name)
    return cls(parse(cls.Params, run.method.params, "method.params"))


def load_methods() -> None:
    """Import the method packages so their @register_method decorators run (see bench.plugins)."""
    load_plugins()


@dataclass
class RunContext:
    """What a method sees of the engine for one run."""
    config: RunConfig
    run_dir: Path
    stages_dir: Path
    device: torch.device
    progress: bool = True

    @functools.cached_property
    def data(self) -> Any:
        """The run's dataset splits (bench.data.Splits for images; a registered loader's type otherwise)."""
        return load_data(self.config.dataset, self.device)

    def log(self, row: dict[str, Any]) -> None:
        """Append one line (e.g. one epoch's metrics) to the run's metrics.jsonl."""
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(row, sort_keys=True, default=float) + "\n")

    def stage(self, name: str, key: dict[str, Any], compute: Callable[[Path], None],
              check: Callable[[Path], str | None] | None = None) -> Path:
        """A shared stage, computed once per key by whichever run gets there first (see bench.stages); `check`
        says why a finished stage cannot be used (it is then discarded and recomputed)."""
        return shared_stage(self.stages_dir, name, key, compute, check=check)

    def base_run(self, seed: int | None = None) -> BaseRun:
        """The base training run of this (dataset, model, recipe, seed), shared by every method that reads it."""
        return base_run(self, seed)
